"""show(): first-layer filters and per-stage feature maps of checkpoints the trainer wrote."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import classicnets
from classicnets.pictures import feature_maps, show
from classicnets.predict import load
from classicnets.train.loop import TrainConfig, train
from conftest import torch_globals_kept

PNG = b"\x89PNG\r\n\x1a\n"


def image_axes(fig) -> list:
    """Axes that show an image (a figure's axes include its subfigures')."""
    return [ax for ax in fig.axes if ax.images]


def texts(fig) -> str:
    parts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    return "\n".join(p for p in parts if isinstance(p, str))


@pytest.fixture(scope="module")
def digit() -> torch.Tensor:
    from classicnets.data import load_dataset

    return load_dataset("digits", "test").images[0]  # uint8 (1, 28, 28)


@pytest.fixture(scope="module")
def resnet20_run(tmp_path_factory) -> Path:
    """A resnet20 checkpoint written by the trainer: one epoch on a 16-image RGB folder (the
    built-in digits would spend seconds evaluating 1,000 test images)."""
    root = tmp_path_factory.mktemp("rgb-folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    out = tmp_path_factory.mktemp("resnet20-run")
    with torch_globals_kept():
        train(TrainConfig(model="resnet20", dataset=None, data_dir=str(root), epochs=1, batch_size=8, threads=1,
                          out=str(out), quiet=True))
    return out


def test_show_lenet5_writes_filters_and_feature_maps(trained_run, digit, tmp_path):
    figs = show(trained_run, digit, out=tmp_path)
    assert [f.get_label() for f in figs] == ["lenet5-filters", "lenet5-feature-maps"]
    for f in figs:
        assert (tmp_path / f"{f.get_label()}.png").read_bytes()[:8] == PNG
    filters, maps = figs
    assert len(image_axes(filters)) == 6  # conv1: six 5x5 filters
    assert "6 filters of 5 x 5 x 1" in texts(filters)
    # input + stage 1 (6 maps of 14x14) + stage 2 (16 maps of 5x5); the classifier has no maps.
    assert len(image_axes(maps)) == 1 + 6 + 16
    p = load(trained_run).predict_proba(digit)[0]
    best = int(p.argmax())
    assert f"predicted '{best}' ({p[best].item():.1%})" in texts(maps)
    assert "stage 1" in texts(maps) and "14 x 14 x 6" in texts(maps)


def test_feature_maps_are_the_stage_outputs(trained_run, digit):
    predictor = load(trained_run)
    result = feature_maps(predictor, digit)
    x = predictor.preprocess(digit)
    with torch.no_grad():
        expected = [predictor.model.features[:3](x)[0], predictor.model.features[:6](x)[0]]
        probs = predictor.model(x).softmax(1)[0]
    assert [(s, m) for s, m, _ in result["stages"]] == [("stage 1", "features.act1"), ("stage 2", "features.act2")]
    for (_, _, got), want in zip(result["stages"], expected, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(result["probabilities"], probs)
    name, weight = result["filters"]
    assert name == "features.conv1" and torch.equal(weight, predictor.model.features.conv1.weight)


def test_show_resnet20_from_a_predictor_with_fewer_channels(resnet20_run, tmp_path):
    image = next((resnet20_run.parent).glob("rgb-folder*/test/a/0.png"), None)
    assert image is not None
    predictor = load(resnet20_run)
    figs = classicnets.show(predictor, image, channels=4)
    filters, maps = figs
    assert len(image_axes(filters)) == 16  # conv1: 16 filters of 3x3x3, drawn in colour
    assert all(ax.images[0].get_array().ndim == 3 for ax in image_axes(filters))
    t = texts(maps)
    for stage, shape in (("stem", "32 x 32 x 16"), ("layer1", "32 x 32 x 16"), ("layer2", "16 x 16 x 32"),
                         ("layer3", "8 x 8 x 64")):
        assert stage in t and shape in t
    assert "4 most active of 64 channels" in t
    assert len(image_axes(maps)) == 1 + 4 * 4
    assert not list(tmp_path.iterdir())  # nothing written without out=


@pytest.mark.slow
def test_cli_show(cli, trained_run, digit, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray(digit[0].numpy()).save(image)
    code, out, _ = cli("show", trained_run, image, "-o", tmp_path / "pics")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == ["lenet5-feature-maps.png", "lenet5-filters.png"]
    assert "lenet5-feature-maps.png" in out
    code, _, err = cli("show", trained_run, tmp_path / "missing.png", "-o", tmp_path / "pics")
    assert code == 2 and "missing.png" in err
