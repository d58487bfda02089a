"""lenet5's two conv - max pool - ReLU blocks with their pool and ReLU fused, on CPU.

``lenet5`` (max pooling, ReLU) runs each block as convolution, 2x2 max pool, ReLU
(``LeNet5``'s docstring says why the pool comes first). On channels-last float32 CPU tensors,
:mod:`classicnets.native` runs them in fewer passes:

* **block 1** (one-channel images that need no gradient, as a training step's do not; 6 maps):
  the convolution, its pool and its ReLU in one kernel. The convolution's 28x28 output, four
  times the size of what the block hands on, never goes to memory: each pair of its rows is
  pooled while it sits in the L1 cache. The backward reads the pooled gradient itself: of each
  2x2 window only the winner's convolution output reached the pooled output, so its taps'
  products are the only ones the weight gradient sums (a quarter of the multiply-adds), and the
  full-size gradient is never made.
* **block 2**: oneDNN's convolution, then the max pool and ReLU in one pass. The backward goes
  from the pooled gradient straight to the convolution's three gradients (native kernels,
  :mod:`.conv`): the input gradient scatters each window's gradient to its winner inside the
  kernel's own transposition, and the weight and bias gradients sum the winners alone, so the
  full-size gradient is never made and the pool has no backward pass of its own.

Values and gradients are those of the three layers run one by one with the native kernels, bit
for bit (``tests/test_fused.py``), which agree with PyTorch's own to rounding (:mod:`.conv`);
the convolutions' weight and bias gradients, summed over the winners alone, agree with them to
rounding. (They also differ where an input value is infinite: the layers one by one multiply it
by the zero gradient of a losing position, which gives NaN; the fused blocks never do.)
The layers stay separate modules, so a model's printout, ``state_dict`` and layer table are
unchanged; a forward or backward hook on any of them (``classicnets summary``, ``explore``,
the experiments' probes), tracing, a dispatch mode, or any other setting runs them one by one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules import module as _module

from .. import native
from .conv import Conv2d, gray_pool_relu_forward, gray_weight_grads, pool_relu_input_grad, pooled_weight_grads
from .max_pool import MaxPool2d, native_input, pool_backward, pool_forward


class _GrayConvPoolReLU(torch.autograd.Function):
    """Block 1 in one kernel each way; the image gets no gradient (it needs none)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out, winner = gray_pool_relu_forward(x, weight, bias)
        ctx.save_for_backward(x, out, winner)
        ctx.weight_shape = weight.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, out, winner = ctx.saved_tensors
        _, need_weight, need_bias = ctx.needs_input_grad
        if not (need_weight or need_bias):
            return None, None, None
        grad_weight, grad_bias = gray_weight_grads(x, grad_out, ctx.weight_shape, need_bias, pooled=(out, winner))
        return None, grad_weight if need_weight else None, grad_bias


class _PoolReLU(torch.autograd.Function):
    """2x2 max pool with stride 2, then ReLU, in one pass each way (channels-last float32)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out, winner = pool_forward(x, relu=True)
        ctx.save_for_backward(out, winner)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        out, winner = ctx.saved_tensors
        return pool_backward(grad_out, winner, (2 * out.shape[2], 2 * out.shape[3]), relu_out=out)


class _ConvPoolReLU(torch.autograd.Function):
    """Block 2: oneDNN's convolution, then the pool and ReLU in one pass; the backward goes from
    the pooled gradient straight to the three gradients (the full-size one is never made)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        conv_out = F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)
        out, winner = pool_forward(conv_out, relu=True)
        ctx.save_for_backward(x, weight, out, winner)
        ctx.conv_hw = tuple(conv_out.shape[2:])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, out, winner = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = pool_relu_input_grad(grad_out, out, winner, weight, ctx.conv_hw)
        if need_weight or need_bias:
            grad_weight, grad_bias = pooled_weight_grads(x, grad_out, out, winner, weight.shape, need_bias)
        return grad_input, grad_weight if need_weight else None, grad_bias


def _hooked(modules: tuple[nn.Module, ...]) -> bool:
    """Whether a hook would see any of ``modules`` run: fusing them would hide it."""
    if (_module._global_forward_hooks or _module._global_forward_pre_hooks or _module._global_backward_hooks
            or _module._global_backward_pre_hooks):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in modules)


def _pool_relu(pool: nn.Module, act: nn.Module) -> bool:
    """Whether ``pool`` then ``act`` are the 2x2 max pool and ReLU the fused kernels run, unhooked,
    with the native pool not turned off (fused or not, a pool is then PyTorch's)."""
    return (isinstance(pool, MaxPool2d) and pool._native_shape() and type(act) is nn.ReLU
            and native.library("fused_blocks") is not None and native.library("pool") is not None
            and not _hooked((pool, act)))


def _fused_block(x: torch.Tensor, conv: nn.Module, pool: nn.Module, act: nn.Module) -> type | None:
    """The kernel that may run ``act(pool(conv(x)))`` in one: :class:`_GrayConvPoolReLU` (block 1),
    :class:`_ConvPoolReLU` (block 2), or None. The checks they share run once a call."""
    if not (isinstance(conv, Conv2d) and _pool_relu(pool, act)) or _hooked((conv,)):
        return None
    path, k = conv.native_path(x), conv.kernel_size[0]
    if path is None or (x.shape[2] - k + 1) % 2 or (x.shape[3] - k + 1) % 2:
        return None
    if path == "gray_conv":
        return _GrayConvPoolReLU
    if conv.out_channels > 1 and native.library("input_grad").conv_pooled_weight_grad_supports(conv.in_channels, k):
        return _ConvPoolReLU
    return None


def conv_pool_relu(x: torch.Tensor, conv: nn.Module, pool: nn.Module, act: nn.Module) -> torch.Tensor:
    """``act(pool(conv(x)))``, one of lenet5's blocks: block 1's kernel, block 2's, or the pool
    and ReLU in one pass after the convolution, where each applies; else the layers one by one."""
    block = _fused_block(x, conv, pool, act)
    if block is not None:
        return block.apply(x, conv.weight, conv.bias)
    return pool_relu(conv(x), pool, act)


def pool_relu(x: torch.Tensor, pool: nn.Module, act: nn.Module) -> torch.Tensor:
    """``act(pool(x))``: in one native pass where it applies, else the two layers one by one."""
    if _pool_relu(pool, act) and native_input(x):
        return _PoolReLU.apply(x)
    return act(pool(x))
