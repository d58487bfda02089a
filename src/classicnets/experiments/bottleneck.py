"""1x1 convolutions: what a bottleneck saves, counted and timed, and what NiN's 1x1 layers buy.

(a) The lecture's example on real layers: 28x28x192 -> 5x5 conv -> 32 maps costs 120,422,400
multiplies; a 1x1 conv down to 16 maps first costs 2,408,448 + 10,035,200 = 12,443,648, about a
tenth. Counted by :func:`~classicnets.costs.stack_cost` (FlopCounterMode on real ``nn.Conv2d``)
and timed: median CPU forward time of both stacks on the same batch.

(b) ``nin`` against ``PlainSkeleton``, defined here: NiN's skeleton (the same three 5x5/5x5/3x3
convolutions of 192 maps, the same pools, dropout and global average pooling) with every 1x1
``cccp`` layer removed, the class layer being a 3x3 convolution instead of a 1x1. So the plain
net is the same depth in *spatial* layers and has no 1x1 layer at all. Both train with the same
loop, optimiser and data (Fashion-MNIST, 1 channel, padded to 32x32 by the pipeline).
"""

from __future__ import annotations

import math
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..costs import conv_cost, stack_cost
from ..data.datasets import load_dataset
from ..data.pipeline import BatchLoader
from ..models import create_model
from ..models.base import ClassicNet
from ..models.nin import scaled_maps
from ..report import save_figure
from ..summary_table import summary
from . import register_experiment
from .common import finish, pyplot, sd, torch_threads


class PlainSkeleton(ClassicNet):
    """NiN without its 1x1 layers: conv1 5x5/192, max pool, conv2 5x5/192, avg pool, conv3 3x3/192,
    a 3x3 class convolution, global average pooling (ReLU after each, as in NiN)."""

    head_name = "classes"

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.5,
                 width: float = 1.0) -> None:
        super().__init__()
        c = scaled_maps(192, width)  # NiN's 192 maps, scaled as ``nin(width=...)`` scales them
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, c, 5, padding=2)), ("relu1", nn.ReLU(inplace=True)),
            ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)), ("drop1", nn.Dropout(dropout)),
            ("conv2", nn.Conv2d(c, c, 5, padding=2)), ("relu2", nn.ReLU(inplace=True)),
            ("pool2", nn.AvgPool2d(3, stride=2, ceil_mode=True)), ("drop2", nn.Dropout(dropout)),
            ("conv3", nn.Conv2d(c, c, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
        ]))
        self.classes = nn.Conv2d(c, num_classes, 3, padding=1)
        self.pool3 = nn.AdaptiveAvgPool2d(1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool3(F.relu(self.classes(x))), 1)


def _median_ms(module: nn.Module, x: torch.Tensor, reps: int) -> float:
    times = []
    with torch.no_grad():
        for i in range(reps + 2):  # two warm-up calls
            t0 = time.perf_counter()
            module(x)
            if i >= 2:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def time_stacks(batch: int, reps: int, seed: int = 0, threads: int | None = None) -> dict:
    """Median forward ms of the direct 5x5 conv and the 1x1-then-5x5 stack, interleaved so that
    load on a shared machine hits both alike, with ``threads`` torch threads (default: as set)."""
    with torch_threads(threads):
        return _time_stacks(batch, reps, seed)


