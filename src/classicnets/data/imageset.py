"""The one in-memory form every reader returns: :class:`ImageSet`.

A whole split lives in a single ``uint8`` tensor of shape (N, C, H, W) - 60,000 MNIST digits are
47 MB, CIFAR-10's training split 150 MB - so the batch pipeline can move it to the device once
and index it there, with no per-sample Python (the airbench lesson).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ClassicNetsError


class InsufficientMemoryError(ClassicNetsError, MemoryError):
    """Loading a dataset would need more memory than the machine has available."""


@dataclass
class ImageSet:
    """A labelled split of images, whole in memory."""

    images: torch.Tensor  # uint8, (N, C, H, W), contiguous
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]  # class names; index = label
    name: str  # e.g. "fashion-mnist/train"
    mean: tuple[float, ...]  # per-channel mean of the *training* split, pixels in [0, 1]
    std: tuple[float, ...]  # per-channel standard deviation, same convention

    def __post_init__(self) -> None:
        # Readers build these from validated files, so a failure here is a bug, not bad data.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 (N, C, H, W), got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"{self.name}: mean/std need {channels} values, got "
                             f"{len(self.mean)}/{len(self.std)}")
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def class_counts(self) -> list[int]:
        """How many images each class has, in label order."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()

    def __repr__(self) -> str:
        return (f"ImageSet({self.name!r}, {len(self)} images {'x'.join(map(str, self.image_size))}, "
                f"{len(self.classes)} classes)")


def channel_stats(images: torch.Tensor | np.ndarray, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) images, scaled to [0, 1].

    Works through ``chunk`` images at a time in float64, so it never makes a float copy of
    the whole set (CIFAR-10 as float64 would be 1.2 GB).
    """
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    n, c = x.shape[0], x.shape[1]
    if n == 0:
        return (0.0,) * c, (0.0,) * c
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, n, chunk):
        part = x[start:start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        total_sq += np.square(part).sum(axis=(0, 2, 3))
    count = n * x.shape[2] * x.shape[3]
    mean = total / count
    var = np.maximum(total_sq / count - np.square(mean), 0.0)
    return tuple((mean / 255).tolist()), tuple((np.sqrt(var) / 255).tolist())


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation, or None where the OS does not say.

    MemAvailable (Linux >= 3.14) counts reclaimable page cache, which is what matters here;
    the sysconf free-page count is the fallback elsewhere.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(needed: int, what: str) -> None:
    """Raise :class:`InsufficientMemoryError` if ``needed`` bytes exceed the available memory."""
    free = available_memory()
    if free is not None and needed > free:
        raise InsufficientMemoryError(
            f"loading {what} needs about {format_bytes(needed)} of memory but only "
            f"{format_bytes(free)} available: free some memory, or stream the images from "
            f"disk instead (classicnets.data.ImageFolderStream)"
        )
