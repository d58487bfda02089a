"""LeNet-5 then and now: average or max pooling, tanh or ReLU, and the 1998 network itself.

``lenet5`` with pool in {avg, max} x activation in {tanh, relu} (the modern simplification, so
only the pooling and the non-linearity change) and ``lenet5_1998`` (trainable subsampling, sparse
C3, scaled tanh, RBF outputs), each with its default recipe, on the embedded digits and on
Fashion-MNIST, over several seeds: mean and spread of the test accuracy.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from ..report import save_figure
from ..train import TrainConfig, train
from ..train.recipes import recipe_for
from . import register_experiment
from .common import finish, pyplot, runs_directory, sd

VARIANTS = {
    "avg + tanh": ("lenet5", {"pool": "avg", "activation": "tanh"}),
    "avg + relu": ("lenet5", {"pool": "avg", "activation": "relu"}),
    "max + tanh": ("lenet5", {"pool": "max", "activation": "tanh"}),
    "max + relu": ("lenet5", {"pool": "max", "activation": "relu"}),
    "lenet5_1998": ("lenet5_1998", {}),
}

PROTOCOLS = {
    # Fashion: the first 10,000 training images for 10 epochs, about the work of one digits run.
    "quick": dict(seeds=(0, 1), datasets={"digits": dict(train_limit=None, epochs=None),
                                          "fashion-mnist": dict(train_limit=10000, epochs=10)}),
    "paper": dict(seeds=(0, 1, 2, 3, 4), datasets={"digits": dict(train_limit=None, epochs=None),
                                                   "fashion-mnist": dict(train_limit=None, epochs=None)}),
}


@register_experiment("LeNet-5 then and now: {avg, max} pooling x {tanh, ReLU}, and lenet5_1998, "
                     "on digits and Fashion-MNIST over seeds")
def run_pooling(out: Path, protocol: str = "quick", *, seeds: tuple[int, ...] | None = None,
                datasets: dict | None = None, variants: tuple[str, ...] | None = None,
                runs_dir: str | Path | None = None, threads: int | None = 1) -> dict:
    """``datasets`` maps a dataset name to ``{"train_limit", "epochs"}`` (None: all images, the
    recipe's epochs); ``runs_dir`` keeps the training runs (default: a temporary folder).
    ``threads=1``: see :func:`~classicnets.experiments.transfer.run_transfer`."""
    started = time.perf_counter()
    p = PROTOCOLS[protocol]
    seeds = tuple(seeds or p["seeds"])
    datasets = datasets or p["datasets"]
    variants = tuple(variants or VARIANTS)
    acc: dict[str, dict[str, list[float]]] = {d: {v: [] for v in variants} for d in datasets}
    secs: dict[str, dict[str, list[float]]] = {d: {v: [] for v in variants} for d in datasets}
    with runs_directory(runs_dir, "pooling") as runs_dir:
        for ds, opts in datasets.items():
            for v in variants:
                model, kwargs = VARIANTS[v]
                # The model's own recipe on every dataset: DATASET_RECIPES' shorter Fashion-MNIST
                # budget for lenet5 would give one variant other settings than the rest.
                recipe = recipe_for(model)
                for seed in seeds:
                    r = train(TrainConfig(model=model, model_kwargs=dict(kwargs), dataset=ds, seed=seed,
                                          threads=threads, train_limit=opts.get("train_limit"),
                                          epochs=opts.get("epochs") or recipe["epochs"],
                                          batch_size=recipe["batch_size"], lr=recipe["lr"], augment=recipe["augment"],
                                          label_smoothing=recipe.get("label_smoothing", 0.0),
                                          out=str(runs_dir / f"{ds}-{v.replace(' + ', '-')}-s{seed}"), quiet=True))
                    acc[ds][v].append(r.test_accuracy)
                    secs[ds][v].append(r.train_seconds)

    mean = {d: {v: statistics.mean(x) for v, x in a.items()} for d, a in acc.items()}
    spread = {d: {v: sd(x) for v, x in a.items()} for d, a in acc.items()}
    table = {"caption": f"test accuracy, mean +- standard deviation over seeds {list(seeds)}",
             "headers": ["variant", *(f"{d} ({_describe(o)})" for d, o in datasets.items())],
             "rows": [[v, *(f"{100 * mean[d][v]:.2f}% +- {100 * spread[d][v]:.2f}" for d in datasets)]
                      for v in variants]}

    plt = pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), constrained_layout=True,
                             squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        ys = [100 * mean[d][v] for v in variants]
        ax.bar(range(len(variants)), ys, yerr=[100 * spread[d][v] for v in variants], capsize=4,
               color=["tab:orange", "tab:olive", "tab:cyan", "tab:blue", "tab:gray"][: len(variants)])
        lo = min(100 * min(acc[d][v]) for v in variants)
        ax.set_ylim(max(0.0, lo - 3), min(100.0, max(ys) + 2))
        ax.set_xticks(range(len(variants)), variants, rotation=20)
        ax.set(title=d, ylabel="test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"LeNet-5 pooling and activation, {len(seeds)} seeds (bars: mean, whiskers: 1 s.d.)")
    save_figure(fig, out / "pooling.png", hint="--out DIR", dpi=110)
    plt.close(fig)

    text = conclusion(mean, spread, variants, datasets, len(seeds))
    results = {"accuracy": acc, "mean": mean, "std": spread, "train_seconds": secs}
    settings = {"threads": threads, "variants": {v: {"model": VARIANTS[v][0], **VARIANTS[v][1]} for v in variants},
                "datasets": {d: {"train_limit": o.get("train_limit"), "epochs": o.get("epochs") or "recipe"}
                             for d, o in datasets.items()},
                "recipe": "each model's default (lenet5: SGD lr 0.03; lenet5_1998: SGD lr 0.003; one-cycle, "
                          "crop:2 (+flip on Fashion)); test on each dataset's full test set"}
    return finish(out, name="pooling", title="LeNet-5 then and now: pooling and activation",
                  protocol=protocol, started=started, settings=settings, seeds=seeds, results=results,
                  tables=[table], figures=["pooling.png"], conclusion=text)


def conclusion(mean: dict, spread: dict, variants, datasets, n_seeds: int) -> str:
    """The report's paragraph, from the mean and standard deviation of each (dataset, variant)."""
    text = []
    for d in datasets:
        order = sorted(variants, key=lambda v, d=d: -mean[d][v])
        s = f"On {d} the ranking is " + " > ".join(f"{v} ({100 * mean[d][v]:.2f}%)" for v in order) + "."
        if {"max + relu", "avg + tanh"} <= set(variants):
            gap = 100 * (mean[d]["max + relu"] - mean[d]["avg + tanh"])
            noise = 100 * max(spread[d]["max + relu"], spread[d]["avg + tanh"])
            clear = abs(gap) > 2 * noise
            s += (f" The modern max + relu is {abs(gap):.2f} points {'above' if gap > 0 else 'below'} "
                  f"avg + tanh (the 1998 choices in the modern net), "
                  + ("more than" if clear else "not more than") + f" twice the seed-to-seed s.d. "
                  f"({noise:.2f} points"
                  + (f"; {n_seeds} seeds give only a rough s.d." if n_seeds < 5 else "") + ")"
                  + (", so the expected ordering held." if gap > 0 and clear else
                     ", so the expected ordering is not established by this run." if gap > 0 else
                     ", contrary to the expected ordering."))
        text.append(s)
    return " ".join(text)


def _describe(opts: dict) -> str:
    n = opts.get("train_limit")
    e = opts.get("epochs")
    return (f"{n:,} images" if n else "all images") + (f", {e} epochs" if e else ", recipe epochs")
