"""Digits as people give them to a model: MNIST's own test digits written on paper and
photographed, and digits drawn with a mouse on a white canvas. Used by tests/test_reading.py and
benchmarks/bench_real_digits.py; everything is deterministic from a seed.

* :func:`paper_digit`: one embedded test digit as a photo of a page: a page of 160-640 px a side,
  the digit 25-90% of the page's shorter side, off-centre, turned up to 10 degrees either way,
  dark ink (black, grey or blue) on light paper, blurred, lit unevenly (a gradient or a
  vignette), with sensor noise, saved as PNG or JPEG (quality 60-95), a third of them in colour.
* :func:`product_photo`: a Fashion-MNIST item as a photo of the product lying on paper.
* :func:`canvas_digit`: a digit drawn as a paint program or an HTML canvas draws it: black
  strokes 18 px wide with round caps and joints on a white 280 x 280 canvas.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from classicnets.data.sources import load_split

CANVAS = 280
PEN = 18


def embedded_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """The embedded test split: uint8 (1000, 28, 28) white on black, and the labels."""
    data = load_split("digits", None, "test", size=(28, 28), channels=1)
    return data.images[:, 0].numpy(), data.labels.numpy()


def _ink_shape(digit: np.ndarray, side: int, angle: float) -> np.ndarray:
    """The digit's ink (0-1) with its longer side ``side`` px, turned by ``angle`` degrees: MNIST's
    anti-aliased strokes enlarged smoothly, then sharpened back to a pen's edge."""
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    crop = Image.fromarray(digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    scale = side / max(crop.size)
    big = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.BICUBIC)
    big = big.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    a = np.asarray(big, np.float32) / 255
    return np.clip((a - 0.3) / 0.3, 0, 1)  # a pen's edge: the smooth enlargement made crisp


def _light(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Uneven light on the page, 0.55-1: a gradient from a random side, or a lens's vignette
    centred near the middle."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / h - 0.5, x / w - 0.5
    strength = rng.uniform(0.1, 0.45)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * math.pi)
        ramp = (x * math.cos(a) + y * math.sin(a)) / math.sqrt(0.5) + 0.5  # 0..1 across the page
        return 1 - strength * np.clip(ramp, 0, 1)
    cy, cx = rng.uniform(-0.2, 0.2, 2)
    r2 = (x - cx) ** 2 + (y - cy) ** 2
    f2 = r2.max() / ((1 - strength) ** -0.5 - 1)  # a lens's cos^4 fall-off: the far corner at 1 - strength
    return 1 / (1 + r2 / f2) ** 2


