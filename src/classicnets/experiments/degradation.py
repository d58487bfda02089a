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
  the first 2,000 training images for 20 epochs of batch 32 (1,260 iterations) with a one-cycle
  learning rate peaking at 0.1, nets at half the paper's width (8/16/32 maps; the depth, which is
  what degrades, is the paper's), seeds 0 and 1, test curves on the first 2,000 test images.
  Fewer images for more, smaller steps: the fitting regime, which is what training error is
  about. About 11-12 minutes on 2 cores, the runs two at a time (see the report for the figure).
* ``cpu``: the same budget for depths 20, 56 and 110 and seeds 0, 1 and 2: 18 runs, about 40
  minutes on 2 cores (the report has the measured time).
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

import torch

from ..data.pipeline import make_loader
from ..data.sources import head, hold_out, load_split
from ..device import autocast_dtype
from ..errors import ClassicNetsError
from ..evaluate import evaluate_model
from ..models import model_card
from ..train import TrainConfig, train
from . import gradient_flow as gf
from . import register_experiment
from .common import default_workers, finish, run_jobs, runs_directory
from .degradation_report import PAPER_TEST_ERROR, budget_text, conclusion, pct, plot_figure6, schedule_text

# The quick and cpu budgets: few images, many small batches. Figure 6 compares the nets near
# convergence, and a short budget favours shallow nets: at batch 128 (12,000 images, 6 epochs:
# 564 iterations, or 2,500 images for 20 epochs: 400) ResNet-56 ended 1-3 points *above*
# ResNet-20 whatever the schedule; at batch 32 (1,250-1,560 iterations) it ends below it, while
# plain-56 stays 10+ points above plain-20. docs/experiments.md records every budget tried.
# gradient_steps: when the gradient flow's second snapshot is taken (one-cycle: during the rise).
# test_limit: the test curves use the first N test images (each evaluation of all 10,000 would
# cost as much as 4 epochs of training on 2,000 images). eval_every: in epochs.
# train_eval_limit: the final un-augmented pass's images, the first N of those trained on (None: all).
# precision "auto": bf16 where the CPU has it natively, else fp32.
PROTOCOLS = {
    "quick": dict(dataset="fashion-mnist", depths=(20, 56), width=8, train_limit=2_000, holdout=None,
                  epochs=20, iterations=None, milestone_iterations=None, seeds=(0, 1), precision="auto",
                  gradient_steps=250, train_eval_limit=None, eval_every=4, batch_size=32, lr=0.1,
                  schedule="onecycle", test_limit=2_000),
    "cpu": dict(dataset="fashion-mnist", depths=(20, 56, 110), width=8, train_limit=2_000, holdout=None,
                epochs=20, iterations=None, milestone_iterations=None, seeds=(0, 1, 2), precision="auto",
                gradient_steps=250, train_eval_limit=None, eval_every=4, batch_size=32, lr=0.1,
                schedule="onecycle", test_limit=2_000),
    "paper": dict(dataset="cifar10", depths=(20, 56), width=16, train_limit=None, holdout=5_000,
                  epochs=None, iterations=64_000, milestone_iterations=(32_000, 48_000), seeds=(0,),
                  precision="auto", gradient_steps=300, train_eval_limit=None, eval_every=1,
                  batch_size=128, lr=0.1, schedule="step", test_limit=None),
}
KINDS = ("plain", "resnet")
_KEYS = ("dataset", "depths", "width", "train_limit", "holdout", "epochs", "iterations",
         "milestone_iterations", "seeds", "precision", "gradient_steps", "train_eval_limit", "eval_every",
         "batch_size", "lr", "schedule", "test_limit")
GRADIENT_DEPTH = 56  # the notes' and the issue's nets; a run without depth 56 uses its deepest
GRADIENT_BATCH = 128  # the paper's mini-batch (section 4.2)


@register_experiment("plain vs residual nets of 20 and 56 layers: deeper plain nets train worse, "
                     "ResNets do not (He et al. 2015, Fig. 6)", more_protocols=("cpu",))
