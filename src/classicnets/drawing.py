"""Draw a network the way the lectures draw it: feature maps as volumes, left to right.

    import classicnets
    fig = classicnets.draw("resnet34")            # a matplotlib Figure
    from classicnets.draw import save
    save(fig, "resnet34.svg")                     # or .png

Each feature map of shape C x H x W is a box whose face is H tall and W deep (drawn receding, in
cabinet projection) and whose thickness along the flow is C. Sizes are compressed so that one
page holds LeNet-5 and VGG-16 alike: the face grows with the square root of H (the largest map of
the model gets the full height) and the thickness with log2 C. Fully connected layers are thin
bars, their height growing with log10 of their width. Under each box: the operation that made it
(``conv 5x5, s1``: kernel, stride) and its shape ``H x W x C``, exactly as
:func:`classicnets.summary_table.summary` writes it.

Where the structure comes from: :func:`layout` runs the real model once, through
:func:`~classicnets.summary_table.summary` (on the meta device for a zoo name, so even ResNet-152 costs
no arithmetic), and reads the modules themselves for kernels and strides. Residual blocks are the
``BasicBlock`` and ``Bottleneck`` modules of :mod:`classicnets.models.resnet`; their shortcut is
drawn as an arrow over the block, solid for the identity, dashed where it changes the shape
(option B's 1x1 projection, option A's zero padding). Plain nets have blocks but no arrows.
Identical consecutive blocks are drawn once, marked ``x N``. Long networks wrap onto several
rows, breaking between stages where they can.

The layout is data (:class:`Layout`: items with ``.label`` and ``.shape``, blocks with
``.repeat`` and ``.shortcut``, stages), so what is drawn can be checked against the summary.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .errors import ClassicNetsError
from .models.lenet import EuclideanRBF, SparseConv2d, Subsampling
from .models.resnet import BasicBlock, Bottleneck, PadShortcut
from .summary_table import Summary, format_shape, summary

__all__ = ["Block", "Item", "Layout", "Stage", "draw", "layout", "save"]

BLOCK_TYPES = (BasicBlock, Bottleneck)
_CONV = (nn.Conv2d, SparseConv2d)
_POOL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, Subsampling)
_FC = (nn.Linear, EuclideanRBF)

# ----------------------------------------------------------------------------------------------
# The layout: what is drawn, as data


@dataclass(frozen=True)
class Item:
    """One drawn layer: a volume (C x H x W output) or a bar (a vector)."""

    name: str  # module path, e.g. "features.conv1" ("input" for the input image)
    type: str  # module class, e.g. "Conv2d"
    kind: str  # "input" | "conv" | "pool" | "fc" | "flatten" | "other": sets the colour
    op: str  # the operation that produced it: "conv 5x5, s1", "max pool 2x2, s2", "FC"
    shape: tuple[int, ...]  # output shape, PyTorch order without the batch: (6, 28, 28)
    stage: str  # "stage 1", "layer2", "classifier", ... ("" for the input)
    block: int | None = None  # index into Layout.blocks when inside a residual (or plain) block

    @property
    def label(self) -> str:
        """The shape as drawn, and as the summary writes it: ``"28 x 28 x 6"`` or ``"120"``."""
        return format_shape(self.shape)


@dataclass(frozen=True)
class Block:
    """A drawn ResNet block; ``names`` are the modules it stands for (more than one: ``x N``)."""

    names: tuple[str, ...]  # e.g. ("layer3.1", ..., "layer3.35")
    type: str  # "BasicBlock" | "Bottleneck"
    stage: str
    items: tuple[int, ...]  # indices into Layout.items: the convolutions of the first block
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    shortcut: str | None  # "identity" | "projection" (B, C) | "padded" (A) | None (plain net)
    shortcut_op: str = ""  # "1x1 conv, s2" or "zero-pad, s2" where the shortcut is not the identity

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def repeat(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Stage:
    """A group of consecutive items, drawn on one shaded band."""

    name: str
    items: tuple[int, ...]
    output: str | None  # module whose (last) output is the stage's last spatial feature map
    output_shape: tuple[int, ...] = ()


@dataclass
class Layout:
    """Everything :func:`draw` draws, in drawing order."""

    model: str
    input_size: tuple[int, ...]
    params: int
    items: list[Item]
    blocks: list[Block] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    table: Summary | None = None  # the summary the layout was read from: same shapes, same labels


def _resolve(model_or_name, input_size, model_kwargs) -> tuple[nn.Module, str, tuple, torch.device]:
    """(model, display name, input size, device to run it on)."""
    if isinstance(model_or_name, nn.Module):
        params = list(model_or_name.parameters())
        if input_size is None:
            raise ValueError("input_size is required for a model instance, e.g. (3, 224, 224)")
        device = params[0].device if params else torch.device("cpu")
        return model_or_name, type(model_or_name).__name__, tuple(input_size), device
    from .models import create_model, model_card

    card = model_card(model_or_name)
    size = tuple(card.input_size if input_size is None else input_size)
    try:  # shapes only: no weights, no arithmetic
        with torch.device("meta"):
            model = create_model(model_or_name, **model_kwargs)
        return model, model_or_name, size, torch.device("meta")
    except NotImplementedError:  # a builder that computes on tensors (lenet5_1998)
        return create_model(model_or_name, **model_kwargs), model_or_name, size, torch.device("cpu")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _kernel(k) -> str:
    kh, kw = _pair(k)
    return f"{kh}x{kw}"


def _describe(module: nn.Module, in_shape: tuple, out_shape: tuple) -> tuple[str, str]:
    """(kind, op label) of a drawn layer."""
    if isinstance(module, nn.Conv2d):
        groups = f", g{module.groups}" if module.groups > 1 else ""
        return "conv", f"conv {_kernel(module.kernel_size)}, s{_pair(module.stride)[0]}{groups}"
    if isinstance(module, SparseConv2d):
        return "conv", f"sparse conv {module.kernel_size}x{module.kernel_size}"
    if isinstance(module, Subsampling):
        return "pool", "subsample 2x2"
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        what = "avg" if isinstance(module, nn.AdaptiveAvgPool2d) else "max"
        return "pool", f"global {what} pool" if out_shape[1:] == (1, 1) else f"adaptive {what} pool"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        what = "max" if isinstance(module, nn.MaxPool2d) else "avg"
        stride = module.stride if module.stride is not None else module.kernel_size
        return "pool", f"{what} pool {_kernel(module.kernel_size)}, s{_pair(stride)[0]}"
    if isinstance(module, EuclideanRBF):
        return "fc", "RBF"
    if isinstance(module, nn.Linear):
        return "fc", "FC"
    if isinstance(module, nn.Flatten):
        return "flatten", "flatten"
    return "other", type(module).__name__


def _is_drawn(module: nn.Module, in_shape: tuple, out_shape: tuple) -> bool:
    """Convolutions and FC layers always; pooling and flattening where they change the shape (an
    adaptive pool can be the identity); anything else only where it changes the number of values,
    so ReLU, batch norm, LRN and dropout stay out even where the forward pass has just flattened
    the map (torchvision's ``classifier[0]`` is a dropout on the flattened features)."""
    if isinstance(module, _CONV + _FC):
        return True
    if isinstance(module, _POOL + (nn.Flatten,)):
        return in_shape != out_shape
    return math.prod(in_shape) != math.prod(out_shape)


def _shortcut(block: nn.Module) -> tuple[str | None, str]:
    if not block.residual:
        return None, ""
    ds = block.downsample
    if ds is None:
        return "identity", ""
    if isinstance(ds, PadShortcut):
        return "padded", f"zero-pad, s{ds.stride}"
    conv = next((m for m in ds.modules() if isinstance(m, nn.Conv2d)), None)
    op = f"{_kernel(conv.kernel_size)} conv, s{_pair(conv.stride)[0]}" if conv is not None else "projection"
    return "projection", op


@dataclass
class _Run:
    """One block module as it ran, before runs of identical blocks are collapsed."""

    name: str
    type: str
    stage: str
    in_shape: tuple[int, ...]
    shortcut: str | None
    shortcut_op: str
    items: list[Item] = field(default_factory=list)
    out_shape: tuple[int, ...] = ()

    def signature(self) -> tuple:
        return (self.type, self.in_shape, self.out_shape, self.shortcut, self.shortcut_op,
                tuple((it.op, it.shape) for it in self.items))


def layout(model_or_name: str | nn.Module, input_size: Sequence[int] | None = None, *,
           collapse: bool = True, **model_kwargs) -> Layout:
    """What :func:`draw` draws, as data.

    ``model_or_name`` is a zoo name (built on the meta device, at its model card's input size
    unless ``input_size`` = (C, H, W) says otherwise; ``model_kwargs`` go to the builder) or a
    model instance (then ``input_size`` is required; it runs once where its weights are).
    ``collapse=False`` draws every block instead of one per run of identical blocks.
    """
    model, name, size, device = _resolve(model_or_name, input_size, model_kwargs)
    table = summary(model, size, device=device)
    modules = dict(model.named_modules())
    block_names = {n for n, m in modules.items() if isinstance(m, BLOCK_TYPES)}

    def owner(row_name: str) -> str | None:
        parts = row_name.split(".")
        return next((p for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)) if p in block_names),
                    None)

    entries: list[Item | _Run] = [Item("input", "input", "input", "input", tuple(size), "")]
    row_stage: list[tuple[str, tuple, str]] = []  # (stage, output shape, module) of every row
    flow = tuple(size)  # the main path's current shape
    seq_stage, seen_blocks, in_classifier, closed = 1, False, False, False
    for row in table.rows:
        module = modules.get(row.name)
        if module is None:  # the model's own row (a model that is one layer): nothing to draw
            continue
        blk = owner(row.name)
        if blk is not None:
            seen_blocks, stage = True, blk.rpartition(".")[0] or blk
            row_stage.append((stage, row.output_shape, row.name))
            if not isinstance(entries[-1], _Run) or entries[-1].name != blk:
                entries.append(_Run(blk, type(modules[blk]).__name__, stage, flow, *_shortcut(modules[blk])))
            if ".downsample" in row.name[len(blk):]:  # the shortcut branch: drawn as the arrow
                continue
            run = entries[-1]
            if isinstance(module, _CONV):
                run.items.append(Item(row.name, row.type, *_describe(module, flow, row.output_shape),
                                      row.output_shape, stage))
            run.out_shape = flow = row.output_shape
            continue
        # Outside blocks: ResNets have a stem before them and a head after; a plain stack is cut
        # into stages after each pooling layer, and everything from the first vector on is the
        # classifier.
        drawn = _is_drawn(module, flow, row.output_shape)
        if block_names:
            stage = "head" if seen_blocks else "stem"
        else:
            in_classifier = in_classifier or len(row.output_shape) == 1
            if drawn and closed and not in_classifier:  # the layer after a pool opens the next stage
                seq_stage, closed = seq_stage + 1, False
            stage = "classifier" if in_classifier else f"stage {seq_stage}"
        if drawn:
            entries.append(Item(row.name, row.type, *_describe(module, flow, row.output_shape),
                                row.output_shape, stage))
            closed = closed or isinstance(module, _POOL)
        row_stage.append((stage, row.output_shape, row.name))
        flow = row.output_shape

    # Blocks join the items where they ran; a run of identical blocks becomes one, "x N".
    items: list[Item] = []
    blocks: list[Block] = []
    last_sig = None
    for e in entries:
        if isinstance(e, Item):
            items.append(e)
            last_sig = None
            continue
        if not e.items:  # a block without convolutions: nothing to draw
            continue
        sig = e.signature()
        if collapse and sig == last_sig and blocks[-1].stage == e.stage:
            blocks[-1] = replace(blocks[-1], names=blocks[-1].names + (e.name,))
            continue
        first = len(items)
        items.extend(replace(it, block=len(blocks)) for it in e.items)
        blocks.append(Block((e.name,), e.type, e.stage, tuple(range(first, len(items))), e.in_shape, e.out_shape,
                            e.shortcut, e.shortcut_op))
        last_sig = sig

    stages: list[Stage] = []
    for i, it in enumerate(items):
        if not it.stage:
            continue
        if stages and stages[-1].name == it.stage:
            stages[-1] = replace(stages[-1], items=stages[-1].items + (i,))
        else:
            stages.append(Stage(it.stage, (i,), None))
    # The feature map that ends each stage: its last spatial output (for classicnets.show).
    for k, st in enumerate(stages):
        spatial = [(n, shape) for s, shape, n in row_stage
                   if s == st.name and len(shape) == 3 and shape[1] * shape[2] > 1]
        if spatial:
            stages[k] = replace(st, output=spatial[-1][0], output_shape=spatial[-1][1])
    return Layout(name, tuple(size), table.total_params, items, blocks, stages, table)