def _time_stacks(batch: int, reps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    direct = nn.Conv2d(192, 32, 5, padding=2, bias=False).eval()
    reduced = nn.Sequential(nn.Conv2d(192, 16, 1, bias=False), nn.Conv2d(16, 32, 5, padding=2, bias=False)).eval()
    x = torch.randn(batch, 192, 28, 28)
    d, r = [], []
    for _ in range(3):  # three rounds, alternating
        d.append(_median_ms(direct, x, reps))
        r.append(_median_ms(reduced, x, reps))
    return {"direct_ms": statistics.median(d), "bottleneck_ms": statistics.median(r)}


def train_and_test(model: nn.Module, train_set, test_set, *, epochs: int, batch_size: int, lr: float,
                   seed: int) -> dict:
    """AdamW with a cosine schedule; test accuracy and training seconds."""
    torch.manual_seed(seed)
    args = dict(mean=train_set.mean, std=train_set.std, size=(32, 32))
    loader = BatchLoader(train_set.images, train_set.labels, batch_size, shuffle=True, seed=seed, **args)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    model.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in BatchLoader(test_set.images, test_set.labels, 256, **args):
            correct += int((model(x).argmax(1) == y).sum())
    return {"test_accuracy": correct / len(test_set.labels), "train_seconds": seconds,
            "final_train_loss": float(loss.detach())}


def conclusion(direct: int, reduced: int, ratio: dict, nets: dict, seeds, epochs: int, n_train: int,
               width: float) -> str:
    """The report's paragraph, from (a)'s counts and speed-ups (threads -> ratio) and (b)'s nets."""
    mac_ratio = direct / reduced
    thread_counts = sorted(ratio)
    slowest = min(ratio.values())
    nin, plain = nets["nin"], nets["plain (no 1x1)"]
    text = [f"(a) The bottleneck needs {mac_ratio:.1f}x fewer multiply-adds ({reduced:,} against {direct:,})"
            + "; on this CPU it ran " + " and ".join(
                f"{ratio[t]:.1f}x faster than the direct convolution with {t} thread{'s' * (t > 1)}"
                for t in thread_counts)
            + (". That falls well short of the arithmetic: the small 1x1 and 16-channel convolutions use the "
               "hardware far less efficiently than one large one." if slowest < 0.5 * mac_ratio else
               ": most of what the arithmetic promises, not all, since the small 1x1 and 16-channel "
               "convolutions use the hardware less efficiently than one large one." if slowest < 0.9 * mac_ratio
               else ", what the arithmetic promises.")]
    cheaper = nin["macs"] < plain["macs"]
    gap = nin["test_accuracy"] - plain["test_accuracy"]
    noise = max(nin["test_accuracy_sd"], plain["test_accuracy_sd"])
    clear = len(seeds) > 1 and abs(gap) > 2 * noise
    text.append(
        f"(b) NiN has {nin['conv_layers']} convolutions to the plain net's {plain['conv_layers']} yet "
        + ("fewer" if cheaper else "more") + f" multiply-adds ({nin['macs'] / 1e6:.1f} M against "
        f"{plain['macs'] / 1e6:.1f} M" + ("; its cccp2 1x1 layer cuts the maps before the second 5x5 "
                                          "convolution)" if cheaper else ")")
        + f" and {nin['params']:,} parameters against {plain['params']:,}. "
        + f"NiN reached {100 * nin['test_accuracy']:.1f}% test accuracy against {100 * plain['test_accuracy']:.1f}% "
          f"(mean of {len(seeds)} seed{'s' * (len(seeds) > 1)}): "
        + (("the 1x1 layers helped" if gap > 0 else "the 1x1 layers did not help")
           + (f", by more than twice the seed-to-seed s.d. ({100 * noise:.1f} points)." if clear else
              f", but by no more than twice the seed-to-seed s.d. ({100 * noise:.1f} points), so the gap is "
              "unresolved." if len(seeds) > 1 else "; one seed cannot tell a real gap from noise."))
        + f" The budget is {epochs} epoch{'s' * (epochs != 1)} on {n_train:,} images at "
          f"{width:g}x the paper's width: NiN (no batch normalisation, ReLU on its class maps) starts slowly, so a "
          "longer run (`--protocol paper`) may change the order.")
    return " ".join(text)


def _subset(data, n: int | None):
    if not n:
        return data
    return replace(data, images=data.images[:n], labels=data.labels[:n])


PROTOCOLS = {
    # Half NiN's widths (96/80/48 maps: a quarter of the multiply-adds), 12,000 images for 4
    # epochs, 2 seeds, the first 5,000 test images: about 10 minutes on 2 CPU cores.
    "quick": dict(train_limit=12_000, test_limit=5_000, epochs=4, reps=15, seeds=(0, 1), width=0.5, dropout=0.5),
    # NiN as published, all of Fashion-MNIST: hours on a CPU, minutes on a GPU.
    "paper": dict(train_limit=None, test_limit=None, epochs=10, reps=50, seeds=(0, 1, 2), width=1.0, dropout=0.5),
}


@register_experiment("1x1 convolutions: the bottleneck's cost counted and timed; NiN against the same "
                     "net without its 1x1 layers")
def run_bottleneck(out: Path, protocol: str = "quick", *, train_limit: int | None = -1,
                   test_limit: int | None = -1, epochs: int | None = None, reps: int | None = None,
                   batch: int = 16, batch_size: int = 64, lr: float = 1e-3, seeds: tuple[int, ...] | None = None,
                   width: float | None = None, dropout: float | None = None) -> dict:
    """(a) the cost table and timings; (b) ``nin`` against :class:`PlainSkeleton`, both at
    ``width`` times NiN's maps with ``dropout``, trained on ``train_limit`` Fashion-MNIST images
    for ``epochs``, tested on ``test_limit`` images, once per seed in ``seeds``."""
    started = time.perf_counter()
    train_limit, test_limit, epochs, reps, seeds, width, dropout = _resolve(
        PROTOCOLS[protocol], train_limit, test_limit, epochs, reps, seeds, width, dropout)
    cost = _measure_cost(batch, reps, seeds[0])
    train_set = _subset(load_dataset("fashion-mnist", "train"), train_limit)
    test_set = _subset(load_dataset("fashion-mnist", "test"), test_limit)
    nets = _compare_nets(train_set, test_set, seeds, epochs=epochs, batch_size=batch_size, lr=lr, width=width,
                         dropout=dropout)
    table_b = _nets_table(nets, f"(b) Fashion-MNIST at 32x32, {len(train_set.labels):,} training images, {epochs} "
                                f"epochs, nets at {width:g}x NiN's maps, dropout {dropout:g}, AdamW lr {lr:g} cosine, "
                                f"batch {batch_size}; test on {len(test_set.labels):,} images; mean +- s.d. over "
                                f"seeds {list(seeds)}")
    _plot(out / "bottleneck.png", cost, nets, batch)
    text = conclusion(cost.direct, cost.reduced, cost.ratio, nets, seeds, epochs, len(train_set.labels), width)
    results = {"cost": {"direct_macs": cost.direct, "bottleneck_macs": [m for _, _, m in cost.stack],
                        "bottleneck_total": cost.reduced, "mac_ratio": cost.direct / cost.reduced,
                        "timing_ms": {str(t): v for t, v in cost.timing.items()},
                        "time_ratio": {str(t): v for t, v in cost.ratio.items()}},
               "nin_vs_plain": nets}
    settings = {"timing_batch": batch, "timing_reps": reps, "train_limit": train_limit, "test_limit": test_limit,
                "epochs": epochs, "width": width, "dropout": dropout, "batch_size": batch_size, "optimizer": "adamw",
                "lr": lr, "weight_decay": 1e-4,
                "schedule": "cosine", "augment": "none", "dataset": "fashion-mnist", "input": "1x32x32",
                "plain_net": "NiN's conv1/conv2/conv3, pools, dropout and GAP; cccp1-5 removed; 3x3 class conv"}
    return finish(out, name="bottleneck", title="1x1 convolutions: bottlenecks and Network in Network",
                  protocol=protocol, started=started, settings=settings, seeds=seeds, results=results,
                  tables=[_cost_table(cost, reps, batch), table_b], figures=["bottleneck.png"], conclusion=text)


def _resolve(p: dict, train_limit, test_limit, epochs, reps, seeds, width, dropout) -> tuple:
    """The protocol's value for each setting not given: -1 for the limits (None there means every
    image), None or 0 for ``epochs`` and ``reps``, None for the rest (a dropout of 0 is a value)."""
    return (p["train_limit"] if train_limit == -1 else train_limit,
            p["test_limit"] if test_limit == -1 else test_limit,
            epochs or p["epochs"],
            reps or p["reps"],
            tuple(seeds if seeds is not None else p["seeds"]),
            p["width"] if width is None else width,
            p["dropout"] if dropout is None else dropout)


@dataclass
class _Cost:
    """(a): the lecture's two stacks, counted and timed."""

    direct: int  # multiply-adds of the 5x5 convolution straight from 192 channels
    stack: list[tuple[str, tuple[int, int, int], int]]  # the 1x1-then-5x5 stack, layer by layer
    timing: dict[int, dict[str, float]]  # threads -> median forward ms of each stack
    reduced: int = field(init=False)  # multiply-adds of the stack
    ratio: dict[int, float] = field(init=False)  # threads -> speed-up of the stack over the direct conv

    def __post_init__(self) -> None:
        self.reduced = sum(m for _, _, m in self.stack)
        self.ratio = {t: v["direct_ms"] / v["bottleneck_ms"] for t, v in self.timing.items()}


def _measure_cost(batch: int, reps: int, seed: int) -> _Cost:
    direct = conv_cost((28, 28, 192), 32, 5)
    stack = stack_cost((28, 28, 192), [(16, 1), (32, 5)])
    # Timed with one thread and with all of torch's: on a shared machine, small convolutions
    # split over threads that must wait for a core can lose most of their speed.
    thread_counts = sorted({1, torch.get_num_threads()})
    return _Cost(direct, stack, {t: time_stacks(batch, reps, seed, threads=t) for t in thread_counts})


def _cost_table(cost: _Cost, reps: int, batch: int) -> dict:
    thread_counts = list(cost.timing)
    timing, ratio, stack = cost.timing, cost.ratio, cost.stack
    return {"caption": f"(a) 28x28x192 -> 32 maps; forward time: median of {reps} calls x 3 rounds, "
                       f"batch {batch}",
            "headers": ["stack", "multiply-adds", *(f"forward ms, {t} thread{'s' * (t > 1)}" for t in thread_counts)],
            "rows": [["5x5 conv, 32", cost.direct, *(f"{timing[t]['direct_ms']:.2f}" for t in thread_counts)],
                     [f"1x1 conv, 16 ({stack[0][2]:,}) + 5x5 conv, 32 ({stack[1][2]:,})", cost.reduced,
                      *(f"{timing[t]['bottleneck_ms']:.2f} (speed-up {ratio[t]:.1f}x)" for t in thread_counts)]]}


def _compare_nets(train_set, test_set, seeds: tuple[int, ...], *, epochs: int, batch_size: int, lr: float,
                  width: float, dropout: float) -> dict[str, dict]:
    """(b): NiN against its skeleton without 1x1 layers, the same width, dropout, data and seeds."""
    nets = {}
    for name in ("nin", "plain (no 1x1)"):
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = (create_model("nin", num_classes=10, in_channels=1, width=width, dropout=dropout) if name == "nin"
                     else PlainSkeleton(10, 1, dropout=dropout, width=width))
            runs.append(train_and_test(model, train_set, test_set, epochs=epochs, batch_size=batch_size, lr=lr,
                                       seed=seed))
        s = summary(model, (1, 32, 32))
        accs = [r["test_accuracy"] for r in runs]
        nets[name] = {"params": s.total_params, "macs": s.total_macs,
                      "conv_layers": sum(isinstance(m, nn.Conv2d) for m in model.modules()),
                      "test_accuracy": statistics.mean(accs), "test_accuracy_sd": sd(accs),
                      "test_accuracies": accs, "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
                      "final_train_loss": statistics.mean(r["final_train_loss"] for r in runs)}
    return nets


def _nets_table(nets: dict[str, dict], caption: str) -> dict:
    return {"caption": caption,
            "headers": ["net", "conv layers", "params", "multiply-adds", "test accuracy", "train s (per seed)"],
            "rows": [[k, v["conv_layers"], v["params"], v["macs"],
                      f"{100 * v['test_accuracy']:.1f}% +- {100 * v['test_accuracy_sd']:.1f}",
                      f"{v['train_seconds']:.0f}"] for k, v in nets.items()]}


def _plot(path: Path, cost: _Cost, nets: dict, batch: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), constrained_layout=True)
    axes[0].bar(["5x5", "1x1+5x5"], [cost.direct / 1e6, cost.reduced / 1e6], color=["tab:red", "tab:blue"])
    axes[0].set(title="(a) multiply-adds (M)")
    t1 = next(iter(cost.timing))
    axes[1].bar(["5x5", "1x1+5x5"], [cost.timing[t1]["direct_ms"], cost.timing[t1]["bottleneck_ms"]],
                color=["tab:red", "tab:blue"])
    axes[1].set(title=f"(a) forward ms, batch {batch}, {t1} thread")
    names = list(nets)
    colors = ["tab:blue", "tab:red"]
    axes[2].bar(names, [nets[n]["params"] / 1e6 for n in names], color=colors)
    axes[2].set(title="(b) parameters (M)")
    axes[3].bar(names, [100 * nets[n]["test_accuracy"] for n in names], color=colors,
                yerr=[100 * nets[n]["test_accuracy_sd"] for n in names], capsize=4)
    axes[3].set(title="(b) Fashion-MNIST test acc. (%)")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)
