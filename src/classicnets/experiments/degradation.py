"""The degradation problem (He et al. 2015, section 4.2, Figure 6 and Table 6): deeper plain nets
train *worse*, while residual nets of the same depth do not.

Plain and residual CIFAR nets of each depth (default 20 and 56 layers) are trained identically,
one after the other, once per seed. The figure is laid out as the paper's Figure 6: plain nets on
the left, ResNets on the right, training error thin and dashed, test error bold, against
iterations. The plain nets are the residual nets with the shortcuts taken out (``plain20`` ..
``plain110``): same layers, same parameters.

Training error is measured twice. The trainer's running error is the mean over an epoch's
*augmented* batches, in train mode, while the weights still move: the curves' thin lines. After
training, one pass over the un-augmented training images in eval mode gives the cleaner figure,
``train_error`` (the issue's "training error measured honestly"); both are in results.json.

The report also shows the gradient flow of plain-56 and ResNet-56 (``gradient_flow.py``): each
conv layer's gradient norm at initialisation and after ``gradient_steps`` steps of the first
seed's training run.

Protocols:

* ``quick``: Fashion-MNIST (Debian's ``dataset-fashion-mnist``, 1 channel, zero-padded 28 -> 32),
  the first 12,000 training images, 6 epochs, nets at half the paper's width (8/16/32 maps): the
  depth, which is what degrades, is the paper's. About 12-15 minutes on 2 cores (728 s and 883 s
  measured before the final training pass was added).
* ``cpu``: the longer CPU run: depths 20, 56 and 110, seeds 0, 1 and 2, the first 5,000
  Fashion-MNIST training images, 5 epochs (200 iterations a net), width 8. An *estimate*, to be
  measured: 50-55 minutes on 2 cores in fp32, scaled from the quick run's 883 s by layers x images
  (training 6.3e-5 s and evaluation 2.2e-5 s per layer and image: 51 minutes, plus each run's
  setup), so its 18 runs get about 200 s each on average.
* ``paper``: section 4.2 exactly. CIFAR-10 with a 45k/5k train/validation split, per-channel
  mean/std normalisation, 4-pixel zero padding + random 32x32 crop + horizontal flip, batch 128,
  SGD momentum 0.9, weight decay 1e-4, learning rate 0.1 divided by 10 at 32k and 48k iterations,
  stop at 64k; He (fan-out) initialisation and option A (parameter-free) shortcuts, so plain and
  residual nets have the same parameters; for ResNet-110, 0.01 until the training error is below
  80%. Meant for a GPU (64k iterations per net).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..data.pipeline import make_loader
from ..data.sources import head, hold_out, load_split
from ..device import autocast_dtype
from ..errors import ClassicNetsError
from ..evaluate import evaluate_model
from ..models import model_card
from ..report import save_figure
from ..train import TrainConfig, train
from . import gradient_flow as gf
from . import register_experiment
from .common import finish, pyplot, runs_directory, torch_threads

# Table 6 of the paper: CIFAR-10 test error (%) of the residual nets (best of 5 runs for 110).
PAPER_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}

# gradient_steps: when the gradient flow's second snapshot is taken, inside the first learning-rate
# phase (quick: 564 iterations, lr/10 at 282; cpu: 200, lr/10 at 100).
# train_eval_limit: the final un-augmented pass's images, the first N of those trained on (None: all).
PROTOCOLS = {
    "quick": dict(dataset="fashion-mnist", depths=(20, 56), width=8, train_limit=12_000, holdout=None,
                  epochs=6, iterations=None, milestone_iterations=None, seeds=(0,), precision="fp32",
                  gradient_steps=250, train_eval_limit=None),
    "cpu": dict(dataset="fashion-mnist", depths=(20, 56, 110), width=8, train_limit=5_000, holdout=None,
                epochs=5, iterations=None, milestone_iterations=None, seeds=(0, 1, 2), precision="fp32",
                gradient_steps=100, train_eval_limit=None),
    "paper": dict(dataset="cifar10", depths=(20, 56), width=16, train_limit=None, holdout=5_000,
                  epochs=None, iterations=64_000, milestone_iterations=(32_000, 48_000), seeds=(0,),
                  precision="auto", gradient_steps=300, train_eval_limit=None),
}
KINDS = ("plain", "resnet")
_KEYS = ("dataset", "depths", "width", "train_limit", "holdout", "epochs", "iterations",
         "milestone_iterations", "seeds", "precision", "gradient_steps", "train_eval_limit")
GRADIENT_DEPTH = 56  # the notes' and the issue's nets; a run without depth 56 uses its deepest
GRADIENT_BATCH = 128  # the paper's mini-batch (section 4.2)


@register_experiment("plain vs residual nets of 20 and 56 layers: deeper plain nets train worse, "
                     "ResNets do not (He et al. 2015, Fig. 6)", more_protocols=("cpu",))
def run_degradation(out: Path, protocol: str = "quick", *, data_dir: str | None = None,
                    runs_dir: str | Path | None = None, threads: int | None = None, verbose: bool = True,
                    **overrides) -> dict:
    """Train ``plain{d}`` and ``resnet{d}`` for each depth ``d`` with the protocol's recipe
    (``protocol``: "quick", "cpu" or "paper").

    ``overrides`` replace the protocol's settings: ``dataset``, ``depths``, ``width`` (first
    stage's maps; the paper's is 16), ``train_limit``, ``holdout`` (validation images taken from
    the end of the training set), ``epochs``, ``iterations`` (an iteration budget instead of
    epochs), ``milestone_iterations`` (where the lr is divided by 10; default: at 50% and 75% of
    training, which for 64k iterations are the paper's 32k and 48k), ``seeds``, ``precision``
    (quick, cpu: fp32; paper: "auto", i.e. mixed precision on a GPU), ``gradient_steps`` (the
    gradient flow's second snapshot, in optimiser steps; 0 or None: no gradient flow) and
    ``train_eval_limit`` (the final un-augmented pass's images; None: all those trained on).
    ``data_dir``: where the dataset's files are (e.g. an extracted ``cifar-10-batches-py``).
    ``runs_dir`` keeps each net's run folder (checkpoints and curves); by default they are thrown away.
    """
    started = time.perf_counter()
    s = _settings(protocol, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    depths, seeds = tuple(s["depths"]), tuple(s["seeds"])
    nets = _train_nets(s, depths, seeds, data_dir=data_dir, runs_dir=runs_dir, threads=threads, verbose=verbose)
    per_seed = _per_seed(nets, seeds)
    final = {n: _final(rows) for n, rows in per_seed.items()}
    figures, tables = ["degradation.png"], [_table(final, per_seed, nets, s, protocol)]
    _plot(out / figures[0], nets.curves, final, depths, title=_figure_title(s, seeds))
    results = {"final": final, "per_seed": per_seed,
               "curves": {n: [[_point(h) for h in run] for run in runs] for n, runs in nets.curves.items()},
               "parameters": nets.params, "train_seconds": nets.seconds, "images": nets.splits}
    text = conclusion(final, depths, protocol, s, per_seed)
    if nets.gradient_flow:
        d, figures = _gradient_depth(depths), [*figures, "gradient_flow.png"]
        gf.plot_gradient_flow(out / figures[-1], nets.gradient_flow, d,
                              title=f"gradient flow of plain-{d} and ResNet-{d} on {s['dataset']} (seed {seeds[0]})")
        tables.append(gf.flow_table(nets.gradient_flow, d, figures[-1]))
        results["gradient_flow"] = nets.gradient_flow
        text += " " + gf.describe(nets.gradient_flow, d)
    return finish(out, name="degradation", title="Degradation: deeper plain nets train worse, ResNets do not",
                  protocol=protocol, started=started, settings=_recorded_settings(s, threads, data_dir),
                  seeds=seeds, results=results, tables=tables, figures=figures, conclusion=text)


def _settings(protocol: str, overrides: dict) -> dict:
    """The protocol's settings with ``overrides``, which must be among them."""
    if protocol not in PROTOCOLS:
        raise ClassicNetsError(f"degradation: unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    unknown = set(overrides) - set(_KEYS)
    if unknown:
        raise ClassicNetsError(f"degradation: unknown setting(s) {', '.join(sorted(unknown))}; "
                               f"expected some of {', '.join(_KEYS)}")
    return {**PROTOCOLS[protocol], **overrides}


def _gradient_depth(depths) -> int:
    return GRADIENT_DEPTH if GRADIENT_DEPTH in depths else max(depths)


@dataclass
class _Nets:
    """What the training runs left, by net name (``plain20``, ``resnet20``, ...)."""

    curves: dict[str, list[list[dict]]] = field(default_factory=dict)  # one history per seed
    seconds: dict[str, list[float]] = field(default_factory=dict)
    # The final pass over the un-augmented training images, eval mode: one error per seed.
    train_error: dict[str, list[float]] = field(default_factory=dict)
    # Plain and residual nets of a depth share their parameters (option A shortcuts are free).
    params: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)  # images per split, the same for every run
    gradient_flow: dict[str, dict] = field(default_factory=dict)  # net -> {"init", "after", "steps"}


def _train_nets(s: dict, depths: tuple[int, ...], seeds: tuple[int, ...], *, data_dir: str | None,
                runs_dir: str | Path | None, threads: int | None, verbose: bool) -> _Nets:
    """Each net of each depth, once per seed, one after the other, with the same recipe."""
    model_kwargs = {"width": s["width"]} if s["width"] != 16 else {}
    images = _training_images(s, data_dir, f"plain{depths[0]}")
    nets = _Nets()
    with runs_directory(runs_dir, "degradation") as runs:
        for depth in depths:
            for kind in KINDS:
                name = f"{kind}{depth}"
                for seed in seeds:
                    if verbose:
                        print(f"degradation: training {name} (seed {seed})", flush=True)
                    # The gradient flow rides on the first seed's run of the chosen depth: no extra training.
                    follow = bool(s["gradient_steps"]) and depth == _gradient_depth(depths) and seed == seeds[0]
                    with (gf.watch_steps(s["gradient_steps"]) if follow else contextlib.nullcontext()) as snap:
                        r = train(TrainConfig(
                            model=name, dataset=s["dataset"], data_dir=data_dir, model_kwargs=dict(model_kwargs),
                            epochs=s["epochs"], iterations=s["iterations"],
                            milestone_iterations=s["milestone_iterations"], holdout=s["holdout"],
                            train_limit=s["train_limit"], seed=seed, threads=threads, precision=s["precision"],
                            out=str(Path(runs) / f"{name}-s{seed}"), quiet=not verbose))
                    with torch_threads(threads):
                        nets.train_error.setdefault(name, []).append(_final_pass_error(r.model, images, s, name))
                        if verbose:
                            print(f"degradation: {name} (seed {seed}): {_pct(nets.train_error[name][-1])}% training "
                                  f"error on the un-augmented training images", flush=True)
                        if follow:
                            x, y = next(iter(_loader(images, GRADIENT_BATCH, name, "cpu")))
                            nets.gradient_flow[name] = gf.snapshot_norms(snap, name, model_kwargs, x, y,
                                                                         len(images.classes))
                    nets.curves.setdefault(name, []).append(r.history)
                    nets.seconds.setdefault(name, []).append(round(r.train_seconds, 1))
                    nets.params[name] = sum(p.numel() for p in r.model.parameters())
                    nets.splits = r.split_sizes
    return nets


def _training_images(s: dict, data_dir: str | None, name: str):
    """The images the nets train on, picked as the trainer picks them (train.loop._load_splits):
    the training split, less the validation hold-out, then its first ``train_limit``. Their mean
    and std are the ones training normalises with."""
    card = model_card(name)
    data = load_split(s["dataset"], data_dir, "train", size=tuple(card.input_size[1:]), channels=card.input_size[0])
    if s["holdout"]:
        data, _ = hold_out(data, s["holdout"])
    return head(data, s["train_limit"]) if s["train_limit"] else data


def _loader(images, batch: int, name: str, device):
    """The training images in order, un-augmented, normalised and padded to the net's input as in training."""
    return make_loader(images, batch, mean=images.mean, std=images.std,
                       size=tuple(model_card(name).input_size[1:]), device=device)


def _final_pass_error(model, images, s: dict, name: str) -> float:
    """Training error measured honestly: one pass over the un-augmented training images (or the
    first ``train_eval_limit``) in eval mode, at the precision the run evaluated its test set in."""
    device = next(model.parameters()).device
    data = head(images, s["train_eval_limit"]) if s["train_eval_limit"] else images
    ev = evaluate_model(model, _loader(data, 256, name, device), len(images.classes),
                        amp_dtype=autocast_dtype(s["precision"], device, name))
    return 1 - ev["accuracy"]


def _per_seed(nets: _Nets, seeds: tuple[int, ...]) -> dict:
    """Each seed's final errors (fractions) and training time, by net."""
    out = {}
    for name, runs in nets.curves.items():
        rows = []
        for seed, run, clean, secs in zip(seeds, runs, nets.train_error[name], nets.seconds[name], strict=True):
            last = run[-1]
            row = {"seed": seed, "train_error": clean, "running_train_error": 1 - last["train_accuracy"]}
            for key, prefix in (("val_error", "val"), ("test_error", "test")):
                if f"{prefix}_accuracy" in last:
                    row[key] = 1 - last[f"{prefix}_accuracy"]
            if last.get("warmup_end_step") is not None:
                row["warmup_end_step"] = last["warmup_end_step"]
            rows.append({**row, "train_seconds": secs})
        out[name] = rows
    return out


def _final(rows: list[dict]) -> dict:
    """Mean over seeds of the final errors (fractions); ResNet-110's warm-up ends, one per seed."""
    keys = ("train_error", "running_train_error", "val_error", "test_error")
    out = {k: sum(r[k] for r in rows) / len(rows) for k in keys if all(k in r for r in rows)}
    warm = [r["warmup_end_step"] for r in rows if "warmup_end_step" in r]
    if warm:
        out["warmup_end_step"] = warm
    return out


def _table(final: dict, per_seed: dict, nets: _Nets, s: dict, protocol: str) -> dict:
    """Final errors per net, the mean over seeds and then each seed (validation where there is a
    split; the paper's figure under its protocol), captioned with the budget and the data."""
    depths, seeds = tuple(s["depths"]), tuple(s["seeds"])
    has_val, several = any("val_error" in f for f in final.values()), len(seeds) > 1
    headers = ["net", "layers", "parameters", "training error (%)", *(["by seed"] if several else []),
               "running training error (%)", *(["validation error (%)"] if has_val else []),
               "test error (%)", *(["by seed"] if several else []), "training seconds"]
    if protocol == "paper":
        headers.append("paper's test error (%)")
    rows = []
    for depth in depths:
        for kind in KINDS:
            n = f"{kind}{depth}"
            f, by_seed = final[n], (lambda key, n=n: " / ".join(_pct(r.get(key)) for r in per_seed[n]))
            row = [n, depth, nets.params[n], _pct(f["train_error"]), *([by_seed("train_error")] if several else []),
                   _pct(f["running_train_error"]), *([_pct(f.get("val_error"))] if has_val else []),
                   _pct(f.get("test_error")), *([by_seed("test_error")] if several else []),
                   f"{sum(nets.seconds[n]) / len(nets.seconds[n]):.0f}"]
            if protocol == "paper":
                row.append(PAPER_TEST_ERROR.get(depth, "-") if kind == "resnet" else "-")
            rows.append(row)
    data_txt = (f"{s['dataset']}, " + (f"first {s['train_limit']:,} training images" if s["train_limit"]
                                       else "all training images")
                + (f" less a {s['holdout']:,}-image validation split" if s["holdout"] else ""))
    return {"caption": f"final errors after {_budget(s)} ({data_txt}; width {s['width']}; mean over seeds "
                       f"{list(seeds)}{', then each seed in that order' if several else ''}). Training error: one "
                       f"pass over the un-augmented training images{_eval_limit_txt(s)} in eval mode after "
                       f"training. Running training error: the trainer's, the mean over the last epoch's "
                       f"augmented batches in train mode (the figure's thin lines)",
            "headers": headers, "rows": rows}


def _eval_limit_txt(s: dict) -> str:
    return f" (the first {s['train_eval_limit']:,})" if s["train_eval_limit"] else ""


def _recorded_settings(s: dict, threads: int | None, data_dir: str | None) -> dict:
    """The settings as results.json records them (seeds are recorded on their own)."""
    return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items() if k != "seeds"},
            "threads": threads, "data_dir": data_dir,
            "recipe": "the CIFAR nets' recipe (He et al. 2015, section 4.2): batch 128, SGD lr 0.1, momentum 0.9, "
                      "weight decay 1e-4, lr/10 at 50% and 75% of training, 4-pixel zero padding + random crop + "
                      "flip, per-channel mean/std normalisation, He fan-out init, option A shortcuts; ResNet-110: "
                      "lr 0.01 until the training error is below 80%",
            "training_error": "train_error: one pass over the un-augmented training images in eval mode after "
                              f"training{_eval_limit_txt(s)}; running_train_error and the curves' train_accuracy: "
                              "the trainer's, over each epoch's augmented batches in train mode",
            "gradient_flow": f"the L2 norm of each conv layer's weight gradient (cross-entropy, one backward pass, "
                             f"train mode, fp32) on the first {GRADIENT_BATCH} un-augmented training images, with "
                             f"the weights of the first seed's run before its first step and after gradient_steps "
                             f"steps (plain and ResNet of depth {GRADIENT_DEPTH}, else the deepest run)"}


def _point(h: dict) -> dict:
    keep = ("epoch", "step", "lr", "train_accuracy", "val_accuracy", "test_accuracy", "warmup_end_step")
    return {k: h[k] for k in keep if k in h}


def _budget(s: dict) -> str:
    return f"{s['iterations']:,} iterations" if s.get("iterations") else f"{s['epochs']} epochs"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _figure_title(s: dict, seeds: tuple[int, ...]) -> str:
    return (f"{s['dataset']}, {_budget(s)}, width {s['width']}"
            + (f", mean over seeds {list(seeds)}" if len(seeds) > 1 else f", seed {seeds[0]}")
            + ": training error thin dashed (augmented batches), test error bold; "
              "o: training error of the final un-augmented pass")


def _mean_curve(runs: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """Iterations and the error (%) averaged over seeds, at each evaluation where every seed has one."""
    n = min(len(run) for run in runs)
    points = [(runs[0][i]["step"], [100 * (1 - run[i][key]) for run in runs])
              for i in range(n) if all(key in run[i] for run in runs)]
    return [x for x, _ in points], [sum(ys) / len(ys) for _, ys in points]


def _plot(path: Path, curves: dict, final: dict, depths, title: str) -> None:
    """The paper's Figure 6 layout: plain nets left, ResNets right; training error thin dashed,
    test error bold, against iterations; one colour per depth (the same in both panels)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, kind, label, panel in ((axes[0], "plain", "plain", "plain nets"), (axes[1], "resnet", "ResNet", "ResNets")):
        for i, depth in enumerate(depths):
            color, runs = colors[i % len(colors)], curves[f"{kind}{depth}"]
            xs, ys = _mean_curve(runs, "train_accuracy")
            ax.plot(xs, ys, linestyle="--", linewidth=0.9, color=color)
            # The honest figure, where the run ended: it sits below the dashed line's end when
            # augmentation (or the weights moving within the epoch) inflate the running error.
            ax.plot([runs[0][-1]["step"]], [100 * final[f"{kind}{depth}"]["train_error"]], marker="o",
                    markerfacecolor="none", color=color)
            xs, ys = _mean_curve(runs, "test_accuracy")
            ax.plot(xs, ys, linestyle="-", linewidth=2.2, color=color, label=f"{label}-{depth}")
        ax.set(xlabel="iterations", ylabel="error (%)", title=panel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)


def conclusion(final: dict, depths, protocol: str, s: dict, per_seed: dict | None = None) -> str:
    """The report's paragraph: did deeper plain nets train worse, and residual ones not, on every seed?"""
    lo, hi = min(depths), max(depths)
    if lo == hi:
        return (f"Only depth {lo} was run, so no comparison of depths is possible; plain-{lo} ended at "
                f"{_pct(final[f'plain{lo}']['train_error'])}% training error, ResNet-{lo} at "
                f"{_pct(final[f'resnet{lo}']['train_error'])}%.")
    parts = [*_mean_verdict(final, lo, hi)]
    if len(depths) > 2:
        parts.append("Training error by depth: " + "; ".join(
            f"{label} " + ", ".join(f"{d} layers {_pct(final[f'{kind}{d}']['train_error'])}%" for d in depths)
            for kind, label in (("plain", "plain"), ("resnet", "ResNet"))) + ".")
    if per_seed is not None:
        parts.append(_seed_verdict(per_seed, lo, hi))
    t = {n: final[n].get("test_error") for n in final}
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


def _mean_verdict(final: dict, lo: int, hi: int) -> list[str]:
    """The two halves of the claim, on the mean over seeds of the final-pass training error."""
    p_lo, p_hi = final[f"plain{lo}"]["train_error"], final[f"plain{hi}"]["train_error"]
    r_lo, r_hi = final[f"resnet{lo}"]["train_error"], final[f"resnet{hi}"]["train_error"]
    tolerance = 0.005  # "or close": half a point of training error
    degraded = p_hi > p_lo
    resnet_ok = r_hi <= r_lo + tolerance
    parts = [f"Plain-{hi} ended at {_pct(p_hi)}% training error (un-augmented final pass) against plain-{lo}'s "
             f"{_pct(p_lo)}%: "
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
    return parts


def _seed_verdict(per_seed: dict, lo: int, hi: int) -> str:
    """Does every seed go the same way? The deeper net's training error minus the shallower's, by seed."""
    seeds = [r["seed"] for r in per_seed[f"plain{lo}"]]
    if len(seeds) < 2:
        return f"One seed only ({seeds[0]}), so whether every seed goes the same way is not measured."
    parts = []
    for kind, label in (("plain", "plain"), ("resnet", "ResNet")):
        diffs = [100 * (b["train_error"] - a["train_error"]) for a, b in zip(per_seed[f"{kind}{lo}"],
                                                                            per_seed[f"{kind}{hi}"], strict=True)]
        worse = [s for s, d in zip(seeds, diffs, strict=True) if d > 0]
        each = ", ".join(f"seed {s} {d:+.2f}" for s, d in zip(seeds, diffs, strict=True))
        if len(worse) in (0, len(seeds)):
            verdict = f"the same direction on every seed ({'worse' if worse else 'not worse'})"
        else:
            better = [s for s in seeds if s not in worse]
            verdict = (f"the seeds differ: worse on seed{'s' * (len(worse) > 1)} {', '.join(map(str, worse))}, "
                       f"not worse on seed{'s' * (len(better) > 1)} {', '.join(map(str, better))}")
        parts.append(f"{label}-{hi} minus {label}-{lo} training error, in points: {each}: {verdict}.")
    return "By seed: " + " ".join(parts)
