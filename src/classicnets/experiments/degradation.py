"""The degradation problem (He et al. 2015, section 4.2, Figure 6 and Table 6): deeper plain nets
train *worse*, while residual nets of the same depth do not.

Plain and residual CIFAR nets of each depth (default 20 and 56 layers) are trained identically,
one after the other, and their training and test error per epoch go on one figure (plain dashed,
residual solid, as in the paper's Figure 6). The plain nets are the residual nets with the
shortcuts taken out (``plain20`` .. ``plain110``): same layers, same parameters.

Protocols:

* ``quick``: Fashion-MNIST (Debian's ``dataset-fashion-mnist``, 1 channel, zero-padded 28 -> 32),
  the first 12,000 training images, 6 epochs, nets at half the paper's width (8/16/32 maps): the
  depth, which is what degrades, is the paper's. About 12 minutes on 2 cores. Minutes on a laptop CPU.
* ``paper``: section 4.2 exactly. CIFAR-10 with a 45k/5k train/validation split, per-channel
  mean/std normalisation, 4-pixel zero padding + random 32x32 crop + horizontal flip, batch 128,
  SGD momentum 0.9, weight decay 1e-4, learning rate 0.1 divided by 10 at 32k and 48k iterations,
  stop at 64k; He (fan-out) initialisation and option A (parameter-free) shortcuts, so plain and
  residual nets have the same parameters; for ResNet-110, 0.01 until the training error is below
  80%. Meant for a GPU (64k iterations per net).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ClassicNetsError
from ..report import save_figure
from ..train import TrainConfig, train
from . import register_experiment
from .common import finish, pyplot, runs_directory

# Table 6 of the paper: CIFAR-10 test error (%) of the residual nets (best of 5 runs for 110).
PAPER_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}

PROTOCOLS = {
    "quick": dict(dataset="fashion-mnist", depths=(20, 56), width=8, train_limit=12_000, holdout=None,
                  epochs=6, iterations=None, milestone_iterations=None, seeds=(0,), precision="fp32"),
    "paper": dict(dataset="cifar10", depths=(20, 56), width=16, train_limit=None, holdout=5_000,
                  epochs=None, iterations=64_000, milestone_iterations=(32_000, 48_000), seeds=(0,),
                  precision="auto"),
}
KINDS = ("plain", "resnet")
_KEYS = ("dataset", "depths", "width", "train_limit", "holdout", "epochs", "iterations",
         "milestone_iterations", "seeds", "precision")


@register_experiment("plain vs residual nets of 20 and 56 layers: deeper plain nets train worse, "
                     "ResNets do not (He et al. 2015, Fig. 6)")
def run_degradation(out: Path, protocol: str = "quick", *, data_dir: str | None = None,
                    runs_dir: str | Path | None = None, threads: int | None = None, verbose: bool = True,
                    **overrides) -> dict:
    """Train ``plain{d}`` and ``resnet{d}`` for each depth ``d`` with the protocol's recipe.

    ``overrides`` replace the protocol's settings: ``dataset``, ``depths``, ``width`` (first
    stage's maps; the paper's is 16), ``train_limit``, ``holdout`` (validation images taken from
    the end of the training set), ``epochs``, ``iterations`` (an iteration budget instead of
    epochs), ``milestone_iterations`` (where the lr is divided by 10; default: at 50% and 75% of
    training, which for 64k iterations are the paper's 32k and 48k), ``seeds``, ``precision``
    (quick: fp32; paper: "auto", i.e. mixed precision on a GPU). ``data_dir``:
    where the dataset's files are (e.g. an extracted ``cifar-10-batches-py``). ``runs_dir``
    keeps each net's run folder (checkpoints and curves); by default they are thrown away.
    """
    started = time.perf_counter()
    s = _settings(protocol, overrides)
    depths, seeds = tuple(s["depths"]), tuple(s["seeds"])
    nets = _train_nets(s, depths, seeds, data_dir=data_dir, runs_dir=runs_dir, threads=threads, verbose=verbose)
    final = {n: _final(runs) for n, runs in nets.curves.items()}
    figure = "degradation.png"
    _plot(out / figure, nets.curves, depths, KINDS, title=f"{s['dataset']}: plain (dashed) vs residual (solid)")
    results = {"final": final,
               "curves": {n: [[_point(h) for h in run] for run in runs] for n, runs in nets.curves.items()},
               "parameters": nets.params, "train_seconds": nets.seconds, "images": nets.splits}
    return finish(out, name="degradation", title="Degradation: deeper plain nets train worse, ResNets do not",
                  protocol=protocol, started=started, settings=_recorded_settings(s, threads, data_dir),
                  seeds=seeds, results=results, tables=[_table(final, nets, s, protocol)], figures=[figure],
                  conclusion=conclusion(final, depths, protocol, s))


def _settings(protocol: str, overrides: dict) -> dict:
    """The protocol's settings with ``overrides``, which must be among them."""
    unknown = set(overrides) - set(_KEYS)
    if unknown:
        raise ClassicNetsError(f"degradation: unknown setting(s) {', '.join(sorted(unknown))}; "
                               f"expected some of {', '.join(_KEYS)}")
    return {**PROTOCOLS[protocol], **overrides}


@dataclass
class _Nets:
    """What the training runs left, by net name (``plain20``, ``resnet20``, ...)."""

    curves: dict[str, list[list[dict]]] = field(default_factory=dict)  # one history per seed
    seconds: dict[str, list[float]] = field(default_factory=dict)
    # Plain and residual nets of a depth share their parameters (option A shortcuts are free).
    params: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)  # images per split, the same for every run


