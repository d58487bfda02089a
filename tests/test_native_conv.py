"""The native convolution over one-channel images (classicnets.native's conv_gray.c,
models/conv.py): PyTorch's results to float32 rounding, bounded against float64; a training run
that follows PyTorch's; and PyTorch's kernel wherever the native one cannot or should not run."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from classicnets import create_model, native
from classicnets.models import conv
from classicnets.models.conv import Conv2d
from test_native import on_threads, with_and_without

CL = torch.channels_last
needs_native = pytest.mark.skipif(native.library("gray_conv") is None,
                                  reason=f"native kernels unavailable: {native.status()}")
# Output channels the kernels take (conv_gray_supports): 1 to 24.
SUPPORTED = list(range(1, 25))


def calls_of(function: type[torch.autograd.Function], monkeypatch) -> list:
    """The input shapes ``function`` (one of models/conv.py's) is applied to, from now on."""
    calls = []
    apply = function.apply
    monkeypatch.setattr(function, "apply", lambda *a: calls.append(a[0].shape) or apply(*a))
    return calls


def conv_calls(monkeypatch) -> list:
    return calls_of(conv._GrayConv, monkeypatch)


def conv_layer(weight: torch.Tensor, bias: torch.Tensor | None) -> Conv2d:
    """A channels-last ``Conv2d`` (as lenet5 trains) holding ``weight`` and ``bias``."""
    co, ci, k, _ = weight.shape
    layer = Conv2d(ci, co, k, bias=bias is not None).to(memory_format=CL)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def native_and_reference(x, weight, bias, grad, threads=None):
    """The layer's output and weight/bias gradients, and the same in float64 (the reference), and
    each value's scale: the same sums over absolute values, which bound float32 rounding."""
    layer = conv_layer(weight, bias)
    with on_threads(threads):
        y = layer(x)
        y.backward(grad)
    got = [y.detach(), layer.weight.grad] + ([layer.bias.grad] if bias is not None else [])
    x64, g64 = x.double(), grad.double()
    w64 = weight.double().requires_grad_()
    b64 = None if bias is None else bias.double().requires_grad_()
    F.conv2d(x64, w64, b64).backward(g64)
    ref = [F.conv2d(x64, w64, b64).detach(), w64.grad] + ([b64.grad] if bias is not None else [])
    scale = [F.conv2d(x64.abs(), w64.detach().abs(), None if b64 is None else b64.detach().abs()),
             torch.ops.aten.convolution_backward(g64.abs(), x64.abs(), w64.detach(), None, [1, 1], [0, 0], [1, 1],
                                                 False, [0, 0], 1, [False, True, False])[1]]
    if bias is not None:
        scale.append(g64.abs().sum((0, 2, 3)))
    return y, got, ref, scale


def assert_within_rounding(got, ref, scale, rel=2e-6, names=("output", "weight gradient", "bias gradient")):
    """|got - float64| <= rel x the sum of the absolute terms (+ a hair): far inside float32's
    worst case, and far outside what a wrong tap, lane or channel would give."""
    for name, g, r, s in zip(names, got, ref, scale, strict=False):
        assert g.shape == r.shape, name
        excess = (g.double() - r).abs() - (rel * s + 1e-30)
        assert excess.max() <= 0, f"{name}: off by {(g.double() - r).abs().max():.3g} (scale {s.max():.3g})"


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
def test_lenet5_conv1_matches_float64_to_rounding(threads, monkeypatch):
    """LeNet-5's first layer at batch 128, as training runs it (channels-last, 2 threads)."""
    calls = conv_calls(monkeypatch)
    gen = torch.Generator().manual_seed(threads)
    x = torch.randn(128, 1, 32, 32, generator=gen).contiguous(memory_format=CL)
    weight, bias = torch.randn(6, 1, 5, 5, generator=gen) / 5, torch.randn(6, generator=gen)
    grad = torch.randn(128, 6, 28, 28, generator=gen).contiguous(memory_format=CL)
    y, got, ref, scale = native_and_reference(x, weight, bias, grad, threads)
    assert calls, "the native kernel did not run"
    assert y.is_contiguous(memory_format=CL)
    assert_within_rounding(got, ref, scale)
    # and as close to PyTorch's own float32 kernel as rounding allows
    torch.testing.assert_close(y, F.conv2d(x, weight, bias), rtol=1e-5, atol=1e-5)


@needs_native
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), c=st.sampled_from(SUPPORTED), k=st.integers(1, 7), extra_h=st.integers(0, 6),
       extra_w=st.integers(0, 45), bias=st.booleans(), threads=st.integers(1, 3), seed=st.integers(0, 2**16),
       grad_layout=st.sampled_from(["channels_last", "contiguous"]))
