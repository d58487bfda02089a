"""``MaxPool2d``: torch's max pooling layer, with a native CPU kernel where it pays.

A drop-in subclass of :class:`torch.nn.MaxPool2d`: same arguments, same name in a model's
printout and the same outputs and gradients, bit for bit. For a 2x2 window with stride 2 (no
padding, dilation or ceil mode) on a channels-last float32 CPU tensor of even height and width,
the forward and backward run :mod:`classicnets.native`'s kernels; everything else (another
layout, dtype or device, tracing, ``torch.compile``, ONNX or TorchScript export, a machine where
the kernels cannot be built) runs ``nn.MaxPool2d``'s own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import native

_CL = torch.channels_last


def pool_forward(x: torch.Tensor, relu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, each window's winner 0-3) of the native 2x2 pool on ``x``; with ``relu``, the
    output goes through a ReLU in the same pass (``classicnets.models.fused``)."""
    n, c, h, w = x.shape
    out = torch.empty((n, c, h // 2, w // 2), memory_format=_CL)
    winner = torch.empty((n, c, h // 2, w // 2), dtype=torch.uint8, memory_format=_CL)
    native.library("pool").pool2x2_forward(x.data_ptr(), out.data_ptr(), winner.data_ptr(), n, h, w, c, int(relu),
                                           torch.get_num_threads())
    return out, winner


def pool_backward(grad_out: torch.Tensor, winner: torch.Tensor, input_hw: tuple[int, int],
                  relu_out: torch.Tensor | None = None) -> torch.Tensor:
    """The input gradient of :func:`pool_forward`; ``relu_out``: its output where it had a ReLU
    (the gradient stops where that output is <= 0)."""
    n, c = winner.shape[:2]
    h, w = input_hw
    grad_out = grad_out.contiguous(memory_format=_CL)
    grad_in = torch.empty((n, c, h, w), memory_format=_CL)
    native.library("pool").pool2x2_backward(grad_out.data_ptr(), winner.data_ptr(),
                                            None if relu_out is None else relu_out.data_ptr(), grad_in.data_ptr(),
                                            n, h, w, c, torch.get_num_threads())
    return grad_in


class _MaxPool2x2(torch.autograd.Function):
    """2x2, stride 2, channels-last float32: the index of each window's winner (0-3, one byte)
    is kept for the backward, where torch keeps an int64 index into the whole map."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out, winner = pool_forward(x)
        ctx.save_for_backward(winner)
        ctx.input_hw = tuple(x.shape[2:])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (winner,) = ctx.saved_tensors
        return pool_backward(grad_out, winner, ctx.input_hw)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with the native 2x2/stride-2 kernel where it applies (see the module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._native_shape() and native_input(x):
            return _MaxPool2x2.apply(x)
        return super().forward(x)

    def _native_shape(self) -> bool:
        return (_pair(self.kernel_size) == (2, 2) and _pair(self.stride) == (2, 2) and _pair(self.padding) == (0, 0)
                and _pair(self.dilation) == (1, 1) and not self.ceil_mode and not self.return_indices)


def native_input(x: torch.Tensor) -> bool:
    """Whether the native kernel can pool ``x`` (a 2x2 window with stride 2 given)."""
    if native.being_traced():
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and x.numel() > 0 and x.shape[1] > 1
            and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0 and x.is_contiguous(memory_format=_CL)
            and native.library("pool") is not None)
