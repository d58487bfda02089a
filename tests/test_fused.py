"""lenet5's blocks with their pool and ReLU fused (models/fused.py): the values and gradients of
the layers run one by one, bit for bit, but for conv1's weight and bias gradients, which sum only
the pools' winners and agree to rounding; the layers one by one wherever a hook, a tracer, a
dispatch mode or a setting needs them."""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from classicnets import create_model, native
from classicnets.models import conv, fused
from classicnets.models.max_pool import MaxPool2d, pool_backward, pool_forward
from test_native import lenet5_weights_after_six_steps, on_threads, same_bits
from test_native_conv import assert_within_rounding

CL = torch.channels_last
needs_native = pytest.mark.skipif(native.library("fused_blocks") is None,
                                  reason=f"native kernels unavailable: {native.status()}")


def fused_calls(monkeypatch) -> list:
    """Names of the fused functions as they run."""
    calls = []
    for function in (fused._GrayConvPoolReLU, fused._ConvPoolReLU, fused._PoolReLU):
        apply, name = function.apply, function.__name__
        monkeypatch.setattr(function, "apply", lambda *a, name=name, apply=apply: calls.append(name) or apply(*a))
    return calls


def lenet5_run(model: nn.Module, x: torch.Tensor, grad: torch.Tensor, fuse: bool, threads: int | None = None):
    """(output, each parameter's gradient, {conv: (its input, the gradient at its output)}) of
    ``model`` on ``x``, fused (the dict empty) or with the layers one by one (their hooks keep
    them so)."""
    model.zero_grad(set_to_none=True)
    seen, handles = {}, []
    if not fuse:
        for name in ("conv1", "conv2"):
            conv = getattr(model.features, name)
            handles += [conv.register_forward_hook(lambda m, i, o, name=name: seen.update({name: [i[0].detach()]})),
                        conv.register_full_backward_hook(lambda m, gi, go, name=name: seen[name].append(go[0]))]
    try:
        with on_threads(threads), contextlib.nullcontext() if fuse else native.turned_off("fused_blocks"):
            out = model(x)
            out.backward(grad)
    finally:
        for handle in handles:
            handle.remove()
    return out.detach(), [p.grad for p in model.parameters()], seen


def conv_reference(x: torch.Tensor, conv_grad: torch.Tensor) -> tuple[list, list]:
    """A stride-1 unpadded convolution's weight and bias gradients in float64 from its input and
    the gradient at its output, and their scales (the same sums over absolute values, which bound
    float32 rounding)."""
    x64, g64 = x.double(), conv_grad.double()
    weight = torch.zeros(g64.shape[1], x.shape[1], x.shape[2] - g64.shape[2] + 1, x.shape[3] - g64.shape[3] + 1,
                         dtype=torch.float64)

    def weight_grad(g, inputs):
        return torch.ops.aten.convolution_backward(g, inputs, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                   [False, True, False])[1]

    return ([weight_grad(g64, x64), g64.sum((0, 2, 3))],
            [weight_grad(g64.abs(), x64.abs()), g64.abs().sum((0, 2, 3))])


def assert_same_run(fused_run, one_by_one) -> None:
    """The output and every gradient bit for bit, but the convolutions' weight and bias gradients
    (the first four parameters): each within float32 rounding of float64."""
    assert same_bits(fused_run[0], one_by_one[0])
    assert all(same_bits(u, v) for u, v in zip(fused_run[1][4:], one_by_one[1][4:], strict=True))
    for first, name in ((0, "conv1"), (2, "conv2")):
        ref, scale = conv_reference(*one_by_one[2][name])
        for run in (fused_run, one_by_one):
            assert_within_rounding(run[1][first:first + 2], ref, scale, names=(f"{name} weight", f"{name} bias"))


