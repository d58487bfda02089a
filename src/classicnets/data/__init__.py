"""Data: readers for IDX, CIFAR and image folders, the named datasets, verified downloads.

Every reader returns an :class:`ImageSet`: all images of a split in one uint8 (N, C, H, W)
tensor, int64 labels, class names, and the training split's per-channel mean/std.

    >>> from classicnets.data import load_dataset
    >>> train = load_dataset("digits")          # embedded, no download
    >>> train.images.shape, train.classes[:3]
    (torch.Size([7000, 1, 28, 28]), ['0', '1', '2'])
"""

from .cifar import load_cifar, load_cifar10, load_cifar100
from .datasets import (
    DatasetInfo,
    RemoteFile,
    UnknownDatasetError,
    cache_root,
    dataset_info,
    list_datasets,
    load_dataset,
)
from .download import download, safe_extract, sha256_file
from .folder import (
    IMAGE_EXTENSIONS,
    ImageFolderStream,
    convert_image,
    estimate_bytes,
    load_image,
    load_image_folder,
    scan_image_folder,
)
from .idx import find_idx_pair, read_idx, read_idx_pair
from .imageset import ImageSet, InsufficientMemoryError, available_memory, channel_stats

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetInfo",
    "ImageFolderStream",
    "ImageSet",
    "InsufficientMemoryError",
    "RemoteFile",
    "UnknownDatasetError",
    "available_memory",
    "cache_root",
    "channel_stats",
    "convert_image",
    "dataset_info",
    "download",
    "estimate_bytes",
    "find_idx_pair",
    "list_datasets",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_image",
    "load_image_folder",
    "read_idx",
    "read_idx_pair",
    "safe_extract",
    "scan_image_folder",
    "sha256_file",
]
