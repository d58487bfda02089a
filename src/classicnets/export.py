"""Export a trained checkpoint to ONNX or TorchScript and check the copy against PyTorch.

ONNX export uses PyTorch's ``torch.export``-based exporter (needs the ``onnx`` extra:
``pip install 'classicnets[onnx]'``); the check runs the file in ONNX Runtime on a batch of
inputs and compares the logits with the PyTorch model's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .checkpoint import build_from_checkpoint
from .errors import ClassicNetsError

ATOL = 1e-4  # float32 logits of the same graph, run by two engines
ONNX_SINGLE_FILE_LIMIT = 1 << 30  # bytes of weights; protobuf caps one file at 2 GiB
OUTPUT_HINT = "-o FILE"  # the option of `classicnets export` that writes elsewhere


def _example_input(meta: dict, batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, *meta["input_size"], generator=gen)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, *, hint: str | None = None) -> Path:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ClassicNetsError("ONNX export needs the optional extra: pip install 'classicnets[onnx]'") from exc
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    # One self-contained file where protobuf allows it (it caps one file at 2 GiB); beyond, the
    # weights go in a PATH.data file that must travel with it.
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if weight_bytes < ONNX_SINGLE_FILE_LIMIT:
        ckpt.atomic_write(path, lambda tmp: program.save(str(tmp)), hint=hint)
    else:
        _save_onnx_with_external_data(program, Path(path), hint)
    return path


def _save_onnx_with_external_data(program, path: Path, hint: str | None) -> None:
    """PATH and PATH.data, each written atomically, the weights first. The exporter names the
    data file after the model file, so both are made under their own names in a private folder."""
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}.d")
    data = path.with_name(f"{path.name}.data")

    def write_weights(tmp: Path) -> None:
        staging.mkdir()
        program.save(str(staging / path.name), external_data=True)
        os.replace(staging / data.name, tmp)

    try:
        ckpt.atomic_write(data, write_weights, hint=hint)
        ckpt.atomic_write(path, lambda tmp: os.replace(staging / path.name, tmp), hint=hint)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, *,
                       hint: str | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still the portable C++ format
        traced = torch.jit.trace(model, example)
        # Into memory first: torch's own file writer ends the process with a C++ exception when
        # the disk fills up; a Python write fails with an OSError that atomic_write reports.
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    ckpt.atomic_write_bytes(path, buffer.getvalue(), hint=hint)
    return path


def onnxruntime_missing() -> str | None:
    """Why ONNX Runtime cannot run an exported model here (a package not installed), or None."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    return f"{', '.join(missing)} not installed (pip install 'classicnets[onnx]')" if missing else None


@contextlib.contextmanager
def _exporter_quiet():
    """The exporter logs a warning for every optional torchvision op it cannot register: noise to
    someone who asked for fast inference, not for an ONNX file."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnx_session(model: torch.nn.Module, example: torch.Tensor, threads: int | None = None):
    """An ONNX Runtime session (CPU provider, default graph optimisations) of ``model``, exported
    by :func:`export_onnx` to a temporary file that is gone when this returns (the session has
    read it). ``threads``: its intra-op threads, by default torch's, so both use the same cores."""
    why = onnxruntime_missing()
    if why:
        raise ClassicNetsError(f"ONNX Runtime: {why}")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="classicnets-onnx-") as tmp, _exporter_quiet():
        path = Path(tmp) / "model.onnx"
        export_onnx(model, example, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(path: Path, model: torch.nn.Module, example: torch.Tensor) -> float:
    """Max abs difference between ONNX Runtime's logits and PyTorch's."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ClassicNetsError("the ONNX check needs onnxruntime: pip install 'classicnets[onnx]'") from exc
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": example.numpy()})[0])
    with torch.no_grad():
        want = model(example)
    return float((got - want).abs().max())


def check_torchscript(path: Path, model: torch.nn.Module, example: torch.Tensor) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return float((loaded(example) - model(example)).abs().max())


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str = "onnx", output: str | os.PathLike | None = None,
                      verify: bool = True) -> tuple[Path, str]:
    """Write the model of ``checkpoint`` as ``fmt`` ("onnx" or "torchscript"); return the path and,
    with ``verify``, a line reporting the output difference (raises if over tolerance).

    ``output``: the file (its folder is created), or a folder to write the default name into
    (``model.onnx``, ``model.torchscript.pt``); by default, next to the checkpoint. The file is
    written atomically: a failure leaves no partial file and raises an
    :class:`~classicnets.errors.OutputError` naming it."""
    model, meta = build_from_checkpoint(checkpoint, "cpu")
    src = ckpt.resolve(checkpoint)
    suffix = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}.get(fmt)
    if suffix is None:
        raise ClassicNetsError(f"--format {fmt!r}: expected onnx or torchscript")
    path = ckpt.output_file(output, ckpt.home(checkpoint) / (src.name.split(".")[0] + suffix))
    # A batch size other than the traced one proves the exported batch dimension is dynamic.
    example, probe = _example_input(meta, 2), _example_input(meta, 5)
    if fmt == "onnx":
        export_onnx(model, example, path, hint=OUTPUT_HINT)
        diff = check_onnx(path, model, probe) if verify else None
    else:
        export_torchscript(model, example, path, hint=OUTPUT_HINT)
        diff = check_torchscript(path, model, probe) if verify else None
    if diff is None:
        return path, ""
    if not diff <= ATOL:
        raise ClassicNetsError(f"{path}: exported outputs differ from PyTorch's by {diff:.3g} (tolerance {ATOL})")
    return path, f"check: max |{fmt} - pytorch| = {diff:.2e} on 5 inputs (tolerance {ATOL})"
