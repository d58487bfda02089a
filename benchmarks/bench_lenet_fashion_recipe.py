"""Which LeNet-5 recipe reaches 90% on Fashion-MNIST soonest? Variants side by side, over seeds.

The time-to-accuracy goal counts training seconds until the test accuracy (evaluated after every
epoch) first reaches 90%. A short one-cycle run peaks at its last epoch, so the budget, the
learning rate and the regularisation decide together whether a run gets there and how soon.
Each variant below sets every one of those explicitly (none comes from today's recipe), each run
is its own process (``classicnets.train`` with 2 threads, or ``--threads``), and the variants
alternate seed by seed so that a slow spell of the machine falls on all of them.

Variants: the recipe used before (5 epochs, lr 0.1, flips), the recipe now (3 epochs, lr 0.2,
label smoothing 0.1, no augmentation) and the two ablations that tell its parts apart (with
flips; without label smoothing). ``--study batch`` puts the recipe beside larger batches
(``lenet_fashion_batch.{json,md}``), ``--study margin`` beside a fourth epoch and a gentler peak
learning rate (``lenet_fashion_margin.{json,md}``).

Run: ``.venv/bin/python benchmarks/bench_lenet_fashion_recipe.py`` (~10 minutes on 2 cores,
needs Fashion-MNIST: ``apt-get install dataset-fashion-mnist``). Results:
``benchmarks/results/<machine>/lenet_fashion_recipe.{json,md}``. ``--quick`` is the tiny run the tests use
(the embedded digits, 1 epoch).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import call_worker, isa, script_parser, serve_worker, write_results  # benchmarks/common.py

COMMON = dict(model="lenet5", batch_size=128, optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4,
              schedule="onecycle", channels_last=True, precision="fp32")
VARIANTS = {
    "5 epochs, lr 0.1, flips (before)": dict(epochs=5, lr=0.1, augment="flip", label_smoothing=0.0),
    "3 epochs, lr 0.2, flips, label smoothing 0.1": dict(epochs=3, lr=0.2, augment="flip", label_smoothing=0.1),
    "3 epochs, lr 0.2, no augmentation": dict(epochs=3, lr=0.2, augment="none", label_smoothing=0.0),
    "3 epochs, lr 0.2, no augmentation, label smoothing 0.1 (now)": dict(epochs=3, lr=0.2, augment="none",
                                                                          label_smoothing=0.1),
}
# --study batch: the recipe now against larger batches, which run more images per second on a CPU
# (LeNet-5's step at batch 512 ran 1.4x the images/s of batch 128: lenet_roofline.md) but take
# fewer steps per epoch. Scaling the learning rate with the batch (0.4 at batch 256) diverged in
# the first epoch (seed 0), so the rates stay at or near the recipe's 0.2, itself near the edge.
BATCH_VARIANTS = {
    "batch 128, 3 epochs, lr 0.2 (now)": dict(batch_size=128, epochs=3, lr=0.2),
    "batch 256, 3 epochs, lr 0.2": dict(batch_size=256, epochs=3, lr=0.2),
    "batch 256, 3 epochs, lr 0.3": dict(batch_size=256, epochs=3, lr=0.3),
    "batch 512, 4 epochs, lr 0.3": dict(batch_size=512, epochs=4, lr=0.3),
}
BATCH_VARIANTS = {name: {**v, "augment": "none", "label_smoothing": 0.1} for name, v in BATCH_VARIANTS.items()}
# --study margin: how sure a run is to pass 90%. Three epochs at lr 0.2 ended at 90.13-90.77% on
# seeds 0-4 with oneDNN's convolutions; with the native ones (the same sums in another order) seed 0
# ended at 89.81% in the suite (2026-12-07): the margin is a few tenths. A fourth epoch, or a
# gentler peak, against the recipe.
MARGIN_VARIANTS = {
    "3 epochs, lr 0.2": dict(epochs=3, lr=0.2),
    "3 epochs, lr 0.15": dict(epochs=3, lr=0.15),
    "4 epochs, lr 0.2": dict(epochs=4, lr=0.2),
    "4 epochs, lr 0.15": dict(epochs=4, lr=0.15),
}
MARGIN_VARIANTS = {name: {**v, "augment": "none", "label_smoothing": 0.1} for name, v in MARGIN_VARIANTS.items()}
STUDIES = {"recipe": (VARIANTS, "lenet_fashion_recipe"), "batch": (BATCH_VARIANTS, "lenet_fashion_batch"),
           "margin": (MARGIN_VARIANTS, "lenet_fashion_margin")}


def quick(variants: dict) -> dict:
    return {f"{name}; quick: 1 epoch of 256 images": {**v, "epochs": 1, "train_limit": 256}
            for name, v in list(variants.items())[-2:]}


def worker(settings: dict) -> dict:
    """One training run: test accuracy and training seconds after each epoch."""
    from classicnets.errors import TrainingError
    from classicnets.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        try:
            r = train(TrainConfig(**settings, out=tmp, quiet=True))
        except TrainingError as exc:  # the loss became non-finite: a result, not a failure of the script
            return {"curve": [], "diverged": str(exc)}
    elapsed, curve = 0.0, []
    for h in r.history:
        elapsed += h["epoch_seconds"]
        curve.append({"epoch": h["epoch"], "test_accuracy": h["test_accuracy"], "train_seconds": elapsed})
    return {"curve": curve}


def run_worker(settings: dict) -> dict:
    return call_worker(Path(__file__).resolve(), [json.dumps(settings)], what=f"run {settings}")


def reached(curve: list[dict], target: float) -> dict | None:
    """The first epoch whose test accuracy is at least ``target``, with the seconds trained until then."""
    return next(({"epoch": c["epoch"], "seconds": c["train_seconds"]} for c in curve if c["test_accuracy"] >= target),
                None)


def summarise(runs: list[dict], target: float) -> dict:
    """Over seeds; a seed whose loss diverged counts as never reaching the target, at 0% accuracy."""
    finals = [r["curve"][-1]["test_accuracy"] if r["curve"] else 0.0 for r in runs]
    times = [r["reached"]["seconds"] if r["reached"] else math.inf for r in runs]
    median = statistics.median(times)
    return {"seeds_reaching_target": sum(r["reached"] is not None for r in runs), "seeds": len(runs),
            "seeds_diverged": sum("diverged" in r for r in runs),
            "final_accuracy_min": min(finals), "final_accuracy_median": statistics.median(finals),
            "final_accuracy_max": max(finals),
            "median_seconds_to_target": None if math.isinf(median) else median,
            "median_epoch_seconds": statistics.median([
                b["train_seconds"] - a for r in runs if r["curve"]
                for a, b in zip([0.0] + [c["train_seconds"] for c in r["curve"][:-1]], r["curve"], strict=True)]
                or [math.nan])}


def run(args) -> dict:
    from classicnets.report import machine_info

    variants = STUDIES[args.study][0]
    variants = quick(variants) if args.quick else variants
    dataset, target = ("digits", 0.5) if args.quick else ("fashion-mnist", 0.90)
    # What every variant shares (a setting some variant sets is in the variants' names instead).
    common = {k: v for k, v in COMMON.items() if not any(k in settings for settings in variants.values())}
    first, *others = variants.values()
    common.update({k: v for k, v in first.items() if all(o.get(k) == v for o in others)})
    results = {"machine": machine_info(), "quick": args.quick, "study": args.study, "dataset": dataset,
               "target": target, "seeds": list(args.seeds), "threads": args.threads, "common": common, "variants": {}}
    start = time.perf_counter()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for i, seed in enumerate(args.seeds):
        order = list(variants) if i % 2 == 0 else list(variants)[::-1]
        for name in order:
            settings = {**COMMON, **variants[name], "dataset": dataset, "seed": seed, "threads": args.threads}
            r = run_worker(settings)
            r.update(seed=seed, reached=reached(r["curve"], target))
            runs[name].append(r)
            if not args.quiet:
                last = r["curve"][-1] if r["curve"] else None
                print(f"seed {seed}, {name}: " + (r["diverged"] if last is None else
                      f"{100 * last['test_accuracy']:.2f}% after {last['train_seconds']:.1f} s, "
                      f"target reached: {r['reached']}"), flush=True)
    for name, settings in variants.items():
        rs = sorted(runs[name], key=lambda r: r["seed"])
        results["variants"][name] = {"settings": settings, "runs": rs, **summarise(rs, target)}
    results["seconds"] = time.perf_counter() - start
    return results


def _secs(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.1f} s"


def command_options(results: dict) -> str:
    study = results.get("study", "recipe")  # files from before --study were the recipe study
    return (f" --study {study}" if study != "recipe" else "") + (" --quick" if results["quick"] else "")


def to_markdown(results: dict) -> str:
    m, target = results["machine"], results["target"]
    common = ", ".join(f"{k} {v}" for k, v in results["common"].items() if k != "model")
    lines = [
        "# LeNet-5 on Fashion-MNIST: which recipe reaches the target soonest", "",
        f"`benchmarks/bench_lenet_fashion_recipe.py{command_options(results)}`: "
        f"{results['seconds'] / 60:.1f} min. Machine: {m['cpu']}{isa(m)}, {m['cores_available']} cores available, "
        f"{results['threads']} torch threads, torch {m['torch']}. Dataset: {results['dataset']}; target "
        f"{100 * target:.1f}% test accuracy (the whole test set, evaluated after each epoch and not timed); "
        f"seeds {results['seeds']}; each run its own process, the variants alternating seed by seed.", "",
        f"Every variant: lenet5, {common}; what differs is in its name.", "",
        f"| variant | seeds reaching {100 * target:.0f}% | final accuracy min / median / max | median seconds to "
        f"{100 * target:.0f}% | median seconds per epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in results["variants"].items():
        diverged = f" ({v['seeds_diverged']} diverged)" if v.get("seeds_diverged") else ""
        lines.append(f"| {name} | {v['seeds_reaching_target']} of {v['seeds']}{diverged} | "
                     f"{100 * v['final_accuracy_min']:.2f} / {100 * v['final_accuracy_median']:.2f} / "
                     f"{100 * v['final_accuracy_max']:.2f}% | {_secs(v['median_seconds_to_target'])} | "
                     f"{v['median_epoch_seconds']:.1f} |")
    lines += ["", "Every run: test accuracy after each epoch (training seconds so far).", "",
              "| variant | seed | curve |", "|---|---:|---|"]
    for name, v in results["variants"].items():
        for r in v["runs"]:
            curve = ", ".join(f"{100 * c['test_accuracy']:.2f}% ({c['train_seconds']:.1f} s)" for c in r["curve"]) \
                or f"diverged: {r.get('diverged')}"
            lines.append(f"| {name} | {r['seed']} | {curve} |")
    lines += ["", f"Regenerate: `.venv/bin/python benchmarks/bench_lenet_fashion_recipe.py{command_options(results)}`",
              ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if serve_worker(argv, worker):
        return 0
    ap = script_parser(__doc__, "lenet_fashion_recipe (lenet_fashion_batch, lenet_fashion_margin with --study)")
    ap.add_argument("--study", choices=list(STUDIES), default="recipe",
                    help="recipe: the recipe's parts (default); batch: larger batches; margin: a fourth epoch, "
                         "a gentler peak")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.threads = [0], 1
    results = run(args)
    write_results(args.out, STUDIES[args.study][1], results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
