"""Image folders: class discovery, every image mode, resizing, bad files, streaming."""

import unicodedata
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import classicnets.data.image as image_module
import classicnets.data.imageset as imageset
from classicnets.data.folder import (
    ImageFolderStream,
    convert_image,
    estimate_bytes,
    image_files,
    load_image,
    load_image_folder,
    scan_image_folder,
)
from classicnets.data.image import cover_box
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
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(DataFormatError, match="none of the 2 images"):
        load_image_folder(tmp_path, 8, skip_bad=True)


def test_native_size_must_agree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    solid("L", (10, 10), 1).save(tmp_path / "a" / "1.png")
    solid("L", (10, 10), 2).save(tmp_path / "b" / "2.png")
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


# ---- which files count: one rule for folders and predict DIR --------------------------------

def test_image_files_one_rule(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    for name in ("a.png", "b.TIF", "c.jfif", "e.pgm", "sub/f.tiff", "g.jpe"):
        solid("L", (4, 4), 9).save(d / name, format="PNG")  # contents do not decide: the name does
    (d / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    for junk in (".hidden", "__MACOSX", "__pycache__", ".ipynb_checkpoints"):
        (d / junk).mkdir()
        solid("L", (4, 4), 9).save(d / junk / "x.png")
    (d / "notes.txt").write_text("not an image")
    outside = tmp_path / "outside"
    outside.mkdir()
    solid("L", (4, 4), 9).save(outside / "o.png")
    (d / "linked").symlink_to(outside, target_is_directory=True)  # followed
    (d / "sub" / "up").symlink_to(d, target_is_directory=True)  # a loop: never walked twice
    (d / "again").symlink_to(outside, target_is_directory=True)  # the same folder twice: once
    (d / "loop.png").symlink_to(d / "loop.png")  # a file link loop still counts: reading it says so
    names = [str(p.relative_to(d)) for p in image_files(d)]
    assert names == ["a.png", "again/o.png", "b.TIF", "c.jfif", "e.pgm", "g.jpe", "loop.png", "sub/f.tiff"]
    assert image_files(d) == image_files(d)
    with pytest.raises(DataFormatError, match="loop.png: symlink loop"):
        load_image(d / "loop.png", 8)


def test_class_folders_skip_junk_and_are_nfc(tmp_path):
    nfd = unicodedata.normalize("NFD", "café")
    for name in (nfd, "thé", "__MACOSX", ".ipynb_checkpoints", "__pycache__", ".git"):
        (tmp_path / name).mkdir()
        solid("L", (4, 4), 9).save(tmp_path / name / "1.png")
    files, labels, classes = scan_image_folder(tmp_path)
    assert classes == [unicodedata.normalize("NFC", "café"), "thé"] and labels == [0, 1]
    assert [c == unicodedata.normalize("NFC", c) for c in classes] == [True, True]
    (tmp_path / unicodedata.normalize("NFC", "café")).mkdir()
    with pytest.raises(DataFormatError, match="another Unicode form"):
        scan_image_folder(tmp_path)


def test_empty_class_and_single_class_are_errors(tmp_path):
    (tmp_path / "a").mkdir()
    solid("L", (4, 4), 9).save(tmp_path / "a" / "1.png")
    with pytest.raises(DataFormatError, match=rf"{tmp_path}: only one class folder \(a\)"):
        scan_image_folder(tmp_path)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataFormatError, match=rf"{tmp_path / 'b'}: class folder with no images"):
        scan_image_folder(tmp_path)


# ---- pixels: deep values, transparency, unsupported modes ----------------------------------

@pytest.mark.parametrize("values, mode, expect", [
    ([0.0, 0.5, 1.0], "F", [0, 128, 255]),  # float in [0, 1]
    ([0.0, 100.4, 255.0], "F", [0, 100, 255]),  # float 0-255
    ([0.0, 32896.0, 65535.0], "F", [0, 128, 255]),  # float 0-65535
    ([-1.0, 0.0, 1.0], "F", [0, 128, 255]),  # anything else: its own range
    ([0, 128, 255], "I", [0, 128, 255]),  # int32 holding 8 bits
    ([0, 32896, 65535], "I", [0, 128, 255]),  # int32 holding 16 bits
    ([-70000, 0, 70000], "I", [0, 128, 255]),
    ([0, 128, 255], "I;16", [0, 0, 1]),  # a 16-bit file is 16-bit: scaled by its type
])
def test_deep_pixels_scaled_by_their_range(values, mode, expect):
    dtype = {"F": np.float32, "I": np.int32, "I;16": np.uint16}[mode]
    img = Image.fromarray(np.array([values], dtype=dtype))
    assert img.mode == mode
    assert convert_image(img, None, 1)[0, 0].tolist() == expect


def test_nan_pixels_are_refused(tmp_path):
    path = _saved(tmp_path, "nan.tif", Image.fromarray(np.array([[0, np.nan]], np.float32)))
    with pytest.raises(DataFormatError, match="nan.tif: float pixels include NaN"):
        load_image(path, 4)


def _drawing(colour, alpha, mode="RGBA"):
    a = np.zeros((12, 12, len(mode)), np.uint8)
    a[..., :-1] = colour
    a[3:9, 5:7, -1] = alpha  # a stroke; transparent elsewhere
    return Image.fromarray(a, mode)


@pytest.mark.parametrize("img, stroke, elsewhere", [
    (_drawing(255, 255), 255, 0),  # white ink on transparent: the alpha is the drawing
    (_drawing((255, 0, 0), 255), 76, 255),  # a dark (red) ink: on white
    (_drawing(0, 255), 0, 255),  # black ink on transparent: on white, as before
    (_drawing(255, 200, "LA"), 200, 0),
    (_drawing(0, 200, "LA"), 55, 255),
])
def test_ink_in_the_alpha_is_laid_on_a_contrasting_background(img, stroke, elsewhere):
    t = convert_image(img, None, 1)[0]
    assert t[5, 5].item() == stroke and t[0, 0].item() == elsewhere


def test_transparent_picture_composited_over_white():
    a = np.zeros((12, 12, 4), np.uint8)
    a[..., 0] = np.arange(12) * 20  # colours vary: a picture, not an ink
    a[:, 6:, 3] = 255
    t = convert_image(Image.fromarray(a, "RGBA"), None, 3)
    assert t[:, 0, 0].tolist() == [255, 255, 255] and t[:, 0, 8].tolist() == [160, 0, 0]


def test_unsupported_mode_is_named_not_called_corrupt(tmp_path):
    path = _saved(tmp_path, "lab.tif", solid("LAB", (8, 8), (50, 0, 0)))
    with pytest.raises(DataFormatError, match=r"lab.tif: unsupported colour mode LAB: convert it to RGB"):
        load_image(path, 4)


def test_pixel_limit_is_ours(tmp_path, monkeypatch):
    path = _saved(tmp_path, "big.png", solid("L", (100, 60), 9))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse it, or warn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path, None).shape == (3, 60, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back
    monkeypatch.setattr(image_module, "MAX_PIXELS", 5999)
    with pytest.raises(DataFormatError, match=r"big.png: 100x60 pixels .* shrink it first"):
        load_image(path, 8)


# ---- geometry: the cover-crop box is always inside the image ---------------------------------

ZOO_SIZES = [(28, 28), (32, 32), (224, 224), (227, 227)]
MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "I", "I;16", "F"]


