"""Image folders: class discovery, every image mode, resizing, bad files, streaming."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import classicnets.data.imageset as imageset
from classicnets.data.folder import (
    ImageFolderStream,
    convert_image,
    estimate_bytes,
    load_image,
    load_image_folder,
    scan_image_folder,
)
from classicnets.data.imageset import InsufficientMemoryError
from classicnets.errors import DataFormatError


def solid(mode, size, color, **kw):
    return Image.new(mode, size, color, **kw)


def make_folder(root):
    """Three classes, mixed formats and modes, plus things that must be skipped."""
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "sub").mkdir(parents=True)
    (root / "bird").mkdir()
    (root / ".git").mkdir()
    solid("RGB", (40, 30), (200, 10, 10)).save(root / "cat" / "a.png")
    solid("RGB", (64, 48), (10, 200, 10)).save(root / "cat" / "b.JPG", quality=95)
    solid("L", (16, 16), 128).save(root / "dog" / "c.bmp")
    solid("RGB", (30, 30), (0, 0, 255)).save(root / "dog" / "sub" / "d.webp", lossless=True)
    solid("RGB", (20, 20), (255, 255, 0)).save(root / "bird" / "e.Jpeg")
    solid("RGB", (8, 8), 0).save(root / "bird" / ".hidden.png")
    solid("RGB", (8, 8), 0).save(root / ".git" / "x.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(b"top-level files are not in a class")
    return root


def test_scan(tmp_path):
    files, labels, classes = scan_image_folder(make_folder(tmp_path))
    assert classes == ["bird", "cat", "dog"]
    assert [f.name for f in files] == ["e.Jpeg", "a.png", "b.JPG", "c.bmp", "d.webp"]
    assert labels == [0, 1, 1, 2, 2]


def test_load_image_folder(tmp_path):
    data = load_image_folder(make_folder(tmp_path), size=(24, 24), channels=3)
    assert data.images.shape == (5, 3, 24, 24) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 1, 1, 2, 2] and data.classes == ["bird", "cat", "dog"]
    assert data.name == tmp_path.name
    assert data.images[1, :, 12, 12].tolist() == [200, 10, 10]
    assert data.images[3, :, 5, 5].tolist() == [128, 128, 128]
    assert data.images[4, :, 5, 5].tolist() == [0, 0, 255]
    assert torch.allclose(torch.tensor(data.mean), data.images.float().mean((0, 2, 3)) / 255)
    gray = load_image_folder(tmp_path, size=(10, 12), channels=1)
    assert gray.images.shape == (5, 1, 10, 12)
    assert gray.images[1, 0, 5, 5].item() == round(0.299 * 200 + 0.587 * 10 + 0.114 * 10)
    assert estimate_bytes(tmp_path, (10, 12), 1) == gray.images.numel()
    assert estimate_bytes(tmp_path, 24, 3) == data.images.numel()


@pytest.mark.parametrize("make, expect_rgb", [
    (lambda: solid("RGB", (9, 7), (1, 2, 3)), (1, 2, 3)),
    (lambda: solid("L", (9, 7), 77), (77, 77, 77)),
    (lambda: solid("1", (9, 7), 1), (255, 255, 255)),
    (lambda: solid("RGBA", (9, 7), (10, 20, 30, 255)), (10, 20, 30)),
    (lambda: solid("RGBA", (9, 7), (10, 20, 30, 0)), (255, 255, 255)),  # transparent: white
    (lambda: solid("RGBA", (9, 7), (0, 0, 0, 128)), (127, 127, 127)),
    (lambda: solid("LA", (9, 7), (0, 0)), (255, 255, 255)),
    (lambda: solid("CMYK", (9, 7), (0, 255, 255, 0)), (255, 0, 0)),
    (lambda: Image.fromarray(np.full((7, 9), 65535, np.uint16)), (255, 255, 255)),
    (lambda: Image.fromarray(np.full((7, 9), 32896, np.uint16)), (128, 128, 128)),
    (lambda: Image.fromarray(np.full((7, 9), 100.4, np.float32)), (100, 100, 100)),
])
def test_convert_image_modes(make, expect_rgb):
    t = convert_image(make(), None, 3)
    assert t.shape == (3, 7, 9) and t.dtype == torch.uint8
    assert t[:, 3, 4].tolist() == list(expect_rgb)
    g = convert_image(make(), (5, 5), 1)
    assert g.shape == (1, 5, 5)


def _saved(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return path


def test_files_in_every_mode(tmp_path):
    # 16-bit grayscale PNG: scaled, not clipped.
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    p16 = _saved(tmp_path, "16bit.png", Image.fromarray(ramp))
    with Image.open(p16) as im:
        assert im.mode.startswith("I")
    t = load_image(p16, None, 1)
    np.testing.assert_array_equal(t[0].numpy(), ((ramp.astype(np.int64) + 128) // 257).astype(np.uint8))
    # CMYK JPEG
    cmyk = _saved(tmp_path, "cmyk.jpg", solid("CMYK", (32, 32), (0, 0, 255, 0)), quality=100)
    r, g, b = load_image(cmyk, 16, 3)[:, 8, 8].tolist()
    assert r > 240 and g > 240 and b < 15  # yellow
    # palette GIF with a transparent index
    pal = Image.new("P", (20, 10), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(0, (0, 0, 10, 10))
    gif = _saved(tmp_path, "pal.gif", pal, transparency=0)
    t = load_image(gif, None, 3)
    assert t[:, 5, 2].tolist() == [255, 255, 255] and t[:, 5, 15].tolist() == [255, 0, 0]
    # RGBA PNG
    rgba = _saved(tmp_path, "rgba.png", solid("RGBA", (8, 8), (0, 255, 0, 255)))
    assert load_image(rgba, 4, 3)[:, 1, 1].tolist() == [0, 255, 0]


def test_resize_covers_then_centre_crops():
    # 20 wide, 40 tall: red top quarter, green middle half, blue bottom quarter.
    a = np.zeros((40, 20, 3), np.uint8)
    a[:10, :, 0] = 255
    a[10:30, :, 1] = 255
    a[30:, :, 2] = 255
    t = convert_image(Image.fromarray(a), (10, 10), 3)  # scale 1/2 -> 10x20, keep the middle 10 rows
    assert t.shape == (3, 10, 10)
    assert (t[1, 1:-1] == 255).all() and (t[0, 1:-1] == 0).all() and (t[2, 1:-1] == 0).all()
    wide = convert_image(Image.fromarray(a.transpose(1, 0, 2)), (10, 10), 3)
    assert (wide[1, :, 1:-1] == 255).all()
    up = convert_image(Image.fromarray(a), (80, 30), 3)  # upscaling, non-square
    assert up.shape == (3, 80, 30)


def test_antialiased_downscale():
    # A 1-pixel checkerboard shrunk 8x must come out grey, not aliased to black or white.
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    t = convert_image(Image.fromarray(board), (8, 8), 1)
    assert t.min() >= 100 and t.max() <= 155


def test_exif_orientation_applied(tmp_path):
    img = solid("RGB", (40, 20), (50, 60, 70))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    path = _saved(tmp_path, "rot.jpg", img, exif=exif)
    assert load_image(path, None, 3).shape == (3, 40, 20)


def test_large_jpeg_decodes_smaller_same_result(tmp_path):
    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(90, 110, (800, 1200, 3), dtype=np.uint8)).resize((1200, 800))
    path = _saved(tmp_path, "big.jpg", big, quality=90)
    t = load_image(path, (16, 16), 3)
    ref = convert_image(Image.open(path), (16, 16), 3)
    assert (t.int() - ref.int()).abs().max() <= 6


@pytest.mark.parametrize("name, content", [
    ("empty.png", b""),
    ("random.png", bytes(range(256)) * 4),
    ("text.jpg", b"hello, I am not a JPEG"),
])
def test_unreadable_image(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataFormatError, match=f"{name}: not an image file"):
        load_image(tmp_path / name, 8)


@pytest.mark.parametrize("fmt", ["png", "jpg", "gif", "webp", "bmp"])
def test_truncated_image(tmp_path, fmt):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    if fmt == "gif":
        img = img.convert("P")
    full = _saved(tmp_path, f"full.{fmt}", img)
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataFormatError, match=rf"cut\.{fmt}: (truncated or corrupt|not an image)"):
        load_image(cut, 8)


def test_bad_images_in_folder(tmp_path):
    make_folder(tmp_path)
    good = tmp_path / "cat" / "a.png"
    (tmp_path / "cat" / "broken.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataFormatError, match="broken.png"):
        load_image_folder(tmp_path, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_image_folder(tmp_path, 8, skip_bad=True)
    assert len(data) == 5 and data.labels.tolist() == [0, 1, 1, 2, 2]
    assert any("broken.png" in str(w.message) for w in caught)


def test_all_bad_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DataFormatError, match="none of the 1 images"):
        load_image_folder(tmp_path, 8, skip_bad=True)


def test_native_size_must_agree(tmp_path):
    (tmp_path / "a").mkdir()
    solid("L", (10, 10), 1).save(tmp_path / "a" / "1.png")
    solid("L", (10, 10), 2).save(tmp_path / "a" / "2.png")
    data = load_image_folder(tmp_path, None, 1)
    assert data.images.shape == (2, 1, 10, 10)
    solid("L", (12, 10), 3).save(tmp_path / "a" / "3.png")
    with pytest.raises(DataFormatError, match=r"3\.png: image is 12x10.*pass size"):
        load_image_folder(tmp_path, None, 1)


def test_folder_errors(tmp_path):
    with pytest.raises(DataFormatError, match="not a directory"):
        load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(DataFormatError, match="no class folders"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    with pytest.raises(DataFormatError, match="no images"):
        load_image_folder(tmp_path, 8)
    with pytest.raises(DataFormatError, match="channels=2"):
        load_image(tmp_path / "a" / "x.txt", 8, channels=2)
    with pytest.raises(DataFormatError, match="size="):
        load_image(tmp_path / "a" / "x.txt", (8, 0))
    with pytest.raises(DataFormatError, match="no such file"):
        load_image(tmp_path / "a" / "missing.png", 8)
    with pytest.raises(DataFormatError, match="cannot open.*expected an image file"):
        load_image(tmp_path / "a", 8)


def test_memory_check(tmp_path, monkeypatch):
    make_folder(tmp_path)
    monkeypatch.setattr(imageset, "available_memory", lambda: 1000)
    message = r"needs about 421\.9 KiB.*only 1000 bytes available.*ImageFolderStream"
    with pytest.raises(InsufficientMemoryError, match=message):
        load_image_folder(tmp_path, (160, 180), 3)
    assert len(load_image_folder(tmp_path, (8, 4), 3)) == 5  # 480 bytes: fits


def test_stream_matches_in_memory(tmp_path):
    make_folder(tmp_path)
    stream = ImageFolderStream(tmp_path, (12, 12), 3)
    data = load_image_folder(tmp_path, (12, 12), 3)
    assert len(stream) == len(data) and stream.classes == data.classes
    for i in range(len(stream)):
        image, label = stream[i]
        assert image.dtype == torch.uint8 and torch.equal(image, data.images[i])
        assert label == data.labels[i].item()
    images, labels = next(iter(torch.utils.data.DataLoader(stream, batch_size=5)))
    assert torch.equal(images, data.images) and torch.equal(labels, data.labels)
    mean, std = stream.mean_std()
    assert mean == pytest.approx(data.mean) and std == pytest.approx(data.std)
    with pytest.raises(DataFormatError, match="needs size"):
        ImageFolderStream(tmp_path, None)
