"""1x1 convolutions: what a bottleneck saves, counted and timed, and what NiN's 1x1 layers buy.

(a) The lecture's example on real layers: 28x28x192 -> 5x5 conv -> 32 maps costs 120,422,400
multiplies; a 1x1 conv down to 16 maps first costs 2,408,448 + 10,035,200 = 12,443,648, about a
tenth. Counted by :func:`~classicnets.costs.stack_cost` (FlopCounterMode on real ``nn.Conv2d``)
and timed: median CPU forward time of both stacks on the same batch.

(b) ``nin`` against ``PlainSkeleton``, defined here: NiN's skeleton (the same three 5x5/5x5/3x3
convolutions of 192 maps, the same pools, dropout and global average pooling) with every 1x1
``cccp`` layer removed, the class layer being a 3x3 convolution instead of a 1x1. So the plain
net is the same depth in *spatial* layers and has no 1x1 layer at all. Both train with the same
loop, optimiser and data (Fashion-MNIST, 1 channel, padded to 32x32 by the pipeline), each
tested after every epoch, so that the report can say whether both reached a plateau
(:func:`convergence`). The (net, seed) runs go side by side, one process each
(:func:`~classicnets.experiments.common.run_jobs`); (a)'s timing runs before them, alone.
"""

from __future__ import annotations

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
from .bottleneck_report import CONVERGENCE, conclusion, convergence, nets_table
from .common import default_workers, finish, pyplot, run_jobs, sd, torch_threads, warmup_cosine


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
                   seed: int, warmup: float = 0.0) -> dict:
    """AdamW: the learning rate rises linearly to ``lr`` over the first ``warmup`` epochs, then
    falls to 0 on a cosine. After every epoch: the accuracy on ``test_set`` and the mean training
    loss of the epoch (``curve``, one point an epoch). ``dead_classes``: the classes whose output
    was 0 for every test image after the last epoch (see :func:`_test`). ``train_seconds`` leaves the tests out;
    testing draws no random numbers, so the training is the same as without it."""
    torch.manual_seed(seed)
    args = dict(mean=train_set.mean, std=train_set.std, size=(32, 32))
    loader = BatchLoader(train_set.images, train_set.labels, batch_size, shuffle=True, seed=seed, **args)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(epochs * len(loader), round(warmup * len(loader))))
    curve: dict[str, list[float]] = {"test_accuracy": [], "train_loss": []}
    seconds, dead = 0.0, []
    for epoch in range(epochs):
        model.train()
        loader.set_epoch(epoch)
        t0, loss_sum, seen = time.perf_counter(), 0.0, 0
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum, seen = loss_sum + float(loss.detach()) * len(y), seen + len(y)
        seconds += time.perf_counter() - t0
        curve["train_loss"].append(loss_sum / seen)
        accuracy, dead = _test(model, test_set, args)
        curve["test_accuracy"].append(accuracy)
    return {"test_accuracy": curve["test_accuracy"][-1], "train_seconds": seconds,
            "final_train_loss": curve["train_loss"][-1], "curve": curve,
            "dead_classes": dead}


def _test(model: nn.Module, test_set, args: dict) -> tuple[float, list[int]]:
    """The accuracy on ``test_set``, and its dead classes: both nets end in a ReLU before the
    average pool, so every output is >= 0, and a class whose output is 0 for every test image has a
    class map that is negative everywhere, and no gradient reaches it through that map. (A class
    the net merely never predicts, such as Fashion-MNIST's shirts in a weak net, is alive.)"""
    model.eval()
    correct, highest = 0, None
    with torch.no_grad():
        for x, y in BatchLoader(test_set.images, test_set.labels, 256, **args):
            out = model(x)
            correct += int((out.argmax(1) == y).sum())
            top = out.max(0).values
            highest = top if highest is None else torch.maximum(highest, top)
    return correct / len(test_set.labels), [c for c, v in enumerate(highest.tolist()) if v <= 0]


def _subset(data, n: int | None):
    if not n:
        return data
    return replace(data, images=data.images[:n], labels=data.labels[:n])