def _box_fits(width, height, size):
    left, top, right, bottom = cover_box(width, height, size)
    assert 0 <= left <= right <= width and 0 <= top <= bottom <= height
    h, w = size
    assert (right - left) * h == pytest.approx((bottom - top) * w, rel=1e-9)  # the output's aspect
    assert right - left == width or bottom - top == height  # the limiting side spans the image


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000), st.sampled_from(MODES), st.sampled_from(ZOO_SIZES),
       st.sampled_from([1, 3]))
def test_every_size_and_mode_gives_the_right_shape(width, height, mode, size, channels):
    _box_fits(width, height, size)
    t = convert_image(Image.new(mode, (width, height)), size, channels)
    assert t.shape == (channels, *size) and t.dtype == torch.uint8


def test_ten_thousand_random_sizes_are_accepted(tmp_path):
    rng = np.random.default_rng(2024)
    sizes = rng.integers(1, 4001, (10_000, 2))
    for i, (width, height) in enumerate(sizes.tolist()):
        _box_fits(width, height, ZOO_SIZES[i % 4])
    for width, height in sizes[:100].tolist():  # a sample through the whole conversion
        assert convert_image(Image.new("L", (width, height)), (28, 28), 1).shape == (1, 28, 28)
    for width, height in sizes[100:106].tolist():  # and through files
        path = _saved(tmp_path, f"{width}x{height}.jpg", Image.new("RGB", (width, height), (9, 99, 199)))
        assert load_image(path, (227, 227), 3).shape == (3, 227, 227)
