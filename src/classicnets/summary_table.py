"""Look inside a network: one row per layer with its output shape, parameters and multiply-adds.

:func:`summary` runs one forward pass of a single image and records, for every leaf layer in
the order it runs, the table the lectures draw::

    Layer        Type       Output (H x W x C)   Params   Mult-adds
    conv1        Conv2d     28 x 28 x 6             156     117,600
    ...

How things are counted
----------------------
* **Multiply-adds** come from :class:`torch.utils.flop_counter.FlopCounterMode`, which knows
  convolutions (grouped ones included), linear layers and matrix products. It reports FLOPs as
  2 per multiply-add; we halve them. Bias additions are not counted, nor are element-wise
  operations (ReLU, batch norm, local response norm, pooling, residual additions). This is the
  convention behind torchvision's published figures (AlexNet 0.71 G, VGG-16 15.47 G,
  ResNet-18 1.81 G, ResNet-50 4.09 G at 224 x 224) and behind the lecture's "number of
  multiplies" (a 5 x 5 convolution from 28 x 28 x 192 to 32 maps costs 120.4 M).
* A layer whose arithmetic the counter cannot see (it is made of element-wise ops), or sees
  wrongly, declares its cost with :func:`register_macs`. LeNet-5 (1998) has two:
  its Euclidean RBF output layer, ``y_i = sum_j (x_j - w_ij)^2``, counts one multiply-add per
  (input, class) pair (84 x 10 = 840): each term is a subtraction, a squaring and an
  accumulation, the work of a dot product. Its sparse C3 counts only the connections of the
  paper's Table I (150,000), not the dense zero-padded kernel it runs (240,000). Its trainable
  subsampling (a coefficient and a bias per map) is element-wise, like batch norm: 0. The rules
  live in :mod:`classicnets.macs`.
* **Parameters** of a row are the module's own (not its children's). A module that runs more
  than once (the shared ReLU in a torchvision ResNet block) gets a row per call; its parameters
  are shown on its first row only, so the column sums to the model's total.
* **Activation memory** is the size of every row's output for one image (forward activations
  only: no gradients, no optimizer state, no workspace; layers computed in place count too).

The cost of the 1 x 1 "bottleneck" trick is one call away: :func:`conv_cost`,
:func:`stack_cost` and :func:`format_cost_table` run real ``nn.Conv2d`` layers through the same
counter. They live in :mod:`classicnets.costs` and are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .costs import conv_cost, format_cost_table, stack_cost
from .macs import register_macs, rule_for
from .models import create_model, model_card

__all__ = [
    "LayerRow",
    "Summary",
    "conv_cost",
    "format_cost_table",
    "format_shape",
    "model_summary",
    "register_macs",
    "stack_cost",
    "summary",
]

ROOT_NAME = "(model)"  # the row name of the model itself (depth=0, or a model that is one layer)

# ----------------------------------------------------------------------------------------------
# The table


def format_shape(shape: Sequence[int]) -> str:
    """A PyTorch shape without the batch dimension, written as the lecture writes it.

    ``(6, 28, 28)`` -> ``"28 x 28 x 6"`` (channels last); ``(120,)`` -> ``"120"``.
    """
    shape = tuple(shape)
    if not shape:
        return "scalar"
    if len(shape) == 1:
        return str(shape[0])
    return " x ".join(str(s) for s in (*shape[1:], shape[0]))


def human_count(n: int) -> str:
    """``1_814_083_944`` -> ``"1.81 G"``; ``416_520`` -> ``"0.42 M"``; small counts as they are."""
    if abs(n) >= 1e9:
        return f"{n / 1e9:.2f} G"
    return f"{n / 1e6:.2f} M" if abs(n) >= 1e4 else f"{n:,}"


def human_bytes(n: int) -> str:
    """``25_690_112`` -> ``"24.50 MiB"`` (binary units)."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:,} B"


