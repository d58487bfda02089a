"""Transfer learning: do features learned on digits help on clothes when labels are few?

LeNet-5 is trained on the embedded digits (its default recipe), then moved to Fashion-MNIST with
(i) the digit features frozen and a new head trained, (ii) every layer fine-tuned from the digit
weights, (iii) the same network trained from scratch, each on the first 100, 1,000 and 10,000
Fashion training images. Every run gets the same number of optimiser steps (epochs are scaled to
the training-set size), so a small set is not also a short run; test accuracy is on the full
10,000-image Fashion test set.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from ..report import save_figure
from ..train import TrainConfig, train
from ..train.recipes import recipe_for
from . import register_experiment
from .common import finish, pyplot, runs_directory

MODES = {
    "frozen features": dict(freeze_features=True, init_from=True),
    "fine-tuned": dict(freeze_features=False, init_from=True),
    "from scratch": dict(freeze_features=False, init_from=False),
}

PROTOCOLS = {
    "quick": dict(sizes=(100, 1000, 10000), steps=500, seeds=(0, 1)),
    "paper": dict(sizes=(100, 1000, 10000, 60000), steps=3000, seeds=(0, 1, 2)),
}


def epochs_for(n: int, steps: int, batch_size: int) -> int:
    """Epochs that give at least ``steps`` optimiser steps on ``n`` images."""
    return max(1, math.ceil(steps / math.ceil(n / batch_size)))


@register_experiment("transfer: LeNet-5 digit features on Fashion-MNIST, frozen / fine-tuned / from scratch, "
                     "at 100-10,000 training images")
def run_transfer(out: Path, protocol: str = "quick", *, sizes: tuple[int, ...] | None = None,
                 steps: int | None = None, seeds: tuple[int, ...] | None = None,
                 digits_epochs: int | None = None, runs_dir: str | Path | None = None, threads: int | None = 1) -> dict:
    """``runs_dir`` keeps the training runs (checkpoints); by default they go to a temporary folder.

    ``threads=1``: LeNet-5's layers are too small for a second thread to pay, and on a machine
    that is busy with other work a second OpenMP thread waiting for a core made a digits run
    15x slower (measured: 4 s against 60 s for 5 epochs).
    """
    started = time.perf_counter()
    p = PROTOCOLS[protocol]
    sizes, steps, seeds = tuple(sizes or p["sizes"]), steps or p["steps"], tuple(seeds or p["seeds"])
    # The digits recipe for every run (not DATASET_RECIPES' Fashion-MNIST budget): one recipe,
    # so only the starting weights differ.
    recipe = recipe_for("lenet5")
    batch_size = recipe["batch_size"]
    acc, digits_acc = _train_all(sizes, steps, seeds, recipe, digits_epochs=digits_epochs, runs_dir=runs_dir,
                                 threads=threads)
    mean = {m: {n: statistics.mean(v) for n, v in d.items()} for m, d in acc.items()}
    _plot(out / "transfer.png", acc, mean, sizes)
    results = {"accuracy": {m: {str(n): v for n, v in d.items()} for m, d in acc.items()},
               "mean_accuracy": {m: {str(n): v for n, v in d.items()} for m, d in mean.items()},
               "digits_accuracy": digits_acc,
               "epochs": {str(n): epochs_for(n, steps, batch_size) for n in sizes}}
    settings = {"model": "lenet5", "source": "digits (default recipe)", "target": "fashion-mnist",
                "sizes": list(sizes), "steps": steps, "batch_size": batch_size, "threads": threads,
                "recipe": "lenet5 default (SGD nesterov lr 0.03, one-cycle, crop:2+flip) for every run",
                "train_subset": "the first N training images", "test": "full 10,000-image test set"}
    return finish(out, name="transfer", title="Transfer: LeNet-5 from digits to Fashion-MNIST",
                  protocol=protocol, started=started, settings=settings, seeds=seeds, results=results,
                  tables=[_table(acc, sizes, seeds, steps, batch_size)], figures=["transfer.png"],
                  conclusion=conclusion(mean, sizes, digits_acc))


def _train_all(sizes: tuple[int, ...], steps: int, seeds: tuple[int, ...], recipe: dict, *,
               digits_epochs: int | None, runs_dir: str | Path | None,
               threads: int | None) -> tuple[dict[str, dict[int, list[float]]], list[float]]:
    """Per seed: LeNet-5 on the digits, then every mode at every size on Fashion-MNIST.
    Returns (Fashion test accuracy by mode and size, one per seed; digits test accuracy per seed)."""
    batch_size = recipe["batch_size"]
    acc: dict[str, dict[int, list[float]]] = {m: {n: [] for n in sizes} for m in MODES}
    digits_acc = []
    with runs_directory(runs_dir, "transfer") as runs_dir:
        for seed in seeds:
            src = train(TrainConfig(model="lenet5", dataset="digits", epochs=digits_epochs, seed=seed, threads=threads,
                                    out=str(runs_dir / f"digits-s{seed}"), quiet=True))
            digits_acc.append(src.test_accuracy)
            for n in sizes:
                epochs = epochs_for(n, steps, batch_size)
                for mode, opts in MODES.items():
                    r = train(TrainConfig(
                        model="lenet5", dataset="fashion-mnist", train_limit=n, epochs=epochs, eval_every=epochs,
                        batch_size=batch_size, lr=recipe["lr"], augment=recipe["augment"],
                        label_smoothing=recipe.get("label_smoothing", 0.0),
                        seed=seed, threads=threads, freeze_features=opts["freeze_features"],
                        init_from=str(src.out_dir) if opts["init_from"] else None,
                        out=str(runs_dir / f"{mode.split()[0]}-n{n}-s{seed}"), quiet=True))
                    acc[mode][n].append(r.test_accuracy)
    return acc, digits_acc


def _table(acc: dict, sizes: tuple[int, ...], seeds: tuple[int, ...], steps: int, batch_size: int) -> dict:
    def cell(v: list[float]) -> str:
        s = f"{100 * statistics.mean(v):.1f}%"
        return s + (f" ({100 * min(v):.1f}-{100 * max(v):.1f})" if len(v) > 1 else "")

    return {"caption": f"Fashion-MNIST test accuracy (10,000 images), mean over seeds {list(seeds)} "
                       f"(min-max); every run {steps:,}+ SGD steps of batch {batch_size}",
            "headers": ["training images", *MODES],
            "rows": [[f"{n:,}", *(cell(acc[m][n]) for m in MODES)] for n in sizes]}


def _plot(path: Path, acc: dict, mean: dict, sizes: tuple[int, ...]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for mode, color in zip(MODES, ("tab:green", "tab:blue", "tab:red"), strict=True):
        ys = [100 * mean[mode][n] for n in sizes]
        lo = [y - 100 * min(acc[mode][n]) for y, n in zip(ys, sizes, strict=True)]
        hi = [100 * max(acc[mode][n]) - y for y, n in zip(ys, sizes, strict=True)]
        ax.errorbar(sizes, ys, yerr=[lo, hi], marker="o", capsize=3, color=color, label=mode)
    ax.set(xscale="log", xlabel="Fashion-MNIST training images", ylabel="test accuracy (%)",
           title="LeNet-5: digit features moved to Fashion-MNIST")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)


def conclusion(mean: dict, sizes: tuple[int, ...], digits_acc: list[float]) -> str:
    """The report's paragraph: which start is best at each size, and by how much transfer helps
    when labels are few."""
    best = {n: max(MODES, key=lambda m, n=n: mean[m][n]) for n in sizes}
    small, large = sizes[0], sizes[-1]
    transfer_small = max(mean["frozen features"][small], mean["fine-tuned"][small])
    gain = 100 * (transfer_small - mean["from scratch"][small])
    text = ["Best setting per size: " + "; ".join(f"{n:,} images: {best[n]} ({100 * mean[best[n]][n]:.1f}%)"
                                                   for n in sizes) + "."]
    text.append(f"With {small:,} images the better of the two digit-initialised runs is "
                + (f"{gain:.1f} points above" if gain > 0 else f"{-gain:.1f} points below")
                + f" training from scratch ({100 * transfer_small:.1f}% against "
                  f"{100 * mean['from scratch'][small]:.1f}%)"
                + (", the expected benefit of transfer when labels are scarce." if gain > 0 else
                   ": digit features did not help clothes here, contrary to the usual expectation."))
    frozen_vs_scratch = 100 * (mean["frozen features"][small] - mean["from scratch"][small])
    text.append(f"Frozen digit features alone are {abs(frozen_vs_scratch):.1f} points "
                + ("above" if frozen_vs_scratch > 0 else "below")
                + f" training from scratch with {small:,} images"
                + (": the digit features are a useful start but not a substitute for clothing features."
                   if frozen_vs_scratch < 0 < gain else "."))
    if len(sizes) > 1:
        lag = 100 * (max(mean["fine-tuned"][large], mean["from scratch"][large]) - mean["frozen features"][large])
        text.append(f"With {large:,} images frozen digit features are "
                    + (f"{lag:.1f} points behind the best fully trained net, as expected once there are enough "
                       "labels to learn clothing-specific features." if lag > 0 else
                       f"not behind the fully trained nets ({-lag:.1f} points ahead)."))
    text.append(f"Digit-pretraining test accuracy: {', '.join(f'{100 * a:.1f}%' for a in digits_acc)}.")
    return " ".join(text)
