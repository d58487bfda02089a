"""Where a run computes and in which precision: the device, the autocast dtype, and the process-wide
settings a GPU run needs. The trainer, the evaluator and the predictor all ask here, so
``--device`` and ``--precision`` mean the same everywhere."""

from __future__ import annotations

import contextlib
import os

import torch

from .errors import ClassicNetsError
from .models import model_card

# bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX) pays for nets with enough work
# per image (docs/performance.md, "What the defaults are made of"): ResNet-20 (41 M
# multiply-adds) trains 1.7x faster with it. LeNet-5 (0.4 M) measured 0.87x to 1.11x, within the
# machine's noise (its accuracy held on 3 seeds): it stays fp32, as the recorded experiments ran.
BF16_MIN_MACS = 10_000_000


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; or exactly what the user asked for, if this machine has it.
    Every command resolves ``--device`` here, so they all accept the same names and refuse the
    same way."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ClassicNetsError(f"--device {name!r}: expected {DEVICES}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ClassicNetsError(f"--device {name!r}: expected {DEVICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ClassicNetsError(f"--device {name}: CUDA is not available on this machine "
                                   f"(this PyTorch build: {torch.__version__}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ClassicNetsError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                                   f"numbered from 0")
    if dev.type == "mps" and not _mps_available():
        raise ClassicNetsError(f"--device {name}: Apple's MPS is not available on this machine; use --device cpu "
                               f"or auto")
    return dev


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (otherwise bf16 is emulated, and slow)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def configure_cuda(deterministic: bool) -> None:
    """cuBLAS and cuDNN settings for a run on a GPU.

    Deterministic (the default): cuBLAS sums in the same order run after run only with a fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``, cuBLAS documentation, "Results reproducibility");
    without one PyTorch's deterministic mode warns at the first matrix product. cuBLAS reads it
    when it starts, so a process that has already run a matrix product on the GPU keeps the
    workspace it has; a value already in the environment is kept. cuDNN does not time its
    algorithms (``benchmark``): the fastest one may differ between runs.

    ``--nondeterministic``: cuDNN times its algorithms on the first batch of each shape and keeps
    the fastest (a training run's shapes stay fixed, so that is paid once).
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic


def autocast_dtype(precision: str, device: torch.device, model: str | None = None) -> torch.dtype | None:
    """The autocast dtype for ``precision``. "auto" means bf16 (or fp16 where bf16 is missing) on
    CUDA; on a CPU, bf16 where it has native bf16 and ``model`` has at least ``BF16_MIN_MACS``
    multiply-adds per image, else fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and model is not None and cpu_has_bf16():
            macs = model_card(model).macs
            return torch.bfloat16 if macs and macs >= BF16_MIN_MACS else None
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype``, or nothing at all for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def process_settings(device: torch.device, *, threads: int | None, deterministic: bool):
    """Apply a run's process-wide settings for the length of the run, then put back what was there:
    a notebook that trains and then runs other code must not be left in deterministic mode or on
    one thread."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.utils.deterministic.fill_uninitialized_memory, torch.backends.cudnn.benchmark)
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
            # Deterministic mode also fills every new tensor with NaN, a debugging aid that makes a
            # kernel reading uninitialised memory fail loudly. Our kernels do not, and the fill cost
            # ResNet-20 (bf16, channels-last) 906-929 img/s against 964-990 without it in separate
            # runs on 2 cores; the algorithms stay deterministic.
            torch.utils.deterministic.fill_uninitialized_memory = False
        if device.type == "cuda":
            configure_cuda(deterministic)
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.utils.deterministic.fill_uninitialized_memory = saved[3]
        torch.backends.cudnn.benchmark = saved[4]
