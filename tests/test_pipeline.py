"""The batch pipeline: sizes, normalisation, augmentation, sharding, determinism."""

import pytest
import torch

from classicnets.data.pipeline import Augment, BatchLoader, Normalize, fit_to_size, random_crop_flip


def _images(n=10, c=1, h=28, w=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_fit_to_size_pads_small_differences_centred():
    x = _images(2)
    y = fit_to_size(x, (32, 32))
    assert y.shape == (2, 1, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, :, 2:30, 2:30], x)
    assert y[:, :, :2].sum() == 0 and y[:, :, :, 30:].sum() == 0


def test_fit_to_size_resizes_large_differences():
    x = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    y = fit_to_size(x, (224, 224))
    assert y.shape == (1, 3, 224, 224) and y.dtype == torch.uint8
    assert int(y.min()) == 200 and int(y.max()) == 200  # constant image stays constant


def test_normalize_matches_formula():
    x = _images(3, c=3, h=4, w=4)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    got = Normalize(mean, std)(x)
    want = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = _images(64, c=2, h=8, w=8)
    g = torch.Generator().manual_seed(1)
    y = random_crop_flip(x, Augment(crop_padding=2), g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(y[i], w) for w in windows)
    assert not torch.equal(x, y)


def test_flip_mirrors_about_half_the_batch():
    x = _images(400, h=6, w=6)
    y = random_crop_flip(x, Augment(flip=True), torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(x, y, strict=False)]
    flipped = [torch.equal(a.flip(-1), b) for a, b in zip(x, y, strict=False)]
    assert all(s or f for s, f in zip(same, flipped, strict=False))
    assert 150 < sum(flipped) < 250


def test_loader_covers_every_sample_once_per_epoch_and_reshuffles():
    x, y = _images(103), torch.arange(103)
    loader = BatchLoader(x, y, 16, mean=(0.5,), std=(0.5,), size=(32, 32), shuffle=True, seed=3)
    assert len(loader) == 7
    epoch0 = torch.cat([b for _, b in loader])
    loader.set_epoch(1)
    epoch1 = torch.cat([b for _, b in loader])
    assert sorted(epoch0.tolist()) == list(range(103)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b for _, b in loader]), epoch0)  # same seed + epoch, same order


def test_loader_batches_are_normalised_images_of_the_right_labels():
    x = _images(20)
    y = torch.arange(20)
    loader = BatchLoader(x, y, 8, mean=(0.0,), std=(1.0,), size=(32, 32))
    for xb, yb in loader:
        assert xb.shape[1:] == (1, 32, 32) and xb.dtype == torch.float32
        torch.testing.assert_close(xb[:, :, 2:30, 2:30] * 255, x[yb].float(), rtol=0, atol=1e-3)


def test_shards_of_two_ranks_make_up_the_global_batch():
    x, y = _images(64), torch.arange(64)
    kw = dict(mean=(0.5,), std=(0.5,), size=(32, 32), shuffle=True, seed=5, drop_last=True)
    full = [b for _, b in BatchLoader(x, y, 16, **kw)]
    r0 = [b for _, b in BatchLoader(x, y, 16, rank=0, world_size=2, **kw)]
    r1 = [b for _, b in BatchLoader(x, y, 16, rank=1, world_size=2, **kw)]
    for f, a, b in zip(full, r0, r1, strict=True):
        assert sorted(f.tolist()) == sorted(a.tolist() + b.tolist())
        assert len(a) == len(b) == 8


def test_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="uint8"):
        BatchLoader(torch.zeros(2, 1, 4, 4), torch.zeros(2), 2, mean=(0,), std=(1,))
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(_images(3), torch.zeros(2), 2, mean=(0,), std=(1,))
    with pytest.raises(ValueError, match="multiple"):
        BatchLoader(_images(4), torch.zeros(4), 3, mean=(0,), std=(1,), world_size=2)


def test_28x28_digits_reach_lenet5_padded_to_32():
    import classicnets

    model = classicnets.create_model("lenet5")
    loader = BatchLoader(_images(4), torch.arange(4), 4, mean=(0.13,), std=(0.31,), size=(32, 32))
    x, _ = next(iter(loader))
    assert x.shape == (4, 1, 32, 32)
    assert model(x).shape == (4, 10)


def test_crop_and_flip_equal_a_per_sample_reference():
    x = _images(40, c=3, h=10, w=12)
    for augment in (Augment(crop_padding=2), Augment(crop_padding=4, flip=True), Augment(flip=True)):
        got = random_crop_flip(x, augment, torch.Generator().manual_seed(7))
        g = torch.Generator().manual_seed(7)  # the same draws, in the same order
        p = augment.crop_padding
        dy = torch.randint(0, 2 * p + 1, (40,), generator=g) if p else torch.zeros(40, dtype=torch.long)
        dx = torch.randint(0, 2 * p + 1, (40,), generator=g) if p else torch.zeros(40, dtype=torch.long)
        flip = torch.rand(40, generator=g) < 0.5 if augment.flip else torch.zeros(40, dtype=torch.bool)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        for i in range(40):
            want = padded[i, :, dy[i]:dy[i] + 10, dx[i]:dx[i] + 12]
            assert torch.equal(got[i], want.flip(-1) if flip[i] else want), (augment, i)


def test_an_epoch_draws_its_order_then_each_batch_augmentation_from_one_generator():
    """The batches depend on the seed and the epoch only, never on the device they are copied
    to: the order (drawn once per epoch) and each batch's crops and flips come from one CPU
    generator in this sequence, and resumed runs rely on it."""
    x, y = _images(40, c=3, h=10, w=12), torch.arange(40)
    augment = Augment(crop_padding=2, flip=True)
    loader = BatchLoader(x, y, 16, mean=(0.0,) * 3, std=(1 / 255,) * 3, shuffle=True, augment=augment, seed=3)
    loader.set_epoch(2)
    g = torch.Generator().manual_seed(3 * 1_000_003 + 2)
    order = torch.randperm(40, generator=g)
    for i, (xb, yb) in enumerate(loader):
        idx = order[i * 16:(i + 1) * 16]
        assert torch.equal(yb, idx)
        want = random_crop_flip(x[idx], augment, g)
        assert torch.equal(xb, want.float())
