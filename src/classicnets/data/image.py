"""One image, from a file or a PIL image, as a uint8 tensor: the conversion training and
prediction share (:func:`convert_image`, :func:`load_image`).

Whatever the mode, an image becomes 8-bit grayscale or RGB:

- 16-bit and 32-bit integer and float pixels are scaled by the range their values show: float
  in [0, 1] times 255; integers within 0-255 as they are; within 0-65535 (and every ``I;16``
  image) divided by 257; anything else stretched from its minimum to its maximum.
- Transparency: where the visible pixels are one colour and only the alpha varies, the alpha is
  the drawing (a white digit on a transparent background) and is laid on the background that
  contrasts with that colour; any other picture is composited over white, as a viewer shows it.
- CIELAB and other modes Pillow cannot turn into RGB are refused by name.

Large images are shrunk as early as possible: a JPEG is decoded at 1/2, 1/4 or 1/8 scale
(``Image.draft``), and any image is box-reduced a band of rows at a time, before any float
conversion, to no less than twice the output size; one antialiased bilinear resampling then
scales it to cover the output size and crops the centre. Peak memory stays near the decoded
image. Files of more than :data:`MAX_PIXELS` pixels are refused before decoding.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataFormatError

MAX_PIXELS = 2**28  # 268 megapixels, e.g. 16384 x 16384: the largest image classicnets decodes
ALPHA_BACKGROUND = 255  # the background of transparent pictures: white, as an image viewer shows them
READABLE = "PNG, JPEG, BMP, GIF, TIFF, WebP or PNM"
_BAND_PIXELS = 1 << 20  # source pixels converted at a time while shrinking (4 MB of RGBA or I)
_INK_ALPHA_SPREAD = 64  # alpha varying by at least this much (of 255) may carry the drawing...
_INK_COLOUR_SPREAD = 12.0  # ...when the most opaque pixels' colour varies by less than this
_PROBE_PIXELS = 1 << 20  # pixels enough to decide that
_LUMA = np.array([0.299, 0.587, 0.114])
_TO_8BIT = {"1": "L", "L": "L", "LA": "LA", "La": "LA", "RGB": "RGB", "RGBA": "RGBA", "RGBa": "RGBA",
            "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "HSV": "RGB", "P": "RGB", "PA": "RGBA"}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
_PILLOW_LIMIT = threading.Lock()

Size = tuple[int, int]


def check_args(size, channels) -> Size | None:
    """``size`` as (H, W) (or None), after checking it and ``channels``."""
    if channels not in (1, 3):
        raise DataFormatError(f"channels={channels!r}: expected 1 (grayscale) or 3 (RGB)")
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise DataFormatError(f"size={size!r}: expected (height, width), two positive integers")
    return (int(size[0]), int(size[1]))


# --------------------------------------------------------------------------------------------
# Geometry


def cover_box(width: int, height: int, size: Size) -> tuple[float, float, float, float]:
    """(left, top, right, bottom): the centred part of a ``width`` x ``height`` image that fills
    ``size`` = (H, W) once scaled to cover it. Always inside the image: the side that limits
    the scale spans the image exactly (decided in integers, so float rounding cannot push an
    edge outside)."""
    h, w = size
    if w * height >= h * width:  # the width limits: the box is the full width
        box_w, box_h = float(width), min(float(height), width * h / w)
    else:
        box_w, box_h = min(float(width), height * w / h), float(height)
    left, top = max(0.0, (width - box_w) / 2), max(0.0, (height - box_h) / 2)
    return left, top, min(float(width), left + box_w), min(float(height), top + box_h)


def shrink_factor(height: int, width: int, size: Size | None) -> int:
    """The integer factor an image can be reduced by and still have twice the pixels that
    covering ``size`` needs (1: no reduction)."""
    if size is None:
        return 1
    h, w = size
    return max(1, min(height // (2 * h), width // (2 * w)))


# --------------------------------------------------------------------------------------------
# Pixels


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1, as stored, when absent or unreadable)."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return 1  # unreadable EXIF: the pixels are still good, keep them as stored


def _intensity_scale(mode: str, lo: float, hi: float) -> tuple[float, float]:
    """(offset, full scale) of one-band integer or float pixels: value -> (value - offset) / full * 255."""
    if mode.startswith("I;16"):
        return 0.0, 65535.0
    if lo >= 0:
        for full in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
            if hi <= full:
                return 0.0, full
    return float(lo), max(float(hi) - float(lo), 1e-12)


def _reducible(img: Image.Image):
    """A function that turns a band of ``img`` into a mode Pillow reduces: 8-bit L, LA, RGB or
    RGBA, or 32-bit I or F (scaled to 8 bits once reduced, :func:`_deep_to_8bit`)."""
    mode = img.mode
    if mode.startswith("I;16"):
        return lambda band: band.convert("I")
    if mode in ("I", "F"):
        return lambda band: band
    target = _TO_8BIT.get(mode)
    if target is None:
        raise DataFormatError(f"unsupported colour mode {mode}: convert it to RGB (or grayscale) first")
    if target in ("L", "RGB") and ("transparency" in img.info or getattr(img.palette, "mode", "") == "RGBA"):
        target = "RGBA"
    return lambda band: band if band.mode == target else band.convert(target)


def _reduce(img: Image.Image, convert, factor: int) -> Image.Image:
    """``convert(img)`` box-reduced by ``factor`` a band of rows at a time (so no full-size
    copy is made), after a centred crop to a multiple of ``factor``."""
    if factor == 1:
        return convert(img)
    width, height = img.width // factor, img.height // factor
    x0, y0 = (img.width - width * factor) // 2, (img.height - height * factor) // 2
    rows = max(1, _BAND_PIXELS // (img.width * factor))
    out = None
    for r in range(0, height, rows):
        n = min(rows, height - r)
        small = convert(img.crop((x0, y0 + r * factor, x0 + width * factor, y0 + (r + n) * factor))).reduce(factor)
        if out is None:
            out = Image.new(small.mode, (width, height))
        out.paste(small, (0, r))
    return out


def _deep_to_8bit(small: Image.Image, mode: str, lo: float, hi: float) -> Image.Image:
    """Reduced I or F pixels of a ``mode`` image whose values span ``lo``..``hi``, as 8-bit L."""
    a = np.asarray(small, dtype=np.float64)
    if not (math.isfinite(lo) and math.isfinite(hi) and np.isfinite(a).all()):
        raise DataFormatError("float pixels include NaN or infinity")
    offset, full = _intensity_scale(mode, lo, hi)
    return Image.fromarray(np.clip(np.rint((a - offset) * (255.0 / full)), 0, 255).astype(np.uint8), "L")


def _to_8bit(img: Image.Image, factor: int) -> Image.Image:
    """``img`` reduced by ``factor`` (before any float conversion) in 8 bits: L, LA, RGB or RGBA."""
    mode = img.mode
    convert = _reducible(img)
    if not (mode.startswith("I") or mode == "F"):
        return _reduce(img, convert, factor)
    lo, hi = (0, 65535) if mode.startswith("I;16") else img.getextrema()
    return _deep_to_8bit(_reduce(img, convert, factor), mode, lo, hi)


def _background(img: Image.Image) -> int:
    """The gray level an 8-bit LA or RGBA image implies under its transparent pixels: where the
    most opaque pixels are one colour and the alpha varies, the alpha is the drawing, laid on
    black if that colour is light and on white if dark; any other picture on white."""
    probe = img
    if img.width * img.height > _PROBE_PIXELS:  # decide from a sample of a large image
        k = math.ceil(math.sqrt(img.width * img.height / _PROBE_PIXELS))
        probe = img.resize((max(1, img.width // k), max(1, img.height // k)), Image.Resampling.NEAREST)
    a = np.asarray(probe, dtype=np.float64)
    colour, alpha = a[..., :-1], a[..., -1]
    if alpha.max() - alpha.min() >= _INK_ALPHA_SPREAD:
        ink = colour[alpha >= 0.75 * alpha.max()]  # the most opaque pixels
        if ink.std(0).max() <= _INK_COLOUR_SPREAD:
            tone = ink.mean(0) @ (_LUMA if ink.shape[1] == 3 else np.ones(1))
            return 0 if tone >= 128 else 255
    return ALPHA_BACKGROUND


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """An 8-bit LA or RGBA image without its alpha: composited over :func:`_background`."""
    mode = img.mode[:-1]
    out = Image.new(mode, img.size, (_background(img),) * len(mode))
    out.paste(img, (0, 0), img)  # the alpha as the mask: out = colour * alpha + background * (1 - alpha)
    return out


def convert_image(img: Image.Image, size: Size | int | None = None, channels: int = 3) -> torch.Tensor:
    """A PIL image as a uint8 tensor (channels, H, W): grayscale or RGB, covering ``size``.

    - EXIF orientation is applied (photos from phones are stored sideways).
    - Deep pixels are scaled by their range, transparency flattened, as the module says.
    - Grayscale uses ITU-R 601-2 luma (Pillow's ``L``); CMYK, YCbCr and HSV go through RGB.
    - With ``size=(H, W)`` the image is scaled so it covers H x W, then centre-cropped: a box
      reduction to no less than twice the output, then one bilinear antialiased resampling;
      ``size=None`` keeps the image's own size.
    """
    size = check_args(size, channels)
    orientation = exif_orientation(img)
    height, width = (img.width, img.height) if orientation in (5, 6, 7, 8) else (img.height, img.width)
    img = _to_8bit(img, shrink_factor(height, width, size))
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    if img.mode in ("LA", "RGBA"):
        img = _flatten_alpha(img)
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=cover_box(img.width, img.height, size))
    a = np.array(img, dtype=np.uint8)  # a copy, so the tensor owns writable memory
    t = torch.from_numpy(a)
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# Files


def open_image(path: Path) -> Image.Image:
    """``Image.open`` without Pillow's decompression-bomb check (a warning above 89 megapixels,
    an error above 179): :func:`read_image` applies :data:`MAX_PIXELS` with its own message."""
    with _PILLOW_LIMIT:  # one thread at a time changes the limit, and always puts it back
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_file(path: Path) -> None:
    """A regular file (or a link to one); anything else is named for what it is, never opened
    (a named pipe would block)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise _file_error(path, e) from None
    if stat.S_ISDIR(mode):
        raise DataFormatError(f"{path}: cannot open (Is a directory); expected an image file")
    if not stat.S_ISREG(mode):
        raise DataFormatError(f"{path}: not a regular file (a device, pipe or socket); expected an image file")