def _train_nets(s: dict, depths: tuple[int, ...], seeds: tuple[int, ...], *, data_dir: str | None,
                runs_dir: str | Path | None, threads: int | None, verbose: bool) -> _Nets:
    """Each net of each depth, once per seed, one after the other, with the same recipe."""
    model_kwargs = {"width": s["width"]} if s["width"] != 16 else {}
    nets = _Nets()
    with runs_directory(runs_dir, "degradation") as runs:
        for depth in depths:
            for kind in KINDS:
                name = f"{kind}{depth}"
                for seed in seeds:
                    if verbose:
                        print(f"degradation: training {name} (seed {seed})", flush=True)
                    r = train(TrainConfig(
                        model=name, dataset=s["dataset"], data_dir=data_dir, model_kwargs=dict(model_kwargs),
                        epochs=s["epochs"], iterations=s["iterations"],
                        milestone_iterations=s["milestone_iterations"], holdout=s["holdout"],
                        train_limit=s["train_limit"], seed=seed, threads=threads, precision=s["precision"],
                        out=str(Path(runs) / f"{name}-s{seed}"), quiet=not verbose))
                    nets.curves.setdefault(name, []).append(r.history)
                    nets.seconds.setdefault(name, []).append(round(r.train_seconds, 1))
                    nets.params[name] = sum(p.numel() for p in r.model.parameters())
                    nets.splits = r.split_sizes
    return nets


def _table(final: dict, nets: _Nets, s: dict, protocol: str) -> dict:
    """Final errors per net (validation where there is a split; the paper's figure under its
    protocol), captioned with the budget and the data."""
    depths, seeds = tuple(s["depths"]), tuple(s["seeds"])
    has_val = any("val_error" in f for f in final.values())
    headers = ["net", "layers", "parameters", "training error (%)", *(["validation error (%)"] if has_val else []),
               "test error (%)", "training seconds"]
    if protocol == "paper":
        headers.append("paper's test error (%)")
    rows = []
    for depth in depths:
        for kind in KINDS:
            n = f"{kind}{depth}"
            f = final[n]
            row = [n, depth, nets.params[n], _pct(f["train_error"]), *([_pct(f.get("val_error"))] if has_val else []),
                   _pct(f["test_error"]), f"{sum(nets.seconds[n]) / len(nets.seconds[n]):.0f}"]
            if protocol == "paper":
                row.append(PAPER_TEST_ERROR.get(depth, "-") if kind == "resnet" else "-")
            rows.append(row)
    data_txt = (f"{s['dataset']}, " + (f"first {s['train_limit']:,} training images" if s["train_limit"]
                                       else "all training images")
                + (f" less a {s['holdout']:,}-image validation split" if s["holdout"] else ""))
    return {"caption": f"final errors after {_budget(s)} ({data_txt}; width {s['width']}; "
                       f"mean over seeds {list(seeds)})", "headers": headers, "rows": rows}


def _recorded_settings(s: dict, threads: int | None, data_dir: str | None) -> dict:
    """The settings as results.json records them (seeds are recorded on their own)."""
    return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items() if k != "seeds"},
            "threads": threads, "data_dir": data_dir,
            "recipe": "the CIFAR nets' recipe (He et al. 2015, section 4.2): batch 128, SGD lr 0.1, momentum 0.9, "
                      "weight decay 1e-4, lr/10 at 50% and 75% of training, 4-pixel zero padding + random crop + "
                      "flip, per-channel mean/std normalisation, He fan-out init, option A shortcuts; ResNet-110: "
                      "lr 0.01 until the training error is below 80%",
            "training_error": "the error on the augmented training batches during each epoch"}


