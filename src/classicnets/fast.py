"""The fastest CPU inference path we measured, as one function.

``optimize_for_inference(model, example, precision)`` returns a :class:`FastModel`: call it
with a float32 batch shaped like ``example`` (any batch size) and it returns float32 logits,
as ``model(x)`` would in eval mode, only faster::

    fast = optimize_for_inference(model, torch.randn(16, 3, 224, 224))             # fp32
    fast = optimize_for_inference(model, torch.randn(16, 3, 224, 224), "bf16")     # bfloat16
    logits = fast(images)

What each candidate bought: ResNet-50, batch 16, 224x224, random weights, on the 2-core AMD
EPYC (Zen 4: AVX-512 with native bf16 dot products) this project is developed on, 2 threads,
median img/s of 5 interleaved repetitions in one scratch run (load average 0.6 at its start,
1.7 at its end: the machine is shared). ONNX Runtime fp32 in the same run: 24.7 img/s.
``benchmarks/bench_infer.py`` measures the kept paths on three models (results in
``benchmarks/results/avx512-bf16/inference.md``: fast fp32 0.92x ONNX Runtime, fast bf16 1.92x, here).

==============================================================  =====  ========  ========
candidate                                                       img/s  vs eager  kept?
==============================================================  =====  ========  ========
eager fp32, ``model(x)`` under ``torch.inference_mode()``        13.5     1.00x  baseline
eager, channels-last model and input                             16.3     1.21x  fallback
``torch.jit.trace`` + ``freeze`` + ``optimize_for_inference``    22.6     1.68x  fallback
inductor (``torch.compile``), channels-last, no freezing         21.8     1.62x
inductor + ``freezing``                                          22.3     1.65x  **fp32**
inductor + freezing, ``mode="max-autotune-no-cudagraphs"``       24.4     1.81x  no (1)
inductor + freezing + ``cpp_wrapper``                            22.1     1.64x  no (1)
eager, channels-last + bf16 autocast                             39.2     2.90x  fallback
eager, channels-last, weights converted to bf16                  37.3     2.76x
jit trace + freeze under bf16 autocast                           29.6     2.19x
inductor + freezing under bf16 autocast                          43.0     3.19x  no (2)
inductor + freezing, weights converted to bf16                   47.7     3.53x  **bf16** (3)
==============================================================  =====  ========  ========

(1) max-autotune generates *the same code* as the default mode for ResNet-50 (its only
choice, the final linear layer, kept the default kernel), so its 24.4 against 22.3 is the noise
of this machine between two copies of one program; with one thread the default, max-autotune
and cpp_wrapper gave 12.41, 12.31 and 12.14 img/s (ONNX Runtime 12.53). Max-autotune doubles
the compile time of FC-heavy nets (AlexNet batch 1: 21 s against 11 s).
(2) With one thread 13.8 against 14.1 img/s for converted weights, and compiling took about
twice as long (ResNet-50: 13 s against 8 s; AlexNet: 10 s against 4 s).
(3) Kept with batch norm folded in fp32 before the conversion (below): as fast, in a later,
loaded run 21.4 img/s either way (autocast: 20.8).

* **fp32**: inductor with ``freezing``: the weights become constants, batch norm folds into the
  convolution, oneDNN gets pre-packed weights and ReLU / the residual add become post-ops of
  the convolutions. 98% of the time is then oneDNN convolutions, at ~106 GFLOP/s per core with
  one thread (about the FMA peak of this CPU) and 2.0x that with two. ONNX Runtime's MLAS kernels are
  a few percent faster still with two threads (ResNet-50 batch 16: its whole forward pass took
  606 ms, our convolutions alone 621 ms), and AlexNet at batch 1 spends 63% of its time in the
  fully connected layers (MKL's packed GEMM at one row, memory-bound). There is no fp32
  headroom left that does not cut arithmetic (Winograd, which oneDNN does not offer on this
  CPU): expect 0.74-0.98x ONNX Runtime in fp32 (benchmarks/results/avx512-bf16/results.md; 0.65-0.86x on an AVX2
  CPU, benchmarks/results/avx2/results.md), not a lead.
* **bf16**: the same, with batch norm folded into the convolutions in fp32 (``torch.fx``) and
  then every weight converted to bfloat16: twice the fp32 throughput. Folding before the
  conversion matters for accuracy, not speed: on a trained ResNet-50 the mean |logit error|
  was 0.026 folded first, 0.035 folded by inductor after the conversion, 0.029 under autocast
  (top-1 agreement with fp32 on 1,000 test digits: 99.6%, 99.3%, 99.3%).
  On CPUs without native bf16 the same code runs, emulated, slower than fp32.
* **Freed memory** is kept in the process for reuse (:mod:`classicnets.memory`): the one
  process-wide setting this module changes. It changes no result and no thread, only when memory
  goes back to the OS. It removes the page faults of activation buffers up to 32 MiB (eager
  ResNet-50 at batch 16: 1.40x); the compiled ResNet-50 at batch 16 gains nothing, its 25,090
  faults a call come from 51 MB buffers, above that ceiling (``benchmarks/results/avx2/malloc.md``).
* **Threads** are left to the caller (a library must not change them for other code). On a
  machine where another process keeps a core busy, two torch threads can be several times
  *slower* than one: every parallel region waits for the descheduled thread (training the
  probe model of bench_infer.py took 153 s with 2 threads against 33 s with 1). There, set
  ``torch.set_num_threads`` to the free cores. Inductor kernels keep the thread count they
  were compiled with.

Which path serves ``classicnets.load(..., fast=True)`` and ``predict --fast`` is not fixed here:
:mod:`classicnets.fast_probe` builds several backends of this function (eager, inductor, ONNX
Runtime, bf16 where the CPU has it natively), times them on the batch and serves the fastest
that agrees with eager, remembering the choice per model and machine.

One-off cost: compiling, when the model is prepared (for the example's batch size, reported
as :attr:`FastModel.build_seconds`: ResNet-50 ~8-25 s on 2 cores) and at the first call with
each smaller batch-size bucket (see :class:`FastModel`).

Every model of the registry compiles with inductor. Where a backend fails (no C++ compiler, an
op it cannot handle) or its outputs do not match eager on ``example`` (``torch.jit``'s oneDNN
average pooling with ``ceil_mode`` does not, on NiN), the next one is tried: inductor -> jit
(fp32 only) -> eager (channels-last, bf16 autocast), with a warning; :attr:`FastModel.fallbacks`
says why.
"""