PROTOCOLS = {
    # Half NiN's widths (96/80/48 maps: a quarter of the multiply-adds), the first 3,000
    # Fashion-MNIST images for 24 epochs of batch 32 (2,256 steps), AdamW to lr 1e-3 after a
    # 1-epoch warm-up, then cosine; class-layer biases start at 1; 3 seeds, 2 runs side by side;
    # tested every epoch on the first 2,000 test images. How it was chosen (2026-12-07, AMD EPYC
    # AVX2; docs/experiments.md has every try and its numbers): with zero class biases NiN lost
    # classes at every learning rate tried (1e-3 with a 1- or 2-epoch warm-up, 3e-4), or sat at
    # chance (SGD with momentum, lr 0.05); with biases of 1 no class died. The same budget for 15
    # epochs took 1,337 s and just missed the convergence check (NiN 78.4%, plain 80.5%; the
    # seed-mean moved 1.3 and 1.4 points over the last 5 epochs, 0.3 and 0.1 over the last 3).
    "quick": dict(train_limit=3_000, test_limit=2_000, epochs=24, reps=15, seeds=(0, 1, 2), width=0.5,
                  dropout=0.5, batch_size=32, lr=1e-3, warmup=1, class_bias=1.0),
    # The converged comparison on a laptop: the quick protocol's settings on the first 2,000
    # images for 48 epochs (3,024 steps of batch 32). Over the last third of its epochs both nets'
    # seed-mean test accuracy trends by less than the convergence check's 1 point (+0.8 and +0.6),
    # where the quick budget's does not (docs/experiments.md, "Bottleneck (b)", has every budget tried).
    "cpu": dict(train_limit=2_000, test_limit=2_000, epochs=48, reps=15, seeds=(0, 1, 2), width=0.5,
                dropout=0.5, batch_size=32, lr=1e-3, warmup=1, class_bias=1.0),
    # NiN as published, all of Fashion-MNIST: hours on a CPU, minutes on a GPU.
    "paper": dict(train_limit=None, test_limit=None, epochs=10, reps=50, seeds=(0, 1, 2), width=1.0, dropout=0.5,
                  batch_size=64, lr=1e-3, warmup=1, class_bias=1.0),
}


@register_experiment("1x1 convolutions: the bottleneck's cost counted and timed; NiN against the same "
                     "net without its 1x1 layers", more_protocols=("cpu",))
