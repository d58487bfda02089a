"""Real-world images read the way the dataset was made, so a model trained on it sees its own kind.

A digit drawn in black on a white canvas, or photographed on paper, is not an MNIST digit: MNIST's
digits are light on black, size-normalised and centred. A model trained on them answers "0" to
the drawing. Each dataset made its images by a recipe; a *reading* repeats it on any input:

- **digits** (``digits``, ``mnist``). LeCun, Cortes & Burges, *The MNIST database*
  (http://yann.lecun.com/exdb/mnist/): "size normalized to fit in a 20x20 pixel box while
  preserving their aspect ratio", anti-aliased, then "centered in a 28x28 image by computing the
  center of mass of the pixels". :func:`read_digit`.
- **fashion** (``fashion-mnist``). Xiao, Rasul & Vollgraf 2017, *Fashion-MNIST*, arXiv:1708.07747,
  section 2: edges close to the corner colour trimmed, the longest edge resized to 28, the
  shortest extended to 28 with the image in the centre, intensities negated. :func:`read_fashion`.

Both first bring the picture to the dataset's terms (:func:`ink_of`): the polarity is found
(:func:`is_dark_on_light`; dark ink on light paper is turned light on black), the paper's uneven
light is divided out (a flat-field correction against an estimate of the bare paper), and the
ink is told from the paper by a threshold (Otsu's, with a floor). Grey levels of the strokes are
kept; only the paper goes to black. An image with no ink raises :class:`BlankImageError`.

An image at the dataset's own size (28x28) is taken as made already: with a dark border (the test
split itself, any MNIST-style array) it is left exactly as it is; otherwise only its polarity is
read. :func:`reading_for` maps a checkpoint's dataset to its reading; any other dataset (a folder
of images, CIFAR) has none and is read as it always was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import DataFormatError
from .image import Size, convert_image, exif_orientation, open_image, read_image

WORK_SIDE = 256  # images are read with their long side at most this: a 20-pixel box needs no more
DARK_BORDER = 32  # at the dataset's size, a border whose median is at most this is already read
MIN_CONTRAST = 8  # grey levels between the 1st and 99th percentile: less is a blank picture
INK_FLOOR = 0.15  # digits: ink darkens the paper by at least 15% (Otsu's threshold is never below);
#                   no blank page of tests/paper_digits.py (300, noise, JPEG, uneven light) passed it
PAPER = 0.08  # within 8% of the paper's light is paper: fashion's trim (Xiao et al.: 5%), the light's estimate
NOISE_FLOOR = 5.0  # fashion: the object differs from the paper by more than 5 robust standard deviations of its noise
DENOISE_FROM = 112  # pictures this large (4x the dataset's) are smoothed 3x3 before reading
SPECK = 5  # a pixel is ink only where a fifth of its SPECK x SPECK neighbourhood is ink too
MNIST_BOX = 20  # the box MNIST's digits were fitted into...
MNIST_CENTRE = 14.0  # ...and where their centre of mass lies: pixel (14, 14) (the 1,000 embedded
#                      test digits: mean 14.00, every one within half a pixel, MNIST shifted by whole pixels)


class BlankImageError(DataFormatError):
    """An image in which the reading found no ink: a blank page or canvas."""


# --------------------------------------------------------------------------------------------
# Steps: pixels in [0, 1] as float32 numpy arrays (H, W)


def _pool(a: torch.Tensor, k: int, op: str) -> torch.Tensor:
    """A k x k max or mean filter of a (N, 1, H, W) tensor, separably; borders use the pixels
    that exist."""
    k = max(1, k | 1)
    for size, pad in (((1, k), (0, k // 2)), ((k, 1), (k // 2, 0))):
        if op == "max":
            a = F.max_pool2d(a, size, 1, pad)
        else:
            a = F.avg_pool2d(a, size, 1, pad, count_include_pad=False)
    return a


def _filter(a: np.ndarray, k: int, *ops: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    for op in ops:
        t = _pool(t, k, op)
    return t[0, 0].numpy()


def border(a: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of the outer ring of ``a``, ``width`` pixels deep."""
    w = max(1, min(width, min(a.shape) // 2))
    return np.concatenate([a[:w].ravel(), a[-w:].ravel(), a[w:-w, :w].ravel(), a[w:-w, -w:].ravel()])


def _ring(a: np.ndarray) -> int:
    return max(2, round(0.04 * min(a.shape)))  # the border ring: 4% of the short side


def _sigma(values: np.ndarray) -> float:
    """A robust standard deviation: 1.4826 median absolute deviations."""
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def border_background(paper: np.ndarray) -> np.ndarray:
    """The light over the page: a quadratic surface (gradients, vignettes) fitted by least squares
    to the border ring, three times, each time without the pixels more than three robust
    standard deviations off the fit (ink, or an object where it reaches the edge)."""
    h, w = paper.shape
    y, x = np.ogrid[0:h, 0:w]
    y, x = y / max(h - 1, 1) - 0.5, x / max(w - 1, 1) - 0.5
    r = _ring(paper)
    ring = np.zeros((h, w), bool)
    ring[:r], ring[-r:], ring[:, :r], ring[:, -r:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    terms = np.stack([np.ones(len(ys)), x[0, xs], y[ys, 0], x[0, xs] ** 2, x[0, xs] * y[ys, 0], y[ys, 0] ** 2], 1)
    values = paper[ys, xs].astype(np.float64)
    keep = np.ones(len(values), bool)
    for _ in range(3):
        a = terms[keep]
        coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(6), a.T @ values[keep])
        resid = values - terms @ coef
        keep = np.abs(resid) <= 3 * _sigma(resid[keep]) + 1e-3
    c = coef.astype(np.float32)
    return (c[0] + c[1] * x + c[2] * y + c[3] * x * x + c[4] * x * y + c[5] * y * y).astype(np.float32)


def is_dark_on_light(gray: np.ndarray, light: np.ndarray | None = None) -> bool:
    """Whether ``gray`` (uint8, or floats in [0, 1]) is dark ink on light paper. Light on dark
    needs both a dark border (its median below mid-grey) and, off the light over the page
    (``light``, by default :func:`border_background`), light outliers that outweigh the dark ones
    (counted beyond four robust standard deviations of the border: the paper's own noise). A
    blank page, with neither, is paper: light."""
    g = gray.astype(np.float32) / (255 if gray.dtype == np.uint8 else 1)
    ring = _ring(g)
    if np.median(border(g, ring)) >= 0.5:
        return True
    off = g - (border_background(g) if light is None else light)
    noise = 4 * _sigma(border(off, ring)) + 1e-3
    return float(np.clip(off - noise, 0, None).sum()) <= float(np.clip(-off - noise, 0, None).sum())


def paper_light(paper: np.ndarray, light: np.ndarray) -> np.ndarray:
    """The light on the bare paper, under the ink too: ``light`` (the surface of
    :func:`border_background`) corrected, twice, by what the paper shows of it. The page divided
    by the light is averaged over the paper alone (pixels more than two from anything
    :data:`PAPER` darker) in windows a quarter of the image wide, at a quarter of its
    size; where a window holds little paper (under a large object) the surface stands
    (normalised convolution: Knutsson & Westin 1993, CVPR). It follows vignettes, gradients and
    shadows that a quadratic does not, and never the ink's own darkness."""
    k = max(3, max(paper.shape) // 16)
    for _ in range(2):
        ratio = paper / np.maximum(light, 0.05)
        bare = (_filter((ratio < 1 - PAPER).astype(np.float32), SPECK, "max") == 0).astype(np.float32)
        small = F.avg_pool2d(torch.from_numpy(np.stack([ratio * bare, bare]))[:, None], 4, 4, ceil_mode=True)
        sums = F.interpolate(_pool(small, k, "mean"), size=paper.shape, mode="bilinear", align_corners=False)
        light = light * (sums[0, 0].numpy() + 0.05) / (sums[1, 0].numpy() + 0.05)  # 5% paper: half the surface
    return light


def ink_of(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(ink, noise): how much darker than the bare paper each pixel is, as a fraction of the
    paper (1 is black ink, 0 paper), and the robust standard deviation of that on the border.

    A picture of :data:`DENOISE_FROM` px or more is smoothed by a 3x3 mean filter (sensor and
    JPEG noise; a smaller one has no detail to spare); light-on-dark pictures are inverted
    (:func:`is_dark_on_light`), so the ink is always the dark part; the paper is
    :func:`paper_light`. Dividing by it rather than subtracting it is right for light, which
    multiplies.
    """
    lo, hi = np.percentile(gray, [1, 99])
    if hi - lo < MIN_CONTRAST:
        raise BlankImageError("no ink found")
    paper = gray.astype(np.float32) / 255
    if max(gray.shape) >= DENOISE_FROM:
        paper = _filter(paper, 3, "mean")
    light = border_background(paper)
    if not is_dark_on_light(paper, light):
        paper, light = 1 - paper, 1 - light
    ink = np.clip(1 - paper / np.maximum(paper_light(paper, light), 0.05), 0, 1)
    return ink, _sigma(border(ink, _ring(ink)))


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (1979) of values in [0, 1]: the level that best splits them in two, by the
    between-class variance."""
    hist, edges = np.histogram(values, bins=bins, range=(0, 1))
    p = hist / max(hist.sum(), 1)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * mids)
    between = (m0[-1] * w0 - m0) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return float(edges[int(np.argmax(between[:-1])) + 1])


def ink_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the ink in ``mask``, specks left out (a pixel counts where
    at least a fifth of its :data:`SPECK` x :data:`SPECK` neighbourhood is ink); raises
    :class:`BlankImageError` where there is none."""
    solid = mask & (_filter(mask.astype(np.float32), SPECK, "mean") >= 0.2)
    rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
    if not len(rows):
        raise BlankImageError("no ink found")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def fit_box(a: np.ndarray, side: int) -> np.ndarray:
    """``a`` resized so its longer side is ``side``, the aspect ratio kept (the shorter side
    rounded, at least 1), anti-aliased as MNIST's digits were."""
    h, w = a.shape
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)[0, 0].clamp(0, 1).numpy()


def place(a: np.ndarray, size: Size, top: int, left: int) -> np.ndarray:
    """``a`` pasted at (top, left) on a black ``size`` canvas; what falls outside is cut."""
    out = np.zeros(size, np.float32)
    h, w = a.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, size[0]), min(left + w, size[1])
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = a[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    """(row, column) of the intensity-weighted centre of ``a``."""
    total = max(float(a.sum()), 1e-12)
    return (float(a.sum(1) @ np.arange(a.shape[0])) / total, float(a.sum(0) @ np.arange(a.shape[1])) / total)


def to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# The readings: grey uint8 (H, W) of any size -> uint8 (28, 28), light on black


def read_digit(gray: np.ndarray, size: Size = (28, 28)) -> np.ndarray:
    """A digit as MNIST made its digits: ink found (:func:`ink_of`, Otsu's threshold with a
    floor), cropped to, fitted into a 20x20 box keeping its aspect ratio (anti-aliased), and
    placed in 28x28 so that its centre of mass falls on pixel (14, 14) (whole-pixel shifts)."""
    ink, _ = ink_of(gray)
    threshold = max(otsu(ink), INK_FLOOR)
    mask = ink > threshold
    top, bottom, left, right = ink_box(mask)
    # Grey levels kept: the paper goes to 0, the stroke ramps up to full ink at its middle
    # (the median darkness of the ink), so the edges stay anti-aliased.
    full = max(float(np.median(ink[mask])), threshold + 1e-3)
    strokes = np.clip((ink[top:bottom, left:right] - threshold) / (full - threshold), 0, 1)
    box = fit_box(strokes, round(MNIST_BOX * size[0] / 28))
    box /= max(float(box.max()), 1e-6)  # MNIST's brightest pixel is 254 or 255 in every digit
    cy, cx = centre_of_mass(box)
    centre = MNIST_CENTRE * size[0] / 28
    return to_uint8(place(box, size, round(centre - cy), round(centre - cx)))


def read_fashion(gray: np.ndarray, size: Size = (28, 28)) -> np.ndarray:
    """A product photo as Fashion-MNIST made its images: the paper's light divided out
    (:func:`ink_of`), trimmed to what differs from the paper, the longer side fitted to 28 and
    centred, negated (the object light on black), its brightest pixel at 255. The object's own
    shading is kept. Xiao et al. also sharpened the result; that is left out."""
    ink, noise = ink_of(gray)
    threshold = max(PAPER, NOISE_FLOOR * noise)
    top, bottom, left, right = ink_box(ink > threshold)
    thing = np.clip((ink[top:bottom, left:right] - threshold) / (1 - threshold), 0, 1)
    box = fit_box(thing, size[0])
    box /= max(float(box.max()), 1e-6)  # Fashion-MNIST's brightest pixel is 254 or 255 in every image
    return to_uint8(place(box, size, (size[0] - box.shape[0]) // 2, (size[1] - box.shape[1]) // 2))


# --------------------------------------------------------------------------------------------
# A reading applied to files, PIL images and batches


def work_size(height: int, width: int) -> Size:
    """The size an image is read at: its own, shrunk so its long side is at most WORK_SIDE."""
    scale = min(1.0, WORK_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _size_of(img: Image.Image) -> Size:
    """:func:`work_size` of a picture as it is shown (after its EXIF orientation)."""
    w, h = img.size
    return work_size(*((w, h) if exif_orientation(img) in (5, 6, 7, 8) else (h, w)))


def _blank(where: str) -> BlankImageError:
    return BlankImageError(f"no ink found in {where}: the image is blank")


@dataclass(frozen=True)
class Reading:
    """How one dataset made its images: ``read`` turns a grey picture into one of them."""

    name: str
    read: Callable[[np.ndarray, Size], np.ndarray]
    size: Size = (28, 28)

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """uint8 (H, W) to uint8 ``size``. At the dataset's own size an image is taken as made
        already: one with a dark border (the test split) is returned as it is, and only dark ink
        on light paper is inverted."""
        if gray.shape != self.size:
            return self.read(gray, self.size)
        if np.median(border(gray)) <= DARK_BORDER or not is_dark_on_light(gray):
            return gray
        return 255 - gray

    def _out(self, gray: np.ndarray, channels: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self(gray)))[None].expand(channels, -1, -1).contiguous()

    def file(self, path: str | os.PathLike, channels: int = 1) -> torch.Tensor:
        """An image file read: uint8 (channels, H, W). The file is decoded at :func:`work_size`
        (a large picture is shrunk while read) by the one reader training uses."""
        path = Path(path)
        size = self.size  # a file whose header does not read: read_image says what is wrong with it
        if path.is_file():
            try:
                with open_image(path) as img:
                    size = _size_of(img)
            except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
                pass
        gray = read_image(path, size, 1)[0].numpy()
        try:
            return self._out(gray, channels)
        except BlankImageError:
            raise _blank(str(path)) from None

    def picture(self, img: Image.Image, channels: int = 1) -> torch.Tensor:
        """A PIL image read: uint8 (channels, H, W)."""
        try:
            return self._out(convert_image(img, _size_of(img), 1)[0].numpy(), channels)
        except BlankImageError:
            raise _blank("the image") from None

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """A grey uint8 batch (N, 1, H, W) read: (N, 1, *size)."""
        n = len(images)
        out = torch.empty((n, 1, *self.size), dtype=torch.uint8)
        for i, g in enumerate(images[:, 0].numpy()):
            if max(g.shape) > WORK_SIDE:  # shrunk as an image file of this size would be
                g = convert_image(Image.fromarray(g), work_size(*g.shape), 1)[0].numpy()
            try:
                out[i] = self._out(g, 1)
            except BlankImageError:
                raise _blank("the image" if n == 1 else f"image {i} of the batch") from None
        return out


DIGIT_READING = Reading("digits", read_digit)
FASHION_READING = Reading("fashion", read_fashion)
# A checkpoint's "dataset" -> how its images were made. Every other dataset has no reading.
READINGS: dict[str, Reading] = {"digits": DIGIT_READING, "mnist": DIGIT_READING, "fashion-mnist": FASHION_READING}


def reading_for(dataset: str | None) -> Reading | None:
    """The reading of a checkpoint's dataset (its metadata's ``"dataset"``), or None."""
    return READINGS.get(dataset or "")
