"""The batch pipeline: the whole dataset as one uint8 tensor, batches taken by index.

Why not a ``Dataset`` + ``DataLoader``? For images this small, the per-sample Python of the
usual loop (index, convert, normalise, collate) costs more than the network itself. Here the
images stay uint8 on the training device (a quarter of the memory of float32), and each batch
is gathered, augmented and normalised with a handful of tensor ops on the whole batch
(airbench's approach; ``benchmarks/`` measures what it buys).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ClassicNetsError
from .sources import StreamedSet

# Datasets whose images must never be mirrored: a flipped 2, 3 or 7 is not a digit.
NO_FLIP = {"digits", "mnist"}


@dataclass(frozen=True)
class Augment:
    """Batch augmentation. ``crop_padding``: random crop after zero-padding by this many pixels
    (He et al. 2015, section 4.2, use 4 for CIFAR); ``flip``: random horizontal flip (never for
    digits: a mirrored 2 is not a 2)."""

    crop_padding: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


def fit_to_size(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring uint8 images (N, C, H, W) to ``size``.

    A small shortfall is zero-padded around the centre (LeCun et al. 1998, section II-A: the
    28x28 digits sit centred in a 32x32 field, so strokes can reach the edge of the receptive
    fields); anything else is resized (bilinear, antialiased).
    """
    h, w = images.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return images
    if 0 <= th - h <= 8 and 0 <= tw - w <= 8:
        top, left = (th - h) // 2, (tw - w) // 2
        return F.pad(images, (left, tw - w - left, top, th - h - top))
    out = F.interpolate(images.float(), size=size, mode="bilinear", antialias=th < h or tw < w,
                        align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def random_crop_flip(images: torch.Tensor, augment: Augment, generator: torch.Generator, *,
                     batch: int | None = None, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Augment a uint8 batch (N, C, H, W) with one gather: random crops of the zero-padded
    batch and random horizontal flips, without a Python loop over samples.

    With ``world_size > 1``, ``images`` are samples ``rank::world_size`` of a global batch of
    ``batch`` samples: the random draws are made for the whole global batch and this rank's
    share is used, so the ranks together augment exactly as one process would."""
    n, c, h, w = images.shape
    draws, mine = (n if batch is None else batch), slice(rank, None, world_size)
    p = augment.crop_padding
    device = images.device
    # The draws come from a CPU generator (the same batches on every device); non_blocking: a
    # blocking copy to a GPU would wait for the steps still queued there, every batch.
    if p > 0:
        padded = F.pad(images, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (draws,), generator=generator)[mine].to(device, non_blocking=True)
        dx = torch.randint(0, 2 * p + 1, (draws,), generator=generator)[mine].to(device, non_blocking=True)
        # Every h x w window of the padded batch as a view (n, dy, dx, c, h, w), then one
        # gather of each sample's window: 4-7x faster than indexing rows and columns.
        windows = padded.unfold(2, h, 1).unfold(3, w, 1).permute(0, 2, 3, 1, 4, 5)
        images = windows[torch.arange(n, device=device), dy, dx]
    if augment.flip:
        flip = torch.rand(draws, generator=generator)[mine].to(device, non_blocking=True) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images


class Normalize:
    """uint8 -> float, then per-channel (x/255 - mean) / std, as one multiply-add."""

    def __init__(self, mean, std, device=None, dtype=torch.float32):
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        self.mean, self.std = tuple(mean.tolist()), tuple(std.tolist())
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device=device, dtype=dtype)
        self.shift = (-mean / std).view(1, -1, 1, 1).to(device=device, dtype=dtype)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, images.to(self.scale.dtype), self.scale)


class BatchLoader:
    """Iterate over (inputs, labels) batches of an in-memory uint8 dataset.

    ``shuffle`` draws a new order every epoch from ``seed + epoch`` (so a resumed run sees the
    same batches as an uninterrupted one); with ``world_size > 1`` each rank takes every
    ``world_size``-th sample of each global batch, so the ranks together see exactly the batches
    one process would (``batch_size`` is the global batch).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean,
        std,
        size: tuple[int, int] | None = None,
        shuffle: bool = False,
        augment: Augment | None = None,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < world_size or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be a multiple of the {world_size} processes")
        self.device = torch.device(device)
        self.size = tuple(size) if size is not None else None
        self.images = self._place(images)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self.normalize = Normalize(mean, std, device=self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def _place(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got "
                             f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
        size = self.size or tuple(images.shape[-2:])
        # Pad once here (cheap, exact); a resize to a much larger size is done per batch, since
        # holding e.g. CIFAR at 224x224 would take 49x the memory.
        if _is_padding(images.shape[-2:], size):
            images = fit_to_size(images, size)
        self.resize_to = None if tuple(images.shape[-2:]) == size else size
        return images.to(self.device).contiguous()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        n = len(self.labels)
        return len(self) * self.batch_size if self.drop_last else n

    def _batch_indices(self, gen: torch.Generator, device: torch.device | None = None) -> list[torch.Tensor]:
        """This rank's sample indices for each batch of the current epoch, on ``device`` if given.

        The order is drawn on the CPU (the same batches on every device) and copied once per
        epoch: a copy per batch would make the CPU wait for the GPU's queued steps every step."""
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if device is not None:
            order = order.to(device)
        return [order[i * self.batch_size:(i + 1) * self.batch_size][self.rank::self.world_size]
                for i in range(len(self))]

    def _uint8_batches(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self._batch_indices(gen, self.device):
            # index_select is a plain gather along dim 0; tensor[idx] is ~100x slower here.
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.labels)
        for i, (x, y) in enumerate(self._uint8_batches(gen)):
            if self.augment is not None:
                batch = min(self.batch_size, n - i * self.batch_size)  # the global batch
                x = random_crop_flip(x, self.augment, gen, batch=batch, rank=self.rank,
                                     world_size=self.world_size)
            if self.resize_to is not None:
                x = fit_to_size(x, self.resize_to)
            yield self.normalize(x).contiguous(memory_format=self.memory_format), y


class StreamingBatchLoader(BatchLoader):
    """The same batches, read from disk by worker processes: for image folders larger than
    memory. ``dataset[i]`` returns ``(uint8 (C, H, W) tensor, label)`` at the final size (as
    :class:`~classicnets.data.folder.ImageFolderStream` does); augmentation and normalisation
    still run on whole batches on the training device."""

    def __init__(self, dataset, labels: torch.Tensor, batch_size: int, *, num_workers: int = 2, **kwargs):
        self.num_workers = num_workers
        super().__init__(dataset, labels, batch_size, **kwargs)

    def _place(self, dataset):
        self.resize_to = None
        return dataset

    def _uint8_batches(self, gen):
        from torch.utils.data import DataLoader

        loader = DataLoader(self.images, batch_sampler=[b.tolist() for b in self._batch_indices(gen)],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            if self.size is not None and tuple(x.shape[-2:]) != self.size:
                x = fit_to_size(x, self.size)
            yield x, y.to(self.device, torch.long, non_blocking=True)


def _is_padding(have, want) -> bool:
    return 0 <= want[0] - have[0] <= 8 and 0 <= want[1] - have[1] <= 8


def parse_augment(spec: str, dataset: str | None) -> Augment:
    """``none``, ``crop`` (4-pixel padding, He et al. 2015), ``crop:N`` (N-pixel padding),
    ``flip``, or ``crop[:N]+flip``. Flips are dropped for digit datasets."""
    crop, flip = 0, False
    for part in spec.replace(" ", "").lower().split("+"):
        name, _, arg = part.partition(":")
        if name == "crop" and (not arg or arg.isdigit()):
            crop = int(arg) if arg else 4
        elif name == "flip" and not arg:
            flip = True
        elif name not in ("none", ""):
            raise ClassicNetsError(f"--augment {spec!r}: expected none, crop, crop:N, flip or crop[:N]+flip")
    return Augment(crop_padding=crop, flip=flip and (dataset or "").lower() not in NO_FLIP)


def make_loader(data, batch_size: int, **kwargs) -> BatchLoader:
    """A batch loader for an in-memory split, or a streaming one for a split read from disk."""
    if isinstance(data, StreamedSet):
        return StreamingBatchLoader(data.stream, data.labels, batch_size, **kwargs)
    return BatchLoader(data.images, data.labels, batch_size, **kwargs)