def test_any_shape_matches_float64_to_rounding(n, c, k, extra_h, extra_w, bias, threads, seed, grad_layout):
    """Every supported channel count and kernel size; rows from one position to past 32 (whole
    groups, a tail, the wide-row path of the weight gradient); 1-3 threads; the last input row of
    the batch ends the tensor (the kernel must not read past it)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, k + extra_h, k + extra_w, generator=gen).contiguous(memory_format=CL)
    weight = torch.randn(c, 1, k, k, generator=gen)
    b = torch.randn(c, generator=gen) if bias else None
    grad = torch.randn(n, c, extra_h + 1, extra_w + 1, generator=gen)
    grad = grad.contiguous(memory_format=CL) if grad_layout == "channels_last" else grad.contiguous()
    _, got, ref, scale = native_and_reference(x, weight, b, grad, threads)
    assert_within_rounding(got, ref, scale)


@needs_native
def test_the_same_thread_count_gives_the_same_bits():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 1, 32, 32, generator=gen).contiguous(memory_format=CL)
    grad = torch.randn(16, 6, 28, 28, generator=gen).contiguous(memory_format=CL)
    weight, bias = torch.randn(6, 1, 5, 5, generator=gen), torch.randn(6, generator=gen)
    first = native_and_reference(x, weight, bias, grad, 2)[1]
    second = native_and_reference(x, weight, bias, grad, 2)[1]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@needs_native
def test_frozen_weights_get_no_gradient_and_a_frozen_bias_none(monkeypatch):
    calls = conv_calls(monkeypatch)
    layer = Conv2d(1, 6, 5).to(memory_format=CL)  # as lenet5 trains: then PyTorch's output is channels-last
    x = torch.randn(4, 1, 12, 12)
    layer.weight.requires_grad_(False)
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is not None
    layer.weight.requires_grad_(True)
    layer.bias.requires_grad_(False)
    layer.bias.grad = None
    layer(x).sum().backward()
    assert layer.bias.grad is None and layer.weight.grad is not None
    assert len(calls) == 2


@pytest.mark.parametrize("case", ["default layout", "input needs a gradient", "three channels", "stride 2",
                                  "padding", "dilation", "float64", "25 channels", "turned off"])
def test_everything_else_runs_torchs_own_kernel(case, monkeypatch):
    calls = conv_calls(monkeypatch)
    layer, x = Conv2d(1, 6, 5).to(memory_format=CL), torch.randn(2, 1, 12, 12)
    if case == "default layout":
        layer = Conv2d(1, 6, 5)  # default layout weight and image: PyTorch's output is not channels-last
    elif case == "input needs a gradient":
        x.requires_grad_()
    elif case == "three channels":
        layer = Conv2d(3, 6, 5).to(memory_format=CL)
        x = torch.randn(2, 3, 12, 12).contiguous(memory_format=CL)
    elif case == "float64":
        layer, x = layer.double(), x.double()
    else:
        layer = {"stride 2": Conv2d(1, 6, 5, stride=2), "padding": Conv2d(1, 6, 5, padding=2),
                 "dilation": Conv2d(1, 6, 3, dilation=2), "25 channels": Conv2d(1, 25, 5),
                 "turned off": layer}.get(case, layer).to(memory_format=CL)
    reference = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                layer.padding, layer.dilation).to(layer.weight.dtype)
    reference.load_state_dict(layer.state_dict())
    if case != "default layout":
        reference.to(memory_format=CL)  # the same oneDNN kernel as the layer's, for the same bits
    if case == "turned off":
        with native.turned_off("gray_conv"):
            y = layer(x)
    else:
        y = layer(x)
    assert torch.equal(y, reference(x)) and not calls
    if case == "input needs a gradient":
        y.sum().backward()
        assert x.grad is not None


def test_turned_off_names_what_it_turns_off():
    with pytest.raises(ValueError, match="expected names among"):
        with native.turned_off("convolution"):
            pass
    pool = native.library("pool")
    with native.turned_off("gray_conv"):
        assert native.library("gray_conv") is None and native.library("pool") is pool
    with native.turned_off():
        assert native.library("gray_conv") is None and native.library("pool") is None


def test_lenet5_keeps_its_parameters_and_printout():
    model = create_model("lenet5")
    assert isinstance(model.features.conv1, torch.nn.Conv2d)
    assert "(conv1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))" in str(model)
    assert [name for name, _ in model.named_parameters()][:2] == ["features.conv1.weight", "features.conv1.bias"]


@needs_native
def test_tracing_sees_torchs_kernel(monkeypatch):
    calls = conv_calls(monkeypatch)
    model = create_model("lenet5").eval().to(memory_format=CL)
    x = torch.randn(2, 1, 32, 32).contiguous(memory_format=CL)
    traced = torch.jit.trace(model, x, check_trace=False)
    assert "_convolution" in str(traced.inlined_graph) and not calls
    torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


@needs_native
def test_a_lenet5_training_run_follows_pytorchs(monkeypatch):
    """Six steps of the recipe with the native convolution and with oneDNN's: the same weights to
    float32 rounding (the kernels sum in different orders)."""
    with_native, with_onednn = with_and_without("gray_conv", conv_calls(monkeypatch))
    for a, b in zip(with_native, with_onednn, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---- the input gradient (conv_input_grad.c): LeNet-5's conv2 back onto its 6 maps ----

def input_grad_calls(monkeypatch) -> list:
    return calls_of(conv._NativeInputGrad, monkeypatch)


def input_grads_and_reference(x, weight, bias, grad, threads=None):
    """The layer's input, weight and bias gradients (``x`` needs a gradient: the native input
    gradient runs), the float64 ones, and each one's scale (the sums over absolute values)."""
    layer = conv_layer(weight, bias)
    x = x.detach().contiguous(memory_format=CL).requires_grad_()
    with on_threads(threads):
        layer(x).backward(grad)
    got = [x.grad, layer.weight.grad] + ([layer.bias.grad] if bias is not None else [])
    x64, w64, g64 = x.detach().double().requires_grad_(), weight.double().requires_grad_(), grad.double()
    b64 = None if bias is None else bias.double().requires_grad_()
    F.conv2d(x64, w64, b64).backward(g64)
    ref = [x64.grad, w64.grad] + ([b64.grad] if bias is not None else [])
    abs_grads = torch.ops.aten.convolution_backward(g64.abs(), x64.detach().abs(), w64.detach().abs(), None, [1, 1],
                                                    [0, 0], [1, 1], False, [0, 0], 1, [True, True, False])
    scale = [abs_grads[0], abs_grads[1]] + ([g64.abs().sum((0, 2, 3))] if bias is not None else [])
    return got, ref, scale


