"""Evaluate a checkpoint: accuracy, per-class accuracy, confusion matrix (text, JSON, PNG)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from .checkpoint import build_from_checkpoint
from .data.pipeline import BatchLoader, make_loader
from .data.reading import reading_for
from .data.sources import load_split
from .device import autocast, pick_device
from .distributed import DistInfo, all_reduce_sum
from .report import format_confusion, plot_confusion

OUT_HINT = "--out DIR"  # the option of `classicnets evaluate` that writes elsewhere


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: BatchLoader, num_classes: int, *,
                   amp_dtype: torch.dtype | None = None, dist_info: DistInfo | None = None) -> dict:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true class)."""
    was_training = model.training
    model.eval()
    device = loader.device
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        with autocast(device, amp_dtype):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        pred = logits.argmax(1)
        confusion.view(-1).index_add_(0, y * num_classes + pred, torch.ones_like(y))
    if dist_info is not None:
        all_reduce_sum(confusion, dist_info)
        all_reduce_sum(loss_sum, dist_info)
    model.train(was_training)
    confusion = confusion.cpu()
    total = int(confusion.sum())
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1).double()).tolist()
    return {
        "loss": float(loss_sum) / max(total, 1),
        "accuracy": float(confusion.diag().sum()) / max(total, 1),
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
        "count": total,
    }


def evaluate_checkpoint(checkpoint: str | os.PathLike, *, dataset: str | None = None, data_dir: str | None = None,
                        split: str = "test", out: str | os.PathLike | None = None, device: str = "auto",
                        batch_size: int = 500, figure: bool = True, normalize: bool = True) -> dict:
    """Metrics of ``checkpoint`` on a split of a dataset (by default the one it was trained on).

    Writes ``confusion.png`` into ``out`` (default: the checkpoint's directory; created if
    missing); with ``figure=False`` only names it (``result["confusion_png"]``): write it with
    :func:`save_confusion`, e.g. once the numbers are shown. A folder of images is read as the
    model's dataset made its images where it has a recipe (:mod:`classicnets.data.reading`;
    ``normalize=False``: as training reads folders).
    """
    png = ckpt.check_output(Path(out or ckpt.home(checkpoint)) / "confusion.png", OUT_HINT)
    dev = pick_device(device)
    model, meta = build_from_checkpoint(checkpoint, dev)
    if dataset is None and data_dir is None:  # the data it was trained on
        dataset, data_dir = meta.get("dataset"), meta.get("data_dir")
    channels, *size = meta["input_size"]
    # The checkpoint carries the training statistics, so only the split evaluated is read.
    data = load_split(dataset, data_dir, split, size=tuple(size), channels=channels, classes=meta["classes"],
                      any_idx_pair=True, stats=(meta["mean"], meta["std"]),
                      reading=reading_for(meta.get("dataset")) if normalize else None)
    loader = make_loader(data, batch_size, mean=meta["mean"], std=meta["std"],
                         size=tuple(size), device=dev)
    metrics = evaluate_model(model, loader, meta["num_classes"])
    classes = meta["classes"]
    result = {
        "checkpoint": str(checkpoint), "model": meta["model"], "data": data.name, "count": metrics["count"],
        "accuracy": metrics["accuracy"], "loss": metrics["loss"],
        "per_class_accuracy": dict(zip(classes, metrics["per_class_accuracy"], strict=True)),
        "classes": classes, "confusion": metrics["confusion"], "confusion_png": str(png),
    }
    if figure:
        save_confusion(result)
    return result


def save_confusion(result: dict) -> Path:
    """Write the confusion matrix of an :func:`evaluate_checkpoint` result as the PNG it names;
    atomically (an :class:`~classicnets.errors.OutputError` if it cannot be written)."""
    return plot_confusion(result["confusion"], result["classes"], Path(result["confusion_png"]),
                          title=f"{result['model']} on {result['data']}: {result['accuracy']:.2%}", hint=OUT_HINT)


def format_evaluation(result: dict) -> str:
    lines = [f"{result['model']} on {result['data']}: accuracy {result['accuracy']:.2%} "
             f"({round(result['accuracy'] * result['count'])}/{result['count']}), loss {result['loss']:.4f}",
             "", "per-class accuracy:"]
    for name, acc in result["per_class_accuracy"].items():
        lines.append(f"  {name:<16} {acc:7.2%}")
    lines += ["", "confusion matrix (rows: true class):", format_confusion(result["confusion"], result["classes"])]
    return "\n".join(lines)
