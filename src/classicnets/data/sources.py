"""Where a training or evaluation split comes from: a named dataset or a directory.

``load_split(dataset, data_dir, split, size=..., channels=...)`` is what the trainer and the
evaluator call. A named dataset is looked up by :func:`~classicnets.data.datasets.load_dataset`
(``data_dir`` first, then the cache, system locations, download). A directory without a name is
recognised by what it holds:

- ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png`` (or ``val``): a folder of images,
  each converted to ``channels`` and resized to ``size`` (the model's input);
- one or two IDX image/label pairs under any names (``*-images-idx3-ubyte[.gz]``);
- an extracted CIFAR-10/100 folder or its tarball.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataFormatError
from .imageset import ImageSet, channel_stats

TEST_NAMES = ("test", "val", "valid", "validation")


def load_split(dataset: str | None, data_dir: str | Path | None, split: str, *, size: tuple[int, int],
               channels: int, classes: list[str] | None = None) -> ImageSet:
    """The ``split`` ("train" or "test") of a named dataset or of a directory."""
    from .datasets import load_dataset

    if dataset:
        return load_dataset(dataset, split, data_dir=data_dir)
    if data_dir is None:
        raise DataFormatError("give a dataset name or a data directory")
    root = Path(data_dir)
    if not root.exists():
        raise DataFormatError(f"data directory {root} does not exist")
    if root.is_dir() and _split_dir(root, "train") is not None:
        return _folder_split(root, split, size, channels, classes)
    if root.is_dir() and _has_idx(root):
        return _idx_split(root, split, classes)
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


def _folder_split(root: Path, split: str, size, channels, classes) -> ImageSet:
    from .folder import load_image_folder

    where = _split_dir(root, split)
    if where is None:
        raise DataFormatError(f"{root}: has train/ but no {'/ '.join(TEST_NAMES)} folder for the {split} split")
    data = load_image_folder(where, size=size, channels=channels)
    if split != "train":
        # Normalise with the training split's statistics, as the model was trained.
        train_root = _split_dir(root, "train")
        stats_from = load_image_folder(train_root, size=size, channels=channels)
        data.mean, data.std = stats_from.mean, stats_from.std
    _check_classes(data, classes, where)
    return data


def _has_idx(root: Path) -> bool:
    return any(p.name.find("-images-idx") >= 0 or p.name.find("-labels-idx") >= 0 for p in root.iterdir())


def _idx_split(root: Path, split: str, classes) -> ImageSet:
    from .idx import find_idx_pair, read_idx

    images_path, labels_path = find_idx_pair(root, split)
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
    if classes is not None and list(data.classes) != list(classes):
        raise DataFormatError(f"{where}: classes {data.classes} differ from the model's {list(classes)}")