@needs_native
def test_lenet5_conv2_input_gradient_matches_float64_to_rounding(monkeypatch):
    calls = input_grad_calls(monkeypatch)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(128, 6, 14, 14, generator=gen)
    weight, bias = torch.randn(16, 6, 5, 5, generator=gen) / 12, torch.randn(16, generator=gen)
    grad = torch.randn(128, 16, 10, 10, generator=gen).contiguous(memory_format=CL)
    got, ref, scale = input_grads_and_reference(x, weight, bias, grad, 2)
    assert calls, "the native kernel did not run"
    assert got[0].is_contiguous(memory_format=CL)
    assert_within_rounding(got, ref, scale)


@needs_native
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), ci=st.integers(2, 8), co=st.integers(1, 20), k=st.integers(1, 7),
       extra_h=st.integers(0, 6), extra_w=st.integers(0, 30), bias=st.booleans(), threads=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_any_input_gradient_matches_float64_to_rounding(n, ci, co, k, extra_h, extra_w, bias, threads, seed):
    """Every channel count the kernel takes (2-8 in, any out), kernel sizes 1-7, rows of one
    register to several, outputs a single position wide (every tap at a border)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, ci, k + extra_h, k + extra_w, generator=gen)
    weight = torch.randn(co, ci, k, k, generator=gen)
    b = torch.randn(co, generator=gen) if bias else None
    grad = torch.randn(n, co, extra_h + 1, extra_w + 1, generator=gen)
    got, ref, scale = input_grads_and_reference(x, weight, b, grad, threads)
    assert_within_rounding(got, ref, scale)


@needs_native
def test_the_input_gradient_has_the_same_bits_on_any_thread_count():
    """Threads split the images, and each value is summed in one order."""
    gen = torch.Generator().manual_seed(6)
    x, weight = torch.randn(7, 6, 14, 14, generator=gen), torch.randn(16, 6, 5, 5, generator=gen)
    grad = torch.randn(7, 16, 10, 10, generator=gen)
    one, three = (input_grads_and_reference(x, weight, None, grad, t)[0][0] for t in (1, 3))
    assert torch.equal(one, three)


@pytest.mark.parametrize("case", ["no gradient needed", "default layout", "nine channels", "stride 2", "padding",
                                  "turned off"])
def test_input_gradients_elsewhere_are_torchs(case, monkeypatch):
    calls = input_grad_calls(monkeypatch)
    layer = Conv2d(6, 16, 5).to(memory_format=CL)
    x = torch.randn(2, 6, 12, 12).contiguous(memory_format=CL).requires_grad_()
    if case == "no gradient needed":
        x.requires_grad_(False)
    elif case == "default layout":
        x = x.detach().contiguous().requires_grad_()
    elif case == "nine channels":
        layer = Conv2d(9, 16, 5).to(memory_format=CL)
        x = torch.randn(2, 9, 12, 12).contiguous(memory_format=CL).requires_grad_()
    elif case in ("stride 2", "padding"):
        layer = (Conv2d(6, 16, 5, stride=2) if case == "stride 2" else Conv2d(6, 16, 5, padding=2)).to(memory_format=CL)
    with native.turned_off("input_grad") if case == "turned off" else contextlib.nullcontext():
        y = layer(x)
    if x.requires_grad:
        y.sum().backward()
    assert not calls


@needs_native
def test_a_lenet5_training_run_follows_pytorchs_with_the_native_input_gradient(monkeypatch):
    with_native, with_onednn = with_and_without("input_grad", input_grad_calls(monkeypatch))
    for a, b in zip(with_native, with_onednn, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_torchs_kernels_in_its_dtype(dtype, monkeypatch):
    """Under autocast PyTorch computes the convolutions in bf16 or fp16; the native kernels are fp32."""
    convs, grads = conv_calls(monkeypatch), input_grad_calls(monkeypatch)
    model = create_model("lenet5").to(memory_format=CL)
    x = torch.randn(4, 1, 32, 32).contiguous(memory_format=CL)
    with torch.autocast("cpu", dtype=dtype):
        features = model.features.conv2(model.features.pool1(model.features.conv1(x)))
    assert features.dtype == dtype
    features.float().sum().backward()
    assert not convs and not grads
