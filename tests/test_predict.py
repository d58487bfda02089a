"""Prediction: every kind of input, preprocessed exactly as in training, and the predict command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import classicnets
from classicnets import checkpoint as ckpt
from classicnets.cli import EXIT_ALL_FAILED, EXIT_SOME_FAILED
from classicnets.data.pipeline import BatchLoader
from classicnets.data.sources import load_split
from classicnets.errors import ClassicNetsError, DataFormatError
from classicnets.evaluate import evaluate_checkpoint
from classicnets.predict import Predictor, load


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return load(trained_run)


@pytest.fixture(scope="module")
def test_digits():
    """The embedded digits' test split: uint8 (1000, 1, 28, 28) and labels."""
    data = load_split("digits", None, "test", size=(32, 32), channels=1)
    return data.images, data.labels


def digits_array(n=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float rounding: a batch of another size may take other kernels."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def assert_proba(p: torch.Tensor, rows: int) -> None:
    assert p.shape == (rows, 10) and p.dtype == torch.float32
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(1), torch.ones(rows), rtol=0, atol=1e-5)


def test_load_returns_a_predictor(trained_run, predictor):
    public = classicnets.load(trained_run)
    assert isinstance(public, Predictor) and isinstance(predictor, Predictor)
    assert public.classes == [str(i) for i in range(10)]
    assert not public.model.training


def test_train_state_file_predicts_like_the_model_file(trained_run, predictor):
    x = digits_array()
    other = load(trained_run / ckpt.STATE_FILE)
    torch.testing.assert_close(other.logits(x), predictor.logits(x), rtol=0, atol=0)


# ---- the same pictures in every form give the same answer ---------------------------------

def test_arrays_tensors_and_lists_agree(predictor):
    x = digits_array(5)
    want = predictor.logits(x)
    assert want.shape == (5, 10)
    torch.testing.assert_close(predictor.logits(torch.from_numpy(x)[:, None]), want, rtol=0, atol=0)  # (N,1,H,W)
    same(predictor.logits(x[2]), want[2:3])  # one 2-D image
    torch.testing.assert_close(predictor.logits(list(x)), want, rtol=0, atol=0)
    mixed = [x[0], Image.fromarray(x[1]), torch.from_numpy(x[2:4]), x[4][None]]
    torch.testing.assert_close(predictor.logits(mixed), want, rtol=0, atol=0)
    proba = predictor.predict_proba(x)
    assert_proba(proba, 5)
    assert torch.equal(predictor.predict(x), proba.argmax(1))
    assert predictor.predict(x).dtype == torch.int64
    top = predictor.topk(x[0], k=3)
    assert len(top) == 1 and len(top[0]) == 3 and top[0][0][0] == predictor.classes[int(predictor.predict(x[0]))]


def test_files_equal_in_memory_images(tmp_path, predictor):
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 256, (37, 100, 3), dtype=np.uint8))  # RGB, 100 wide, 37 high
    picture.save(tmp_path / "p.png")
    picture.save(tmp_path / "p.jpg", quality=95)
    torch.testing.assert_close(predictor.logits(tmp_path / "p.png"), predictor.logits(picture), rtol=0, atol=0)
    torch.testing.assert_close(predictor.logits(str(tmp_path / "p.png")), predictor.logits(picture), rtol=0, atol=0)
    assert_proba(predictor.predict_proba(tmp_path / "p.jpg"), 1)
    assert_proba(predictor.predict_proba([tmp_path / "p.png", tmp_path / "p.jpg", picture]), 3)


def test_array_of_another_size_is_cropped_like_a_file(predictor):
    """An array that is not 28x28 goes through the same cover-and-crop as an image file."""
    rng = np.random.default_rng(2)
    for shape in [(37, 100), (64, 64), (20, 20)]:
        a = rng.integers(0, 256, shape, dtype=np.uint8)
        torch.testing.assert_close(predictor.logits(a), predictor.logits(Image.fromarray(a)), rtol=0, atol=0)


def test_image_modes(predictor):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    want = predictor.logits(gray)

    sixteen = Image.fromarray(gray.astype(np.uint16) * 257)  # 16-bit: the same picture, 257x the values
    assert sixteen.mode.startswith("I;16")
    torch.testing.assert_close(predictor.logits(sixteen), want, rtol=0, atol=0)

    rgb = Image.fromarray(np.stack([gray] * 3, -1))
    torch.testing.assert_close(predictor.logits(rgb), want, rtol=0, atol=0)
    opaque = rgb.convert("RGBA")
    torch.testing.assert_close(predictor.logits(opaque), want, rtol=0, atol=0)
    clear = Image.new("RGBA", (28, 28), (0, 0, 0, 0))  # transparent shows as white
    torch.testing.assert_close(predictor.logits(clear), predictor.logits(np.full((28, 28), 255, np.uint8)))

    palette = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).convert("P")
    assert palette.mode == "P"
    torch.testing.assert_close(predictor.logits(palette), predictor.logits(palette.convert("L")), rtol=0, atol=0)

    odd = [Image.fromarray(rng.integers(0, 256, (37, 100, 3), dtype=np.uint8)),
           Image.fromarray(rng.integers(0, 256, (30, 20, 4), dtype=np.uint8)), palette, sixteen]
    assert_proba(predictor.predict_proba(odd), 4)


