"""Native CPU kernels for the few layers whose PyTorch CPU kernels waste most of their time.

Three so far, all for LeNet-5's first layers, where PyTorch's kernels leave part of an 8-lane AVX2
register idle because the layers have 6 channels, and fused forms of them for LeNet-5's blocks
(``benchmarks/results/<machine>/lenet_step_ideas.md`` has the whole step with and without each):

* ``pool2x2.c``: 2x2 max pooling with stride 2 on channels-last float32 tensors. PyTorch's
  channels-last max pool vectorises over channels, 8 at a time; with 6, every value goes through
  its scalar remainder loop. Outputs and gradients are PyTorch's bit for bit, so a run trains to
  the same weights either way.
* ``conv_gray.c``: a convolution over one-channel images (stride 1, no padding), forward and the
  weight and bias gradients, with its output channels-last. It sums in another order than
  oneDNN, so it agrees with PyTorch to rounding (``tests/test_native_conv.py`` bounds the
  difference against float64), not bit for bit.
* ``conv_input_grad.c``: the input gradient of a convolution onto at most 8 channels (stride 1,
  no padding), channels-last: LeNet-5's conv2 sends its gradient back onto 6 maps. Also to
  rounding, and the same bits whatever the thread count.
* fused (``classicnets.models.fused``): the pool with a ReLU after it (``pool2x2.c``'s ``relu``),
  conv1 with its pool and ReLU in one pass each way (``conv_gray.c``), and conv2's backward from
  the gradient of its pooled output (``conv_input_grad.c``'s pooled entry and
  ``conv_pooled_weight_grad.c``), with the bits of the layers run one by one, but for the
  convolutions' weight and bias gradients: the fused backward sums only the pools' winners (the
  other positions' gradients are zero), so those agree to rounding.

How: the first use in a process compiles the sources with the machine's C compiler (``$CC``,
else ``cc``; about a second) into one library in ``<cache>/native/`` (``$CLASSICNETS_CACHE``, else
``$XDG_CACHE_HOME/classicnets``, else ``~/.cache/classicnets``), named by a hash of the sources,
the compiler's version and the flags, and loads it with :mod:`ctypes`. Later processes load the
file they find. With OpenMP the library asks for ``libgomp.so.1``, the name torch's own OpenMP
runtime already holds in the process, so its threads are torch's threads (one pool of them, no
oversubscription); where torch ships no libgomp it is built without OpenMP and runs on one thread.

Where it cannot run (no C compiler, a CPU without AVX2, a failed build, or
``CLASSICNETS_NATIVE=0`` in the environment), :func:`library` returns None, :func:`status` says
why, and the layers run PyTorch's kernels: slower, with the same results (to rounding, for the
convolution).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch.utils import _python_dispatch

SOURCES = [Path(__file__).with_name(name)
           for name in ("pool2x2.c", "conv_gray.c", "conv_input_grad.c", "conv_pooled_weight_grad.c")]
# included by the sources: part of the library's hash
HEADERS = [Path(__file__).with_name(name) for name in ("threads.h", "pool2x2.h", "loads.h")]
ABI_VERSION = 4  # classicnets_native_abi_version() in pool2x2.c: a library that answers otherwise is rebuilt
# What turned_off() can name: the max pool, the one-channel convolution, a convolution's input
# gradient, and lenet5's blocks with their pool and ReLU fused (classicnets.models.fused).
KERNELS = ("pool", "gray_conv", "input_grad", "fused_blocks")
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fPIC", "-shared", "-std=c11"]


def _torch_libgomp() -> Path | None:
    """torch's own OpenMP runtime, if it ships libgomp (Linux wheels do)."""
    path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    return path if path.exists() and "OpenMP" in torch.__config__.parallel_info() else None


def _cache_dir() -> Path:
    from ..data.datasets import cache_root

    return cache_root() / "native"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _flags() -> list[str]:
    return _FLAGS + (["-fopenmp"] if _torch_libgomp() else [])


