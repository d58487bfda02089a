"""A folder of images, one sub-folder per class: ``root/<class>/<any/depth>/<image>``.

Class names are the sorted sub-folder names, in Unicode NFC (label = index), so a folder named
on macOS (NFD) and on Linux (NFC) gives the same classes. Which files count is one rule,
:func:`image_files`, shared with ``classicnets predict DIR``. Every image, whatever its mode,
goes through :func:`~classicnets.data.image.convert_image`, so a model sees its inputs the way
it was trained.

Small folders load whole into an :class:`ImageSet` (:func:`load_image_folder`); folders too
big for memory are read image by image from disk with :class:`ImageFolderStream`.
:func:`estimate_bytes` tells which one fits. Both take a ``reading``
(:mod:`~classicnets.data.reading`): evaluating a model of MNIST's digits on a folder of photos
reads each file as the dataset made its images; training never passes one.
"""

from __future__ import annotations

import os
import sys
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

from ..errors import DataFormatError
from .image import Size, check_args, exif_orientation, open_image, read_image
from .image import convert_image as convert_image  # re-exported: the one conversion
from .image import load_image as load_image
from .imageset import ImageSet, channel_stats, check_memory
from .reading import Reading

# Lower case; every one a format Pillow reads.
IMAGE_EXTENSIONS = frozenset({".png", ".apng", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif",
                              ".tif", ".tiff", ".webp", ".pbm", ".pgm", ".ppm", ".pnm"})
# Folders that tools leave behind, never data: besides these, every name starting with "." is skipped.
JUNK_FOLDERS = frozenset({"__MACOSX", "__pycache__", ".ipynb_checkpoints"})


def skipped(name: str) -> bool:
    """Hidden files and folders (``.git``, macOS's ``._a.png``) and tool folders are never data."""
    return name.startswith(".") or name in JUNK_FOLDERS


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder, or a link to one; a link loop or a broken link is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files under ``folder`` at any depth, sorted: the one rule for which files count.

    Hidden and junk names (:func:`skipped`) are left out; files count by their extension
    (:data:`IMAGE_EXTENSIONS`, any case). Symlinked folders are followed, but a folder already
    walked (a link back up the tree, or a second link to the same place) is not walked again.
    A file that cannot be read (a symlink loop, a broken link) still counts, so reading it
    says what is wrong with it.
    """
    folder = Path(folder)
    seen = {os.path.realpath(folder)}
    found: list[Path] = []
    pending = [folder]
    while pending:
        here = pending.pop()
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as e:
            raise DataFormatError(f"{here}: cannot list the folder ({e.strerror})") from None
        for entry in entries:
            if skipped(entry.name):
                continue
            if _is_dir(entry):
                real = os.path.realpath(entry.path)
                if real not in seen:
                    seen.add(real)
                    pending.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(entry.path))
    return sorted(found)


def class_folders(root: Path) -> list[tuple[str, Path]]:
    """(class name in NFC, folder) of every class folder under ``root``, sorted by name."""
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a directory; expected a folder with one sub-folder of "
                              f"images per class")
    folders: dict[str, Path] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if skipped(entry.name) or not _is_dir(entry):
            continue
        name = unicodedata.normalize("NFC", entry.name)
        if name in folders:
            raise DataFormatError(f"{entry.path}: the same class name as {folders[name]} in another Unicode "
                                  f"form (NFC/NFD); merge the two folders")
        folders[name] = Path(entry.path)
    return sorted(folders.items())


def scan_image_folder(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of ``root/<class>/...``: :func:`class_folders` and :func:`image_files`.

    An empty class folder, or fewer than two classes, is an error naming the folder.
    """
    root = Path(root)
    folders = class_folders(root)
    if not folders:
        raise DataFormatError(f"{root}: no class folders; expected one sub-folder of images per "
                              f"class (e.g. {root}/cat/1.jpg, {root}/dog/2.jpg)")
    files: list[Path] = []
    labels: list[int] = []
    for label, (_, folder) in enumerate(folders):
        found = image_files(folder)
        if not found:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise DataFormatError(f"{folder}: class folder with no images; expected files ending in {exts} "
                                  f"(or remove the folder)")
        files.extend(found)
        labels.extend([label] * len(found))
    if len(folders) < 2:
        raise DataFormatError(f"{root}: only one class folder ({folders[0][0]}); a classifier needs at least "
                              f"two classes, one sub-folder each")
    return files, labels, [name for name, _ in folders]


