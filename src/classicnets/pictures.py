"""Look inside a trained network: its first-layer filters and what each stage makes of an image.

    import classicnets
    figs = classicnets.show("runs/lenet5-digits-...", "seven.png")   # [filters, feature maps]
    classicnets.show("runs/lenet5-digits-...", "seven.png", out=".")  # and write them as PNGs

* **Filters**: the weights of the first convolution, one tile per output map. One input channel
  is drawn in grey, three as colour; each tile is scaled on its own, symmetrically about zero
  (mid-grey is a zero weight), since it is the pattern, not the magnitude, that reads.
* **Feature maps**: the image as the model sees it (preprocessed exactly as in training), then
  for each stage of :func:`classicnets.drawing.layout` (``stage 1``, ``layer2``, ...) its last
  spatial output: the most active channels (highest mean activation, up to ``channels``), each
  scaled to its own range. The title gives the predicted class and its probability.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from .drawing import layout
from .models.lenet import SparseConv2d
from .report import save_figure

__all__ = ["feature_maps", "show"]


def _predictor(checkpoint_or_predictor, device, normalize: bool = True):
    from .predict import Predictor, load

    if isinstance(checkpoint_or_predictor, Predictor):
        return checkpoint_or_predictor
    return load(checkpoint_or_predictor, device=device, normalize=normalize)


def feature_maps(predictor, image) -> dict:
    """One forward pass of ``image`` with every stage's output recorded.

    Returns ``{"input": (C, H, W) tensor, "probabilities": (classes,) tensor, "stages":
    [(stage name, module name, (C, H, W) tensor), ...], "filters": (name, weight) or None}``,
    all on the CPU.
    """
    model = predictor.model
    x = predictor.preprocess(image)[:1]  # a list of images: the first
    lay = layout(model, tuple(x.shape[1:]))
    modules = dict(model.named_modules())
    wanted = {st.output: st.name for st in lay.stages if st.output is not None}
    outputs: dict[str, torch.Tensor] = {}
    first_conv: list[str] = []

    def record(name: str):
        def hook(module, args, output):
            if isinstance(module, (nn.Conv2d, SparseConv2d)) and not first_conv:
                first_conv.append(name)
            if name in wanted:  # a module called twice (a block's ReLU) keeps its last call
                outputs[name] = output[0].detach().float().cpu().clone()

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in modules.items()
               if n in wanted or isinstance(m, (nn.Conv2d, SparseConv2d))]
    try:
        with torch.no_grad():
            probabilities = model(x).float().softmax(1)[0].cpu()
    finally:
        for h in handles:
            h.remove()
    filters = None
    if first_conv:
        conv = modules[first_conv[0]]
        weight = conv.dense_weight() if isinstance(conv, SparseConv2d) else conv.weight
        filters = (first_conv[0], weight.detach().float().cpu())
    stages = [(st.name, st.output, outputs[st.output]) for st in lay.stages if st.output in outputs]
    return {"input": x[0].detach().float().cpu(), "probabilities": probabilities, "stages": stages,
            "filters": filters}


def _as_picture(t: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """(C, H, W) to something imshow draws: (H, W) with a colormap, or (H, W, 3) in [0, 1]."""
    if t.shape[0] == 3:
        lo, hi = t.amin(), t.amax()
        return ((t - lo) / (hi - lo).clamp(min=1e-12)).permute(1, 2, 0), None
    return t.mean(0), "gray"


def _filters_figure(name: str, weight: torch.Tensor, model: str, limit: int = 64):
    from matplotlib.figure import Figure

    out_maps, in_maps, kh, kw = weight.shape
    n = min(out_maps, limit)
    cols = min(n, 8 if n <= 64 else 12)
    rows = math.ceil(n / cols)
    tile = 0.55 if max(kh, kw) < 7 else 0.7
    fig = Figure(figsize=(max(3.2, cols * tile + 0.3), rows * tile + 0.75), layout="constrained")
    shown = f"{n} of {out_maps}" if n < out_maps else f"{out_maps}"
    what = "" if in_maps in (1, 3) else ", mean over input channels"
    fig.suptitle(f"{model}: first-layer filters\n{name}, {shown} filters of {kh} x {kw} x {in_maps}{what}",
                 fontsize=8)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        w = weight[k]
        scale = w.abs().amax().clamp(min=1e-12)
        if in_maps == 3:  # colour: zero is mid-grey
            ax.imshow((0.5 + w / (2 * scale)).permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        else:
            ax.imshow(w.mean(0).numpy(), cmap="gray", vmin=-scale.item(), vmax=scale.item(),
                      interpolation="nearest")
    return fig


def _maps_figure(result: dict, predictor, model: str, channels: int):
    from matplotlib.figure import Figure

    p = result["probabilities"]
    best = int(p.argmax())
    cls = predictor.classes[best] if best < len(predictor.classes) else str(best)
    stages = result["stages"]
    cols = min(8, channels)
    grids = [min(channels, t.shape[0]) for _, _, t in stages]
    nrows = [math.ceil(g / cols) for g in grids]
    tile = 0.62
    width = 1.6 + cols * tile
    height = 0.55 + sum(r * tile + 0.32 for r in nrows)
    fig = Figure(figsize=(width, max(height, 2.4)), layout="constrained")
    fig.suptitle(f"{model}: predicted {cls!r} ({p[best].item():.1%})", fontsize=10, fontweight="bold")
    left, right = fig.subfigures(1, 2, width_ratios=[1.45, cols * tile])
    ax = left.subplots()
    pic, cmap = _as_picture(result["input"])
    ax.imshow(pic.numpy(), cmap=cmap, interpolation="nearest")
    ax.set_title(f"input\n{result['input'].shape[1]} x {result['input'].shape[2]} x {result['input'].shape[0]}",
                 fontsize=7)
    ax.set_axis_off()
    top_p, top_i = p.topk(min(3, p.numel()))
    names = [predictor.classes[i] if i < len(predictor.classes) else str(i) for i in top_i.tolist()]
    left.supxlabel("top 3\n" + "\n".join(f"{n}  {q:.1%}" for n, q in zip(names, top_p.tolist(), strict=True)),
                   fontsize=7)
    if not stages:
        return fig
    subs = right.subfigures(len(stages), 1, height_ratios=[r * tile + 0.32 for r in nrows], squeeze=False)[:, 0]
    for sub, (stage, module, t), g, r in zip(subs, stages, grids, nrows, strict=True):
        c, h, w = t.shape
        mean = t.mean((1, 2))
        top = sorted(mean.topk(g).indices.tolist())  # the most active channels, in channel order
        which = f"{g} most active of {c} channels" if g < c else f"all {c} channels"
        sub.suptitle(f"{stage}  ({module}: {h} x {w} x {c}, {which})", fontsize=7, x=0.0, ha="left")
        axes = sub.subplots(r, cols, squeeze=False)
        for k, a in enumerate(axes.flat):
            a.set_axis_off()
            if k >= g:
                continue
            m = t[top[k]]
            a.imshow(m.numpy(), cmap="viridis", interpolation="nearest",
                     vmin=m.min().item(), vmax=max(m.max().item(), m.min().item() + 1e-6))
            a.set_title(f"#{top[k]}", fontsize=5.5, pad=1.5)
    return fig


def show(checkpoint_or_predictor, image, out: str | os.PathLike | None = None, *, channels: int = 16,
         device: str = "cpu", normalize: bool = True) -> list:
    """Figures of a trained model: ``[first-layer filters, feature maps of image]``.

    ``checkpoint_or_predictor``: a run directory, a checkpoint file, or a
    :class:`~classicnets.predict.Predictor`. ``image``: anything ``Predictor.predict`` takes (a
    file path, a PIL image, a uint8 array or tensor). ``out``: a directory to also write
    ``MODEL-filters.png`` and ``MODEL-feature-maps.png`` into (created if missing; each file is
    written atomically, and one that cannot be is an :class:`~classicnets.errors.OutputError`
    naming it). ``channels``: feature maps shown per stage (the most active ones). ``normalize``:
    read the image as the checkpoint's dataset made its images (:mod:`classicnets.data.reading`;
    a Predictor keeps its own setting). Each figure's ``get_label()`` is its file name stem.
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    predictor = _predictor(checkpoint_or_predictor, device, normalize)
    model_name = str(predictor.meta.get("model", type(predictor.model).__name__))
    result = feature_maps(predictor, image)
    figures = []
    if result["filters"] is not None:
        figures.append(_filters_figure(*result["filters"], model_name))
        figures[-1].set_label(f"{model_name}-filters")
    figures.append(_maps_figure(result, predictor, model_name, channels))
    figures[-1].set_label(f"{model_name}-feature-maps")
    if out is not None:
        for fig in figures:
            save_figure(fig, Path(out) / f"{fig.get_label()}.png", hint="-o DIR", dpi=150, facecolor="white",
                        metadata={"Software": None})
    return figures

