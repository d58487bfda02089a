"""Where a training or evaluation split comes from: a named dataset or a directory.

``load_split(dataset, data_dir, split, size=..., channels=...)`` is what the trainer and the
evaluator call. A named dataset is looked up by :func:`~classicnets.data.datasets.load_dataset`
(``data_dir`` first, then the cache, system locations, download). A directory without a name is
recognised by what it holds:

- ``DIR/train/<class>/*.png`` and/or ``DIR/test/<class>/*.png`` (or ``val``): a folder of images,
  each converted to ``channels`` and resized to ``size`` (the model's input), or, given a
  ``reading`` (evaluation of a model of MNIST or Fashion-MNIST), read as the dataset made its
  images, at its size; only the split asked for is read when the caller gives the statistics to
  normalise with (evaluation);
- one or two IDX image/label pairs under any names (``*-images-idx3-ubyte[.gz]``);
- an extracted CIFAR-10/100 folder or its tarball.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ClassicNetsError, DataFormatError
from .imageset import ImageSet, available_memory, channel_stats
from .reading import Reading

TEST_NAMES = ("test", "val", "valid", "validation")
# A folder whose decoded images would take more than this share of the available memory is
# streamed from disk by worker processes instead of loaded (the model and activations need room).
STREAM_ABOVE_MEMORY_FRACTION = 0.5


@dataclass
class StreamedSet:
    """A split too large for memory: its images are read from disk batch by batch
    (:class:`~classicnets.data.pipeline.StreamingBatchLoader`)."""

    stream: torch.utils.data.Dataset  # an ImageFolderStream (or a Subset of one)
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> StreamedSet:
        """The first ``n`` images."""
        n = min(n, len(self))
        return self.rows(0, n)

    def rows(self, start: int, stop: int) -> StreamedSet:
        """Images ``start`` to ``stop`` (a held-out validation part, for instance)."""
        start, stop = max(0, start), min(stop, len(self))
        return StreamedSet(torch.utils.data.Subset(self.stream, range(start, stop)), self.labels[start:stop],
                           self.classes, self.name, self.mean, self.std, self.image_size)


def load_split(dataset: str | None, data_dir: str | Path | None, split: str, *, size: tuple[int, int],
               channels: int, classes: list[str] | None = None,
               stream: bool | None = None, any_idx_pair: bool = False,
               stats: tuple[Sequence[float], Sequence[float]] | None = None,
               reading: Reading | None = None) -> ImageSet | StreamedSet:
    """The ``split`` ("train" or "test") of a named dataset or of a directory.

    An image folder is streamed from disk (a :class:`StreamedSet`) when ``stream`` is True, or
    when it is None and the decoded images would not fit comfortably in memory. With
    ``any_idx_pair`` (evaluation), a directory holding a single IDX pair under any names gives
    that pair whatever the split; training needs distinct train and test pairs.

    ``stats`` = (mean, std) are the statistics an image folder's split carries (evaluation gives
    the checkpoint's, so no other split is read); without them a test split carries those of
    the folder's train/ split, as every reader's splits do. ``reading``
    (:func:`~classicnets.data.reading.reading_for`) reads an image folder's files as a dataset
    made its images; the other sources hold the dataset's own kind already. Training passes none.
    """
    from .datasets import load_dataset

    if dataset:
        return load_dataset(dataset, split, data_dir=data_dir)
    if data_dir is None:
        raise DataFormatError("give a dataset name or a data directory")
    root = Path(data_dir)
    if not root.exists():
        raise DataFormatError(f"data directory {root} does not exist")
    if root.is_dir() and (_split_dir(root, "train") or _split_dir(root, "test")) is not None:
        return _folder_split(root, split, size, channels, classes, stream, stats, reading)
    if root.is_dir() and _has_idx(root):
        return _idx_split(root, split, classes, any_idx_pair)
    if _looks_like_cifar(root):
        from .cifar import load_cifar

        return load_cifar(root, split)
    raise DataFormatError(
        f"{root}: found no data. Expected a folder with train/ and test/ sub-folders of class folders "
        f"(train/cat/1.png ...), IDX files (*-images-idx3-ubyte[.gz] with *-labels-idx1-ubyte[.gz]), "
        f"or a CIFAR folder/tarball; or name a dataset with --dataset"
    )


def _split_dir(root: Path, split: str) -> Path | None:
    for name in ((split,) if split == "train" else TEST_NAMES):
        if (root / name).is_dir():
            return root / name
    return None


def _folder_split(root: Path, split: str, size, channels, classes, stream, stats, reading) -> ImageSet | StreamedSet:
    from .folder import ImageFolderStream, estimate_bytes, load_image_folder

    size = reading.size if reading else size
    where = _split_dir(root, split)
    if where is None:
        wanted = "train/" if split == "train" else "/ ".join(TEST_NAMES) + "/"
        raise DataFormatError(f"{root}: no {wanted} folder for the {split} split")
    # A split carries the training split's statistics: given by the caller, else read from train/.
    stats_root = None if split == "train" or stats is not None else _split_dir(root, "train")
    if stream is None:
        free = available_memory()
        needed = sum(estimate_bytes(r, size, channels) for r in (where, stats_root) if r is not None)
        stream = free is not None and needed > STREAM_ABOVE_MEMORY_FRACTION * free
    name = f"{root.name}/{split}"
    if stream:
        ds = ImageFolderStream(where, size, channels, reading)
        mean, std = stats or ImageFolderStream(stats_root or where, size, channels, reading).mean_std()
        data = StreamedSet(ds, ds.labels, ds.classes, name, tuple(mean), tuple(std), (channels, *size))
    else:
        data = load_image_folder(where, size=size, channels=channels, name=name, reading=reading)
        if stats is not None:
            data.mean, data.std = tuple(stats[0]), tuple(stats[1])
        elif stats_root is not None:
            stats_from = load_image_folder(stats_root, size=size, channels=channels, reading=reading)
            data.mean, data.std = stats_from.mean, stats_from.std
    _check_classes(data, classes, where)
    return data


def _has_idx(root: Path) -> bool:
    return any(p.name.find("-images-idx") >= 0 or p.name.find("-labels-idx") >= 0 for p in root.iterdir())


def _idx_split(root: Path, split: str, classes, any_pair: bool) -> ImageSet:
    from .idx import IdxPairNotFoundError, find_idx_pair, read_idx

    try:
        images_path, labels_path = find_idx_pair(root, split)
    except IdxPairNotFoundError:
        if not any_pair:
            raise
        # One pair under other names (e.g. a user's own test set): it is the split asked for.
        images_path, labels_path = find_idx_pair(root, None)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DataFormatError(f"{images_path}: expected a 3-D IDX array (count, rows, columns), got {images.ndim}-D")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path}: expected {len(images)} labels for {images_path}, got shape {labels.shape}")
    if classes is None:
        top = int(labels.max()) + 1 if len(labels) else 0
        classes = [str(i) for i in range(max(10, top))]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataFormatError(
            f"{labels_path}: labels must lie in 0..{len(classes) - 1}, found {labels.min()}..{labels.max()}")
    x = torch.from_numpy(images.astype("uint8", copy=False)).unsqueeze(1).contiguous()
    mean, std = channel_stats(x)
    return ImageSet(x, torch.from_numpy(labels.astype("int64")), list(classes), f"{root.name}/{split}", mean, std)


def _looks_like_cifar(root: Path) -> bool:
    name = root.name.lower()
    return "cifar" in name or (root.is_dir() and any("cifar" in p.name.lower() for p in root.iterdir()))


def _check_classes(data: ImageSet, classes, where) -> None:
    """The folder's classes (NFC, :func:`~classicnets.data.folder.class_folders`) against the
    model's, compared in NFC: names typed on macOS (NFD) and on Linux (NFC) are the same."""
    if classes is not None and list(data.classes) != [unicodedata.normalize("NFC", c) for c in classes]:
        raise DataFormatError(f"{where}: classes {data.classes} differ from the model's {list(classes)}")


def head(data, n: int):
    """The first ``n`` training images (quick experiments)."""
    if isinstance(data, StreamedSet):
        return data.head(n)
    return dataclasses.replace(data, images=data.images[:n], labels=data.labels[:n])


def hold_out(data, n: int):
    """Split off the last ``n`` training images as a validation set (He et al. 2015 chose their
    CIFAR-10 schedule on a 45k/5k split; CIFAR's batches are in random order, so the last 5k are
    a random 5k). The mean and standard deviation are recomputed on the images trained on."""
    if not 0 < n < len(data):
        raise ClassicNetsError(f"--holdout {n}: expected fewer validation images than the {len(data):,} "
                               f"training images")
    keep = len(data) - n
    if isinstance(data, StreamedSet):
        return data.rows(0, keep), dataclasses.replace(data.rows(keep, len(data)), name=f"{data.name}[holdout]")
    mean, std = channel_stats(data.images[:keep])
    train = dataclasses.replace(data, images=data.images[:keep], labels=data.labels[:keep], mean=mean, std=std)
    val = dataclasses.replace(data, images=data.images[keep:], labels=data.labels[keep:], mean=mean, std=std,
                              name=f"{data.name}[holdout]")
    return train, val
