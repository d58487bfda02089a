"""``Conv2d``: torch's convolution layer, with a native CPU kernel for one-channel images.

A drop-in subclass of :class:`torch.nn.Conv2d`: same arguments, parameters, ``state_dict`` and
printout. When the layer reads a one-channel image (LeNet-5's first layer on grey digits) with
stride 1, no padding, dilation 1 and one group, on float32 CPU tensors laid out channels-last (as
``classicnets train`` runs LeNet-5), and the image itself needs no gradient, the forward and the
weight and bias gradients run :mod:`classicnets.native`'s kernel: with 6 output channels, oneDNN
fills 6 of its 8 vector lanes and the native kernel all of them. Its output is channels-last, as
PyTorch's is for that input. The sums run in another order, so values agree with
``nn.Conv2d`` to float32 rounding, not bit for bit. Everything else (more input channels, other
settings, dtypes or devices, an input that needs a gradient, tracing, ``torch.compile``, ONNX or
TorchScript export, a machine where the kernels cannot be built) runs ``nn.Conv2d``'s own.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import native
from .max_pool import tracing

_CL = torch.channels_last


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def gray_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The native forward: ``x`` (n, 1, h, w) float32, contiguous; the output channels-last."""
    n, _, h, w = x.shape
    c, _, k, _ = weight.shape
    weight = weight.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    out = torch.empty((n, c, h - k + 1, w - k + 1), memory_format=_CL)
    native.library("conv").conv_gray_forward(x.data_ptr(), weight.data_ptr(), _address(bias), out.data_ptr(),
                                             n, h, w, k, c, torch.get_num_threads())
    return out


def gray_weight_grads(x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size,
                      need_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The native weight gradient (and the bias gradient where ``need_bias``) for ``grad_out``."""
    n, _, h, w = x.shape
    c, _, k, _ = weight_shape
    grad_out = grad_out.contiguous(memory_format=_CL)
    grad_weight = torch.empty(weight_shape)
    grad_bias = torch.empty(c) if need_bias else None
    failed = native.library("conv").conv_gray_weight_grad(
        x.data_ptr(), grad_out.data_ptr(), grad_weight.data_ptr(), _address(grad_bias), n, h, w, k, c,
        torch.get_num_threads())
    if failed:
        raise MemoryError("the native convolution's weight gradient could not allocate its partial sums")
    return grad_weight, grad_bias


class _GrayConv(torch.autograd.Function):
    """Forward, and the gradients of the weight and bias; the image gets none (it needs none)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.weight_shape = weight.shape
        return gray_forward(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        _, need_weight, need_bias = ctx.needs_input_grad
        if not (need_weight or need_bias):
            return None, None, None
        grad_weight, grad_bias = gray_weight_grads(x, grad_out, ctx.weight_shape, need_bias)
        return None, grad_weight if need_weight else None, grad_bias


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the native kernel for one-channel images where it applies (see the module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.native_for(x):
            return _GrayConv.apply(x, self.weight, self.bias)
        return super().forward(x)

    def _native_shape(self) -> bool:
        k = self.kernel_size
        return (self.in_channels == 1 and self.groups == 1 and k[0] == k[1] and tuple(self.stride) == (1, 1)
                and self.padding in ((0, 0), "valid") and tuple(self.dilation) == (1, 1)
                and self.padding_mode == "zeros")

    def native_for(self, x: torch.Tensor) -> bool:
        """Whether a forward on ``x`` runs the native kernel."""
        return self._native_shape() and self._native_input(x)

    def _native_input(self, x: torch.Tensor) -> bool:
        if tracing() or x.requires_grad:
            return False
        weight, k = self.weight, self.kernel_size[0]
        # PyTorch's own output is channels-last when the input or the weight is: ours always is.
        channels_last = x.dim() == 4 and (x.stride(1) == 1 or weight.stride(1) == 1)
        lib = native.library("conv")
        return (channels_last and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
                and weight.device.type == "cpu" and x.is_contiguous() and x.shape[2] >= k and x.shape[3] >= k
                and x.shape[0] > 0 and lib is not None and bool(lib.conv_gray_supports(self.out_channels, k)))
