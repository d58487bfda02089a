"""The tutorial data path both training benchmarks compare against: a ``Dataset`` that prepares
one sample at a time, as most tutorials write it (torchvision's ToTensor, Pad, RandomCrop,
RandomHorizontalFlip and Normalize, done in plain tensor ops: no PIL, no torchvision, so it is a
*generous* baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class TutorialSet(Dataset):
    """uint8 images (N, C, h, w) -> normalised float samples at ``size``, one ``__getitem__`` each.

    ``crop_padding``: a random crop of the zero-padded image (a +-p pixel shift); ``flip``: a
    random horizontal flip. Same augmentation as classicnets' batch pipeline, per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: tuple[int, int], mean, std,
                 crop_padding: int = 0, flip: bool = False):
        self.images, self.labels, self.size = images, labels, tuple(size)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.crop_padding, self.flip = crop_padding, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        height, width = self.size
        x = self.images[i].float() / 255  # "ToTensor"
        h, w = x.shape[-2:]
        top, left = (height - h) // 2, (width - w) // 2
        x = F.pad(x, (left, width - w - left, top, height - h - top))  # "Pad" (28 -> 32 for LeNet-5)
        if self.crop_padding:  # "RandomCrop(size, padding=p)"
            p = self.crop_padding
            x = F.pad(x, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, dy:dy + height, dx:dx + width]
        if self.flip and torch.rand(()) < 0.5:  # "RandomHorizontalFlip"
            x = x.flip(-1)
        return (x - self.mean) / self.std, int(self.labels[i])  # "Normalize"