def run_degradation(out: Path, protocol: str = "quick", *, data_dir: str | None = None,
                    runs_dir: str | Path | None = None, threads: int | None = None, workers: int | None = None,
                    verbose: bool = True, **overrides) -> dict:
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
    nets = _train_nets(s, depths, seeds, data_dir=data_dir, runs_dir=runs_dir, threads=threads, workers=workers,
                       verbose=verbose)
    per_seed = _per_seed(nets, seeds)
    final = {n: _final(rows) for n, rows in per_seed.items()}
    figures, tables = ["degradation.png"], [_table(final, per_seed, nets, s, protocol)]
    plot_figure6(out / figures[0], nets.curves, final, depths, title=_figure_title(s, seeds))
    results = {"final": final, "per_seed": per_seed,
               "curves": {n: [[_point(h) for h in run] for run in runs] for n, runs in nets.curves.items()},
               "parameters": nets.params, "train_seconds": nets.seconds, "run_seconds": nets.run_seconds,
               "images": nets.splits}
    text = conclusion(final, depths, protocol, s, per_seed)
    if nets.gradient_flow:
        d, figures = _gradient_depth(depths), [*figures, "gradient_flow.png"]
        gf.plot_gradient_flow(out / figures[-1], nets.gradient_flow, d,
                              title=f"gradient flow of plain-{d} and ResNet-{d} on {s['dataset']} (seed {seeds[0]})")
        tables.append(gf.flow_table(nets.gradient_flow, d, figures[-1]))
        results["gradient_flow"] = nets.gradient_flow
        text += " " + gf.describe(nets.gradient_flow, d)
    return finish(out, name="degradation", title="Degradation: deeper plain nets train worse, ResNets do not",
                  protocol=protocol, started=started, settings=_recorded_settings(s, nets, data_dir),
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
    seconds: dict[str, list[float]] = field(default_factory=dict)  # the trainer's: training steps only
    # The whole run: training, the test evaluations, the final pass and the gradient flow.
    run_seconds: dict[str, list[float]] = field(default_factory=dict)
    # The final pass over the un-augmented training images, eval mode: one error per seed.
    train_error: dict[str, list[float]] = field(default_factory=dict)
    # Plain and residual nets of a depth share their parameters (option A shortcuts are free).
    params: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)  # images per split, the same for every run
    gradient_flow: dict[str, dict] = field(default_factory=dict)  # net -> {"init", "after", "steps"}
    workers: int = 1  # runs trained side by side, each in its own process
    threads: int = 1  # torch threads each run had


def _train_nets(s: dict, depths: tuple[int, ...], seeds: tuple[int, ...], *, data_dir: str | None,
                runs_dir: str | Path | None, threads: int | None, workers: int | None, verbose: bool) -> _Nets:
    """Each net of each depth, once per seed, with the same recipe: ``workers`` runs at a time,
    each in its own process (default: one per core, see common.default_workers), deepest first."""
    model_kwargs = {"width": s["width"]} if s["width"] != 16 else {}
    order = [(f"{kind}{depth}", depth, seed) for depth in depths for kind in KINDS for seed in seeds]
    with runs_directory(runs_dir, "degradation") as runs:
        # The gradient flow rides on the first seed's run of the chosen depth: no extra training.
        jobs = [dict(s=s, name=name, seed=seed, model_kwargs=model_kwargs, data_dir=data_dir, verbose=verbose,
                     out=str(Path(runs) / f"{name}-s{seed}"),
                     gradient=bool(s["gradient_steps"]) and depth == _gradient_depth(depths) and seed == seeds[0])
                for name, depth, seed in sorted(order, key=lambda run: -run[1])]
        workers = workers or default_workers(threads, len(jobs))
        done = {(j["name"], j["seed"]): r for j, r in zip(jobs, run_jobs(_train_one, jobs, workers=workers,
                                                                         threads=threads), strict=True)}
    nets = _Nets(workers=workers)
    for name, _, seed in order:
        r = done[(name, seed)]
        nets.curves.setdefault(name, []).append(r["history"])
        nets.seconds.setdefault(name, []).append(r["seconds"])
        nets.run_seconds.setdefault(name, []).append(r["run_seconds"])
        nets.train_error.setdefault(name, []).append(r["train_error"])
        nets.params[name], nets.splits, nets.threads = r["params"], r["splits"], r["threads"]
        if r["gradient_flow"] is not None:
            nets.gradient_flow[name] = r["gradient_flow"]
    return nets


