"""The native 2x2 max pool (classicnets.native, models/max_pool.py): PyTorch's results bit for bit,
the same training run, and PyTorch's kernels wherever the native one cannot or should not run."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from classicnets import create_model, native
from classicnets.models import max_pool
from classicnets.models.max_pool import MaxPool2d
from classicnets.train import TrainConfig, make_optimizer, train_step

CL = torch.channels_last
needs_native = pytest.mark.skipif(native.library("pool") is None,
                                  reason=f"native kernels unavailable: {native.status()}")


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A process-fresh build state with its own cache folder; the real one is restored after."""
    monkeypatch.setenv("CLASSICNETS_CACHE", str(tmp_path / "cache"))
    native._loaded.cache_clear()
    yield tmp_path / "cache" / "native"
    native._loaded.cache_clear()


def native_calls(monkeypatch) -> list:
    calls = []
    apply = max_pool._MaxPool2x2.apply
    monkeypatch.setattr(max_pool._MaxPool2x2, "apply", lambda x: calls.append(x.shape) or apply(x))
    return calls


@contextlib.contextmanager
def on_threads(threads: int | None):
    """torch on ``threads`` threads inside the block (None: as it is), as before after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def both_ways(x: torch.Tensor, grad: torch.Tensor, threads: int | None = None):
    """(output, input gradient) from torch's max_pool2d and from the native layer."""
    out = []
    for layer in (lambda t: F.max_pool2d(t, 2), MaxPool2d(2)):
        t = x.detach().clone().requires_grad_()
        with on_threads(threads):
            y = layer(t)
            y.backward(grad)
        out.append((y.detach(), t.grad))
    return out


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where NaN, and the same sign of zero, whatever the memory layouts."""
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


@needs_native
@pytest.mark.parametrize("shape", [(3, 6, 28, 28), (2, 16, 10, 10), (1, 2, 2, 2), (2, 3, 4, 6), (2, 8, 6, 4),
                                   (1, 12, 8, 8), (2, 17, 6, 10), (1, 40, 4, 4)])
def test_outputs_and_gradients_are_torchs_bit_for_bit(shape, monkeypatch):
    calls = native_calls(monkeypatch)
    gen = torch.Generator().manual_seed(sum(shape))
    # Few distinct values, so that many windows hold ties; and the odd NaN, infinity and -0.0.
    x = torch.randint(-3, 4, shape, generator=gen).float()
    flat = x.view(-1)
    picks = torch.randperm(flat.numel(), generator=gen)[:8]
    for i, v in zip(picks.tolist(), [math.nan, math.inf, -math.inf, -0.0, math.nan, 0.0, -0.0, math.nan], strict=False):
        flat[i] = v
    x = x.contiguous(memory_format=CL)
    grad = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2, generator=gen).contiguous(memory_format=CL)
    (y_ref, g_ref), (y, g) = both_ways(x, grad)
    assert calls, "the native kernel did not run"
    assert y.is_contiguous(memory_format=CL) and g.is_contiguous(memory_format=CL)
    assert same_bits(y, y_ref) and same_bits(g, g_ref)


@needs_native
@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(2, 20), h=st.integers(1, 7), w=st.integers(1, 7),
       levels=st.integers(1, 5), nan_rate=st.sampled_from([0.0, 0.1, 0.4]), seed=st.integers(0, 2**16),
       threads=st.integers(1, 3), grad_layout=st.sampled_from(["channels_last", "contiguous"]))
def test_any_shape_ties_and_nans_match_torch(n, c, h, w, levels, nan_rate, seed, threads, grad_layout):
    """Windows of every width in channels (the vector lanes and the one-at-a-time tail), many ties,
    and NaNs anywhere (max_pool2d lets the last NaN of a window win)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, levels, (n, c, 2 * h, 2 * w), generator=gen).float()
    x[torch.rand(x.shape, generator=gen) < nan_rate] = math.nan
    x = x.contiguous(memory_format=CL)
    grad = torch.randn(n, c, h, w, generator=gen)
    grad = grad.contiguous(memory_format=CL) if grad_layout == "channels_last" else grad.contiguous()
    (y_ref, g_ref), (y, g) = both_ways(x, grad, threads)
    assert same_bits(y, y_ref) and same_bits(g, g_ref)


@pytest.mark.parametrize("case", ["default layout", "odd height", "float64", "bfloat16", "3x3 window",
                                  "stride 1", "padding", "ceil mode", "one channel"])
def test_everything_else_runs_torchs_own_kernel(case, monkeypatch):
    calls = native_calls(monkeypatch)
    x = torch.randn(2, 6, 8, 8).contiguous(memory_format=CL)
    layer = MaxPool2d(2)
    if case == "default layout":
        x = x.contiguous()
    elif case == "odd height":
        x = torch.randn(2, 6, 9, 8).contiguous(memory_format=CL)
    elif case in ("float64", "bfloat16"):
        x = x.to(getattr(torch, case))
    elif case == "one channel":
        x = torch.randn(2, 1, 8, 8)
    else:
        layer = {"3x3 window": MaxPool2d(3, 2), "stride 1": MaxPool2d(2, 1), "padding": MaxPool2d(2, padding=1),
                 "ceil mode": MaxPool2d(2, ceil_mode=True)}[case]
    reference = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    assert torch.equal(layer(x), reference(x)) and not calls