# ----------------------------------------------------------------------------------------------
# Geometry (inches; the axes span the figure with 1 data unit = 1 inch, text in points)

_FACE = 1.45  # face height of the model's largest map
_FACE_MIN = 0.1
_RECEDE = 0.42  # the receding side (W) is drawn at this fraction of the face scale...
_ANGLE = math.radians(40)  # ...at this angle
_GAP, _BLOCK_GAP, _STAGE_GAP = 0.22, 0.36, 0.4
_FS_SHAPE, _FS_OP, _FS_STAGE, _FS_NOTE = 7.0, 6.5, 7.5, 7.0
_Y_STAGE, _Y_SHAPE, _Y_OP, _Y_VOLUMES = 0.09, 0.29, 0.44, 0.7  # baselines above a row's bottom
_MARGIN, _HEADER, _ROW_GAP, _CONT = 0.2, 0.5, 0.12, 0.32

_COLORS = {"input": "#d9d9d9", "conv": "#9ecae1", "pool": "#fdae6b", "fc": "#a1d99b",
           "flatten": "#c7e9c0", "other": "#dadaeb"}
_BANDS = ("#f4f7fb", "#fbf7f1")
_SHORTCUT_STYLE = {"identity": ("#333333", "-"), "projection": ("#b03a2e", (0, (5, 2))),
                   "padded": ("#1f618d", (0, (2.5, 2)))}
