"""Training throughput: the classicnets batch pipeline against the usual tutorial loop.

Both contenders train the same LeNet-5 (``create_model("lenet5")``, same initial weights) on the
embedded digits with the same optimiser settings, batch size, learning-rate schedule (set every
step) and augmentation:

* ``classicnets``: as ``classicnets train`` runs it: the library's loader (``make_loader``: a
  :class:`~classicnets.data.pipeline.BatchLoader`, the uint8 dataset one tensor, padded to 32x32
  once, each batch gathered by index, shifted by +-2 pixels and normalised with a few tensor ops
  on the whole batch), the recipe's memory format, ``make_optimizer``'s fused SGD and
  ``classicnets.train.train_step``, with the loop's running sums and its finiteness check every
  25 steps (``common.timed_epoch``).
* ``tutorial``: ``tutorial.py``: a ``torch.utils.data.Dataset`` whose ``__getitem__`` turns one
  uint8 image into a float tensor (/255), pads it 28 -> 32, shifts it by a random +-2 pixels and
  normalises it, batched by a ``DataLoader(batch_size, shuffle=True)``, with the default
  ``num_workers=0`` and with ``num_workers=2``; the model in its default memory format,
  ``torch.optim.SGD``'s default implementation, ``loss.item()`` every step. The same data work as
  ours in plain tensor ops (no PIL, no torchvision), and no accuracy counted: a *generous* baseline.

Every configuration runs ``--reps`` times, one epoch each after a warm-up epoch, interleaving
the contenders (the order rotates every repetition) so that a noisy, shared machine slows all
of them alike; we report medians. Run it with ``.venv/bin/python benchmarks/bench_train.py``;
results go to ``benchmarks/results/<machine>/train_throughput.{json,md}``.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

import torch
from common import script_parser, timed_epoch, write_results  # benchmarks/*.py (scripts run from this folder)
from torch.utils.data import DataLoader
from tutorial import TutorialSet, tutorial_epoch, tutorial_optimizer

from classicnets.data import load_dataset
from classicnets.data.pipeline import make_loader, parse_augment
from classicnets.device import autocast_dtype
from classicnets.models import create_model
from classicnets.report import machine_info
from classicnets.train import TrainConfig, make_optimizer
from classicnets.train.schedules import make_schedule

SIZE = (32, 32)  # LeNet-5 input: 28x28 digits zero-padded by 2 (LeCun et al. 1998, II-A)


class Trainer:
    """A LeNet-5 and its optimiser, trained one epoch at a time as ``classicnets train`` does, or
    (``tutorial``) as the tutorial loop does; the same initial weights and lr schedule either way."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, epochs: int, seed: int = 0, tutorial: bool = False):
        torch.manual_seed(seed)
        self.model = create_model("lenet5", num_classes=10, in_channels=1).train()
        self.cfg, self.tutorial, self.step = cfg, tutorial, 0
        if tutorial:
            self.optimizer = tutorial_optimizer(self.model, cfg)
        else:
            if cfg.channels_last:
                self.model.to(memory_format=torch.channels_last)
            self.optimizer = make_optimizer(cfg, self.model)
        self.amp_dtype = autocast_dtype(cfg.precision, torch.device("cpu"), cfg.model)
        total = steps_per_epoch * epochs
        schedule = make_schedule(cfg.schedule, cfg.lr, total)
        self.lr_at = lambda step: schedule(step % total)

    def epoch(self, batches) -> tuple[int, float]:
        """Train one pass over ``batches``; returns (images, seconds)."""
        if self.tutorial:
            n, seconds, self.step = tutorial_epoch(self.model, self.optimizer, batches, lr_at=self.lr_at,
                                                   step=self.step)
        else:
            n, seconds, self.step = timed_epoch(self.model, self.optimizer, batches, self.lr_at, self.step,
                                                label_smoothing=self.cfg.label_smoothing, amp_dtype=self.amp_dtype)
        return n, seconds


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def make_contenders(data, batch_size: int, shift: int, workers: list[int], seed: int, channels_last: bool):
    """name -> a callable returning a fresh iterable of batches for one epoch."""
    def epochs_of(loader):
        epoch = {"n": 0}

        def next_epoch():
            loader.set_epoch(epoch["n"])
            epoch["n"] += 1
            return loader
        return next_epoch

    # As the training loop builds its loader (classicnets.train).
    augment = parse_augment(f"crop:{shift}" if shift else "none", "digits")
    ours = make_loader(data, batch_size, mean=data.mean, std=data.std, size=SIZE, shuffle=True, seed=seed,
                       channels_last=channels_last, augment=augment)
    contenders = {"classicnets": epochs_of(ours)}
    dataset = TutorialSet(data.images, data.labels, SIZE, data.mean, data.std, crop_padding=shift)
    for nw in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=nw)
        contenders[f"tutorial (num_workers={nw})"] = lambda loader=loader: loader
    return contenders, len(ours)


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    # As classicnets.train does by default (TrainConfig.deterministic=True), NaN fill of new tensors off.
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    data = load_dataset("digits", "train", progress=False)
    if args.limit:
        data = dataclasses.replace(data, images=data.images[:args.limit], labels=data.labels[:args.limit])
    results = {"machine": machine_info(), "config": {
        "model": "lenet5", "dataset": "digits/train", "images_per_epoch": len(data.labels),
        "batch_sizes": args.batch_sizes, "reps": args.reps, "warmup_epochs": 1, "shift": args.shift,
        "workers": args.workers, "deterministic_algorithms": True, "quick": args.quick,
        "optimizer": None,
    }, "runs": []}
    for bs in args.batch_sizes:
        cfg = TrainConfig(model="lenet5", dataset="digits", batch_size=bs).resolved()
        results["config"]["optimizer"] = {
            "name": cfg.optimizer, "lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov,
            "weight_decay": cfg.weight_decay, "schedule": cfg.schedule, "channels_last": cfg.channels_last}
        contenders, steps = make_contenders(data, bs, args.shift, args.workers, args.seed, cfg.channels_last)
        trainers = {name: Trainer(cfg, steps, args.reps + 1, seed=args.seed, tutorial=name != "classicnets")
                    for name in contenders}
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        names = list(contenders)
        for rep in range(args.reps + 1):  # rep 0 is the warm-up
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                n, seconds = trainers[name].epoch(contenders[name]())
                if rep > 0:
                    samples[name].append(n / seconds)
            if not args.quiet and rep > 0:
                print(f"batch {bs} rep {rep}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in samples.items()),
                      file=sys.stderr)
        medians = {name: statistics.median(v) for name, v in samples.items()}
        ours = medians["classicnets"]
        results["runs"].append({
            "batch_size": bs,
            "images_per_second": samples,
            "median_images_per_second": medians,
            "speedup_vs": {name: ours / m for name, m in medians.items() if name != "classicnets"},
        })
    return results