def run_bottleneck(out: Path, protocol: str = "quick", *, train_limit: int | None = -1,
                   test_limit: int | None = -1, epochs: int | None = None, reps: int | None = None,
                   batch: int = 16, batch_size: int | None = None, lr: float | None = None,
                   seeds: tuple[int, ...] | None = None, width: float | None = None, dropout: float | None = None,
                   warmup: float | None = None, class_bias: float | None = None, workers: int | None = None,
                   threads: int | None = None) -> dict:
    """(a) the cost table and timings; (b) ``nin`` against :class:`PlainSkeleton`, both at
    ``width`` times NiN's maps with ``dropout``, trained on ``train_limit`` Fashion-MNIST images
    for ``epochs`` (batches of ``batch_size``, peak learning rate ``lr`` after ``warmup`` epochs
    of linear warm-up; class layers' biases starting at ``class_bias``), tested after every epoch
    on ``test_limit`` images, once per seed in ``seeds``: ``workers`` runs at a time (None: one per
    core; 1: here, one after another), each with ``threads`` torch threads (None: 1 with several
    workers, else as set). Settings not given are the protocol's."""
    started = time.perf_counter()
    s = _resolve(PROTOCOLS[protocol], dict(train_limit=train_limit, test_limit=test_limit, epochs=epochs,
                                           reps=reps, seeds=seeds, width=width, dropout=dropout,
                                           batch_size=batch_size, lr=lr, warmup=warmup,
                                           class_bias=class_bias))
    seeds, reps = s.pop("seeds"), s.pop("reps")
    cost = _measure_cost(batch, reps, seeds[0])  # alone, before the training runs start
    nets, ran = _compare_nets(s, seeds, workers=workers, threads=threads)
    s["train_images"], s["test_images"] = ran["images"]
    table_b = nets_table(nets, f"(b) Fashion-MNIST at 32x32, {s['train_images']:,} training images, "
                               f"{s['epochs']} epochs, nets at {s['width']:g}x NiN's maps, dropout {s['dropout']:g}, "
                               f"AdamW lr {s['lr']:g}, {s['warmup']:g}-epoch warm-up then cosine, class biases from "
                               f"{s['class_bias']:g}, batch {s['batch_size']}; tested after every epoch on "
                               f"{s['test_images']:,} images; mean +- s.d. over seeds {list(seeds)}. Converged: "
                               f"{CONVERGENCE}")
    _plot(out / "bottleneck.png", cost, nets, batch)
    text = conclusion(cost.direct, cost.reduced, cost.ratio, nets, seeds, s)
    results = {"cost": {"direct_macs": cost.direct, "bottleneck_macs": [m for _, _, m in cost.stack],
                        "bottleneck_total": cost.reduced, "mac_ratio": cost.direct / cost.reduced,
                        "timing_ms": {str(t): v for t, v in cost.timing.items()},
                        "time_ratio": {str(t): v for t, v in cost.ratio.items()}},
               "nin_vs_plain": nets}
    settings = {"timing_batch": batch, "timing_reps": reps, **s, "optimizer": "adamw", "weight_decay": 1e-4,
                "schedule": "linear warm-up, then cosine", "augment": "none", "dataset": "fashion-mnist",
                "input": "1x32x32",
                "test_every": "epoch", "convergence": CONVERGENCE, "workers": ran["workers"],
                "threads": ran["threads"],
                "plain_net": "NiN's conv1/conv2/conv3, pools, dropout and GAP; cccp1-5 removed; 3x3 class conv"}
    return finish(out, name="bottleneck", title="1x1 convolutions: bottlenecks and Network in Network",
                  protocol=protocol, started=started, settings=settings, seeds=seeds, results=results,
                  tables=[_cost_table(cost, reps, batch), table_b], figures=["bottleneck.png"], conclusion=text)


def _resolve(p: dict, given: dict) -> dict:
    """The protocol's value for each setting not given: -1 for the limits (None there means every
    image), None or 0 for ``epochs`` and ``reps``, None for the rest (a dropout of 0 is a value)."""
    s = dict(p)
    for key, value in given.items():
        unset = (value == -1 if key in ("train_limit", "test_limit") else
                 not value if key in ("epochs", "reps") else value is None)
        if not unset:
            s[key] = value
    s["seeds"] = tuple(s["seeds"])
    return s


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


NETS = ("nin", "plain (no 1x1)")  # NiN first: its runs are the longer, so they start first


def _make_net(name: str, width: float, dropout: float, class_bias: float = 0.0) -> ClassicNet:
    """The net, with its class layer's biases set to ``class_bias``. Why: both nets end in a ReLU
    on 10 class maps, and with zero-mean weights on the maps below (all >= 0, so every position of
    a class map leans the same way) some class maps go negative nearly everywhere, 2-4 of 10
    within the first epoch in the probes (docs/experiments.md): no gradient reaches them, and at
    half NiN's width some stayed dead (a dead class, see :func:`_test`). A positive bias starts
    every map alive, as AlexNet's biases of 1 gave its ReLUs positive inputs (Krizhevsky et al.
    2012, section 5)."""
    if name == "nin":
        model = create_model("nin", num_classes=10, in_channels=1, width=width, dropout=dropout)
    else:
        model = PlainSkeleton(10, 1, dropout=dropout, width=width)
    nn.init.constant_(model.get_classifier().bias, class_bias)  # cccp6 / classes
    return model


def _train_run(net: str, seed: int, s: dict) -> dict:
    """One net, one seed, with the settings ``s``: its own copy of the data, plain values back
    (it runs in a worker process; see :func:`_compare_nets`)."""
    train_set = _subset(load_dataset("fashion-mnist", "train"), s["train_limit"])
    test_set = _subset(load_dataset("fashion-mnist", "test"), s["test_limit"])
    torch.manual_seed(seed)
    model = _make_net(net, s["width"], s["dropout"], s["class_bias"])
    r = train_and_test(model, train_set, test_set, epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                       seed=seed, warmup=s["warmup"])
    info = summary(model, (1, 32, 32))
    return {**r, "params": info.total_params, "macs": info.total_macs,
            "conv_layers": sum(isinstance(m, nn.Conv2d) for m in model.modules()),
            "images": [len(train_set.labels), len(test_set.labels)], "threads": torch.get_num_threads()}