@needs_native
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 9), threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_lenet5_fused_is_the_layers_one_by_one(n, threads, seed, ties):
    """Bit for bit, but the convolutions' weight and bias gradients (to rounding). Three threads
    split the work unevenly. ``ties``: images in a few grey levels and weights rounded, so windows hold
    equal maxima."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = create_model("lenet5").to(memory_format=CL)
    x = torch.randn(n, 1, 32, 32, generator=gen)
    if ties:
        x = x.round().clamp(-1, 1)
        with torch.no_grad():
            model.features.conv1.weight.copy_(model.features.conv1.weight.mul(4).round().div(4))
    x = x.contiguous(memory_format=CL)
    grad = torch.randn(n, 10, generator=gen)
    with pytest.MonkeyPatch.context() as mp:  # one per example: Hypothesis reuses the test's fixtures
        calls = fused_calls(mp)
        one_pass = lenet5_run(model, x, grad, fuse=True, threads=threads)
    assert "_GrayConvPoolReLU" in calls
    assert_same_run(one_pass, lenet5_run(model, x, grad, fuse=False, threads=threads))


@needs_native
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(2, 20), h=st.sampled_from([2, 4, 6, 10, 28]),
       w=st.sampled_from([2, 4, 8, 10, 28]), levels=st.sampled_from([0, 3]), nan_rate=st.sampled_from([0.0, 0.1]),
       seed=st.integers(0, 2**16), threads=st.sampled_from([1, 2, 3]))
def test_pool_relu_is_relu_of_max_pool2d_bit_for_bit(n, c, h, w, levels, nan_rate, seed, threads):
    """Against PyTorch's own max_pool2d and relu, with ties (``levels`` grey levels), negative
    windows, NaN, and the gradient masked where the output is 0 or NaN."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    if levels:
        x = x.mul(levels).round()
    x[torch.rand(x.shape, generator=gen) < nan_rate] = float("nan")
    x = x.contiguous(memory_format=CL)
    grad = torch.randn(n, c, h // 2, w // 2, generator=gen)
    results = []
    for run in (lambda t: fused.pool_relu(t, MaxPool2d(2), nn.ReLU()), lambda t: F.relu(F.max_pool2d(t, 2))):
        t = x.clone().requires_grad_()
        with on_threads(threads):
            y = run(t)
            y.backward(grad)
        results.append((y.detach(), t.grad))
    (y, gx), (y_ref, gx_ref) = results
    assert same_bits(y, y_ref) or torch.equal(y.nan_to_num(7.0), y_ref.nan_to_num(7.0))  # relu(-0.0): sign of zero
    assert same_bits(gx, gx_ref)


@needs_native
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 24), k=st.sampled_from([1, 3, 5]), half_w=st.integers(1, 20),
       threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_the_fused_weight_gradient_masks_as_pool_then_relu_backward_do(n, c, k, half_w, threads, seed):
    """The fused block's weight gradient reads the pooled gradient itself (each window's winner
    alone); it must agree, to rounding, with the convolution's weight gradient of what the pool's
    own backward passes back. The pooled outputs are doctored to hold 0, -0.0 and NaN: the
    gradient stops at 0 and passes a NaN, as relu's backward does."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4 + k - 1, 2 * half_w + k - 1, generator=gen).contiguous(memory_format=CL)
    weight, bias = torch.randn(c, 1, k, k, generator=gen), torch.randn(c, generator=gen)
    out, winner = conv.gray_pool_relu_forward(x, weight, bias)
    pick = torch.rand(out.shape, generator=gen)
    out = out.masked_fill(pick < 0.1, 0.0).masked_fill(pick > 0.9, float("nan"))
    out = out.masked_fill((pick > 0.45) & (pick < 0.5), -0.0)
    out = out.contiguous(memory_format=CL)
    grad = torch.randn(out.shape, generator=gen).contiguous(memory_format=CL)
    with on_threads(threads):
        fused_grads = conv.gray_weight_grads(x, grad, weight.shape, True, pooled=(out, winner))
        again = conv.gray_weight_grads(x, grad, weight.shape, True, pooled=(out, winner))
    expanded = pool_backward(grad, winner, (4, 2 * half_w), relu_out=out)
    ref, scale = conv_reference(x, expanded)
    assert_within_rounding(fused_grads, ref, scale, names=("weight gradient", "bias gradient"))
    assert all(same_bits(a, b) for a, b in zip(fused_grads, again, strict=True))  # the same bits every time


@needs_native
@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), ci=st.integers(1, 8), co=st.integers(2, 20), k=st.integers(1, 7),
       half_h=st.integers(1, 6), half_w=st.integers(1, 6), threads=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2**16))
def test_the_second_blocks_gradients_come_from_the_pooled_gradient(n, ci, co, k, half_h, half_w, threads, seed):
    """Block 2's backward reads the pooled gradient itself: its input gradient must be the native
    input gradient of what the pool's own backward passes back, bit for bit; its weight and bias
    gradients (the winners alone) that gradient's, to rounding. Outputs doctored to 0, -0.0 and
    NaN, as in the first block's test."""
    if ci * k > 32:
        ci = 32 // k  # conv_pooled_weight_grad_supports: a patch row of at most 32 values
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, 2 * half_h + k - 1, 2 * half_w + k - 1, generator=gen).contiguous(memory_format=CL)
    weight, bias = torch.randn(co, ci, k, k, generator=gen), torch.randn(co, generator=gen)
    out, winner = pool_forward(F.conv2d(x, weight, bias).contiguous(memory_format=CL), relu=True)
    pick = torch.rand(out.shape, generator=gen)
    out = out.masked_fill(pick < 0.1, 0.0).masked_fill(pick > 0.9, float("nan"))
    out = out.masked_fill((pick > 0.45) & (pick < 0.5), -0.0).contiguous(memory_format=CL)
    grad = torch.randn(out.shape, generator=gen).contiguous(memory_format=CL)
    conv_hw = (2 * half_h, 2 * half_w)
    with on_threads(threads):
        grad_input = conv.pool_relu_input_grad(grad, out, winner, weight, conv_hw)
        expanded = pool_backward(grad, winner, conv_hw, relu_out=out)
        assert same_bits(grad_input, conv.input_grad(expanded, weight))
        sums = conv.pooled_weight_grads(x, grad, out, winner, weight.shape, True)
        again = conv.pooled_weight_grads(x, grad, out, winner, weight.shape, True)
    ref, scale = conv_reference(x, expanded)
    assert_within_rounding(sums, ref, scale, names=("weight gradient", "bias gradient"))
    assert all(same_bits(a, b) for a, b in zip(sums, again, strict=True))  # the same bits every time