def to_markdown(results: dict) -> str:
    m, c = results["machine"], results["config"]
    opt = c["optimizer"]
    lines = [
        "# Training throughput: classicnets BatchLoader vs the tutorial Dataset + DataLoader loop",
        "",
        f"LeNet-5 (`lenet5`) on the embedded digits ({c['images_per_epoch']:,} training images), "
        f"+-{c['shift']} pixel shift augmentation on both sides, {opt['name']} lr {opt['lr']} "
        f"momentum {opt['momentum']} nesterov {opt['nesterov']} weight decay {opt['weight_decay']} "
        f"({opt['schedule']} schedule set every step). classicnets trains as `classicnets train` does "
        f"(`classicnets.train.train_step`, channels-last: {opt['channels_last']}, fused SGD); the tutorial loop "
        f"with the model's default memory format, `torch.optim.SGD`'s default implementation and `loss.item()` "
        f"every step. Median of {c['reps']} one-epoch "
        f"repetitions after one warm-up epoch, contenders interleaved.",
        "",
        f"Machine: {m['cpu']}, {m['cores_available']} cores available, torch {m['torch']}, "
        f"{m['torch_threads']} torch threads, load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'] or [])}.",
        "",
        "| batch | contender | median img/s | all repetitions (img/s) | classicnets speedup |",
        "|---:|---|---:|---|---:|",
    ]
    for r in results["runs"]:
        for name, med in r["median_images_per_second"].items():
            reps = ", ".join(f"{v:,.0f}" for v in r["images_per_second"][name])
            speed = "-" if name == "classicnets" else f"**{r['speedup_vs'][name]:.2f}x**"
            lines.append(f"| {r['batch_size']} | {name} | {med:,.0f} | {reps} | {speed} |")
    lines += ["", "Regenerate: `.venv/bin/python benchmarks/bench_train.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = script_parser(__doc__, "train_throughput")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--reps", type=int, default=5, help="timed one-epoch repetitions per contender")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers baselines")
    ap.add_argument("--shift", type=int, default=2, help="random shift in pixels (0: no augmentation)")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.reps, args.limit = [16, 32], 2, args.limit or 128
    results = run(args)
    write_results(args.out, "train_throughput", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
