"""Odd-but-valid images are read right; bad ones get one line naming the file and what is really
wrong. Each case is one a user met, replayed through the real command line: the exit code, no
traceback, the file named, and nothing written that should not be."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classicnets.cli import EXIT_ALL_FAILED, EXIT_OK, EXIT_USAGE
from classicnets.data.folder import image_files, scan_image_folder
from classicnets.data.sources import load_split


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Real test digits, white ink on black as trained: uint8 (n, 28, 28), labels 0, 1, 2, ..."""
    data = load_split("digits", None, "test", size=(28, 28), channels=1)
    first = [int((data.labels == k).nonzero()[0, 0]) for k in range(10)]
    return data.images[first, 0].numpy()


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with a digest of its bytes."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "-"
            for folder in folders for p in sorted(Path(folder).rglob("*")) if not p.is_symlink()}


def run(cli, *argv) -> tuple[int, str, str]:
    code, out, err = cli(*argv)
    assert "Traceback" not in err and "Warning" not in err, err
    return code, out, err


def predict(cli, trained_run, *paths, code=EXIT_OK) -> dict[str, dict[str, float]]:
    """{file name: {class: probability}} from ``classicnets predict --format json``."""
    before = snapshot(trained_run)
    got, out, err = run(cli, "predict", trained_run, *paths, "--format", "json", "--top", "10")
    assert got == code, err
    assert snapshot(trained_run) == before
    return {Path(r["file"]).name: {t["class"]: t["probability"] for t in r["top"]}
            for r in json.loads(out) if "top" in r}


def predict_error(cli, trained_run, path: Path) -> str:
    code, _, err = run(cli, "predict", trained_run, path)
    assert code == EXIT_ALL_FAILED
    assert err.count("\n") == 1 and f"{path}: error: {path}: " in err  # one line naming the file
    return err


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=1e-6) for k in a)


# ---- 1. ink in the alpha channel --------------------------------------------------------------

def test_ink_in_the_alpha_channel_survives(cli, trained_run, digits, tmp_path):
    ink = digits[3]
    Image.fromarray(ink).save(tmp_path / "plain.png")  # white on black
    Image.fromarray(255 - ink).save(tmp_path / "plain-inverted.png")  # black on white
    Image.new("L", (28, 28), 255).save(tmp_path / "blank.png")
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., 3] = ink
    Image.fromarray(rgba).save(tmp_path / "black-on-clear.png")
    rgba[..., :3] = 255
    Image.fromarray(rgba).save(tmp_path / "white-on-clear.png")
    rgba[ink == 0, :3] = 0  # what drawing on a cleared canvas leaves: colour only under the ink
    Image.fromarray(rgba).save(tmp_path / "white-on-cleared-canvas.png")
    Image.fromarray(np.stack([np.full_like(ink, 255), ink], -1), "LA").save(tmp_path / "white-on-clear-la.png")
    p = predict(cli, trained_run, tmp_path)
    assert not same(p["plain.png"], p["blank.png"])
    for name in ("white-on-clear.png", "white-on-cleared-canvas.png", "white-on-clear-la.png"):
        assert same(p[name], p["plain.png"]), name
    assert same(p["black-on-clear.png"], p["plain-inverted.png"])


# ---- 2. deep pixels: float, int32, 16-bit ----------------------------------------------------

def test_float_int32_and_16bit_files_read_like_8bit(cli, trained_run, digits, tmp_path):
    ink = digits[5]
    Image.fromarray(ink).save(tmp_path / "plain.png")
    Image.fromarray(ink.astype(np.float32) / 255).save(tmp_path / "float-0-1.tif")
    Image.fromarray(ink.astype(np.int32)).save(tmp_path / "int32-0-255.tif")
    Image.fromarray(ink.astype(np.int32) * 257).save(tmp_path / "int32-0-65535.tif")
    Image.fromarray(ink.astype(np.uint16) * 257).save(tmp_path / "uint16.tif")
    Image.fromarray(ink.astype(np.uint16) * 257).save(tmp_path / "uint16.png")
    p = predict(cli, trained_run, tmp_path)
    assert len(p) == 6
    for name, proba in p.items():
        assert same(proba, p["plain.png"]), name


