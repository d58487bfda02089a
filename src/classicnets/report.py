"""Figures and tables at the end of the pipeline: learning curves, confusion matrices."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .version import __version__


def machine_info() -> dict:
    """The CPU, its cores, the threads torch uses, the versions and the load: timings mean
    nothing without them (benchmarks and experiments record this with every result)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        # Two "AMD EPYC" can differ in what matters most here: AVX-512 with native bf16 (Zen 4)
        # or AVX2 without (earlier): bf16 autocast is 1.7x faster on one, emulated on the other.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "classicnets": __version__,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, works headless and in CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, *, hint: str | None = None, **savefig_kwargs) -> Path:
    """``fig.savefig`` written atomically (:func:`classicnets.checkpoint.atomic_write`): the file
    is whole or not there, and a failure is an :class:`~classicnets.errors.OutputError` naming
    ``path`` and suggesting ``hint``. The format is the suffix's (PNG without one)."""
    from .checkpoint import atomic_write

    path = Path(path)
    fmt = savefig_kwargs.pop("format", None) or path.suffix.lower().lstrip(".") or "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs), hint=hint)
    return path


def _save_and_close(plt, fig, path, hint: str | None) -> Path:
    try:
        return save_figure(fig, path, hint=hint, dpi=110)
    finally:
        plt.close(fig)


def plot_curves(history: list[dict], path: Path, title: str = "", *, hint: str | None = None) -> Path:
    """Train/test loss and accuracy against epoch, side by side, saved as PNG."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for key, label, style in (("train", "train", "-"), ("test", "test", "--")):
        pts = [(h["epoch"], h[f"{key}_loss"], h[f"{key}_accuracy"]) for h in history if f"{key}_loss" in h]
        if pts:
            e, loss, acc = zip(*pts, strict=True)
            ax_loss.plot(e, loss, style, marker="o", markersize=3, label=label)
            ax_acc.plot(e, [100 * a for a in acc], style, marker="o", markersize=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if title:
        fig.suptitle(title)
    return _save_and_close(plt, fig, path, hint)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str = "", *,
                   hint: str | None = None) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    import numpy as np

    cm = np.asarray(confusion)
    k = len(classes)
    side = min(12, 2 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), constrained_layout=True)
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    if k <= 30:
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        if k <= 15:
            thresh = cm.max() / 2 if cm.size else 0
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if cm[i, j] > thresh else "black")
    return _save_and_close(plt, fig, path, hint)


def format_confusion(confusion: list[list[int]], classes: list[str]) -> str:
    """The confusion matrix as an aligned text table."""
    width = max(5, *(len(str(v)) for row in confusion for v in row)) + 1
    names = [c[:12] for c in classes]
    label_w = max(len(n) for n in names) + 1
    head = " " * label_w + "".join(f"{i:>{width}}" for i in range(len(classes)))
    lines = [f"{'':<{label_w}}predicted ->", head]
    for i, row in enumerate(confusion):
        lines.append(f"{names[i]:<{label_w}}" + "".join(f"{v:>{width}}" for v in row) + f"   ({i})")
    return "\n".join(lines)