def _library_name(compiler: str) -> str:
    """The file name: a hash of what decides the library's bytes (source, compiler, flags, machine)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    digest = hashlib.sha256()
    for source in SOURCES + HEADERS:
        digest.update(source.read_bytes())
    for part in (version, " ".join(_flags()), platform.machine()):
        digest.update(part.encode())
    return f"kernels-{digest.hexdigest()[:16]}.so"


class BuildError(Exception):
    """The compiler refused the source (its message says why)."""


def _build(compiler: str, target: Path) -> None:
    """Compile into a temporary file beside ``target``, then rename: a reader never sees half a
    library, and two processes building at once each rename a whole one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *_flags(), *map(str, SOURCES), "-o", tmp], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            names = ", ".join(source.name for source in SOURCES)
            raise BuildError(f"{compiler} failed on {names}: {(done.stderr or done.stdout).strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    if lib.classicnets_native_abi_version() != ABI_VERSION:
        raise OSError(f"{path} is another version of the kernels")
    c_ptr, c_i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        "pool2x2_forward": ([c_ptr, c_ptr, c_ptr, c_i64, c_i64, c_i64, c_i64, c_int, c_int], None),
        "pool2x2_backward": ([c_ptr, c_ptr, c_ptr, c_ptr, c_i64, c_i64, c_i64, c_i64, c_int], None),
        "conv_gray_supports": ([c_i64, c_i64], c_int),
        "conv_gray_forward": ([c_ptr, c_ptr, c_ptr, c_ptr, c_i64, c_i64, c_i64, c_i64, c_i64, c_int], None),
        "conv_gray_weight_grad": ([c_ptr, c_ptr, c_ptr, c_ptr, c_i64, c_i64, c_i64, c_i64, c_i64, c_int], c_int),
        "conv_gray_pool_relu_forward": ([c_ptr] * 5 + [c_i64] * 5 + [c_int], c_int),
        "conv_gray_pool_relu_weight_grad": ([c_ptr] * 6 + [c_i64] * 5 + [c_int], c_int),
        "conv_input_grad_supports": ([c_i64, c_i64], c_int),
        "conv_input_grad": ([c_ptr, c_ptr, c_ptr, c_i64, c_i64, c_i64, c_i64, c_i64, c_i64, c_int], c_int),
        "conv_pool_relu_input_grad": ([c_ptr] * 5 + [c_i64] * 6 + [c_int], c_int),
        "conv_pooled_weight_grad_supports": ([c_i64, c_i64], c_int),
        "conv_pooled_weight_grad": ([c_ptr] * 6 + [c_i64] * 6 + [c_int], c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def _why_not() -> str | None:
    """Why the kernels cannot be built here, before trying (None: they can)."""
    if os.environ.get("CLASSICNETS_NATIVE", "1") == "0":
        return "turned off by CLASSICNETS_NATIVE=0"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the kernels are written for x86-64 with AVX2, not {platform.machine()}"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"this CPU has no AVX2 (torch reports {torch.backends.cpu.get_cpu_capability()})"
    if _compiler() is None:
        return "no C compiler (cc, gcc or clang; or set $CC)"
    return None


@functools.cache
def _loaded() -> tuple[ctypes.CDLL | None, str]:
    reason = _why_not()
    if reason:
        return None, reason
    compiler = _compiler()
    try:
        path = _cache_dir() / _library_name(compiler)
        if path.exists():
            try:
                return _load(path), f"native ({path})"
            except OSError:  # a damaged or foreign file under our name: build it again
                pass
        try:
            _build(compiler, path)
        except OSError as exc:  # a cache folder we cannot write: build for this process alone
            with tempfile.TemporaryDirectory(prefix="classicnets-native-") as tmp:
                _build(compiler, Path(tmp) / path.name)
                lib = _load(Path(tmp) / path.name)  # the mapping outlives the file
            return lib, f"native (built for this process only: {path.parent} is not writable: {exc})"
        return _load(path), f"native ({path})"
    except (BuildError, OSError, subprocess.SubprocessError) as exc:
        return None, f"the build failed, so PyTorch's kernels run: {exc}"


_turned_off: frozenset[str] = frozenset()


@contextlib.contextmanager
def turned_off(*kernels: str):
    """PyTorch's kernels inside the block for the ``kernels`` named (of :data:`KERNELS`; none
    named: all), in this thread and every other: for side-by-side timings
    (``benchmarks/bench_lenet_step.py``)."""
    global _turned_off
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ValueError(f"turned_off{kernels}: expected names among {KERNELS}")
    before = _turned_off
    _turned_off = before | frozenset(kernels or KERNELS)
    try:
        yield
    finally:
        _turned_off = before


def library(kernel: str) -> ctypes.CDLL | None:
    """The loaded kernels for ``kernel`` (one of :data:`KERNELS`), built on first use; None where
    they cannot run here (see :func:`status`) or inside :func:`turned_off` naming it."""
    return None if kernel in _turned_off else _loaded()[0]


def being_traced() -> bool:
    """Whether torch is tracing, scripting, compiling or exporting, or a dispatch mode watches
    the operators (``FlopCounterMode`` counting multiply-adds, fake tensors): none of those can
    follow a ctypes call, so the layers run PyTorch's kernels then."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or _python_dispatch._get_current_dispatch_mode() is not None)


def status() -> str:
    """'native (PATH)', or why PyTorch's kernels run instead."""
    return _loaded()[1]
