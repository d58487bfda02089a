"""The cost of a convolution, and why 1 x 1 bottlenecks pay.

:func:`conv_cost`, :func:`stack_cost` and :func:`format_cost_table` are arithmetic: a convolution
computes every output value (H_out x W_out x C_out of them) as a dot product over a k x k x C_in
window, so it costs H_out x W_out x C_out x k x k x C_in multiply-adds. That is the convention of
:class:`torch.utils.flop_counter.FlopCounterMode`, the counter behind
:func:`classicnets.summary_table.summary` (the tests hold the two to the same figure), and of the
lecture's "number of multiplies": bias additions are not counted. Being arithmetic, it answers
instantly at any size. Shapes are channels last, (H, W, C), as the lecture writes them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import InputError

__all__ = ["conv_cost", "format_cost_table", "parse_layer", "stack_cost"]


def parse_layer(spec: str) -> tuple[int, int]:
    """``"16x1"`` -> ``(16, 1)``: a layer as ``classicnets cost`` takes it, OUT_CHANNELSxKERNEL."""
    match = re.fullmatch(r"(\d+)x(\d+)", spec.strip().lower())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise InputError(f"layer {spec!r}: expected OUT_CHANNELSxKERNEL with positive integers, e.g. 16x1 or 32x5")
    return int(match[1]), int(match[2])


def _conv(in_shape: Sequence[int], out_channels: int, kernel_size: int, stride: int,
          padding: str | int) -> tuple[tuple[int, int, int], int]:
    H, W, C = in_shape
    for name, value in (("input height", H), ("input width", W), ("input channels", C),
                        ("output channels", out_channels), ("kernel size", kernel_size), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if kernel_size > H or kernel_size > W:
        raise InputError(f"a {kernel_size}x{kernel_size} kernel does not fit a {H} x {W} input")
    if padding == "valid":  # PyTorch's name for no padding
        padding = 0
    if padding != "same" and (not isinstance(padding, int) or padding < 0):
        raise InputError(f"padding must be 'same', 'valid' or a number of pixels >= 0, got {padding!r}")
    if padding == "same":
        if stride == 1:  # PyTorch's padding="same": the output keeps the input's size
            h, w = H, W
        elif kernel_size % 2 == 0:
            raise InputError("padding='same' with a stride needs an odd kernel_size")
        else:
            padding = kernel_size // 2  # out = ceil(H / stride), as "same" means in the lecture
    if padding != "same":
        h = (H + 2 * padding - kernel_size) // stride + 1
        w = (W + 2 * padding - kernel_size) // stride + 1
    return (h, w, out_channels), h * w * out_channels * kernel_size * kernel_size * C


def conv_cost(
    in_shape: Sequence[int],
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: str | int = "same",
) -> int:
    """Multiply-adds of one convolution from ``in_shape`` = (H, W, C_in), channels last as in the
    lecture (``padding``: "same" or a number of pixels).

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
    lines[-1] += (f"  ({total / 1e9:.1f} G multiply-adds)" if total >= 1e9 else
                  f"  ({total / 1e6:.1f} M multiply-adds)")
    return "\n".join(lines)