def _header_size(path: Path) -> Size:
    """(H, W) from the file header, as displayed (after EXIF rotation), without decoding pixels."""
    try:
        with open_image(path) as img:
            w, h = img.size
            orientation = exif_orientation(img)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as e:
        raise DataFormatError(f"{path}: not a readable image ({e})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def estimate_bytes(root: str | os.PathLike, size: Size | int | None = None, channels: int = 3) -> int:
    """Bytes :func:`load_image_folder` would hold for ``root``: images x channels x H x W.

    With ``size=None`` the first image's size stands for all. Compare with the free memory
    (:func:`classicnets.data.imageset.available_memory`) to choose between loading the folder
    and streaming it with :class:`ImageFolderStream`.
    """
    size = check_args(size, channels)
    files, _, _ = scan_image_folder(root)
    h, w = size if size is not None else _header_size(files[0])
    return len(files) * channels * h * w


def read_file(path: Path, size: Size | None, channels: int, reading: Reading | None = None) -> torch.Tensor:
    """One file of a folder: :func:`read_image`, or read by ``reading`` (at the dataset's size)."""
    return read_image(path, size, channels) if reading is None else reading.file(path, channels)


def load_image_folder(
    root: str | os.PathLike,
    size: Size | int | None = None,
    channels: int = 3,
    *,
    skip_bad: bool = False,
    name: str | None = None,
    progress: bool = True,
    workers: int | None = None,
    reading: Reading | None = None,
) -> ImageSet:
    """Load a class-per-folder tree into memory as an :class:`ImageSet`.

    ``size=(H, W)`` converts every image to that size; with ``size=None`` all images must
    already share one size. An unreadable or truncated image raises :class:`DataFormatError`
    naming the file, or with ``skip_bad=True`` is left out with a warning. mean/std are computed
    from the loaded images. Decoding runs on ``workers`` threads (Pillow releases the GIL).
    With a ``reading``, each file is read by it (:func:`read_file`) and ``size`` is the reading's.
    """
    size = check_args(reading.size if reading else size, channels)
    root = Path(root)
    files, labels, classes = scan_image_folder(root)
    h, w = size if size is not None else _header_size(files[0])
    check_memory(len(files) * channels * h * w, f"{len(files)} images of {channels}x{h}x{w} from {root}")
    images = torch.empty((len(files), channels, h, w), dtype=torch.uint8)
    keep: list[int] = []

    def work(path: Path):
        try:
            return read_file(path, size, channels, reading)
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
    decode in parallel). Conversion is :func:`convert_image`, or ``reading``, as for
    :func:`load_image_folder`.
    """

    def __init__(self, root: str | os.PathLike, size: Size | int, channels: int = 3, reading: Reading | None = None):
        self.reading = reading
        self.size = check_args(reading.size if reading else size, channels)
        if self.size is None:
            raise DataFormatError("ImageFolderStream needs size=(H, W): batches need one image size")
        self.root = Path(root)
        self.channels = channels
        self.files, labels, self.classes = scan_image_folder(self.root)
        self.labels = torch.tensor(labels, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return read_file(self.files[index], self.size, self.channels, self.reading), int(self.labels[index])

    def mean_std(self, max_images: int = 2000, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std in [0, 1], estimated from up to ``max_images`` random images."""
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(self), generator=g)[:max_images].tolist()
        return channel_stats(torch.stack([self[i][0] for i in pick]))