from __future__ import annotations

import contextlib
import copy
import time
import types
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ClassicNetsError
from .memory import keep_freed_memory

PRECISIONS = ("fp32", "bf16")
BACKENDS = ("auto", "inductor", "jit", "eager", "onnxruntime")
# Largest |fast - eager| allowed on ``example``, relative to max(1, max |eager logit|):
# fp32 differs only in summation order (measured <= 4e-6); bf16 keeps 8 bits of mantissa
# (measured 4e-3 to 1.2e-2 on AlexNet, VGG-16, ResNet-50), so 0.1 catches a broken graph only.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.1}
# bf16 skips jit: traced under autocast it measured 29.6 img/s, below eager autocast's 39.2.
_CHAIN = {"fp32": ("inductor", "jit", "eager"), "bf16": ("inductor", "eager")}


@dataclass(frozen=True)
class _Prepared:
    """What a backend made of the model, and how to call it."""

    fn: object  # the callable: compiled function, frozen TorchScript module or the model itself
    dtype: torch.dtype  # the input is cast to this
    channels_last: bool  # 4-d inputs are made channels-last
    autocast: bool  # run under bf16 autocast
    freezing: bool  # run with inductor's freezing on (a call may compile, for a new batch size)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(self.dtype)
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.autocast:
                stack.enter_context(torch.autocast("cpu", torch.bfloat16))
            if self.freezing:
                import torch._dynamo.config as dynamo_config
                import torch._inductor.config as inductor_config

                stack.enter_context(inductor_config.patch(freezing=True))
                # One graph per batch-size bucket: more than dynamo's default 8 for max_batch > 128.
                stack.enter_context(dynamo_config.patch(recompile_limit=32))
            return self.fn(x).float()