_SHORTCUT_LEGEND = {"identity": "identity shortcut", "projection": "projection shortcut (1x1 conv)",
                    "padded": "zero-padded identity shortcut (option A)"}


@functools.lru_cache(maxsize=1024)
def _text_width(text: str, size: float, weight: str = "normal") -> float:
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text:
        return 0.0
    path = TextPath((0, 0), text, size=size, prop=FontProperties(weight=weight))
    return path.get_extents().width / 72 * 1.06  # a little slack for other fonts in SVG viewers


@dataclass
class _Geom:
    t: float  # thickness along the flow (channels)
    h: float  # face height (H)
    dx: float  # receding side (W), horizontal part
    dy: float  # receding side, vertical part
    slot: float  # horizontal room the item takes, labels included

    @property
    def width(self) -> float:
        return self.t + self.dx


def _geometry(items: list[Item]) -> list[_Geom]:
    largest = max([max(it.shape[1:]) for it in items if len(it.shape) == 3] or [1])

    def face(n: int) -> float:
        return max(_FACE_MIN, _FACE * math.sqrt(n / largest))

    out = []
    for it in items:
        if len(it.shape) == 3:
            c, h, w = it.shape
            t, fh, d = 0.05 + 0.065 * math.log2(max(c, 1)), face(h), _RECEDE * face(w)
        else:  # a vector: a thin bar whose height grows with log10 of its width
            n = math.prod(it.shape)
            t, fh, d = 0.08, min(_FACE, 0.3 + 0.25 * math.log10(max(n, 1))), 0.08
        dx, dy = d * math.cos(_ANGLE), d * math.sin(_ANGLE)
        slot = max(t + dx, _text_width(it.label, _FS_SHAPE), _text_width(it.op, _FS_OP))
        out.append(_Geom(t, fh, dx, dy, slot))
    return out


