"""``Conv2d``: torch's convolution layer, with native CPU kernels for LeNet-5's two convolutions.

A drop-in subclass of :class:`torch.nn.Conv2d`: same arguments, parameters, ``state_dict`` and
printout. Two cases run :mod:`classicnets.native`'s kernels, both for stride 1, no padding,
dilation 1 and one group, on float32 CPU tensors laid out channels-last (as ``classicnets train``
runs LeNet-5); with LeNet-5's 6 channels, oneDNN fills 6 of its 8 vector lanes and the native
kernels all of them:

* **one-channel images** that need no gradient (LeNet-5's first layer): the forward and the
  weight and bias gradients (``gray_conv``);
* **inputs of up to 8 channels** that need a gradient (LeNet-5's second layer, on 6 maps): the
  input gradient (``input_grad``); the forward and the weight and bias gradients stay oneDNN's.

The native kernels sum in another order, so values agree with ``nn.Conv2d`` to float32 rounding,
not bit for bit. Everything else (other settings, dtypes or devices, autocast, tracing, ``torch.compile``,
ONNX or TorchScript export, a machine where the kernels cannot be built) runs ``nn.Conv2d``'s own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .. import native

_CL = torch.channels_last


def _address(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _detached(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias as the kernels read them: contiguous, out of autograd."""
    return weight.detach().contiguous(), None if bias is None else bias.detach().contiguous()