# ---- 3. very large images: memory, time, our own limit ---------------------------------------

def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (8-bit gray) and holds no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_too_many_pixels_is_refused_by_size_before_decoding(cli, trained_run, tmp_path):
    path = png_header_only(tmp_path / "huge.png", 20_000, 20_000)
    err = predict_error(cli, trained_run, path)
    assert "20000x20000 pixels (400 megapixels) is more than the 268 megapixels" in err
    assert "DecompressionBomb" not in err


MEASURE = """
import json, resource, sys
from classicnets.cli import main
run, tiny, *big = sys.argv[1:]
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
peaks = []
for path in [tiny, *big]:
    assert main(["predict", run, path]) == 0
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
print(json.dumps(peaks))
"""


@pytest.mark.slow
def test_a_huge_png_is_shrunk_early(trained_run, tmp_path):
    # 9,600 x 9,600 is past Pillow's 89-megapixel warning. Above the peak of predicting a tiny
    # image (the interpreter, torch, the model), the 16-bit file took 1.9 GB before the fix (an
    # int64 copy and float copies, 21 bytes a pixel) and the RGBA one 1.8 GB; now each takes
    # about its decoded size, the floor (Pillow decodes a PNG whole, at its own depth: 2 bytes a
    # pixel for 16-bit gray, 4 for RGBA): 185 MB and 364 MB. The bound is 1.5x that.
    n = 9600
    tiny = tmp_path / "tiny.png"
    Image.new("L", (28, 28)).save(tiny)
    gray16, rgba = tmp_path / "gray16.png", tmp_path / "rgba.png"
    stroke = (n * 2 // 5, n // 6, n * 3 // 5, n * 5 // 6)
    img = Image.new("I;16", (n, n))
    img.paste(65535, stroke)
    img.save(gray16)
    img = Image.new("RGBA", (n, n))
    img.paste((0, 0, 0, 255), stroke)
    img.save(rgba)
    del img
    done = subprocess.run([sys.executable, "-c", MEASURE, str(trained_run), str(tiny), str(gray16), str(rgba)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    base, after16, after_rgba = json.loads(done.stdout.splitlines()[-1])
    assert after16 - base < 1.5 * 2 * n * n, (base, after16)
    assert after_rgba - base < 1.5 * 4 * n * n, (base, after_rgba)


# ---- 4. one rule for which files count -------------------------------------------------------

def test_predict_dir_counts_the_files_training_counts(cli, trained_run, digits, tmp_path):
    root = tmp_path / "data"
    d = root / "a"
    (d / "sub").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(digits[1]).save(root / "b" / "1.png")
    Image.fromarray(digits[0]).save(d / "0.png")
    Image.fromarray(digits[1]).save(d / "1.tif")
    Image.fromarray(digits[2]).save(d / "2.jfif", format="JPEG")
    Image.fromarray(digits[3]).save(d / "sub" / "3.pgm")
    (d / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (d / "__MACOSX").mkdir()
    (d / "__MACOSX" / "._1.tif").write_bytes(b"\x00\x05\x16\x07")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(digits[4]).save(elsewhere / "4.png")
    (d / "linked").symlink_to(elsewhere, target_is_directory=True)
    (d / "sub" / "back-up").symlink_to(d, target_is_directory=True)  # a loop
    before = snapshot(root, elsewhere)
    code, out, err = run(cli, "predict", trained_run, d)
    assert code == EXIT_OK, err
    listed = [line.split(": ")[0] for line in out.splitlines()]
    expected = [str(d / name) for name in ("0.png", "1.tif", "2.jfif", "linked/4.png", "sub/3.pgm")]
    assert listed == expected
    files, labels, classes = scan_image_folder(root)
    assert [str(f) for f, label in zip(files, labels, strict=True) if label == 0] == expected
    assert [str(f) for f in image_files(d)] == expected
    assert snapshot(root, elsewhere) == before


# ---- 5. evaluate reads only the split it evaluates -------------------------------------------

def digit_folder(root: Path, digits: np.ndarray, classes=None) -> Path:
    classes = classes or [str(k) for k in range(10)]
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.roll(digits[k % len(digits)], i, axis=1)).save(root / name / f"{i}.png")
    return root


def test_evaluate_reads_only_the_split_asked_for(cli, trained_run, digits, tmp_path):
    data = tmp_path / "data"
    digit_folder(data / "test", digits)  # no train/ at all
    out = tmp_path / "out"
    before = snapshot(trained_run, data)
    code, only_test, err = run(cli, "evaluate", trained_run, "--data", data, "--out", out, "--format", "json")
    assert code == EXIT_OK, err
    assert snapshot(trained_run, data) == before and (out / "confusion.png").is_file()
    (data / "train" / "0").mkdir(parents=True)
    (data / "train" / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    before = snapshot(trained_run, data)
    code, with_bad_train, err = run(cli, "evaluate", trained_run, "--data", data, "--out", out, "--format", "json")
    assert code == EXIT_OK, err
    assert snapshot(trained_run, data) == before
    assert json.loads(only_test)["count"] == 20
    assert json.loads(only_test)["accuracy"] == json.loads(with_bad_train)["accuracy"]


# ---- 6 and 7. degenerate datasets, class names in two Unicode forms --------------------------

def train(cli, data: Path, out: Path) -> tuple[int, str, str]:
    return run(cli, "train", "lenet5", "--data", data, "--epochs", "1", "--batch-size", "4",
               "--threads", "1", "--quiet", "--out", out)


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "train" / "dog").mkdir(), "{data}/train/dog: class folder with no images"),
    (lambda d: None, "{data}/train: only one class folder (cat); a classifier needs at least two classes"),
])
def test_degenerate_datasets_are_refused(cli, digits, tmp_path, make, message):
    data = tmp_path / "data"
    for split in ("train", "test"):
        digit_folder(data / split, digits, ["cat"])
    make(data)
    before = snapshot(data)
    code, _, err = train(cli, data, tmp_path / "run")
    assert code == EXIT_USAGE and message.format(data=data) in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists() and snapshot(data) == before