@needs_native
def test_an_infinite_pixel_only_losers_see_does_not_spoil_the_fused_weight_gradient():
    """A 1x1 convolution: each pixel makes one output. A -inf pixel makes a -inf output, which
    loses its window, so its gradient is zero: the fused block sums winners only and stays
    finite (the dense sum would add 0 x -inf = NaN)."""
    x = torch.randn(2, 1, 6, 6)
    x[0, 0, 2, 3] = float("-inf")
    x = x.contiguous(memory_format=CL)
    weight, bias = torch.ones(3, 1, 1, 1), torch.zeros(3)
    out, winner = conv.gray_pool_relu_forward(x, weight, bias)
    grad = torch.randn(out.shape).contiguous(memory_format=CL)
    grad_weight, grad_bias = conv.gray_weight_grads(x, grad, weight.shape, True, pooled=(out, winner))
    assert torch.isfinite(grad_weight).all() and torch.isfinite(grad_bias).all()
    expanded = pool_backward(grad, winner, (6, 6), relu_out=out)
    ref, scale = conv_reference(x.nan_to_num(neginf=0.0), expanded)  # the loser's product is exactly 0
    assert_within_rounding([grad_weight, grad_bias], ref, scale, names=("weight gradient", "bias gradient"))


@needs_native
def test_lenet5_training_runs_the_fused_blocks_and_ends_where_the_layers_one_by_one_do(monkeypatch):
    calls = fused_calls(monkeypatch)
    one_pass = lenet5_weights_after_six_steps()
    assert calls.count("_GrayConvPoolReLU") == 6 and calls.count("_ConvPoolReLU") == 6 and "_PoolReLU" not in calls
    calls.clear()
    one_by_one = lenet5_weights_after_six_steps(off=("fused_blocks",))
    assert not calls
    for a, b in zip(one_pass, one_by_one, strict=True):  # conv1's gradients agree to rounding, not bits
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def lenet5_and_batch():
    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=CL)
    return model, torch.randn(4, 1, 32, 32).contiguous(memory_format=CL)