class FastModel:
    """A model prepared for inference: ``fast(x)`` returns float32 logits, as ``model(x)``.

    ``backend`` ("inductor", "jit", "eager" or "onnxruntime") and ``precision`` say what runs,
    ``build_seconds`` what preparing it cost (compiling for the example's batch size included),
    ``max_diff`` how far its outputs were from eager fp32 on the example, ``fallbacks`` which
    backends were tried first and why they were not used. ``probe``: where
    :func:`classicnets.fast_probe.fastest` chose this path, what it measured (else None).

    Inductor graphs are compiled for fixed batch sizes: a batch of ``n`` runs in chunks of at
    most ``max_batch`` (the example's batch size), and a smaller chunk is zero-padded to the next
    power of two (or to ``max_batch``). So at most ``log2(max_batch) + 2`` graphs are ever
    compiled, each one the first time its size is needed, and padding at most doubles the work
    of the last chunk. (Dynamic batch sizes were the alternative: torch 2.13 miscompiled them
    for LeNet-5's one-channel input, and dynamo's record of the sizes seen is shared by every
    model with the same ``forward``, so one model's sizes made the next one compile dynamic.)
    """

    def __init__(self, prepared: _Prepared, backend: str, precision: str, max_batch: int, build_seconds: float,
                 max_diff: float, fallbacks: list[str]):
        self._prepared = prepared
        self.backend, self.precision, self.max_batch = backend, precision, max_batch
        self.build_seconds, self.max_diff, self.fallbacks = build_seconds, max_diff, fallbacks
        self.probe = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1 or len(x) == 0:
            raise ClassicNetsError(f"FastModel: expected a non-empty floating-point batch, got {_describe(x)}")
        if self.backend != "inductor":  # jit, eager and ONNX Runtime take any batch size as it comes
            return self._prepared(x)
        outputs = []
        for chunk in x.split(self.max_batch):
            n = len(chunk)
            size = min(1 << (n - 1).bit_length(), self.max_batch)  # next power of two, at most max_batch
            if size > n:
                chunk = torch.cat([chunk, chunk.new_zeros(size - n, *chunk.shape[1:])])
            outputs.append(self._prepared(chunk)[:n])
        return torch.cat(outputs)

    def info(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "max_batch": self.max_batch,
                "build_seconds": self.build_seconds, "max_diff": self.max_diff, "fallbacks": list(self.fallbacks)}

    def __repr__(self) -> str:
        return (f"FastModel(backend={self.backend!r}, precision={self.precision!r}, max_batch={self.max_batch}, "
                f"build_seconds={self.build_seconds:.1f})")


def _describe(x) -> str:
    return f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


# --------------------------------------------------------------------------------------------
# The backends: each takes a private copy of the model (eval mode, no gradients).
# --------------------------------------------------------------------------------------------


def _private_forward(model: nn.Module):
    """``lambda x: model(x)`` with a code object of its own.

    Dynamo keeps its compiled graphs per code object, at most ``recompile_limit`` (8) of them.
    Compiling the model itself would key every classicnets model on the one shared
    ``ClassicNet.forward``: the 9th model prepared in a process (measured: 12 ResNet-20s in a
    row) silently ran eager. A private copy of the code gives each FastModel its own cache.
    """
    def forward(x):
        return model(x)

    code = forward.__code__.replace()  # a new, equal code object
    return types.FunctionType(code, forward.__globals__, forward.__name__, None, forward.__closure__)


