"""Keep freed memory in the process for the next allocation, instead of handing it back to the OS.

Why: glibc's ``malloc`` serves every block above its *mmap threshold* (128 KiB at first, raised
as the program frees larger blocks, at most 32 MiB) with fresh pages from the kernel and returns
them when the block is freed; freed memory at the top of the heap goes back too, once more than
the *trim threshold* of it is free. A training step frees its activations and gradients and
allocates the same sizes again in the next step, so every step the kernel hands out and zeroes
new pages, one page fault per 4 KiB. ``benchmarks/bench_malloc.py`` counts them: hundreds to
thousands per LeNet-5 step, tens of thousands per ResNet-20 step, over two hundred thousand per
eager ResNet-50 forward pass at batch 16. With the mmap threshold fixed at its ceiling
(:data:`MMAP_THRESHOLD_BYTES`) and the trim threshold raised (:data:`TRIM_THRESHOLD_BYTES`),
freed blocks are reused and most faults stop (``benchmarks/results/avx2/malloc.md`` has what that buys).

The price: up to 1 GiB of memory a run has freed stays in the process until it ends, and reuse
is not perfect (the heap fragments), so a process's peak memory can grow (the benchmark reports
peak RSS both ways). The allocators ``torch.backends.xeon.run_cpu`` preloads are native libraries
a ``pip install`` cannot bring, and measured in glibc's place they do not beat this setting
(``bench_malloc.py --preload``: tcmalloc within the noise of it, jemalloc with its default
settings 0.64x on a ResNet-20 step, handing pages back itself), so we ask the allocator every
Linux Python already has.

The setting is process-wide and lasts until the process ends (glibc cannot be told to go back
to adapting its thresholds). :func:`classicnets.train` and
:func:`classicnets.fast.optimize_for_inference` apply it, and so does every ``classicnets``
command; ``CLASSICNETS_KEEP_FREED_MEMORY=0`` in the environment turns it off. Elsewhere than
glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

# Blocks up to 32 MiB come from the heap: glibc's own ceiling for the threshold it adapts, and
# enough for every activation of LeNet-5 and the CIFAR ResNets at batch 128 (8 MB at most).
# Larger blocks stay mapped and unmapped as they come: with a 1 GiB threshold a test that parses
# thousands of corrupted CIFAR batches, each asking for another large size, fragmented the heap
# until the process held 24 GB. Freed memory at the top of the heap is kept up to 1 GiB
# (glibc's default keeps twice the adapted threshold, at most 64 MiB).
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
ENV = "CLASSICNETS_KEEP_FREED_MEMORY"

_state: str | None = None  # what the first call found, given back by every later one


def keep_freed_memory() -> str:
    """Raise glibc malloc's mmap and trim thresholds (once per process) and say what happened:
    ``"kept"`` (applied now or earlier), ``"off"`` (``CLASSICNETS_KEEP_FREED_MEMORY=0``) or
    ``"unavailable: ..."`` (not glibc, or ``mallopt`` refused). Never raises."""
    global _state
    if _state is not None:
        return _state
    if os.environ.get(ENV, "1").strip().lower() in ("0", "no", "false", "off"):
        _state = "off"  # decided once: a later call does not apply it behind the user's back
        return _state
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = f"unavailable: {platform.system()} {platform.libc_ver()[0] or 'without glibc'}"
        return _state
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as exc:
        _state = f"unavailable: no mallopt ({exc})"
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    _state = "kept" if ok else "unavailable: mallopt refused the thresholds"
    return _state