def _train_one(s: dict, name: str, seed: int, model_kwargs: dict, data_dir: str | None, out: str,
               verbose: bool, gradient: bool) -> dict:
    """One net, one seed: train, measure the training error honestly, and (``gradient``) the
    gradient flow. Runs in a worker process, so it returns plain values, not the model."""
    started = time.perf_counter()
    if verbose:
        print(f"degradation: training {name} (seed {seed})", flush=True)
    with (gf.watch_steps(s["gradient_steps"]) if gradient else contextlib.nullcontext()) as snap:
        r = train(TrainConfig(
            model=name, dataset=s["dataset"], data_dir=data_dir, model_kwargs=dict(model_kwargs),
            epochs=s["epochs"], iterations=s["iterations"], milestone_iterations=s["milestone_iterations"],
            batch_size=s["batch_size"], lr=s["lr"], schedule=s["schedule"], test_limit=s["test_limit"],
            holdout=s["holdout"], train_limit=s["train_limit"], seed=seed, threads=torch.get_num_threads(),
            precision=s["precision"], out=out, quiet=not verbose, eval_every=s["eval_every"]))
    images = _training_images(s, data_dir, name)
    error, flow = _final_pass_error(r.model, images, s, name), None
    if verbose:
        print(f"degradation: {name} (seed {seed}): {pct(error)}% training error on the un-augmented "
              f"training images, {r.train_seconds:.0f} s of training", flush=True)
    if gradient:
        x, y = next(iter(_loader(images, GRADIENT_BATCH, name, "cpu")))
        flow = gf.snapshot_norms(snap, name, model_kwargs, x, y, len(images.classes))
    return dict(history=r.history, seconds=round(r.train_seconds, 1), train_error=error, gradient_flow=flow,
                run_seconds=round(time.perf_counter() - started, 1),
                params=sum(p.numel() for p in r.model.parameters()), splits=r.split_sizes,
                threads=torch.get_num_threads())


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
               "test error (%)", *(["by seed"] if several else []), "training seconds", "whole run seconds"]
    if protocol == "paper":
        headers.append("paper's test error (%)")
    rows = []
    for depth in depths:
        for kind in KINDS:
            n = f"{kind}{depth}"
            f, by_seed = final[n], (lambda key, n=n: " / ".join(pct(r.get(key)) for r in per_seed[n]))
            row = [n, depth, nets.params[n], pct(f["train_error"]), *([by_seed("train_error")] if several else []),
                   pct(f["running_train_error"]), *([pct(f.get("val_error"))] if has_val else []),
                   pct(f.get("test_error")), *([by_seed("test_error")] if several else []),
                   f"{sum(nets.seconds[n]) / len(nets.seconds[n]):.0f}",
                   f"{sum(nets.run_seconds[n]) / len(nets.run_seconds[n]):.0f}"]
            if protocol == "paper":
                row.append(PAPER_TEST_ERROR.get(depth, "-") if kind == "resnet" else "-")
            rows.append(row)
    data_txt = (f"{s['dataset']}, " + (f"first {s['train_limit']:,} training images" if s["train_limit"]
                                       else "all training images")
                + (f" less a {s['holdout']:,}-image validation split" if s["holdout"] else "")
                + (f"; test error on the first {s['test_limit']:,} test images" if s["test_limit"] else ""))
    return {"caption": f"final errors after {budget_text(s)} ({data_txt}; width {s['width']}; mean over seeds "
                       f"{list(seeds)}{', then each seed in that order' if several else ''}). Training error: one "
                       f"pass over the un-augmented training images{_eval_limit_txt(s)} in eval mode after "
                       f"training. Running training error: the trainer's, the mean over the last epoch's "
                       f"augmented batches in train mode (the figure's thin lines). Seconds, the mean over seeds: "
                       f"training steps, and the whole run (with its test evaluations every {s['eval_every']} "
                       f"epoch{'s' * (s['eval_every'] != 1)}, the final pass and the gradient flow)",
            "headers": headers, "rows": rows}


def _eval_limit_txt(s: dict) -> str:
    return f" (the first {s['train_eval_limit']:,})" if s["train_eval_limit"] else ""


def _recorded_settings(s: dict, nets: _Nets, data_dir: str | None) -> dict:
    """The settings as results.json records them (seeds are recorded on their own)."""
    return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items() if k != "seeds"},
            "threads": nets.threads, "workers": nets.workers, "data_dir": data_dir,
            "recipe": f"the CIFAR nets' recipe (He et al. 2015, section 4.2) with the protocol's batch "
                      f"({s['batch_size']}), peak lr ({s['lr']:g}) and schedule ({schedule_text(s)}): SGD, "
                      "momentum 0.9, weight decay 1e-4, 4-pixel zero padding + random crop + flip, per-channel "
                      "mean/std normalisation, He fan-out init, option A shortcuts; ResNet-110: lr 0.01 until the "
                      "training error is below 80%",
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


def _figure_title(s: dict, seeds: tuple[int, ...]) -> str:
    return (f"{s['dataset']}, {budget_text(s)}, width {s['width']}"
            + (f", mean over seeds {list(seeds)}" if len(seeds) > 1 else f", seed {seeds[0]}")
            + ": training error thin dashed (augmented batches), test error bold; "
              "o: training error of the final un-augmented pass")