def test_junk_folders_are_not_classes_and_names_are_nfc(cli, digits, tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    data = tmp_path / "data"
    digit_folder(data / "train", digits, [nfd, "thé", "__MACOSX", ".ipynb_checkpoints", "__pycache__"])
    digit_folder(data / "test", digits, [nfc, "thé"])  # the same classes, typed elsewhere
    code, _, err = train(cli, data, tmp_path / "run")
    assert code == EXIT_OK, err
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["classes"] == [nfc, "thé"]
    (data / "test" / nfc).rename(data / "test" / nfd)
    code, out, err = run(cli, "evaluate", tmp_path / "run", "--data", data, "--format", "json")
    assert code == EXIT_OK, err
    assert json.loads(out)["count"] == 4


# ---- 7. messages that say what is really wrong ------------------------------------------------

def test_unsupported_mode_and_symlink_loop_are_named_not_called_corrupt(cli, trained_run, digits, tmp_path):
    lab = tmp_path / "lab.tif"
    Image.new("LAB", (28, 28), (50, 0, 0)).save(lab)
    err = predict_error(cli, trained_run, lab)
    assert "unsupported colour mode LAB: convert it to RGB" in err and "corrupt" not in err
    loop = tmp_path / "loop.png"
    loop.symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(loop)
    err = predict_error(cli, trained_run, loop)
    assert f"symlink loop at {loop}" in err and "corrupt" not in err
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    assert "broken symlink" in predict_error(cli, trained_run, broken)
    good = tmp_path / "good.png"
    Image.fromarray(digits[0]).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:80])
    assert "truncated or corrupt" in predict_error(cli, trained_run, cut)  # a real decode failure still is


# ---- 8. the cover-crop box never leaves the image --------------------------------------------

def test_sizes_whose_crop_box_rounded_outside_the_image(cli, trained_run, tmp_path):
    # At 28x28 (the digits' size) these sizes put a box edge at -1e-14 before the fix.
    for width, height in [(430, 193), (444, 865), (828, 849), (3317, 843)]:
        Image.new("RGB", (width, height), (200, 100, 0)).save(tmp_path / f"{width}x{height}.jpg")
    assert len(predict(cli, trained_run, tmp_path, "--no-normalize")) == 4  # the cover crop; blank with the reading