@dataclass(frozen=True)
class LayerRow:
    """One row of a :class:`Summary`: one call of one layer (or of a group, with ``depth``)."""

    name: str  # module path, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...]  # PyTorch order without the batch dimension, e.g. (6, 28, 28)
    params: int  # own parameters (a group: its members'); 0 on a repeated call
    macs: int  # multiply-adds for one image, bias additions excluded
    output_bytes: int = 0  # size of the output for one image

    @property
    def output(self) -> str:
        """The output shape as the lecture writes it: ``"28 x 28 x 6"``, or ``"120"``."""
        return format_shape(self.output_shape)


@dataclass
class Summary:
    """Layer-by-layer shapes, parameters and multiply-adds of a model for one input image.

    ``activation_bytes`` counts forward activations only: the sum of every layer's output size
    for one image (what a forward pass writes), not gradients, optimizer state or workspace.
    """

    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    total_macs: int
    activation_bytes: int
    input_size: tuple[int, ...]  # (C, H, W), as given to summary()
    model: str = ""  # class name of the model

    def to_dict(self) -> dict:
        """A JSON-ready dict (``json.dumps(s.to_dict())``); :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["rows"] = [{**asdict(r), "output_shape": list(r.output_shape), "output": r.output}
                     for r in self.rows]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Summary:
        fields = set(LayerRow.__dataclass_fields__)
        rows = [LayerRow(**{**{k: v for k, v in r.items() if k in fields},
                            "output_shape": tuple(r["output_shape"])}) for r in d["rows"]]
        return cls(rows=rows, total_params=d["total_params"], trainable_params=d["trainable_params"],
                   total_macs=d["total_macs"], activation_bytes=d["activation_bytes"],
                   input_size=tuple(d["input_size"]), model=d.get("model", ""))

    HEADER = ("Layer", "Type", "Output (H x W x C)", "Params", "Mult-adds")

    def cells(self) -> list[tuple[str, str, str, str, str]]:
        """The rows as printed, one string per column of :attr:`HEADER`."""
        return [(r.name, r.type, r.output, f"{r.params:,}", f"{r.macs:,}") for r in self.rows]

    def totals(self) -> list[tuple[str, str]]:
        """The lines under the table, as (what, value)."""
        return [
            ("Input size (H x W x C)", format_shape(self.input_size)),
            ("Total params", f"{self.total_params:,}"),
            ("Trainable params", f"{self.trainable_params:,}"),
            ("Non-trainable params", f"{self.total_params - self.trainable_params:,}"),
            ("Multiply-adds", f"{self.total_macs:,}" + (
                f" ({human_count(self.total_macs)})" if self.total_macs >= 1e4 else "")),
            ("Activations (forward, 1 image)", f"{self.activation_bytes:,} bytes" + (
                f" ({human_bytes(self.activation_bytes)})" if self.activation_bytes >= 1024 else "")),
        ]

    def __str__(self) -> str:
        header = self.HEADER
        body = self.cells()
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        right = (False, False, True, True, True)

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if r else c.ljust(w)
                             for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

        rule = "-" * len(line(header))
        totals = self.totals()
        key_w = max(len(k) for k, _ in totals)
        out = [self.model] if self.model else []
        out += [rule, line(header), rule, *(line(b) for b in body), rule]
        out += [f"{k + ':':<{key_w + 1}} {v}" for k, v in totals]
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Recording one forward pass


@dataclass(eq=False)
class _Call:
    """One call of one module during the recorded forward pass."""

    module: nn.Module
    name: str
    parent: _Call | None
    row_index: int  # where this call's own row goes, if it gets one
    start_flops: int
    child_flops: int = 0  # FLOPs counted inside child calls
    output_shape: tuple[int, ...] = ()
    output_bytes: int = 0

    @property
    def depth(self) -> int:
        return 0 if self.name == ROOT_NAME else self.name.count(".") + 1

    def ancestor_at(self, depth: int) -> _Call | None:
        call: _Call | None = self
        while call is not None and call.depth > depth:
            call = call.parent
        return call if call is not None and call.depth == depth else None


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _check_input_size(input_size: Any) -> tuple[int, ...]:
    if input_size is None:
        raise ValueError(
            "input_size is required, e.g. (3, 224, 224); for a zoo model use "
            "model_summary(name) or classicnets.model_card(name).input_size"
        )
    try:
        size = tuple(input_size)
    except TypeError:
        size = ()
    if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(
            f"input_size must be positive integers (C, H, W) without the batch, got {input_size!r}"
        )
    return size


def summary(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    depth: int | None = None,
    device: str | torch.device = "cpu",
) -> Summary:
    """Run one image of ``input_size`` = (C, H, W) through ``model`` and tabulate every layer.

    The forward pass runs in eval mode under ``torch.no_grad()`` on ``device`` (a model that
    lives elsewhere is moved there and back; ``device="meta"`` with a model built on the meta
    device computes shapes and counts without any arithmetic). Every module's training flag is
    restored afterwards.

    Rows are the leaf modules in execution order (a module called twice has two rows), plus a
    row for any non-leaf module that holds parameters of its own or does counted arithmetic in
    its own ``forward``. ``depth=d`` merges the rows inside each module at depth ``d`` into one
    row (``depth=1``: ``layer1`` as a single row; ``depth=0``: the whole model).

    Multiply-adds exclude bias additions and element-wise work; see the module docstring.
    """
    size = _check_input_size(input_size)
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be a non-negative integer or None, got {depth!r}")
    device = torch.device(device)
    params = list(model.parameters())
    home = params[0].device if params else device
    if home.type == "meta" and device.type != "meta":
        raise ValueError("the model lives on the meta device: call summary(..., device='meta')")
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.get_default_dtype())

    recorder = _Recorder(model)
    _record_forward(model, recorder, size, dtype, device, home)
    rows = recorder.rows
    unique = {id(p): p for p in params}.values()
    result = Summary(
        rows=rows,
        total_params=sum(p.numel() for p in unique),
        trainable_params=sum(p.numel() for p in unique if p.requires_grad),
        total_macs=sum(r.macs for r in rows),
        activation_bytes=sum(r.output_bytes for r in rows),
        input_size=size,
        model=type(model).__name__,
    )
    if depth is not None:
        result.rows = _group(rows, recorder.row_calls, depth)
    return result


class _Recorder:
    """Forward hooks that turn one forward pass into rows.

    A pre-hook pushes a :class:`_Call` with the flop counter's total so far; the post-hook pops
    it, and what the counter gained in between, less what the call's children gained, is the
    module's own arithmetic. A row is inserted at the index its call had on entry, so a parent
    that gets a row of its own comes before its children, in execution order.
    """

    def __init__(self, model: nn.Module) -> None:
        self.names = {m: (n or ROOT_NAME) for n, m in model.named_modules()}
        self.rows: list[LayerRow] = []
        self.row_calls: list[_Call] = []  # row i belongs to call row_calls[i]
        self.stack: list[_Call] = []
        self.seen_params: set[int] = set()  # a shared parameter is shown on its first row only
        self.counter = FlopCounterMode(display=False)

    def attach(self) -> list:
        """Hook every module; returns the handles to remove."""
        handles = []
        for m in self.names:
            handles.append(m.register_forward_pre_hook(self.pre_hook))
            handles.append(m.register_forward_hook(self.post_hook))
        return handles

    def where(self) -> str:
        """The module running now (where a failed forward pass failed)."""
        return self.stack[-1].name if self.stack else ROOT_NAME

    def pre_hook(self, module: nn.Module, args: tuple) -> None:
        parent = self.stack[-1] if self.stack else None
        self.stack.append(_Call(module, self.names[module], parent, len(self.rows),
                                self.counter.get_total_flops()))

    def post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        call = self.stack.pop()
        flops = self.counter.get_total_flops() - call.start_flops
        if call.parent is not None:
            call.parent.child_flops += flops
        outs = _tensors(output)
        call.output_shape = tuple(outs[0].shape[1:]) if outs else ()
        call.output_bytes = sum(t[0].numel() * t.element_size() if t.dim() else t.element_size()
                                for t in outs)
        own = [p for p in module.parameters(recurse=False) if id(p) not in self.seen_params]
        self.seen_params.update(id(p) for p in own)
        self_flops = flops - call.child_flops
        rule = rule_for(module)
        macs = rule(module, args, output) if rule is not None else self_flops // 2
        is_leaf = next(module.children(), None) is None
        if is_leaf or own or macs:
            row = LayerRow(call.name, type(module).__name__, call.output_shape,
                           sum(p.numel() for p in own), int(macs), call.output_bytes)
            self.rows.insert(call.row_index, row)
            self.row_calls.insert(call.row_index, call)


def _record_forward(model: nn.Module, recorder: _Recorder, size: tuple[int, ...], dtype: torch.dtype,
                    device: torch.device, home: torch.device) -> None:
    """One image through ``model`` on ``device`` in eval mode, hooked and counted; the hooks,
    every module's training flag and the model's device are restored whatever happens."""
    modes = {m: m.training for m in model.modules()}
    handles = recorder.attach()
    moved = home != device
    if device.type == "meta":  # shapes only: an input of any size costs nothing
        x = torch.empty((1, *size), dtype=dtype, device=device)
    else:
        x = torch.randn((1, *size), generator=torch.Generator().manual_seed(0), dtype=dtype)
    try:
        if moved:
            model.to(device)
        model.eval()
        with torch.no_grad(), recorder.counter:
            try:
                model(x.to(device))
            except Exception as e:
                raise ValueError(
                    f"forward pass of {type(model).__name__} failed in {recorder.where()!r} for input_size "
                    f"{size} (C, H, W without batch): {e}"
                ) from e
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
        if moved:
            model.to(home)


def _group(rows: list[LayerRow], calls: list[_Call], depth: int) -> list[LayerRow]:
    """Merge rows into one row per call of the module at ``depth`` that contains them."""
    groups: dict[int, tuple[_Call, list[LayerRow]]] = {}
    for row, call in zip(rows, calls, strict=True):
        owner = call.ancestor_at(depth) if call.depth > depth else None
        key = owner if owner is not None else call
        groups.setdefault(id(key), (key, []))[1].append(row)
    grouped = []
    for key, members in groups.values():
        if len(members) == 1 and members[0].name == key.name:
            grouped.append(members[0])
            continue
        grouped.append(LayerRow(key.name, type(key.module).__name__, key.output_shape,
                                sum(r.params for r in members), sum(r.macs for r in members),
                                sum(r.output_bytes for r in members)))
    return grouped


def model_summary(
    name: str,
    input_size: Sequence[int] | None = None,
    num_classes: int | None = None,
    *,
    depth: int | None = None,
    device: str | torch.device = "cpu",
    **model_kwargs,
) -> Summary:
    """:func:`summary` of a zoo model, at its model card's native input size unless told.

    ``num_classes`` and ``model_kwargs`` (e.g. ``shortcut="B"``) go to
    :func:`classicnets.create_model`. With ``device="meta"`` the model is built without weights
    (shapes and counts only: milliseconds where a first forward of a deep net takes seconds),
    except where the builder itself computes on tensors (lenet5_1998), which meta cannot.
    """
    card = model_card(name)
    if torch.device(device).type == "meta":
        try:
            with torch.device("meta"):
                model = create_model(name, num_classes=num_classes, **model_kwargs)
        except NotImplementedError:
            model, device = create_model(name, num_classes=num_classes, **model_kwargs), "cpu"
    else:
        model = create_model(name, num_classes=num_classes, **model_kwargs)
    s = summary(model, card.input_size if input_size is None else input_size, depth=depth, device=device)
    s.model = name
    return s
