"""Gradient flow: the norm of each conv layer's weight gradient, layer by layer, in a plain net
and a residual net of the same depth, at initialisation and after some training.

The lecture notes say shortcuts "really help with exploding and vanishing gradient values". He et
al. 2015 say otherwise for their plain nets (section 4.1): trained with BN, "the backward
propagated gradients exhibit healthy norms", so the degradation problem is "unlikely to be caused
by vanishing gradients". This module measures it, so the report can show which holds here.

The snapshots come from the degradation experiment's own training runs, not from extra ones: a
PyTorch optimiser-step hook copies the weights before the first update and after the N-th
(:func:`watch_steps`), and the gradients are measured afterwards on a copy of the net
(:func:`snapshot_norms`), so the training itself is untouched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from ..models import create_model
from ..report import save_figure
from .common import pyplot

KINDS = ("plain", "resnet")
LABELS = {"plain": "plain", "resnet": "ResNet"}


def conv_gradient_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The L2 norm of the cross-entropy loss's gradient with respect to each conv layer's weight,
    from input to output, for one batch, with the model in train mode (as a training step sees it:
    BatchNorm normalises with the batch's own statistics).

    One forward and one backward pass; the model's ``.grad`` fields, mode and BatchNorm running
    statistics are left as they were.
    """
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]  # registration order = depth order
    if not convs:
        raise ValueError(f"{type(model).__name__} has no conv layers")
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.named_buffers()}  # a train-mode forward updates BN's running stats
    model.train()
    try:
        loss = F.cross_entropy(model(images).float(), labels)
        grads = torch.autograd.grad(loss, [m.weight for m in convs])
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
    return [float(g.float().norm()) for g in grads]


class StepSnapshots:
    """Copies of the weights an optimiser updates: before its first step, and after its
    ``after_steps``-th (or its last, if the run is shorter). Only the first optimiser that steps
    while the hooks are on is followed."""

    def __init__(self, after_steps: int) -> None:
        self.after_steps = after_steps
        self.steps = 0  # optimiser steps taken, up to after_steps
        self.init: list[torch.Tensor] | None = None
        self.after: list[torch.Tensor] | None = None
        self._optimizer = None

    @staticmethod
    def _copy(optimizer) -> list[torch.Tensor]:
        # Copies on the weights' own device, so a GPU run is not made to wait for a transfer each step.
        return [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]

    def before_step(self, optimizer, args, kwargs) -> None:
        if self._optimizer is None:
            self._optimizer, self.init = optimizer, self._copy(optimizer)

    def after_step(self, optimizer, args, kwargs) -> None:
        if optimizer is self._optimizer and self.steps < self.after_steps:
            self.steps += 1
            self.after = self._copy(optimizer)


@contextlib.contextmanager
def watch_steps(after_steps: int) -> Iterator[StepSnapshots]:
    """Follow the first optimiser that steps inside the ``with`` block (the training loop offers
    no callback; PyTorch's global optimiser hooks see every step without changing it)."""
    snap = StepSnapshots(after_steps)
    handles = [register_optimizer_step_pre_hook(snap.before_step), register_optimizer_step_post_hook(snap.after_step)]
    try:
        yield snap
    finally:
        for h in handles:
            h.remove()


def snapshot_norms(snap: StepSnapshots, name: str, model_kwargs: dict, images: torch.Tensor,
                   labels: torch.Tensor, num_classes: int) -> dict:
    """Per-layer gradient norms of net ``name`` with the weights of each snapshot, on one batch:
    ``{"init": [...], "after": [...], "steps": N}`` (one value per conv layer, input to output)."""
    if snap.init is None or snap.after is None:
        raise RuntimeError(f"{name}: no optimiser step was seen, so there are no weights to measure")
    model = create_model(name, num_classes=num_classes, in_channels=images.shape[1], **model_kwargs)
    out = {"steps": snap.steps}
    for when, weights in (("init", snap.init), ("after", snap.after)):
        _load_weights(model, weights, name)
        out[when] = conv_gradient_norms(model, images, labels)
    return out


def _load_weights(model: nn.Module, weights: list[torch.Tensor], name: str) -> None:
    """The trainer's optimiser holds ``model.parameters()`` in order (train.step.make_optimizer),
    so the snapshot's tensors are the parameters in that order."""
    params = list(model.parameters())
    if len(params) != len(weights) or any(p.shape != w.shape for p, w in zip(params, weights, strict=True)):
        raise RuntimeError(f"{name}: the optimiser's weights do not match the net's parameters")
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)


