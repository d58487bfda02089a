"""The layout: what is drawn, read from the model, as data (no matplotlib here).

:func:`layout` runs the model once through :func:`~classicnets.summary_table.summary` and walks
its rows: layers outside residual blocks become :class:`Item`\\ s on stages of their own, the
convolutions of each ``BasicBlock``/``Bottleneck`` become the items of a :class:`Block`, and runs
of identical blocks collapse into one block marked ``x N``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..models import create_model, model_card
from ..models.lenet import EuclideanRBF, SparseConv2d, Subsampling
from ..models.resnet import BasicBlock, Bottleneck, PadShortcut
from ..summary_table import LayerRow, Summary, format_shape, summary

__all__ = ["Block", "Item", "Layout", "Stage", "layout"]

BLOCK_TYPES = (BasicBlock, Bottleneck)
_CONV = (nn.Conv2d, SparseConv2d)
_POOL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, Subsampling)
_FC = (nn.Linear, EuclideanRBF)


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
    """Everything :func:`~classicnets.drawing.draw` draws, in drawing order."""

    model: str
    input_size: tuple[int, ...]
    params: int
    items: list[Item]
    blocks: list[Block] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    table: Summary | None = None  # the summary the layout was read from: same shapes, same labels


def layout(model_or_name: str | nn.Module, input_size: Sequence[int] | None = None, *,
           collapse: bool = True, **model_kwargs) -> Layout:
    """What :func:`~classicnets.drawing.draw` draws, as data.

    ``model_or_name`` is a zoo name (built on the meta device, at its model card's input size
    unless ``input_size`` = (C, H, W) says otherwise; ``model_kwargs`` go to the builder) or a
    model instance (then ``input_size`` is required; it runs once where its weights are).
    ``collapse=False`` draws every block instead of one per run of identical blocks.
    """
    model, name, size, device = _resolve(model_or_name, input_size, model_kwargs)
    table = summary(model, size, device=device)
    walk = _Walk(model, size)
    for row in table.rows:
        walk.add(row)
    items, blocks = _join_blocks(walk.entries, collapse)
    stages = _stages(items, walk.row_stage)
    return Layout(name, tuple(size), table.total_params, items, blocks, stages, table)


def _resolve(model_or_name, input_size, model_kwargs) -> tuple[nn.Module, str, tuple, torch.device]:
    """(model, display name, input size, device to run it on)."""
    if isinstance(model_or_name, nn.Module):
        params = list(model_or_name.parameters())
        if input_size is None:
            raise ValueError("input_size is required for a model instance, e.g. (3, 224, 224)")
        device = params[0].device if params else torch.device("cpu")
        return model_or_name, type(model_or_name).__name__, tuple(input_size), device
    card = model_card(model_or_name)
    size = tuple(card.input_size if input_size is None else input_size)
    try:  # shapes only: no weights, no arithmetic
        with torch.device("meta"):
            model = create_model(model_or_name, **model_kwargs)
        return model, model_or_name, size, torch.device("meta")
    except NotImplementedError:  # a builder that computes on tensors (lenet5_1998)
        return create_model(model_or_name, **model_kwargs), model_or_name, size, torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# Reading one layer


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


# ----------------------------------------------------------------------------------------------
# Walking the summary's rows


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


class _Walk:
    """The summary's rows in execution order, turned into drawn items and block runs.

    ``entries`` are the items outside blocks and one :class:`_Run` per block module;
    ``row_stage`` is (stage, output shape, module) of every row, drawn or not, from which each
    stage's last feature map is found afterwards.
    """

    def __init__(self, model: nn.Module, size: tuple[int, ...]) -> None:
        self.modules = dict(model.named_modules())
        self.block_names = {n for n, m in self.modules.items() if isinstance(m, BLOCK_TYPES)}
        self.entries: list[Item | _Run] = [Item("input", "input", "input", "input", tuple(size), "")]
        self.row_stage: list[tuple[str, tuple, str]] = []
        self.flow = tuple(size)  # the main path's current shape
        self.seq_stage, self.seen_blocks, self.in_classifier, self.closed = 1, False, False, False

    def add(self, row: LayerRow) -> None:
        module = self.modules.get(row.name)
        if module is None:  # the model's own row (a model that is one layer): nothing to draw
            return
        blk = self._owner(row.name)
        if blk is not None:
            self._add_in_block(row, module, blk)
        else:
            self._add_outside_blocks(row, module)

    def _owner(self, row_name: str) -> str | None:
        """The innermost block module that contains ``row_name``, if any."""
        parts = row_name.split(".")
        return next((p for p in (".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1))
                     if p in self.block_names), None)

    def _add_in_block(self, row: LayerRow, module: nn.Module, blk: str) -> None:
        self.seen_blocks, stage = True, blk.rpartition(".")[0] or blk
        self.row_stage.append((stage, row.output_shape, row.name))
        if not isinstance(self.entries[-1], _Run) or self.entries[-1].name != blk:
            self.entries.append(_Run(blk, type(self.modules[blk]).__name__, stage, self.flow,
                                     *_shortcut(self.modules[blk])))
        if ".downsample" in row.name[len(blk):]:  # the shortcut branch: drawn as the arrow
            return
        run = self.entries[-1]
        if isinstance(module, _CONV):
            run.items.append(Item(row.name, row.type, *_describe(module, self.flow, row.output_shape),
                                  row.output_shape, stage))
        run.out_shape = self.flow = row.output_shape

    def _add_outside_blocks(self, row: LayerRow, module: nn.Module) -> None:
        drawn = _is_drawn(module, self.flow, row.output_shape)
        stage = self._stage_outside_blocks(row, drawn)
        if drawn:
            self.entries.append(Item(row.name, row.type, *_describe(module, self.flow, row.output_shape),
                                     row.output_shape, stage))
            self.closed = self.closed or isinstance(module, _POOL)
        self.row_stage.append((stage, row.output_shape, row.name))
        self.flow = row.output_shape

    def _stage_outside_blocks(self, row: LayerRow, drawn: bool) -> str:
        """ResNets have a stem before their blocks and a head after; a plain stack is cut into
        stages after each pooling layer, and everything from the first vector on is the
        classifier."""
        if self.block_names:
            return "head" if self.seen_blocks else "stem"
        self.in_classifier = self.in_classifier or len(row.output_shape) == 1
        if drawn and self.closed and not self.in_classifier:  # the layer after a pool opens the next stage
            self.seq_stage, self.closed = self.seq_stage + 1, False
        return "classifier" if self.in_classifier else f"stage {self.seq_stage}"


# ----------------------------------------------------------------------------------------------
# Blocks and stages


def _join_blocks(entries: list[Item | _Run], collapse: bool) -> tuple[list[Item], list[Block]]:
    """Blocks join the items where they ran; a run of identical blocks becomes one, "x N"."""
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
    return items, blocks


def _stages(items: list[Item], row_stage: list[tuple[str, tuple, str]]) -> list[Stage]:
    """Consecutive items of a stage, with the feature map that ends it: its last spatial output
    (for classicnets.show)."""
    stages: list[Stage] = []
    for i, it in enumerate(items):
        if not it.stage:
            continue
        if stages and stages[-1].name == it.stage:
            stages[-1] = replace(stages[-1], items=stages[-1].items + (i,))
        else:
            stages.append(Stage(it.stage, (i,), None))
    for k, st in enumerate(stages):
        spatial = [(n, shape) for s, shape, n in row_stage
                   if s == st.name and len(shape) == 3 and shape[1] * shape[2] > 1]
        if spatial:
            stages[k] = replace(st, output=spatial[-1][0], output_shape=spatial[-1][1])
    return stages