def _compare_nets(s: dict, seeds: tuple[int, ...], *, workers: int | None,
                  threads: int | None) -> tuple[dict[str, dict], dict]:
    """(b): NiN against its skeleton without 1x1 layers, the same width, dropout, data and seeds;
    ``workers`` runs at a time (None: one per core), each with ``threads`` torch threads (None: 1
    with several workers, else as set). Returns the nets and how they ran (workers, threads, images)."""
    jobs = [dict(net=name, seed=seed, s=s) for name in NETS for seed in seeds]
    workers = workers or default_workers(threads, len(jobs))
    runs = run_jobs(_train_run, jobs, workers=workers, threads=threads)
    nets = {}
    for name in NETS:
        rs = [r for job, r in zip(jobs, runs, strict=True) if job["net"] == name]
        accs = [r["test_accuracy"] for r in rs]
        curves = [r["curve"]["test_accuracy"] for r in rs]
        dead = [r["dead_classes"] for r in rs]
        nets[name] = {"params": rs[0]["params"], "macs": rs[0]["macs"], "conv_layers": rs[0]["conv_layers"],
                      "test_accuracy": statistics.mean(accs), "test_accuracy_sd": sd(accs),
                      "test_accuracies": accs, "train_seconds": statistics.mean(r["train_seconds"] for r in rs),
                      "final_train_loss": statistics.mean(r["final_train_loss"] for r in rs),
                      "test_accuracy_curves": curves, "train_loss_curves": [r["curve"]["train_loss"] for r in rs],
                      "dead_classes": dead, "convergence": convergence(curves, dead=dead)}
    ran = {"workers": min(workers, len(jobs)), "threads": runs[0]["threads"], "images": runs[0]["images"]}
    return nets, ran


def _plot(path: Path, cost: _Cost, nets: dict, batch: int) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1, 1.6, 1]})
    axes[0].bar(["5x5", "1x1+5x5"], [cost.direct / 1e6, cost.reduced / 1e6], color=["tab:red", "tab:blue"])
    axes[0].set(title="(a) multiply-adds (M)")
    t1 = next(iter(cost.timing))
    axes[1].bar(["5x5", "1x1+5x5"], [cost.timing[t1]["direct_ms"], cost.timing[t1]["bottleneck_ms"]],
                color=["tab:red", "tab:blue"])
    axes[1].set(title=f"(a) forward ms, batch {batch}, {t1} thread")
    names = list(nets)
    colors = ["tab:blue", "tab:red"]
    for name, color in zip(names, colors, strict=True):  # each seed thin, the mean over seeds thick
        curves = nets[name]["test_accuracy_curves"]
        epochs = range(1, len(curves[0]) + 1)
        for curve in curves:
            axes[2].plot(epochs, [100 * a for a in curve], color=color, lw=0.7, alpha=0.4)
        axes[2].plot(epochs, [100 * a for a in nets[name]["convergence"]["mean_curve"]], color=color, lw=2,
                     marker="o", ms=3, label=name)
    window = nets[names[0]]["convergence"]["window"]  # the epochs the convergence check looks at
    axes[2].axvspan(len(epochs) - window + 1, len(epochs), color="0.9", label=f"last {window} epochs: the check")
    axes[2].xaxis.get_major_locator().set_params(integer=True)
    axes[2].set(title="(b) test acc. after each epoch (%)", xlabel="epoch")
    axes[2].legend(fontsize=8, loc="best")
    axes[3].bar(names, [100 * nets[n]["test_accuracy"] for n in names], color=colors,
                yerr=[100 * nets[n]["test_accuracy_sd"] for n in names], capsize=4)
    axes[3].set(title="(b) final test acc. (%)")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)