def _gap(lay: Layout, i: int) -> float:
    """Horizontal room before item ``i`` when it follows item ``i - 1`` on the same row."""
    a, b = lay.items[i - 1], lay.items[i]
    if a.stage != b.stage:
        return _STAGE_GAP
    if a.block != b.block:
        return _BLOCK_GAP
    return _GAP


def _rows(lay: Layout, geom: list[_Geom], limit: float) -> list[list[int]]:
    """Greedy line breaking: a stage that does not fit starts a new row if it would fit on one;
    a stage wider than a row breaks between its blocks."""
    units: list[tuple[str, list[int]]] = []  # (stage, item indices) kept together
    for i, it in enumerate(lay.items):
        if it.block is not None and units and lay.items[units[-1][1][-1]].block == it.block:
            units[-1][1].append(i)
        else:
            units.append((it.stage, [i]))

    def span(ix: list[int]) -> float:
        return sum(geom[i].slot for i in ix) + sum(_gap(lay, i) for i in ix[1:])

    rows: list[list[int]] = [[]]
    width = 0.0
    for k, (stage, ix) in enumerate(units):
        starts_stage = k == 0 or units[k - 1][0] != stage
        if rows[-1]:
            need = _gap(lay, ix[0]) + span(ix)
            if starts_stage:  # try to keep the whole stage together
                rest = [i for s, u in units[k:] if s == stage for i in u]
                whole = _gap(lay, ix[0]) + span(rest)
                if width + whole > limit and span(rest) + _CONT <= limit:
                    rows.append([])
            if rows[-1] and width + need > limit:
                rows.append([])
        if not rows[-1]:
            width = (_CONT if len(rows) > 1 else 0.0) + span(ix)
        else:
            width += _gap(lay, ix[0]) + span(ix)
        rows[-1].extend(ix)
    return rows