def test_preprocessing_matches_training(predictor, test_digits):
    """A test digit given as a uint8 array gives the logits the training pipeline's batch gives."""
    images, labels = test_digits
    meta = predictor.meta
    loader = BatchLoader(images[:50], labels[:50], 50, mean=meta["mean"], std=meta["std"], size=(32, 32))
    (x, _), = list(loader)
    with torch.no_grad():
        want = predictor.model(x)
    torch.testing.assert_close(predictor.logits(images[:50, 0].numpy()), want, rtol=0, atol=0)
    torch.testing.assert_close(predictor.preprocess(images[:50, 0].numpy()), x, rtol=0, atol=0)


def test_predictions_match_evaluate(run_dir, test_digits):
    images, labels = test_digits
    accuracy = float((load(run_dir).predict(images) == labels).double().mean())
    assert evaluate_checkpoint(run_dir, device="cpu")["accuracy"] == pytest.approx(accuracy, abs=1e-12)


# ---- bad inputs -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 28, 28), np.float32), "uint8.*float32"),
    (torch.zeros(2, 28, 28, dtype=torch.int64), "uint8.*int64"),
    (np.zeros((1, 1, 1, 28, 28), np.uint8), r"\(N, H, W\).*\(1, 1, 1, 28, 28\)"),
    ([], "empty"),
])
def test_bad_arrays_are_refused_clearly(predictor, bad, message):
    with pytest.raises(ClassicNetsError, match=message):
        predictor.predict(bad)


def test_not_an_image_file_is_refused_by_name(tmp_path, predictor):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="notes.txt.*not an image"):
        predictor.predict(tmp_path / "notes.txt")
    with pytest.raises(DataFormatError, match="missing.png.*no such file"):
        predictor.predict(tmp_path / "missing.png")
    with pytest.raises(DataFormatError, match="notes.txt"):
        predictor.predict([digits_array(1)[0], tmp_path / "notes.txt"])


# ---- the predict command --------------------------------------------------------------------

@pytest.fixture
def image_files(tmp_path, test_digits):
    images, _ = test_digits
    Image.fromarray(images[0, 0].numpy()).save(tmp_path / "a.png")
    (tmp_path / "notimage.txt").write_text("not a picture")
    folder = tmp_path / "dir"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(images[1, 0].numpy()).save(folder / "b.png")
    Image.fromarray(images[2, 0].numpy()).convert("RGB").save(folder / "sub" / "c.JPG")
    (folder / "readme.md").write_text("skipped: not an image extension")
    return tmp_path


def test_predict_command_reports_good_and_bad_files(cli, trained_run, image_files):
    d = image_files
    code, out, err = cli("predict", trained_run, d / "a.png", d / "notimage.txt", d / "dir", "--top", "2")
    assert code == EXIT_SOME_FAILED == 3  # some inputs failed
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [str(d / "a.png"), str(d / "dir/b.png"), str(d / "dir/sub/c.JPG")]
    assert all(line.count("%") == 2 for line in lines)
    assert "notimage.txt: error:" in err and "readme" not in out + err


def test_predict_command_json_and_exit_codes(cli, trained_run, image_files):
    import json

    d = image_files
    code, out, _ = cli("predict", trained_run, d / "a.png", "--format", "json", "--top", "10")
    assert code == 0
    (result,) = json.loads(out)
    assert result["file"] == str(d / "a.png")
    assert sum(t["probability"] for t in result["top"]) == pytest.approx(1.0, abs=1e-5)
    code, _, err = cli("predict", trained_run, d / "notimage.txt")
    assert code == EXIT_ALL_FAILED == 4 and "notimage.txt" in err  # every input failed
    code, _, err = cli("predict", trained_run, d / "empty-dir-that-is-missing")
    assert code == EXIT_ALL_FAILED and "no such file" in err


@pytest.mark.slow
def test_predict_command_fast_gives_the_same_answers(cli, trained_run, image_files, monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("CLASSICNETS_CACHE", str(tmp_path / "cache"))  # the probe's choice: not in the user's cache

    d = image_files
    args = ("predict", trained_run, d / "a.png", d / "dir", "--format", "json", "--top", "3")
    code, plain, _ = cli(*args)
    assert code == 0
    code, fast, err = cli(*args, "--fast")
    assert code == 0, err
    assert "classicnets predict: fast path: " in err  # which path serves, and what the probe measured
    plain, fast = json.loads(plain), json.loads(fast)
    assert [r["file"] for r in plain] == [r["file"] for r in fast]
    for p, f in zip(plain, fast, strict=True):
        assert [t["class"] for t in p["top"]] == [t["class"] for t in f["top"]]
        assert [t["probability"] for t in p["top"]] == pytest.approx([t["probability"] for t in f["top"]], abs=1e-4)
