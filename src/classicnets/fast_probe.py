"""Which inference path serves ``load(fast=True)``: a short probe, remembered per model and machine.

No one path is fastest everywhere. On the AVX2 machine ONNX Runtime ran the models of
``bench_infer.py`` fastest at batch 16 (ResNet-50: 17.0 img/s in the probe's rounds, inductor 15.6,
eager 12.2; ``benchmarks/results/avx2/results.md``); on the Zen 4 inductor came within 2% of it, and bf16
ran twice as fast as either; bf16 without native support is emulated, far slower than fp32. So
:func:`fastest` builds each candidate (:func:`classicnets.fast.optimize_for_inference` with that
backend, which checks its outputs against eager fp32 as it always has), times them on the example
batch in interleaved rounds, and serves the fastest:

* ``eager fp32``: the model in eval mode, channels-last;
* ``inductor fp32``: ``torch.compile`` with frozen weights;
* ``onnxruntime fp32``: the model exported to ONNX, run by ONNX Runtime (when it is installed);
* ``inductor bf16``: bfloat16 weights, batch norm folded first, only where ``precision="bf16"``
  allows it and the CPU does bf16 natively.

A candidate that fails to build or whose outputs disagree with eager fp32 beyond
:data:`classicnets.fast.TOLERANCE` is rejected and reported, never served.

The probe costs each candidate's build once (on the AVX2 machine's 2 cores inductor compiled
AlexNet, VGG-16 and ResNet-50 in 9-12 s, LeNet-5 in 11 s under load; the ONNX export took 4-8 s)
plus a warm-up call and at least five rounds of timing (ResNet-50 at batch 16: about 17 s; VGG-16:
about 50 s).
Its choice is saved in ``<cache>/fast-paths.json`` (``$CLASSICNETS_CACHE``, else
``$XDG_CACHE_HOME/classicnets``, else ``~/.cache/classicnets``), keyed by the model's
architecture (speed does not depend on the weights), the input shape, the precision allowed, the
CPU, torch's threads and the versions of torch and ONNX Runtime: a later load builds only the
chosen path, still checking its outputs.
The file is written atomically; an unreadable one is ignored with a warning and rewritten. Two
processes probing at once may each save over the other's new entry: the loser probes again later.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .checkpoint import atomic_write_text
from .data.datasets import cache_root
from .device import cpu_has_bf16
from .errors import ClassicNetsError, OutputError
from .export import onnxruntime_missing
from .fast import _BACKENDS, PRECISIONS, FastModel, optimize_for_inference

CACHE_NAME = "fast-paths.json"
CACHE_FORMAT = 1
FP32_CANDIDATES = ("eager fp32", "inductor fp32", "onnxruntime fp32")
BF16_CANDIDATE = "inductor bf16"
# Timing: one untimed call of every candidate, then every candidate once a round, the order
# rotating, at least MIN_ROUNDS rounds and then until BUDGET_S seconds of calls (ResNet-50 at
# batch 16: 5 rounds, about 17 s on the AVX2 machine's 2 cores; LeNet-5: 10 rounds of 20 ms
# samples). Why the warm-up and five rounds: there, the first timed call of each path after the
# builds ran at 12-13 img/s against 16-20 after it, and with three rounds the probe once served
# inductor (16.3 img/s in its rounds) over ONNX Runtime (15.6), which then ran 13% faster in the
# benchmark (benchmarks/results/avx2/results.md).
MIN_ROUNDS, MAX_ROUNDS, BUDGET_S = 5, 10, 1.0
MIN_SAMPLE_S = 0.02  # a sample repeats a call this long: one LeNet-5 call is shorter than the clock's noise

TimeCall = Callable[[FastModel, torch.Tensor], float]


@dataclass
class Probe:
    """What the probe found: ``chosen`` (a candidate's name, e.g. "onnxruntime fp32") serves.

    ``seconds_per_call``: each timed candidate's median at batch ``batch``; ``build_seconds``:
    what building each cost (in this process); ``rejected``: candidates that failed to build or
    disagreed with eager fp32, and why; ``skipped``: candidates not tried, and why; ``cached``:
    the choice came from the cache file (the timings are the earlier probe's)."""

    chosen: str
    batch: int
    seconds_per_call: dict[str, float]
    build_seconds: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cached: bool = False
    key: str = ""

    def images_per_second(self) -> dict[str, float]:
        return {name: self.batch / s for name, s in self.seconds_per_call.items()}

    def summary(self) -> str:
        """One line: what serves, and what the probe measured and left out."""
        rates = ", ".join(f"{name} {rate:,.1f}" for name, rate in self.images_per_second().items())
        how = "chosen by an earlier probe (cached)" if self.cached else "chosen by a probe"
        text = f"fast path: {self.chosen}, {how} at batch {self.batch}: {rates} img/s"
        for label, reasons in (("rejected", self.rejected), ("skipped", self.skipped)):
            if reasons:
                text += f"; {label}: " + "; ".join(f"{name} ({why})" for name, why in reasons.items())
        return text

    def as_dict(self) -> dict:
        return asdict(self)


def candidates(precision: str) -> tuple[list[str], dict[str, str]]:
    """The candidates to build for ``precision`` (the lowest precision allowed), and those left
    out with the reason."""
    tried, skipped = list(FP32_CANDIDATES), {}
    why = onnxruntime_missing()
    if why:
        tried.remove("onnxruntime fp32")
        skipped["onnxruntime fp32"] = why
    if precision != "bf16":
        skipped[BF16_CANDIDATE] = "precision='fp32' asked for (precision='bf16' allows it)"
    elif not cpu_has_bf16():
        skipped[BF16_CANDIDATE] = "this CPU has no native bf16 (emulated, it is far slower than fp32)"
    else:
        tried.append(BF16_CANDIDATE)
    return tried, skipped


def fastest(model: nn.Module, example: torch.Tensor, precision: str = "fp32", *, cache: bool = True,
            time_call: TimeCall | None = None) -> FastModel:
    """The fastest agreeing inference path of ``model`` on batches shaped like ``example``, as a
    :class:`~classicnets.fast.FastModel` whose ``probe`` (:class:`Probe`) says how it was chosen.

    ``precision``: "fp32" tries the fp32 paths; "bf16" also bf16 where the CPU has it natively.
    ``cache``: read and save the choice (False: probe every time, save nothing). ``time_call(fm,
    x)`` returns seconds per call of ``fm(x)`` (tests give a fake one; by default the clock)."""
    if precision not in PRECISIONS:
        raise ClassicNetsError(f"fastest: precision={precision!r}; expected one of {PRECISIONS}")
    tried, skipped = candidates(precision)
    key = cache_key(model, example, precision)
    if cache:
        served = _serve_cached(model, example, key, tried)
        if served is not None:
            return served
    built, build_seconds, rejected = _build(model, example, tried)
    if not built:
        raise ClassicNetsError("no inference path could be built: "
                               + "; ".join(f"{name}: {why}" for name, why in rejected.items()))
    timings = _time(built, example, time_call or time_calls)
    chosen = min(timings, key=timings.get)
    probe = Probe(chosen, len(example), timings, build_seconds, rejected, skipped, cached=False, key=key)
    if cache:
        _save(key, probe)
    served = built[chosen]
    served.probe = probe
    return served


def _split(name: str) -> tuple[str, str]:
    backend, precision = name.split()
    return backend, precision


def _build(model, example, names) -> tuple[dict[str, FastModel], dict[str, float], dict[str, str]]:
    built, seconds, rejected = {}, {}, {}
    for name in names:
        backend, precision = _split(name)
        start = time.perf_counter()
        try:
            built[name] = optimize_for_inference(model, example, precision, backend=backend)
        except ClassicNetsError as exc:  # a failed build or outputs that disagree: never served
            reason = str(exc).removeprefix(f"optimize_for_inference: backend {backend}: ")
            rejected[name] = reason.removeprefix("ClassicNetsError: ")
        seconds[name] = time.perf_counter() - start
    return built, seconds, rejected


def time_calls(fm: FastModel, x: torch.Tensor) -> float:
    """Seconds per call of ``fm(x)``, over back-to-back calls lasting at least ``MIN_SAMPLE_S``."""
    calls, start = 0, time.perf_counter()
    while True:
        fm(x)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= MIN_SAMPLE_S:
            return elapsed / calls


def _time(built: dict[str, FastModel], x: torch.Tensor, time_call: TimeCall) -> dict[str, float]:
    """Median seconds per call of each candidate, interleaved (A B C, B C A, ...) so that a
    machine slowing down mid-probe slows every candidate alike; after one untimed call of each
    (the first call after the builds is slow for every path: caches and memory pools are cold)."""
    names = list(built)
    for name in names:
        built[name](x)
    samples: dict[str, list[float]] = {name: [] for name in names}
    spent = 0.0
    for r in range(MAX_ROUNDS):
        for name in names[r % len(names):] + names[:r % len(names)]:
            seconds = time_call(built[name], x)
            samples[name].append(seconds)
            spent += seconds
        if r + 1 >= MIN_ROUNDS and spent >= BUDGET_S:
            break
    return {name: statistics.median(v) for name, v in samples.items()}


# --------------------------------------------------------------------------------------------
# The cache: one JSON file of choices, keyed by what decides which path is fastest
# --------------------------------------------------------------------------------------------


def cache_path():
    return cache_root() / CACHE_NAME


def cache_key(model: nn.Module, example: torch.Tensor, precision: str) -> str:
    """What decides the fastest path: the architecture (module tree, parameter shapes and dtypes,
    not the weights' values), the input shape, the precision allowed, the CPU and its vector unit,
    torch's threads, and the versions of torch and ONNX Runtime."""
    from .report import machine_info

    arch = hashlib.sha256(repr(model).encode())
    for name, t in model.state_dict().items():
        arch.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    m = machine_info()
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "absent"
    shape = "x".join(map(str, example.shape))
    return (f"{type(model).__name__}-{arch.hexdigest()[:16]} {shape} {precision} | {m['cpu']} "
            f"{m['cpu_capability']}{' bf16' if m['native_bf16'] else ''} {m['torch_threads']} threads | "
            f"torch {m['torch']} onnxruntime {ort}")


def read_choices(warn: bool = True) -> dict:
    """The cached choices by key; an unreadable or malformed file counts as empty (with a warning)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # nothing cached yet (saving will say what is wrong)
        return {}
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        problem = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(data, dict) and data.get("format") == CACHE_FORMAT and isinstance(data.get("choices"), dict):
            return data["choices"]
        problem = f"not a format-{CACHE_FORMAT} file of choices"
    if warn:
        warnings.warn(f"ignoring the fast-path cache {path} ({problem}); the probe runs again and rewrites it",
                      RuntimeWarning, stacklevel=3)
    return {}


def _entry_probe(entry) -> Probe | None:
    """The cached probe in ``entry``, or None if it is not one (a hand-edited or foreign file)."""
    try:
        probe = Probe(**entry)
        ok = (isinstance(probe.chosen, str) and probe.chosen in probe.seconds_per_call
              and len(probe.chosen.split()) == 2 and _split(probe.chosen)[0] in _BACKENDS
              and all(isinstance(v, (int, float)) and v > 0 for v in probe.seconds_per_call.values()))
    except (TypeError, AttributeError, ValueError):
        return None
    return probe if ok else None


def _serve_cached(model, example, key: str, tried: list[str]) -> FastModel | None:
    """The cached choice for ``key``, built (and checked) alone; None to probe instead."""
    entry = read_choices().get(key)
    if entry is None:
        return None
    probe = _entry_probe(entry)
    if probe is None or probe.chosen not in tried:
        reason = "it is malformed" if probe is None else f"{probe.chosen} is not available now"
        warnings.warn(f"ignoring the cached fast path for this model ({reason}); probing again",
                      RuntimeWarning, stacklevel=3)
        return None
    built, seconds, rejected = _build(model, example, [probe.chosen])
    if not built:
        warnings.warn(f"the cached fast path {probe.chosen} failed now ({rejected[probe.chosen]}); probing again",
                      RuntimeWarning, stacklevel=3)
        return None
    served = built[probe.chosen]
    probe.cached, probe.build_seconds = True, seconds
    served.probe = probe
    return served


def _save(key: str, probe: Probe) -> None:
    """Add ``probe`` to the cache file; a file that cannot be written costs a warning, not the load."""
    choices = read_choices(warn=False)
    choices[key] = {**probe.as_dict(), "cached": False}
    text = json.dumps({"format": CACHE_FORMAT, "choices": choices}, indent=1) + "\n"
    try:
        atomic_write_text(cache_path(), text)
    except OutputError as exc:
        warnings.warn(f"could not save the fast-path choice: {exc}", RuntimeWarning, stacklevel=3)
