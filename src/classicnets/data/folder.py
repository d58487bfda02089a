"""A folder of images, one sub-folder per class: ``root/<class>/<any/depth>/<image>``.

Class names are the sorted sub-folder names (label = index). Every image, whatever its mode
(L, RGB, RGBA, P, CMYK, 16-bit...), goes through :func:`convert_image`: to grayscale or RGB,
then scaled so it covers ``size`` and centre-cropped to it (bilinear, antialiased). Training
and prediction both use this one function, so a model sees its inputs the way it was trained.

Small folders load whole into an :class:`ImageSet` (:func:`load_image_folder`); folders too
big for memory are read image by image from disk with :class:`ImageFolderStream`.
:func:`estimate_bytes` tells which one fits.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import DataFormatError
from .imageset import ImageSet, channel_stats, check_memory

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})  # lower case
ALPHA_BACKGROUND = 255  # transparent pixels become white, as an image viewer shows them
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}

Size = tuple[int, int]


def _check_args(size, channels) -> Size | None:
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
# One image


def convert_image(img: Image.Image, size: Size | int | None = None, channels: int = 3) -> torch.Tensor:
    """A PIL image as a uint8 tensor (channels, H, W): grayscale or RGB, covering ``size``.

    - EXIF orientation is applied (photos from phones are stored sideways).
    - 16-bit images are scaled to 8 bits (value / 257), not clipped.
    - Transparency is composited over white (:data:`ALPHA_BACKGROUND`).
    - Grayscale uses ITU-R 601-2 luma (Pillow's ``L``); CMYK goes through Pillow's RGB conversion.
    - With ``size=(H, W)`` the image is scaled so it covers H x W (shorter side first), then
      centre-cropped, in one bilinear resampling step that is antialiased when shrinking;
      ``size=None`` keeps the image's own size.
    """
    size = _check_args(size, channels)
    try:
        img = ImageOps.exif_transpose(img) or img
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        pass  # unreadable EXIF: the pixels are still good, keep them as stored
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(img).astype(np.int64)
        img = Image.fromarray(((np.clip(a, 0, 65535) + 128) // 257).astype(np.uint8), "L")
    elif mode == "F":
        img = Image.fromarray(np.clip(np.rint(np.asarray(img)), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (ALPHA_BACKGROUND,) * 3 + (255,))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != size:
        img = _cover_crop(img, size)
    a = np.array(img, dtype=np.uint8)  # a copy, so the tensor owns writable memory
    t = torch.from_numpy(a)
    return t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1).contiguous()


def _cover_crop(img: Image.Image, size: Size) -> Image.Image:
    """Resize so the image covers ``size`` and crop the centre, as one resampling of a box."""
    h, w = size
    scale = max(h / img.height, w / img.width)
    box_w, box_h = w / scale, h / scale  # the part of the source that ends up in the output
    left, top = (img.width - box_w) / 2, (img.height - box_h) / 2
    return img.resize((w, h), Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h))


def _open(path: Path, size: Size | None, channels: int) -> torch.Tensor:
    try:
        with Image.open(path) as img:
            if size is not None and img.format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the image is far larger than
                # needed, keeping the shorter side at least twice the largest output side: a
                # 12 MP photo becomes a 32x32 input several times faster, with no visible change.
                short = min(img.size)
                need = 2 * max(size)
                if short > need:
                    img.draft(img.mode, (math.ceil(img.width * need / short),
                                         math.ceil(img.height * need / short)))
            img.load()
            return convert_image(img, size, channels)
    except FileNotFoundError:
        raise DataFormatError(f"{path}: no such file (expected an image)") from None
    except (IsADirectoryError, PermissionError) as e:
        raise DataFormatError(f"{path}: cannot open ({e.strerror}); expected an image file") from None
    except UnidentifiedImageError:
        raise DataFormatError(f"{path}: not an image file that can be read; expected PNG, JPEG, "
                              f"BMP, GIF or WebP") from None
    except Image.DecompressionBombError as e:
        raise DataFormatError(f"{path}: refused, too many pixels ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise DataFormatError(f"{path}: truncated or corrupt image ({e})") from None


def load_image(path: str | os.PathLike, size: Size | int | None = None, channels: int = 3) -> torch.Tensor:
    """Read one image file as uint8 (channels, H, W), converted as in training (:func:`convert_image`)."""
    size = _check_args(size, channels)
    return _open(Path(path), size, channels)


# --------------------------------------------------------------------------------------------
# A folder


def scan_image_folder(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of ``root/<class>/...``; hidden files and folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory; expected a folder with one sub-folder of "
                              f"images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataFormatError(f"{root}: no class folders; expected one sub-folder of images per "
                              f"class (e.g. {root}/cat/1.jpg, {root}/dog/2.jpg)")
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(Path(dirpath) / f for f in filenames
                         if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        found.sort()
        files.extend(found)
        labels.extend([label] * len(found))
    if not files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DataFormatError(f"{root}: no images in the class folders {', '.join(classes[:5])}"
                              f"{'...' if len(classes) > 5 else ''}; expected files ending in {exts}")
    return files, labels, classes


def _header_size(path: Path) -> Size:
    """(H, W) from the file header, as displayed (after EXIF rotation), without decoding pixels."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
        raise DataFormatError(f"{path}: not a readable image ({e})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def estimate_bytes(root: str | os.PathLike, size: Size | int | None = None, channels: int = 3) -> int:
    """Bytes :func:`load_image_folder` would hold for ``root``: images x channels x H x W.

    With ``size=None`` the first image's size stands for all. Compare with the free memory
    (:func:`classicnets.data.imageset.available_memory`) to choose between loading the folder
    and streaming it with :class:`ImageFolderStream`.
    """
    size = _check_args(size, channels)
    files, _, _ = scan_image_folder(root)
    h, w = size if size is not None else _header_size(files[0])
    return len(files) * channels * h * w


def load_image_folder(
    root: str | os.PathLike,
    size: Size | int | None = None,
    channels: int = 3,
    *,
    skip_bad: bool = False,
    name: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> ImageSet:
    """Load a class-per-folder tree into memory as an :class:`ImageSet`.

    ``size=(H, W)`` converts every image to that size; with ``size=None`` all images must
    already share one size. An unreadable or truncated image raises :class:`DataFormatError`
    naming the file, or with ``skip_bad=True`` is left out with a warning. mean/std are computed
    from the loaded images. Decoding runs on ``workers`` threads (Pillow releases the GIL).
    """
    size = _check_args(size, channels)
    root = Path(root)
    files, labels, classes = scan_image_folder(root)
    h, w = size if size is not None else _header_size(files[0])
    check_memory(len(files) * channels * h * w, f"{len(files)} images of {channels}x{h}x{w} from {root}")
    images = torch.empty((len(files), channels, h, w), dtype=torch.uint8)
    keep: list[int] = []

    def work(path: Path):
        try:
            return _open(path, size, channels)
        except DataFormatError as e:
            if not skip_bad:
                raise
            return e

    workers = workers or min(8, os.cpu_count() or 1)
    show = progress and sys.stderr.isatty()
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(files), desc=f"loading {root.name}", unit="img", disable=not show) as bar:
        for start in range(0, len(files), 1024):  # in slices, so pending results stay few
            chunk = files[start:start + 1024]
            for i, result in enumerate(pool.map(work, chunk), start):
                bar.update()
                if isinstance(result, DataFormatError):
                    warnings.warn(f"skipped {result}", stacklevel=2)
                    continue
                if result.shape[1:] != (h, w):
                    raise DataFormatError(f"{files[i]}: image is {result.shape[2]}x{result.shape[1]} "
                                          f"(W x H) but {files[0].name} is {w}x{h}; pass size=(H, W) "
                                          f"to resize them all")
                images[len(keep)] = result
                keep.append(i)
    if not keep:
        raise DataFormatError(f"{root}: none of the {len(files)} images could be read")
    if len(keep) < len(files):
        images = images[: len(keep)].clone()
    label_tensor = torch.tensor([labels[i] for i in keep], dtype=torch.int64)
    mean, std = channel_stats(images)
    return ImageSet(images, label_tensor, classes, name or root.name, mean, std)


class ImageFolderStream(torch.utils.data.Dataset):
    """A class-per-folder tree read from disk one image at a time: ``(uint8 (C, H, W), label)``.

    For folders too large for memory; use with a ``torch.utils.data.DataLoader`` (its workers
    decode in parallel). Conversion is :func:`convert_image`, as for :func:`load_image_folder`.
    """

    def __init__(self, root: str | os.PathLike, size: Size | int, channels: int = 3):
        self.size = _check_args(size, channels)
        if self.size is None:
            raise DataFormatError("ImageFolderStream needs size=(H, W): batches need one image size")
        self.root = Path(root)
        self.channels = channels
        self.files, labels, self.classes = scan_image_folder(self.root)
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return _open(self.files[index], self.size, self.channels), int(self.labels[index])

    def mean_std(self, max_images: int = 2000, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1], estimated from up to ``max_images`` random images."""
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self), generator=g)[:max_images].tolist()
        return channel_stats(torch.stack([self[i][0] for i in pick]))