def plot_gradient_flow(path: Path, flow: dict, depth: int, title: str) -> None:
    """One panel: layer on x, gradient norm on a log y; plain and residual in two colours,
    initialisation dashed, after training solid."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.4), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, kind in enumerate(KINDS):
        f = flow[f"{kind}{depth}"]
        for when, style, label in (("init", "--", "at initialisation"), ("after", "-", f"after {f['steps']} steps")):
            ys = f[when]
            ax.plot(range(1, len(ys) + 1), ys, linestyle=style, color=colors[i], linewidth=1.6,
                    label=f"{LABELS[kind]}-{depth}, {label}")
    ax.set_yscale("log")
    ax.set(xlabel="conv layer (1 = first, next to the input)", ylabel="gradient norm of the layer's weights")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    save_figure(fig, path, hint="--out DIR", dpi=110)
    plt.close(fig)


def spread(norms: list[float]) -> float:
    """Largest over smallest layer norm: 1 is a perfectly even flow."""
    return max(norms) / min(norms) if min(norms) > 0 else math.inf


def flow_table(flow: dict, depth: int, figure: str) -> dict:
    """The figure's numbers in brief: first, middle and last conv layer, and the spread."""
    rows = []
    for kind in KINDS:
        f = flow[f"{kind}{depth}"]
        for when in ("init", "after"):
            ys = f[when]
            rows.append([f"{kind}{depth}", "initialisation" if when == "init" else f"after {f['steps']} steps",
                         f"{ys[0]:.3g}", f"{ys[len(ys) // 2]:.3g}", f"{ys[-1]:.3g}", f"{spread(ys):.3g}"])
    return {"caption": f"gradient flow ({figure}): the norm of the loss's gradient with respect to each conv layer's "
                       f"weights, on one fixed batch of 128 un-augmented training images, in train mode; the first, "
                       f"middle and last of the {len(flow[f'plain{depth}']['init'])} conv layers, and the spread "
                       f"(largest / smallest over all layers)",
            "headers": ["net", "weights", "first conv", "middle conv", "last conv", "spread"], "rows": rows}


def describe(flow: dict, depth: int) -> str:
    """A sentence for the conclusion: how even the flow is in each net, against section 4.1."""
    p, r = flow[f"plain{depth}"], flow[f"resnet{depth}"]
    return (f"Gradient flow (per-layer gradient norms, first conv layer over last): plain-{depth} "
            f"{p['init'][0] / p['init'][-1]:.3g}x at initialisation and {p['after'][0] / p['after'][-1]:.3g}x "
            f"after {p['steps']} steps (spread over all layers {spread(p['init']):.3g}x and "
            f"{spread(p['after']):.3g}x); ResNet-{depth} {r['init'][0] / r['init'][-1]:.3g}x and "
            f"{r['after'][0] / r['after'][-1]:.3g}x (spread {spread(r['init']):.3g}x and {spread(r['after']):.3g}x). "
            + _verdict(p, r, depth))


def _verdict(p: dict, r: dict, depth: int) -> str:
    """Which reading the numbers support: the lecture notes' (shortcuts keep gradient norms even
    where the plain net's grow or shrink across its layers by orders of magnitude) or He et al.'s
    section 4.1 (the BN plain net's norms are healthy too). "Uneven": a spread of 100x or more."""
    plain, res = max(spread(p["init"]), spread(p["after"])), max(spread(r["init"]), spread(r["after"]))
    first = ("He et al. (section 4.1) report healthy gradient norms in their BN plain nets and argue the "
             "degradation is not a vanishing-gradient problem. ")
    if plain >= 100 and res < 100:
        shrink = p["after"][0] < p["after"][-1]
        return first + (f"Here the plain net's norms span {plain:.3g}x across its layers against the ResNet's "
                        f"{res:.3g}x" + (", and after training starts they shrink toward the input: vanishing "
                                         "gradients in the early layers" if shrink else "")
                        + f". On this budget the lecture notes' reading holds: with the same layers, the shortcuts "
                          f"keep ResNet-{depth}'s gradient norms within {res:.3g}x of each other.")
    if plain < 100:
        return first + (f"Here too the plain net's norms stay within {plain:.3g}x across its layers (the ResNet's "
                        f"{res:.3g}x): no vanishing or exploding gradient explains its higher training error.")
    return first + f"Here both nets' norms span 100x or more (plain {plain:.3g}x, ResNet {res:.3g}x)."