def _row_width(lay: Layout, geom: list[_Geom], row: list[int], first: bool) -> float:
    return (0.0 if first else _CONT) + sum(geom[i].slot for i in row) + sum(_gap(lay, i) for i in row[1:])


def _break_rows(lay: Layout, geom: list[_Geom], max_width: float) -> list[list[int]]:
    """Rows as even as the stages allow: the fewest rows that fit ``max_width``, then the
    narrowest width that still needs no more of them."""
    rows = _rows(lay, geom, max_width)
    total = _row_width(lay, geom, list(range(len(lay.items))), True)
    limit = min(max_width, total / len(rows))
    while limit < max_width:
        trial = _rows(lay, geom, limit)
        if len(trial) <= len(rows):
            return trial
        limit *= 1.03
    return rows


# ----------------------------------------------------------------------------------------------
# Drawing


def _shade(color: str, amount: float):
    """``amount`` > 0 lightens towards white, < 0 darkens towards black."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    if amount >= 0:
        return tuple(c + (1 - c) * amount for c in (r, g, b))
    return tuple(c * (1 + amount) for c in (r, g, b))


def _cuboid(ax, x: float, yc: float, g: _Geom, color: str, z: float = 3) -> None:
    from matplotlib.patches import Polygon

    y0, y1 = yc - g.h / 2, yc + g.h / 2
    faces = [
        ([(x, y0), (x + g.t, y0), (x + g.t, y1), (x, y1)], color),  # front: C x H
        ([(x, y1), (x + g.t, y1), (x + g.t + g.dx, y1 + g.dy), (x + g.dx, y1 + g.dy)], _shade(color, 0.45)),
        ([(x + g.t, y0), (x + g.t + g.dx, y0 + g.dy), (x + g.t + g.dx, y1 + g.dy), (x + g.t, y1)],
         _shade(color, -0.18)),  # side: H x W
    ]
    for pts, fc in faces:
        ax.add_artist(Polygon(pts, closed=True, facecolor=fc, edgecolor="#2b2b2b", linewidth=0.5,
                              joinstyle="round", zorder=z))


def _arrow(ax, start, end, color="#555555", lw=0.7, z=2) -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_artist(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=6, color=color, linewidth=lw,
                                  shrinkA=0, shrinkB=0, zorder=z))


def draw(model_or_name: str | nn.Module | Layout, input_size: Sequence[int] | None = None, *,
         max_width: float = 11.0, title: str | None = None, collapse: bool = True, **model_kwargs):
    """The network as a picture: a :class:`matplotlib.figure.Figure` (save it with :func:`save`).

    ``model_or_name``: a zoo name, a model instance (with ``input_size``) or a :class:`Layout`.
    ``max_width`` (inches) is where rows wrap. See the module docstring for what is drawn.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyBboxPatch

    lay = model_or_name if isinstance(model_or_name, Layout) else layout(
        model_or_name, input_size, collapse=collapse, **model_kwargs)
    geom = _geometry(lay.items)
    rows = _break_rows(lay, geom, max_width)

    # Horizontal placement: slot left edges; vertical: each row's height from its contents.
    slot_x: dict[int, float] = {}
    row_of: dict[int, int] = {}
    widths = []
    for r, row in enumerate(rows):
        x = _MARGIN + (_CONT if r else 0.0)
        for k, i in enumerate(row):
            if k:
                x += _gap(lay, i)
            slot_x[i], row_of[i] = x, r
            x += geom[i].slot
        widths.append(x)
    block_top: dict[int, float] = {}  # frame top of each block, relative to the row's centre line
    for b, blk in enumerate(lay.blocks):
        block_top[b] = max(geom[i].h / 2 + geom[i].dy for i in blk.items) + 0.07
    heights, centres = [], []
    for row in rows:
        hmax = max(geom[i].h for i in row)
        yc = _Y_VOLUMES + hmax / 2
        top = yc + max(geom[i].h / 2 + geom[i].dy for i in row)
        for b in {lay.items[i].block for i in row} - {None}:
            blk = lay.blocks[b]
            if blk.shortcut or blk.repeat > 1:
                top = max(top, yc + block_top[b] + 0.16 + 0.17)
        heights.append(top + 0.1)
        centres.append(yc)

    # The header: title on the left, the legend on the right (or under the title if it does not fit).
    head = title if title is not None else lay.model
    sub = f"input {format_shape(lay.input_size)} · {lay.params:,} parameters"
    kinds = [k for k in _SHORTCUT_STYLE if any(b.shortcut == k for b in lay.blocks)]
    legend = [_SHORTCUT_LEGEND[k] for k in kinds] or (["plain net: no shortcuts"] if lay.blocks else [])
    title_w = _text_width(head, 11, "bold") + 0.15 + _text_width(sub, 8)
    legend_w = sum(_text_width(t, 7) + (0.6 if kinds else 0.0) for t in legend)
    fig_w = max(widths) + _MARGIN + (0.35 if len(rows) > 1 else 0.12)
    header = _HEADER + (0.25 if _MARGIN + title_w + 0.4 + legend_w > fig_w - _MARGIN else 0.0)
    fig_w = max(fig_w, 2 * _MARGIN + max(title_w, legend_w))
    fig_h = header + sum(heights) + _ROW_GAP * (len(rows) - 1) + _MARGIN / 2
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, fig_w)
    ax.set_ylim(0, fig_h)
    ax.set_axis_off()

    row_y0, y = [], fig_h - header
    for h in heights:
        row_y0.append(y - h)
        y -= h + _ROW_GAP

    def vol_x(i: int) -> float:  # left edge of the volume, centred in its slot
        return slot_x[i] + (geom[i].slot - geom[i].width) / 2

    def yc_of(i: int) -> float:
        return row_y0[row_of[i]] + centres[row_of[i]]

    # Stage bands, one per stretch of a stage on a row.
    band = 0
    for st in lay.stages:
        for r in sorted({row_of[i] for i in st.items}):
            on_row = [i for i in st.items if row_of[i] == r]
            x0 = slot_x[on_row[0]] - 0.14
            x1 = slot_x[on_row[-1]] + geom[on_row[-1]].slot + 0.14
            ax.add_artist(FancyBboxPatch((x0, row_y0[r] + 0.02), x1 - x0, heights[r] - 0.04,
                                         boxstyle="round,pad=0,rounding_size=0.08", facecolor=_BANDS[band % 2],
                                         edgecolor="#d5d9e0", linewidth=0.6, zorder=0))
            name = st.name if r == row_of[st.items[0]] else f"{st.name} (cont.)"
            ax.text((x0 + x1) / 2, row_y0[r] + _Y_STAGE, name, fontsize=_FS_STAGE, fontweight="bold",
                    ha="center", va="baseline", color="#444444", zorder=1)
        band += 1

    # Blocks: a frame (a stack of frames for x N), the shortcut arrow, the sum.
    for b, blk in enumerate(lay.blocks):
        first, last = blk.items[0], blk.items[-1]
        yc = yc_of(first)
        x0, x1 = slot_x[first] - 0.05, slot_x[last] + geom[last].slot + 0.05
        bottom = yc - max(geom[i].h for i in blk.items) / 2 - 0.06
        top = yc + block_top[b]
        for k in ((2, 1) if blk.repeat > 1 else ()):  # the repeated blocks behind the drawn one
            ax.add_artist(FancyBboxPatch((x0, bottom + 0.045 * k), x1 - x0, top - bottom,
                                         boxstyle="round,pad=0,rounding_size=0.05", facecolor="white",
                                         edgecolor="#9aa3ad", linewidth=0.5, zorder=1))
        ax.add_artist(FancyBboxPatch((x0, bottom), x1 - x0, top - bottom, boxstyle="round,pad=0,rounding_size=0.05",
                                     facecolor="white", edgecolor="#9aa3ad", linewidth=0.6, zorder=1))
        note_y = top + (0.09 if blk.repeat > 1 else 0.04)
        if blk.shortcut:
            color, style = _SHORTCUT_STYLE[blk.shortcut]
            xb, xe, ya = slot_x[first] - 0.11, slot_x[last] + geom[last].slot + 0.11, top + 0.16
            ax.add_line(Line2D([xb, xb, xe, xe], [yc, ya, ya, yc + 0.16], color=color, linewidth=0.9,
                               linestyle=style, zorder=4, solid_joinstyle="round",
                               gid=f"shortcut-{blk.shortcut}-{blk.name}"))
            _arrow(ax, (xe, yc + 0.17), (xe, yc + 0.055), color=color, lw=0.9, z=4)
            ax.add_artist(Circle((xb, yc), 0.022, color=color, zorder=4))
            ax.add_artist(Circle((xe, yc), 0.055, facecolor="white", edgecolor="#2b2b2b", linewidth=0.6, zorder=5))
            ax.text(xe, yc, "+", fontsize=6.5, ha="center", va="center_baseline", zorder=6)
            note_y = ya + 0.04
        note = [f"x {blk.repeat}"] if blk.repeat > 1 else []
        if blk.shortcut_op:
            note.append(blk.shortcut_op)
        if note:
            ax.text((x0 + x1) / 2, note_y, " · ".join(note), fontsize=_FS_NOTE, ha="center", va="bottom",
                    fontweight="bold" if blk.repeat > 1 else "normal", color="#222222", zorder=6)

    # Volumes, their labels, and the arrows between them.
    for r, row in enumerate(rows):
        for k, i in enumerate(row):
            it, g = lay.items[i], geom[i]
            x, yc = vol_x(i), yc_of(i)
            _cuboid(ax, x, yc, g, _COLORS[it.kind])
            cx, y0 = slot_x[i] + g.slot / 2, row_y0[r]
            ax.text(cx, y0 + _Y_SHAPE, it.label, fontsize=_FS_SHAPE, ha="center", va="baseline", zorder=6)
            ax.text(cx, y0 + _Y_OP, it.op, fontsize=_FS_OP, ha="center", va="baseline", color="#555555",
                    fontstyle="italic", zorder=6)
            if k:
                prev = row[k - 1]
                _arrow(ax, (vol_x(prev) + geom[prev].width, yc), (x, yc))
        yc = row_y0[r] + centres[r]
        if r + 1 < len(rows):  # the flow continues on the next row
            last = row[-1]
            _arrow(ax, (vol_x(last) + geom[last].width, yc), (widths[r] + 0.3, yc))
        if r:
            _arrow(ax, (_MARGIN, yc), (vol_x(row[0]), yc))

    # Title and legend (solid: identity; dashed: a shortcut that changes the shape).
    ax.text(_MARGIN, fig_h - 0.3, head, fontsize=11, fontweight="bold", ha="left", va="baseline")
    ax.text(_MARGIN + _text_width(head, 11, "bold") + 0.15, fig_h - 0.3, sub, fontsize=8, ha="left",
            va="baseline", color="#444444")
    x, y = fig_w - _MARGIN, fig_h - 0.3 - (header - _HEADER)
    for k, label in reversed(list(enumerate(legend))):
        x -= _text_width(label, 7)
        ax.text(x, y, label, fontsize=7, ha="left", va="baseline", color="#333333")
        if kinds:
            color, style = _SHORTCUT_STYLE[kinds[k]]
            ax.add_line(Line2D([x - 0.38, x - 0.06], [y + 0.03] * 2, color=color, linewidth=0.9, linestyle=style))
        x -= 0.6
    return fig


def save(fig, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write a figure as SVG (text kept as text: small and crisp), PNG or PDF, by the suffix."""
    import matplotlib

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf"):
        raise ClassicNetsError(f"{path}: expected a .svg, .png or .pdf file name")
    # Reproducible files (no date, fixed ids), so a redrawn figure only differs where it changed.
    rc = {"svg.fonttype": "none", "svg.hashsalt": "classicnets"}
    metadata = {"Date": None} if fmt == "svg" else ({"Software": None} if fmt == "png" else {"CreationDate": None})
    with matplotlib.rc_context(rc):
        fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata, facecolor="white")
    return path