def test_tracing_and_compiling_see_torchs_kernel(monkeypatch):
    """torch.jit.trace (TorchScript export) and dynamo (torch.compile, ONNX export) cannot follow a
    ctypes call: the layer gives them nn.MaxPool2d's."""
    calls = native_calls(monkeypatch)
    model = create_model("lenet5").eval().to(memory_format=CL)
    x = torch.randn(2, 1, 32, 32).contiguous(memory_format=CL)
    traced = torch.jit.trace(model, x, check_trace=False)  # the check would rerun the model eagerly
    assert "max_pool2d" in str(traced.inlined_graph) and not calls
    with native.turned_off("gray_conv", "input_grad"):  # they agree with oneDNN's to rounding only
        assert torch.equal(traced(x), model(x))
    calls.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model(x)
    assert not calls


def lenet5_weights_after_six_steps(off: tuple[str, ...] = ()) -> list[torch.Tensor]:
    """LeNet-5's parameters after six steps of its recipe on fixed random batches, with the native
    kernels named in ``off`` turned off (PyTorch's in their place)."""
    cfg = TrainConfig(model="lenet5", dataset="digits").resolved()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 1, 32, 32, generator=gen).contiguous(memory_format=CL),
                torch.randint(0, 10, (32,), generator=gen)) for _ in range(6)]
    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=CL)
    optimizer = make_optimizer(cfg, model)
    with native.turned_off(*off) if off else contextlib.nullcontext():
        for x, y in batches:
            train_step(model, optimizer, x, y, label_smoothing=0.1)
    return [p.detach().clone() for p in model.parameters()]


def with_and_without(kernel: str, calls: list) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """LeNet-5's parameters after six steps with the native ``kernel`` and with PyTorch's in its
    place, the layers run one by one (the fused blocks off: tests/test_fused.py compares those);
    ``calls`` records the native kernel's calls (some the first time, none the second)."""
    with_native = lenet5_weights_after_six_steps(off=("fused_blocks",))
    assert calls
    calls.clear()
    with_torchs = lenet5_weights_after_six_steps(off=("fused_blocks", kernel))
    assert not calls
    return with_native, with_torchs


@needs_native
def test_a_lenet5_training_run_is_bit_identical_with_either_kernel(monkeypatch):
    with_native, with_torchs = with_and_without("pool", native_calls(monkeypatch))
    assert all(torch.equal(a, b) for a, b in zip(with_native, with_torchs, strict=True))


def test_turned_off_by_the_environment(fresh_build, monkeypatch):
    monkeypatch.setenv("CLASSICNETS_NATIVE", "0")
    calls = native_calls(monkeypatch)
    assert native.library("pool") is None and "CLASSICNETS_NATIVE=0" in native.status()
    x = torch.randn(2, 6, 8, 8).contiguous(memory_format=CL)
    assert torch.equal(MaxPool2d(2)(x), F.max_pool2d(x, 2)) and not calls


@needs_native
def test_a_failed_build_falls_back_and_says_why(fresh_build, monkeypatch, tmp_path):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'cc: out of luck' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    assert native.library("pool") is None
    assert "the build failed" in native.status() and "out of luck" in native.status()
    x = torch.randn(2, 6, 8, 8).contiguous(memory_format=CL)
    assert torch.equal(MaxPool2d(2)(x), F.max_pool2d(x, 2))
    assert not list(fresh_build.glob("*")), "a failed build left a file behind"


def status_in_a_new_process(env: dict) -> str:
    code = "from classicnets import native; print(native.status())"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@needs_native
def test_the_build_is_cached_and_a_damaged_file_is_rebuilt(fresh_build):
    """In new processes: one that finds the library loads it; one that finds a damaged file under
    its name builds it again (in this process the dynamic loader would hand back the first one)."""
    env = {"CLASSICNETS_CACHE": str(fresh_build.parent)}
    assert native.library("pool") is not None
    (built,) = fresh_build.glob("kernels-*.so")
    assert str(built) in native.status()
    stamp = built.stat().st_mtime_ns
    assert status_in_a_new_process(env) == f"native ({built})" and built.stat().st_mtime_ns == stamp
    built.write_bytes(b"not a shared library")
    assert status_in_a_new_process(env) == f"native ({built})" and built.stat().st_size > 1000
    assert sorted(p.name for p in fresh_build.iterdir()) == [built.name]  # no temporary file left


@needs_native
def test_an_unwritable_cache_builds_for_the_process_alone(fresh_build, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CLASSICNETS_CACHE", str(blocker))
    assert native.library("pool") is not None and "built for this process only" in native.status()