def _point(h: dict) -> dict:
    keep = ("epoch", "step", "lr", "train_accuracy", "val_accuracy", "test_accuracy", "warmup_end_step")
    return {k: h[k] for k in keep if k in h}


def _final(runs: list[list[dict]]) -> dict:
    """Mean over seeds of the last epoch's errors (fractions)."""
    def mean_error(key: str) -> float | None:
        values = [1 - run[-1][key] for run in runs if key in run[-1]]
        return sum(values) / len(values) if values else None

    out = {"train_error": mean_error("train_accuracy"), "test_error": mean_error("test_accuracy")}
    val = mean_error("val_accuracy")
    if val is not None:
        out["val_error"] = val
    warm = [run[-1].get("warmup_end_step") for run in runs if run[-1].get("warmup_end_step") is not None]
    if warm:
        out["warmup_end_step"] = warm
    return out


def _budget(s: dict) -> str:
    return f"{s['iterations']:,} iterations" if s.get("iterations") else f"{s['epochs']} epochs"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _plot(path: Path, curves: dict, depths, kinds, title: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True, sharey=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, label in ((axes[0], "train_accuracy", "training error (%)"),
                           (axes[1], "test_accuracy", "test error (%)")):
        for i, depth in enumerate(depths):
            for kind in kinds:
                run = curves[f"{kind}{depth}"][0]
                xs = [h["epoch"] for h in run if key in h]
                ys = [100 * (1 - h[key]) for h in run if key in h]
                ax.plot(xs, ys, linestyle="--" if kind == "plain" else "-", color=colors[i % len(colors)],
                        linewidth=1.8, label=f"{kind}-{depth}")
        ax.set(xlabel="epoch", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)


def conclusion(final: dict, depths, protocol: str, s: dict) -> str:
    """The report's paragraph: did deeper plain nets train worse, and residual ones not?"""
    lo, hi = min(depths), max(depths)
    if lo == hi:
        return (f"Only depth {lo} was run, so no comparison of depths is possible; plain-{lo} ended at "
                f"{_pct(final[f'plain{lo}']['train_error'])}% training error, ResNet-{lo} at "
                f"{_pct(final[f'resnet{lo}']['train_error'])}%.")
    p_lo, p_hi = final[f"plain{lo}"]["train_error"], final[f"plain{hi}"]["train_error"]
    r_lo, r_hi = final[f"resnet{lo}"]["train_error"], final[f"resnet{hi}"]["train_error"]
    tolerance = 0.005  # "or close": half a point of training error
    degraded = p_hi > p_lo
    resnet_ok = r_hi <= r_lo + tolerance
    parts = [f"Plain-{hi} ended at {_pct(p_hi)}% training error against plain-{lo}'s {_pct(p_lo)}%: "
             + ("the deeper plain net trains worse, the degradation problem, as in the paper's Figure 6."
                if degraded else "the deeper plain net did NOT train worse here, unlike the paper's Figure 6."),
             f"ResNet-{hi} ended at {_pct(r_hi)}% against ResNet-{lo}'s {_pct(r_lo)}%: "
             + (("the deeper residual net trains better, as the paper reports." if r_hi < r_lo else
                 "the deeper residual net is within half a point of the shallower one, so depth did not hurt it.")
                if resnet_ok else "the deeper residual net trained worse here too, unlike the paper.")]
    if degraded:
        parts.append(f"Going from {lo} to {hi} layers cost the plain nets {100 * (p_hi - p_lo):.1f} points of training "
                     f"error and the residual nets {100 * (r_hi - r_lo):+.1f}: "
                     + ("the shortcuts removed most of the degradation." if r_hi - r_lo < 0.5 * (p_hi - p_lo)
                        else "the shortcuts did not remove most of it."))
    t = {n: final[n]["test_error"] for n in final}
    parts.append("Test errors: " + ", ".join(f"{n} {_pct(t[n])}%" for n in final) + ".")
    if protocol == "paper" and s.get("iterations") == 64_000:
        ref = [f"ResNet-{d} {PAPER_TEST_ERROR[d]}% (ours {_pct(t[f'resnet{d}'])}%)" for d in depths
               if d in PAPER_TEST_ERROR]
        parts.append("The paper's Table 6 gives " + ", ".join(ref) + ".")
    else:
        parts.append(f"This is a short budget ({_budget(s)}) on {s['dataset']}"
                     + (f" at width {s['width']} (the paper's is 16)" if s["width"] != 16 else "")
                     + "; the paper trains 64k iterations on CIFAR-10 (`--protocol paper`), and only there are the "
                       "errors comparable with its Figure 6 and Table 6.")
    return " ".join(parts)