def _fold_batch_norm(model: nn.Module) -> nn.Module:
    """Batch norm folded into the convolution before it, in fp32, where torch.fx can trace the
    model (else unchanged: inductor's freezing folds it later, in the weights' dtype)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its import defines torch.jit script modules
        from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception:  # e.g. a shape check in forward that symbolic tracing cannot follow
        return model


def _inductor(model: nn.Module, precision: str, channels_last: bool, example: torch.Tensor) -> _Prepared:
    if precision == "bf16":
        # Converted weights rather than autocast: as fast or faster (ResNet-50 batch 16: 47.7
        # against 43.0 img/s with 2 threads; 14.1 against 13.8 with 1) and half the compile time
        # (AlexNet: 4.4 against 10.2 s). Batch norm is folded in fp32 first; folded by inductor
        # after the conversion, it cost accuracy: a trained ResNet-50 (see bench_infer.py's
        # probe) had a mean |logit error| of 0.026 folded first, 0.035 not (autocast: 0.029),
        # and 99.6% top-1 agreement with fp32 against 99.3%.
        model = _fold_batch_norm(model).to(torch.bfloat16)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Freezing (switched on around every call, so that a recompile for a new batch size freezes
    # too): the weights become constants, batch norm folds into the convolution and oneDNN gets
    # pre-packed weights with ReLU / the residual add as post-ops. It has to be the global config:
    # torch.compile(options={"freezing": True}) compiled without it (plain aten convolutions).
    # dynamic=False: one graph per batch size (see FastModel); the default would turn dynamic
    # at the second size, which miscompiled LeNet-5 (stride assertion at batch 3 after batch 4).
    fn = torch.compile(_private_forward(model), dynamic=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return _Prepared(fn, dtype, channels_last, autocast=False, freezing=True)


def _jit(model: nn.Module, precision: str, channels_last: bool, example: torch.Tensor) -> _Prepared:
    if precision != "fp32":
        raise ClassicNetsError("the jit backend is fp32 only (traced under bf16 autocast it was slower than eager)")
    # optimize_for_inference converts convolutions to oneDNN's blocked layout itself, from a
    # plain NCHW input: 22.6 img/s against 20.9 for a channels-last trace (ResNet-50, batch 16).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; it still works
        traced = torch.jit.trace(model, example, check_trace=False)
        fn = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    return _Prepared(fn, torch.float32, channels_last=False, autocast=False, freezing=False)


def _eager(model: nn.Module, precision: str, channels_last: bool, example: torch.Tensor) -> _Prepared:
    # Autocast, not converted weights: it keeps precision-sensitive ops (norms, softmax, pow) in
    # fp32 for any model, and measured as fast at batch 16 (39.2 against 37.3 img/s).
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # fp32: 16.3 against 13.5 img/s
    return _Prepared(model, torch.float32, channels_last, autocast=precision == "bf16", freezing=False)


def _onnxruntime(model: nn.Module, precision: str, channels_last: bool, example: torch.Tensor) -> _Prepared:
    if precision != "fp32":
        raise ClassicNetsError("the onnxruntime backend is fp32 only")
    from .export import onnx_session

    session = onnx_session(model, example)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"input": x.contiguous().numpy()})[0])

    # Plain NCHW in: ONNX Runtime picks its own layouts inside the session.
    return _Prepared(run, torch.float32, channels_last=False, autocast=False, freezing=False)


_BACKENDS = {"inductor": _inductor, "jit": _jit, "eager": _eager, "onnxruntime": _onnxruntime}


def optimize_for_inference(model: nn.Module, example: torch.Tensor, precision: str = "fp32",
                           backend: str = "auto", check: bool = True) -> FastModel:
    """``model`` prepared for fast CPU inference on batches shaped like ``example``.

    ``precision``: "fp32" (outputs equal eager's to ~1e-6 of their scale) or "bf16" (bfloat16
    arithmetic, ~0.5% of their scale). ``backend``: "auto" tries inductor, then jit (fp32 only),
    then eager, falling back with a warning; "inductor", "jit", "eager" or "onnxruntime" (the
    model exported to ONNX and run by ONNX Runtime, fp32) uses that one or raises. ``check``
    compares the outputs on ``example`` with eager fp32's and treats a difference beyond
    :data:`TOLERANCE` as a failure of that backend (bf16 on a badly conditioned model can fail
    it honestly: ``check=False`` skips it). ``model`` itself is not
    changed: a copy is prepared. The example runs once, so the result is compiled for its batch
    size and ``build_seconds`` includes that.
    """
    if not isinstance(model, nn.Module):
        raise ClassicNetsError(f"optimize_for_inference: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.dtype != torch.float32 or example.dim() < 2:
        got = (f"shape {tuple(example.shape)} {example.dtype}" if isinstance(example, torch.Tensor)
               else _describe(example))
        raise ClassicNetsError(f"optimize_for_inference: example must be a float32 batch (N, ...), got {got}")
    if precision not in PRECISIONS:
        raise ClassicNetsError(f"optimize_for_inference: precision={precision!r}; expected one of {PRECISIONS}")
    if backend not in BACKENDS:
        raise ClassicNetsError(f"optimize_for_inference: backend={backend!r}; expected one of {BACKENDS}")
    if backend in ("jit", "onnxruntime") and precision != "fp32":
        raise ClassicNetsError(f"optimize_for_inference: backend={backend!r} supports precision='fp32' only")
    if example.device.type != "cpu" or any(t.device.type != "cpu" for t in model.state_dict().values()):
        raise ClassicNetsError("optimize_for_inference: prepares CPU inference; model and example must be on the CPU")

    # Every call frees and reallocates the same activation buffers: reuse them instead of taking
    # fresh pages from the kernel each time (classicnets.memory; process-wide, see there).
    keep_freed_memory()
    model = copy.deepcopy(model).eval().requires_grad_(False)  # the caller's model stays as it is
    with torch.inference_mode():
        reference = model(example).float()
    bound = TOLERANCE[precision] * max(1.0, float(reference.abs().max()))
    channels_last = example.dim() == 4
    chain = _CHAIN[precision] if backend == "auto" else (backend,)
    fallbacks: list[str] = []
    for name in chain:
        start = time.perf_counter()
        try:
            # The last candidate may have the copy; earlier ones get their own (bf16 and
            # channels-last conversions are in place, and a failed attempt must not leave them).
            prepared = _BACKENDS[name](model if name == chain[-1] else copy.deepcopy(model), precision,
                                       channels_last, example)
            diff = float((prepared(example) - reference).abs().max())  # inductor compiles here
            if check and not diff <= bound:
                raise ClassicNetsError(f"outputs differ from eager fp32 by {diff:.3g} (allowed {bound:.3g})")
        except Exception as exc:
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            reason = f"{name}: {type(exc).__name__}: {message}"
            if name == chain[-1]:
                raise ClassicNetsError(f"optimize_for_inference: backend {reason}") from exc
            warnings.warn(f"optimize_for_inference: {reason}; trying {chain[chain.index(name) + 1]}",
                          RuntimeWarning, stacklevel=2)
            fallbacks.append(reason)
            continue
        return FastModel(prepared, name, precision, len(example), time.perf_counter() - start, diff, fallbacks)
    raise AssertionError("unreachable: the last backend returns or raises")