def paper_digit(digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One digit (uint8 28x28, white on black) as a photographed page, and how it was made."""
    h, w = (int(v) for v in rng.integers(160, 641, 2))
    side = round(rng.uniform(0.25, 0.9) * min(h, w))
    angle = float(rng.uniform(-10, 10))
    ink = _ink_shape(digit, side, angle)
    ih, iw = ink.shape
    if ih > h or iw > w:  # turned, it no longer fits: shrink it back onto the page
        k = min(h / ih, w / iw)
        ink = np.asarray(Image.fromarray(ink).resize((max(1, int(iw * k)), max(1, int(ih * k)))), np.float32)
        ih, iw = ink.shape
    top, left = int(rng.integers(0, h - ih + 1)), int(rng.integers(0, w - iw + 1))
    alpha = np.zeros((h, w), np.float32)
    alpha[top:top + ih, left:left + iw] = ink
    colour = rng.random() < 1 / 3
    paper = rng.uniform(185, 250) + (rng.uniform(-12, 12, 3) if colour else np.zeros(3))  # white, cream, grey...
    pen = {0: np.full(3, rng.uniform(0, 40)), 1: np.full(3, rng.uniform(40, 90)),
           2: np.array([rng.uniform(10, 40), rng.uniform(20, 50), rng.uniform(90, 150)])}[int(rng.integers(3))]
    if not colour:
        pen = np.full(3, pen @ [0.299, 0.587, 0.114])
    page = paper * (1 - alpha[..., None]) + pen * alpha[..., None]
    page *= _light(h, w, rng)[..., None]
    blur = rng.uniform(0.3, 1.5) * max(h, w) / 320
    img = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(1, 8), (h, w, 1))
    img = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    if not colour:
        img = img.convert("L")
    how = {"page": [h, w], "digit": side, "angle": round(angle, 1), "colour": colour, "blur": round(blur, 2),
           "format": "JPEG" if rng.random() < 0.5 else "PNG", "quality": int(rng.integers(60, 96))}
    return img, how


def save(img: Image.Image, out: Path, stem: str, how: dict) -> Path:
    """``img`` written as ``how`` says (PNG, or JPEG at its quality) as ``out/stem.png|jpg``."""
    path = out / f"{stem}.{'jpg' if how['format'] == 'JPEG' else 'png'}"
    img.save(path, quality=how["quality"]) if how["format"] == "JPEG" else img.save(path)
    return path


def paper_digits(out: Path, n: int | None = None, seed: int = 0) -> list[tuple[Path, int, dict]]:
    """The first ``n`` embedded test digits (all 1,000 by default) written into ``out`` as pages:
    [(file, label, how it was made)], deterministic from ``seed``."""
    images, labels = embedded_test_digits()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(len(images) if n is None else n):
        img, how = paper_digit(images[i], rng)
        files.append((save(img, out, f"{i:04d}-{labels[i]}", how), int(labels[i]), how))
    return files


def product_photo(item: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A Fashion-MNIST item (uint8 28x28, light on black: the negated product photo) as a photo
    of the product on paper: its negative enlarged to 100-400 px on a page with margins, lit
    unevenly, blurred, with noise, saved as PNG or JPEG."""
    side = int(rng.integers(100, 401))
    thing = np.asarray(Image.fromarray(255 - item).resize((side, side), Image.Resampling.BICUBIC), np.float32)
    h, w = side + int(rng.integers(20, 240)), side + int(rng.integers(20, 240))
    top, left = int(rng.integers(10, h - side - 9)), int(rng.integers(10, w - side - 9))
    paper = rng.uniform(200, 250)
    page = np.full((h, w), paper, np.float32)
    page[top:top + side, left:left + side] = thing * paper / 255
    page *= _light(h, w, rng)
    blur = ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))
    img = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).filter(blur)
    noisy = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(1, 6), (h, w))
    how = {"page": [h, w], "item": side, "format": "JPEG" if rng.random() < 0.5 else "PNG",
           "quality": int(rng.integers(70, 96))}
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8)), how


# ---- drawn on a canvas ------------------------------------------------------------------------


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int = 24) -> list[tuple]:
    """Points along an ellipse from ``start`` to ``stop`` degrees (0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(start, stop, n)]


# Each digit as the strokes a hand draws it, in canvas pixels (280 x 280).
STROKES: dict[int, list[list[tuple]]] = {
    0: [_arc(140, 140, 62, 95, -90, 270, 48)],
    1: [[(128, 58), (150, 40), (150, 240)]],
    2: [_arc(140, 95, 55, 50, 200, 360) + _arc(140, 95, 55, 50, 0, 60, 8) + [(85, 230), (205, 230)]],
    3: [_arc(135, 90, 55, 45, 210, 450) + _arc(135, 180, 62, 52, -90, 150)],
    4: [[(165, 45), (75, 170), (215, 170)], [(170, 95), (170, 240)]],
    5: [[(200, 45), (100, 45), (92, 125)] + _arc(140, 170, 65, 62, 230, 495)],
    6: [_arc(150, 110, 70, 75, 235, 180) + _arc(140, 180, 58, 52, 180, 540)],
    7: [[(75, 50), (205, 50), (120, 240)]],
    8: [_arc(140, 90, 48, 45, 90, 450) + _arc(140, 182, 58, 52, -90, 270)],
    9: [_arc(138, 95, 55, 50, 0, 360) + [(193, 95), (180, 240)]],
}


def canvas_digit(d: int) -> Image.Image:
    """Digit ``d`` drawn in black, :data:`PEN` px wide with round caps and joints (an ellipse at
    every point, as paint programs draw a stroke), on a white :data:`CANVAS`-px canvas."""
    img = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(img)
    r = PEN / 2
    for stroke in STROKES[d]:
        draw.line(stroke, fill=0, width=PEN)
        for x, y in stroke:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return img
