"""The cost of a convolution, and why 1 x 1 bottlenecks pay.

:func:`conv_cost`, :func:`stack_cost` and :func:`format_cost_table` run real ``nn.Conv2d``
layers through :class:`torch.utils.flop_counter.FlopCounterMode`, the counter behind
:func:`classicnets.summary_table.summary`, with its convention: multiply-adds, bias additions not
counted (the lecture's "number of multiplies"). Shapes are channels last, (H, W, C), as the
lecture writes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["conv_cost", "format_cost_table", "stack_cost"]


def _conv(in_shape: Sequence[int], out_channels: int, kernel_size: int, stride: int,
          padding: str | int) -> tuple[tuple[int, int, int], int]:
    H, W, C = in_shape
    if padding == "same" and stride != 1:
        if kernel_size % 2 == 0:
            raise ValueError("padding='same' with a stride needs an odd kernel_size")
        padding = kernel_size // 2  # out = ceil(H / stride), as "same" means in the lecture
    conv = nn.Conv2d(C, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        y = conv(torch.zeros(1, C, H, W))
    _, c, h, w = y.shape
    return (h, w, c), counter.get_total_flops() // 2


def conv_cost(
    in_shape: Sequence[int],
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: str | int = "same",
) -> int:
    """Multiply-adds of one convolution from ``in_shape`` = (H, W, C_in), channels last as in the
    lecture, measured on a real ``nn.Conv2d`` forward by FlopCounterMode.

    Like the lecture's "number of multiplies", bias additions are not counted::

        >>> conv_cost((28, 28, 192), 32, 5)   # 28*28*32 outputs x 5*5*192 multiplies each
        120422400
    """
    return _conv(in_shape, out_channels, kernel_size, stride, padding)[1]


def stack_cost(
    in_shape: Sequence[int], layers: Sequence[Sequence[int]]
) -> list[tuple[str, tuple[int, int, int], int]]:
    """Multiply-adds of a stack of "same"-padded convolutions, layer by layer.

    ``layers`` are ``(out_channels, kernel_size)`` or ``(out_channels, kernel_size, stride)``.
    Returns ``(description, output shape (H, W, C), multiply-adds)`` per layer; bias additions
    are not counted. The lecture's 1 x 1 bottleneck::

        >>> [m for _, _, m in stack_cost((28, 28, 192), [(16, 1), (32, 5)])]
        [2408448, 10035200]

    against 120,422,400 for the 5 x 5 convolution straight from 192 channels.
    """
    shape = tuple(in_shape)
    out = []
    for layer in layers:
        out_channels, k, *rest = layer
        stride = rest[0] if rest else 1
        shape, macs = _conv(shape, out_channels, k, stride, "same")
        desc = f"{k}x{k} conv, {out_channels}" + (f", stride {stride}" if stride != 1 else "")
        out.append((desc, shape, macs))
    return out


def format_cost_table(
    costs: Sequence[tuple[str, Sequence[int], int]], in_shape: Sequence[int] | None = None
) -> str:
    """Print :func:`stack_cost`'s result as a table with a total::

        input          28 x 28 x 192
        1x1 conv, 16   28 x 28 x 16     2,408,448
        5x5 conv, 32   28 x 28 x 32    10,035,200
        total                          12,443,648  (12.4 M multiply-adds)
    """

    def shape_str(s: Sequence[int]) -> str:
        return " x ".join(str(v) for v in s)

    total = sum(m for _, _, m in costs)
    body = ([("input", shape_str(in_shape), "")] if in_shape is not None else [])
    body += [(d, shape_str(s), f"{m:,}") for d, s, m in costs]
    body.append(("total", "", f"{total:,}"))
    w = [max(len(r[i]) for r in body) for i in range(3)]
    lines = [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}".rstrip() for a, b, c in body]
    lines[-1] += f"  ({total / 1e6:.1f} M multiply-adds)"
    return "\n".join(lines)