def gray_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The native forward: ``x`` (n, 1, h, w) float32, contiguous; the output channels-last."""
    n, _, h, w = x.shape
    c, _, k, _ = weight.shape
    weight, bias = _detached(weight, bias)
    out = torch.empty((n, c, h - k + 1, w - k + 1), memory_format=_CL)
    native.library("gray_conv").conv_gray_forward(x.data_ptr(), weight.data_ptr(), _address(bias), out.data_ptr(),
                                                  n, h, w, k, c, torch.get_num_threads())
    return out


def gray_pool_relu_forward(x: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """relu(max_pool2d(gray_forward(x, weight, bias), 2)) in one native kernel (an even output
    size): (output, each window's winner 0-3), both channels-last (``classicnets.models.fused``)."""
    n, _, h, w = x.shape
    c, _, k, _ = weight.shape
    weight, bias = _detached(weight, bias)
    shape = (n, c, (h - k + 1) // 2, (w - k + 1) // 2)
    out = torch.empty(shape, memory_format=_CL)
    winner = torch.empty(shape, dtype=torch.uint8, memory_format=_CL)
    failed = native.library("fused_blocks").conv_gray_pool_relu_forward(
        x.data_ptr(), weight.data_ptr(), _address(bias), out.data_ptr(), winner.data_ptr(), n, h, w, k, c,
        torch.get_num_threads())
    if failed:
        raise MemoryError("the fused first block could not allocate its scratch rows")
    return out, winner


def gray_weight_grads(x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size, need_bias: bool,
                      pooled: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The native weight gradient (and the bias gradient where ``need_bias``) for ``grad_out``;
    with ``pooled`` (the output and winners of :func:`gray_pool_relu_forward`), ``grad_out`` is
    the gradient of that pooled output."""
    n, _, h, w = x.shape
    c, _, k, _ = weight_shape
    grad_out = grad_out.contiguous(memory_format=_CL)
    grad_weight = torch.empty(weight_shape)
    grad_bias = torch.empty(c) if need_bias else None
    sizes = (n, h, w, k, c, torch.get_num_threads())
    if pooled is None:
        failed = native.library("gray_conv").conv_gray_weight_grad(
            x.data_ptr(), grad_out.data_ptr(), grad_weight.data_ptr(), _address(grad_bias), *sizes)
    else:
        out, winner = pooled
        failed = native.library("fused_blocks").conv_gray_pool_relu_weight_grad(
            x.data_ptr(), grad_out.data_ptr(), out.data_ptr(), winner.data_ptr(), grad_weight.data_ptr(),
            _address(grad_bias), *sizes)
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


class _NativeInputGrad(torch.autograd.Function):
    """oneDNN's forward and weight and bias gradients; the input gradient from the native kernel."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        return native_input_backward(grad_out, x, weight, ctx.has_bias, ctx.needs_input_grad)


def native_input_backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, has_bias: bool,
                          needs: tuple[bool, bool, bool] = (True, True, True)) -> tuple:
    """(input, weight, bias gradients; None where ``needs`` says no) of a stride-1 unpadded
    convolution: oneDNN's weight and bias gradients, the native input gradient."""
    need_input, need_weight, need_bias = needs
    grad_out = grad_out.contiguous(memory_format=_CL)
    grad_weight = grad_bias = grad_input = None
    if need_weight or need_bias:
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, x, weight, [weight.shape[0]] if has_bias else None, [1, 1], [0, 0], [1, 1], False,
            [0, 0], 1, [False, need_weight, need_bias])
    if need_input:
        grad_input = input_grad(grad_out, weight)
    return grad_input, grad_weight, grad_bias


def input_grad(grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The native input gradient of a stride-1 unpadded convolution: ``grad_out`` (n, co, ho, wo),
    ``weight`` (co, ci, k, k); channels-last (n, ci, ho + k - 1, wo + k - 1)."""
    n, co, ho, wo = grad_out.shape
    _, ci, k, _ = weight.shape
    grad_out = grad_out.contiguous(memory_format=_CL)
    weight = weight.detach().contiguous()
    grad_input = torch.empty((n, ci, ho + k - 1, wo + k - 1), memory_format=_CL)
    failed = native.library("input_grad").conv_input_grad(grad_out.data_ptr(), weight.data_ptr(),
                                                          grad_input.data_ptr(), n, ho, wo, co, ci, k,
                                                          torch.get_num_threads())
    if failed:
        raise MemoryError("the native convolution's input gradient could not allocate its buffers")
    return grad_input


def pool_relu_input_grad(grad_pooled: torch.Tensor, out: torch.Tensor, winner: torch.Tensor, weight: torch.Tensor,
                         conv_hw: tuple[int, int]) -> torch.Tensor:
    """:func:`input_grad` of a convolution whose output (``conv_hw``, both even) went through a 2x2
    max pool and a ReLU, from the gradient of the pooled output (``out`` and ``winner``: the
    pool's output and winners): the bits of :func:`input_grad` on what the pool's backward would
    pass back, without making that full-size gradient (``classicnets.models.fused``)."""
    n, co = grad_pooled.shape[:2]
    _, ci, k, _ = weight.shape
    ho, wo = conv_hw
    grad_pooled = grad_pooled.contiguous(memory_format=_CL)
    weight = weight.detach().contiguous()
    grad_input = torch.empty((n, ci, ho + k - 1, wo + k - 1), memory_format=_CL)
    failed = native.library("input_grad").conv_pool_relu_input_grad(
        grad_pooled.data_ptr(), out.data_ptr(), winner.data_ptr(), weight.data_ptr(), grad_input.data_ptr(), n, ho,
        wo, co, ci, k, torch.get_num_threads())
    if failed:
        raise MemoryError("the native convolution's input gradient could not allocate its buffers")
    return grad_input


def pooled_weight_grads(x: torch.Tensor, grad_pooled: torch.Tensor, out: torch.Tensor, winner: torch.Tensor,
                        weight_shape: torch.Size, need_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight gradient (and the bias gradient where ``need_bias``) of a stride-1 unpadded
    convolution on ``x`` (channels-last) whose output went through a 2x2 max pool and a ReLU, from
    the gradient of the pooled output: the pools' winners alone are summed (the others' gradients
    are zero), so the values agree with the dense gradient's to rounding."""
    n, ci, h, w = x.shape
    co, _, k, _ = weight_shape
    grad_pooled = grad_pooled.contiguous(memory_format=_CL)
    grad_weight = torch.empty(weight_shape)
    grad_bias = torch.empty(co) if need_bias else None
    failed = native.library("input_grad").conv_pooled_weight_grad(
        x.data_ptr(), grad_pooled.data_ptr(), out.data_ptr(), winner.data_ptr(), grad_weight.data_ptr(),
        _address(grad_bias), n, h, w, ci, co, k, torch.get_num_threads())
    if failed:
        raise MemoryError("the native convolution's weight gradient could not allocate its partial sums")
    return grad_weight, grad_bias


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with the native kernels where they apply (see the module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        path = self.native_path(x)
        if path == "gray_conv":
            return _GrayConv.apply(x, self.weight, self.bias)
        if path == "input_grad":
            return _NativeInputGrad.apply(x, self.weight, self.bias)
        return super().forward(x)

    def native_path(self, x: torch.Tensor) -> str | None:
        """Which native kernel a forward on ``x`` runs: "gray_conv", "input_grad" or None."""
        k = self.kernel_size
        plain = (self.groups == 1 and k[0] == k[1] and tuple(self.stride) == (1, 1) and tuple(self.dilation) == (1, 1)
                 and self.padding in ((0, 0), "valid") and self.padding_mode == "zeros")
        if not plain or native.being_traced() or x.dim() != 4 or min(x.shape) == 0 or min(x.shape[2:]) < k[0]:
            return None
        weight = self.weight
        if not (x.device.type == weight.device.type == "cpu" and x.dtype == weight.dtype == torch.float32):
            return None
        if torch.is_autocast_enabled("cpu"):
            return None  # autocast runs the convolution in bf16 or fp16: PyTorch's kernels do that
        if self.in_channels == 1 and not x.requires_grad:
            # PyTorch's own output is channels-last when the input or the weight is: ours always is.
            channels_last = x.stride(1) == 1 or weight.stride(1) == 1
            lib = native.library("gray_conv")
            fits = lib is not None and lib.conv_gray_supports(self.out_channels, k[0])
            return "gray_conv" if channels_last and x.is_contiguous() and fits else None
        if x.requires_grad and x.shape[1] > 1 and x.stride(1) == 1 and x.is_contiguous(memory_format=_CL):
            lib = native.library("input_grad")
            if lib is not None and lib.conv_input_grad_supports(self.in_channels, k[0]):
                return "input_grad"
        return None