@needs_native
@pytest.mark.parametrize("where", ["conv1", "pool1", "act1", "conv2", "pool2", "act2", "global", "backward"])
def test_a_hook_sees_every_layer_run(where, monkeypatch):
    """Hooks are how the layer table, explore and the experiments watch a layer: with one on any
    layer of a block, that block runs its layers one by one and the hook fires; a global hook
    stops both."""
    model, x = lenet5_and_batch()
    calls, seen = fused_calls(monkeypatch), []
    record = lambda module, inputs, output: seen.append(tuple(output.shape))  # noqa: E731
    if where == "global":
        handle = nn.modules.module.register_module_forward_hook(record)
    elif where == "backward":
        handle = model.features.pool1.register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape))
    else:
        handle = getattr(model.features, where).register_forward_hook(record)
    try:
        out = model(x)
        out.sum().backward()
    finally:
        handle.remove()
    assert seen
    in_block_1, in_block_2 = where in ("conv1", "pool1", "act1", "backward"), where in ("conv2", "pool2", "act2")
    assert ("_GrayConvPoolReLU" in calls) == in_block_2  # the other block still fuses
    assert ("_ConvPoolReLU" in calls) == in_block_1
    assert ("_PoolReLU" in calls) == (where in ("conv1", "conv2"))  # a hook on a conv alone: its pool and ReLU fuse
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)


@needs_native
@pytest.mark.parametrize("case", ["default layout", "input needs a gradient", "turned off", "pool turned off",
                                  "tanh", "float64", "traced", "layers moved"])
def test_everything_else_runs_the_layers_one_by_one(case, monkeypatch):
    model, x = lenet5_and_batch()
    if case == "default layout":
        model, x = model.to(memory_format=torch.contiguous_format), x.contiguous()
    elif case == "input needs a gradient":
        x.requires_grad_()
    elif case == "tanh":
        model = create_model("lenet5", activation="tanh").to(memory_format=CL)
    elif case == "float64":
        model, x = model.double(), x.double()
    elif case == "layers moved":  # back to conv - ReLU - pool: the module order is what runs
        layers = dict(model.features.named_children())
        order = ["conv1", "act1", "pool1", "conv2", "act2", "pool2"]
        model.features = nn.Sequential(OrderedDict([(k, layers[k]) for k in order]
                                                   + [(k, m) for k, m in layers.items() if k not in order]))
    calls = fused_calls(monkeypatch)
    off = {"turned off": ("fused_blocks",), "pool turned off": ("pool",)}.get(case, ())
    with native.turned_off(*off) if off else contextlib.nullcontext():
        if case == "traced":
            monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        model(x).sum().backward()
    if case == "input needs a gradient":  # block 1: oneDNN's conv1 (the image needs a gradient), pool + ReLU fused
        assert calls == ["_PoolReLU", "_ConvPoolReLU"] and x.grad is not None
    else:
        assert not calls


@needs_native
def test_counting_multiply_adds_sees_every_layer(monkeypatch):
    """FlopCounterMode is a dispatch mode: a ctypes call would hide conv1 from it."""
    model, x = lenet5_and_batch()
    calls = fused_calls(monkeypatch)
    counts = []
    for batch in (x, x.contiguous()):
        with FlopCounterMode(display=False) as counter:
            model(batch)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 4 * 2 * (6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 400 * 120 + 120 * 84 + 84 * 10)
    assert not calls
