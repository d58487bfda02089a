"""The baseline the training benchmarks compare classicnets against: the tutorial loop.

A ``Dataset`` that prepares one sample at a time, as most tutorials write it (torchvision's
ToTensor, Pad, RandomCrop, RandomHorizontalFlip and Normalize, done in plain tensor ops: no PIL,
no torchvision, so it is a *generous* baseline), batched by a ``DataLoader``; the model in its
default memory format, fp32, ``torch.optim.SGD``'s default implementation, and its own step:
forward, cross-entropy, ``zero_grad()``, backward, step, ``running_loss += loss.item()`` every
step. This is the one training loop in benchmarks/ that is not ``classicnets.train.train_step``:
it is what the library is measured against.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


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


def tutorial_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` in its default implementation, with a resolved ``TrainConfig``'s settings."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov),
                           weight_decay=cfg.weight_decay)


def tutorial_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader, device="cpu",
                   lr_at=None, step: int = 0) -> tuple[int, float, int]:
    """One pass of the tutorial loop over ``loader``: each batch copied to ``device``, forward,
    cross-entropy, ``zero_grad()``, backward, step, the loss read every step for its running sum.
    ``lr_at(step)``, where given, sets the learning rate every step (the same schedule as the
    contender's). Returns (images, seconds, the next step)."""
    seen, running = 0, 0.0
    t0 = time.perf_counter()
    for x, y in loader:
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item()
        seen += len(y)
        step += 1
    return seen, time.perf_counter() - t0, step


def tutorial_train(args, device: str = "cpu", workers: int = 0) -> list[float]:
    """The suite's and ``bench_cuda.py``'s tutorial contender: ``args.model`` on ``args.data`` (or
    ``args.data_dir``), the first ``args.images`` images, ``args.epochs`` epochs of batch
    ``args.batch`` at ``args.lr`` (None: the recipe's) with ``args.augment`` (None or absent: the
    recipe's augmentation); images/s of
    each epoch. On a GPU as the PyTorch tutorials run it there: the model on the device, batches
    assembled by ``workers`` processes in pinned memory and copied to it every step."""
    from classicnets.data.pipeline import parse_augment
    from classicnets.data.sources import load_split
    from classicnets.models import create_model, model_card
    from classicnets.train import TrainConfig

    cfg = TrainConfig(model=args.model, dataset=None if args.data_dir else args.data, data_dir=args.data_dir or None,
                      batch_size=args.batch, lr=args.lr, augment=getattr(args, "augment", None)).resolved()
    card = model_card(args.model)
    size = tuple(card.input_size[1:])
    data = load_split(cfg.dataset, cfg.data_dir, "train", size=size, channels=card.input_size[0])
    images, labels = data.images[:args.images], data.labels[:args.images]
    aug = parse_augment(cfg.augment, cfg.dataset)
    dataset = TutorialSet(images, labels, size, data.mean, data.std, aug.crop_padding, aug.flip)

    torch.manual_seed(getattr(args, "seed", 0))
    model = create_model(args.model, num_classes=len(data.classes), in_channels=images.shape[1])
    model.to(device).train()
    optimizer = tutorial_optimizer(model, cfg)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0)
    rates = []
    for _ in range(args.epochs):
        seen, seconds, _ = tutorial_epoch(model, optimizer, loader, device)
        rates.append(seen / seconds)
    return rates