def _file_error(path: Path, e: OSError) -> DataFormatError:
    """What an operating-system error opening ``path`` really means."""
    if e.errno == errno.ELOOP:
        return DataFormatError(f"{path}: symlink loop at {path} (the link never reaches a file)")
    if e.errno == errno.ENOENT:
        if os.path.islink(path):
            return DataFormatError(f"{path}: broken symlink (points to {os.readlink(path)}, which does not exist)")
        return DataFormatError(f"{path}: no such file (expected an image)")
    return DataFormatError(f"{path}: cannot open ({e.strerror}); expected an image file")


def _draft(img: Image.Image, size: Size) -> None:
    """Let libjpeg decode a large JPEG at 1/2, 1/4 or 1/8 scale, keeping twice the pixels
    needed: a 12 MP photo becomes a 32x32 input several times faster, with no visible change."""
    factor = shrink_factor(img.height, img.width, size)  # square, so the EXIF orientation does not matter
    if factor > 1:
        img.draft(img.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))


def read_image(path: Path, size: Size | None, channels: int) -> torch.Tensor:
    """Decode ``path`` and convert it; every failure is a :class:`DataFormatError` naming the file
    and what is wrong. Only a failure to decode is called truncated or corrupt."""
    _check_file(path)
    try:
        img = open_image(path)
    except UnidentifiedImageError:
        raise DataFormatError(f"{path}: not an image file that can be read; expected {READABLE}") from None
    except OSError as e:
        if e.errno is not None:
            raise _file_error(path, e) from None
        raise DataFormatError(f"{path}: truncated or corrupt image ({e})") from None
    except (SyntaxError, ValueError, EOFError) as e:
        raise DataFormatError(f"{path}: truncated or corrupt image ({e})") from None
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise DataFormatError(f"{path}: {w}x{h} pixels ({w * h / 1e6:.0f} megapixels) is more than the "
                                  f"{MAX_PIXELS / 1e6:.0f} megapixels classicnets reads (16384x16384); "
                                  f"shrink it first")
        try:
            if size is not None and img.format == "JPEG":
                _draft(img, size)
            img.load()
        except MemoryError:
            raise DataFormatError(f"{path}: not enough memory to decode its {w}x{h} pixels") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise DataFormatError(f"{path}: truncated or corrupt image ({e})") from None
        try:
            return convert_image(img, size, channels)
        except DataFormatError as e:
            raise DataFormatError(f"{path}: {e}") from None
        except (OSError, ValueError) as e:  # the pixels decoded; Pillow could not convert them
            raise DataFormatError(f"{path}: cannot convert its {img.mode} pixels ({e})") from None


def load_image(path: str | os.PathLike, size: Size | int | None = None, channels: int = 3) -> torch.Tensor:
    """Read one image file as uint8 (channels, H, W), converted as in training (:func:`convert_image`)."""
    size = check_args(size, channels)
    return read_image(Path(path), size, channels)
