"""Real-world images read the way the dataset was made (classicnets.data.reading): each step on its
own, the two readings' geometry, the hooks (Predictor, show, evaluate --data DIR) and the command
line, and, with a properly trained LeNet-5, digits drawn on a canvas and written on paper."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from classicnets.cli import EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from classicnets.data import reading as R
from classicnets.data.image import load_image
from classicnets.data.pipeline import fit_to_size
from classicnets.data.sources import load_split
from classicnets.evaluate import evaluate_checkpoint
from classicnets.predict import load
from paper_digits import CANVAS, canvas_digit, embedded_test_digits, paper_digit, paper_digits, product_photo

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return embedded_test_digits()


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    return R.centre_of_mass(a.astype(np.float64))


def box(a: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the nonzero pixels."""
    rows, cols = np.flatnonzero(a.any(1)), np.flatnonzero(a.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def page(ink: np.ndarray, paper: float = 230, pen: float = 30, seed: int = 0) -> np.ndarray:
    """``ink`` (0-1) drawn on paper lit from one side, with noise: uint8."""
    h, w = ink.shape
    light = 1 - 0.35 * np.linspace(0, 1, w)[None, :]
    a = (paper * (1 - ink) + pen * ink) * light + np.random.default_rng(seed).normal(0, 4, (h, w))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


# ---- the steps -------------------------------------------------------------------------------

def test_polarity_from_the_border_and_the_outliers():
    seven = np.asarray(canvas_digit(7))
    assert R.is_dark_on_light(seven)
    assert not R.is_dark_on_light(255 - seven)
    assert R.is_dark_on_light(page(1 - seven / 255.0))  # uneven light and noise
    assert R.is_dark_on_light(np.full((64, 64), 250, np.uint8))  # a blank page is paper


def test_otsu_splits_two_groups():
    values = np.concatenate([np.full(900, 0.05), np.full(100, 0.8)])
    assert 0.05 < R.otsu(values) <= 0.8


def test_uneven_light_is_divided_out():
    ink = np.zeros((200, 300))
    ink[80:120, 40:260] = 1  # a bar
    ink_map, _ = R.ink_of(page(ink))
    near = np.zeros_like(ink, bool)
    near[76:124, 36:264] = True  # the bar and its blurred edge
    assert np.percentile(ink_map[~near], 99.9) < 0.08  # the paper is paper from the light side to the dark
    assert ink_map[82:118, 42:258].min() > 0.6


def test_specks_do_not_widen_the_crop():
    mask = np.zeros((100, 100), bool)
    mask[30:70, 45:55] = True
    mask[2, 2] = mask[97, 90] = True  # two noise pixels
    assert R.ink_box(mask) == (30, 70, 45, 55)
    with pytest.raises(R.BlankImageError):
        R.ink_box(np.zeros((10, 10), bool))


def test_fit_keeps_the_aspect_ratio():
    a = np.ones((200, 50), np.float32)
    assert R.fit_box(a, 20).shape == (20, 5)
    assert R.fit_box(a.T, 28).shape == (7, 28)


def test_the_table_maps_datasets_to_readings():
    assert R.reading_for("digits") is R.reading_for("mnist") is R.DIGIT_READING
    assert R.reading_for("fashion-mnist") is R.FASHION_READING
    assert R.reading_for("cifar10") is R.reading_for(None) is R.reading_for("my-folder") is None


# ---- the digit reading: MNIST's geometry --------------------------------------------------------

@pytest.mark.parametrize("d", [1, 4, 7])
def test_a_canvas_digit_becomes_an_mnist_digit(d):
    out = R.DIGIT_READING(np.asarray(canvas_digit(d)))
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert out.max() == 255 and np.median(out) == 0 and out[:3, :3].max() == 0  # light on black
    top, bottom, left, right = box(out)
    assert max(bottom - top, right - left) == 20  # fitted into the 20x20 box
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 0.52 and abs(cx - 14) <= 0.52  # pixel (14, 14), as MNIST's digits
    assert 0 < ((out > 0) & (out < 255)).mean() < 0.2  # anti-aliased edges, not a binary image


def test_a_one_keeps_its_narrow_shape():
    top, bottom, left, right = box(R.DIGIT_READING(np.asarray(canvas_digit(1))))
    assert bottom - top == 20 and 2 <= right - left <= 7


def test_the_test_split_is_left_as_it_is_and_its_negative_inverted(digits):
    images, _ = digits
    for x in images:
        assert R.DIGIT_READING(x) is x
    for x in images[:50]:
        assert np.array_equal(R.DIGIT_READING(255 - x), x)


def test_a_photographed_digit_is_read_like_the_original(digits):
    images, _ = digits
    rng = np.random.default_rng(3)
    for i in range(5):
        img, _ = paper_digit(images[i], rng)
        out = R.DIGIT_READING(np.asarray(img.convert("L")))
        cy, cx = centre_of_mass(out)
        assert abs(cy - 14) <= 0.52 and abs(cx - 14) <= 0.52
        # Close to MNIST's own image of the digit (mean absolute difference in grey levels).
        assert np.abs(out.astype(float) - images[i]).mean() < 40, i


@pytest.mark.parametrize("picture", [
    np.full((280, 280), 255, np.uint8),  # an empty canvas
    page(np.zeros((300, 400))),  # blank paper, lit from one side, with noise
    np.zeros((100, 100), np.uint8),  # black
])
def test_a_blank_picture_has_no_ink(picture):
    with pytest.raises(R.BlankImageError, match="no ink found"):
        R.DIGIT_READING(picture)


def test_paper_digits_are_deterministic(tmp_path):
    a = paper_digits(tmp_path / "a", 4, seed=1)
    b = paper_digits(tmp_path / "b", 4, seed=1)
    assert [p.read_bytes() for p, _, _ in a] == [p.read_bytes() for p, _, _ in b]
    sizes = [Image.open(p).size for p, _, _ in a]
    assert all(160 <= s <= 640 for size in sizes for s in size)


# ---- the fashion reading: Fashion-MNIST's geometry ----------------------------------------------

def shirt_photo(seed: int = 0) -> np.ndarray:
    """A dark T-shirt, wider than tall, photographed on white paper: a vignette, texture, noise."""
    img = Image.new("L", (420, 320), 235)
    ImageDraw.Draw(img).polygon([(120, 80), (170, 60), (250, 60), (300, 80), (350, 140), (310, 165), (285, 140),
                                 (285, 270), (135, 270), (135, 140), (110, 165), (70, 140)], fill=60)
    a = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), np.float64)
    y, x = np.mgrid[0:320, 0:420]
    a *= 1 - 0.3 * (((x - 210) / 210) ** 2 + ((y - 160) / 160) ** 2) / 2
    rng = np.random.default_rng(seed)
    a += rng.normal(0, 5, a.shape) + 15 * (((x // 6 + y // 6) % 2) - 0.5) * (a < 120)  # a knit
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def test_a_clothing_photo_becomes_a_fashion_mnist_image():
    out = R.FASHION_READING(shirt_photo())
    assert out.shape == (28, 28)
    top, bottom, left, right = box(out > 20)
    assert (left, right) == (0, 28)  # trimmed to the object, the longer side fitted to 28...
    assert abs(top - (28 - bottom)) <= 1 and bottom - top < 28  # ...the shorter one centred
    assert out[14, 14] > 150 and out[0, 0] == out[-1, -1] == 0  # light on black: negated


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_items_photographed_are_read_back():
    from classicnets.data.datasets import load_dataset

    items = load_dataset("fashion-mnist", "test").images[:200, 0].numpy()
    assert all(R.FASHION_READING(x) is x for x in items)  # the test split: as it is
    rng = np.random.default_rng(0)
    diffs = [np.abs(R.FASHION_READING(np.asarray(product_photo(x, rng)[0])).astype(float) - x).mean()
             for x in items[:20]]
    assert np.median(diffs) < 25, diffs


# ---- the hooks: Predictor, evaluate --data DIR, show ---------------------------------------------

def test_predictor_reads_files_pictures_and_arrays_alike(trained_run, tmp_path):
    predictor = load(trained_run)
    canvas = canvas_digit(4)
    canvas.save(tmp_path / "four.png")
    read = predictor.read(tmp_path / "four.png")
    assert read.shape == (1, 1, 28, 28) and read.dtype == torch.uint8
    assert torch.equal(read, predictor.read(canvas))
    assert torch.equal(read, predictor.read(np.array(canvas)))
    at_work_size = load_image(tmp_path / "four.png", size=R.work_size(CANVAS, CANVAS), channels=1)[0].numpy()
    assert torch.equal(read[0, 0], torch.from_numpy(R.DIGIT_READING(at_work_size)))
    x = predictor.preprocess(canvas)
    torch.testing.assert_close(x, predictor.normalize(fit_to_size(read, predictor.input_size)), rtol=0, atol=0)


def test_normalize_false_is_todays_reading(trained_run, tmp_path):
    canvas_digit(7).save(tmp_path / "seven.png")
    plain = load(trained_run, normalize=False)
    assert plain.reading is None and load(trained_run).reading is R.DIGIT_READING
    want = load_image(tmp_path / "seven.png", size=(28, 28), channels=1)
    assert torch.equal(plain.read(tmp_path / "seven.png")[0], want)


def test_the_test_split_predicts_the_same_with_the_reading(trained_run, digits):
    images, labels = digits
    on = (load(trained_run).predict(images).numpy() == labels).mean()
    off = (load(trained_run, normalize=False).predict(images).numpy() == labels).mean()
    assert abs(on - off) <= 0.002


def test_blank_inputs_are_named(trained_run, tmp_path):
    predictor = load(trained_run)
    Image.new("L", (CANVAS, CANVAS), 255).save(tmp_path / "empty.png")
    with pytest.raises(R.BlankImageError, match=f"no ink found in {tmp_path / 'empty.png'}: the image is blank"):
        predictor.predict(tmp_path / "empty.png")
    blank = np.full((2, 100, 100), 255, np.uint8)
    blank[0, 40:60, 45:55] = 0
    with pytest.raises(R.BlankImageError, match="no ink found in image 1 of the batch"):
        predictor.predict(blank)


def folder_of_digits(root: Path, digits, per_class: int = 2) -> Path:
    """``root/test/<digit>/*.png`` of paper digits, ``per_class`` of each."""
    images, labels = digits
    rng = np.random.default_rng(0)
    for k in range(10):
        (root / "test" / str(k)).mkdir(parents=True)
        for i in np.flatnonzero(labels == k)[:per_class]:
            paper_digit(images[i], rng)[0].save(root / "test" / str(k) / f"{i}.png")
    return root


def test_evaluate_data_dir_reads_as_predict_does(trained_run, digits, tmp_path):
    root = folder_of_digits(tmp_path / "data", digits)
    files = sorted((root / "test").rglob("*.*"))
    labels = np.array([int(p.parent.name) for p in files])
    for normalize in (True, False):
        result = evaluate_checkpoint(trained_run, data_dir=root, out=tmp_path, figure=False, normalize=normalize)
        predicted = load(trained_run, normalize=normalize).predict(files).numpy()
        assert result["accuracy"] == pytest.approx((predicted == labels).mean()), normalize
    # The command line's --no-normalize is the same switch.
    import json

    from classicnets.cli import main

    for flags, normalize in (([], True), (["--no-normalize"], False)):
        argv = ["evaluate", str(trained_run), "--data", str(root), "--out", str(tmp_path), "--format", "json", *flags]
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            assert main(argv) == 0
        expected = evaluate_checkpoint(trained_run, data_dir=root, out=tmp_path, figure=False, normalize=normalize)
        assert json.loads(captured.getvalue())["accuracy"] == expected["accuracy"], flags
    # Training reads the folder as it always did: converted to the size asked for, no reading.
    plain = load_split(None, root, "test", size=(32, 32), channels=1, stats=((0.1,), (0.3,)))
    assert plain.images.shape[-2:] == (32, 32)


# ---- the command line ----------------------------------------------------------------------------

def test_predict_command_blank_canvas_and_no_normalize(cli, trained_run, tmp_path):
    Image.new("RGB", (CANVAS, CANVAS), "white").save(tmp_path / "empty.png")
    canvas_digit(7).save(tmp_path / "seven.png")
    code, out, err = cli("predict", trained_run, tmp_path / "empty.png")
    assert code == EXIT_ALL_FAILED and out == ""
    assert err == f"{tmp_path / 'empty.png'}: error: no ink found in {tmp_path / 'empty.png'}: the image is blank\n"
    code, out, err = cli("predict", trained_run, tmp_path, "--format", "json")
    assert code == EXIT_SOME_FAILED and "Traceback" not in err
    results = {Path(r["file"]).name: r for r in json.loads(out)}
    assert "blank" in results["empty.png"]["error"] and len(results["seven.png"]["top"]) == 3
    code, out, err = cli("predict", trained_run, tmp_path / "empty.png", tmp_path / "seven.png", "--no-normalize")
    assert code == EXIT_OK, err  # as they are: nothing to find, nothing refused
    p = load(trained_run, normalize=False).predict_proba(tmp_path / "seven.png")[0]
    assert out.splitlines()[1].startswith(f"{tmp_path / 'seven.png'}: {int(p.argmax())} {p.max().item():.1%}")


def test_show_command_reads_the_image_and_no_normalize(cli, trained_run, tmp_path):
    canvas_digit(7).save(tmp_path / "seven.png")
    Image.new("L", (CANVAS, CANVAS), 255).save(tmp_path / "empty.png")
    for extra in ((), ("--no-normalize",)):
        code, out, err = cli("show", trained_run, tmp_path / "seven.png", "-o", tmp_path / "pics", *extra)
        assert code == EXIT_OK and out.count("wrote") == 2, err
    code, out, err = cli("show", trained_run, tmp_path / "empty.png", "-o", tmp_path / "pics2")
    assert code == EXIT_USAGE and err.count("\n") == 1 and "no ink found" in err and "Traceback" not in err
    assert not (tmp_path / "pics2").exists()


# ---- with a properly trained LeNet-5 -----------------------------------------------------------

@pytest.fixture(scope="module")
def lenet5_run() -> str:
    """LeNet-5 trained by the default recipe: the shipped ``lenet5-digits`` weights are exactly
    that run (``scripts/train_weights.py``; ``test_weights.py`` checks their card), so no test
    needs to train it again."""
    return "lenet5-digits"


@pytest.mark.slow
def test_trained_lenet5_reads_canvas_drawings_and_paper(lenet5_run, digits, tmp_path):
    predictor = load(lenet5_run)
    drawn = {d: predictor.predict_proba(canvas_digit(d))[0] for d in range(10)}
    assert all(int(p.argmax()) == d for d, p in drawn.items()), {d: int(p.argmax()) for d, p in drawn.items()}
    assert all(float(drawn[d][d]) > 0.9 for d in (1, 4, 7))
    files = paper_digits(tmp_path / "pages", 20)
    paths, labels = [p for p, _, _ in files], np.array([y for _, y, _ in files])
    assert (predictor.predict(paths).numpy() == labels).sum() >= 19
    assert (load(lenet5_run, normalize=False).predict(paths).numpy() == labels).sum() <= 8  # what it was
    images, test_labels = digits
    on = (predictor.predict(images).numpy() == test_labels).mean()
    off = (load(lenet5_run, normalize=False).predict(images).numpy() == test_labels).mean()
    assert on > 0.97 and abs(on - off) <= 0.002


@pytest.mark.slow
def test_the_benchmark_quick_writes_its_results(tmp_path):
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real_digits.py"
    proc = subprocess.run([sys.executable, str(bench), "--quick", "--quiet", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "real_digits.json").read_text())
    assert r["paper"]["count"] == 20 and r["clean"]["on"] == r["clean"]["off"] and "commit" in r
    assert r["paper"]["on"] > r["paper"]["off"] and set(r["canvas"]) == {str(d) for d in range(10)}
    assert "| reading on |" in (tmp_path / "real_digits.md").read_text()
