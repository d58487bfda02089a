"""Export to ONNX and TorchScript: files that run elsewhere and give PyTorch's outputs."""

from __future__ import annotations

import shutil

import onnxruntime as ort
import pytest
import torch

from classicnets import export
from classicnets.checkpoint import build_from_checkpoint
from classicnets.errors import ClassicNetsError
from classicnets.export import ATOL, export_checkpoint


def probe(n: int = 5) -> torch.Tensor:
    """A batch whose size differs from the one the exporter traced (2)."""
    return torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def pytorch_logits(run, x):
    model, _ = build_from_checkpoint(run)
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
def test_onnx_command_writes_one_self_contained_file(cli, run_dir, tmp_path):
    code, out, err = cli("export", run_dir, "--format", "onnx")
    assert code == 0, err
    path = run_dir / "model.onnx"
    assert f"wrote {path}" in out and "check: max |onnx - pytorch|" in out
    assert not list(run_dir.glob("*.data")), "weights must be inside model.onnx"

    # The file alone, somewhere else, runs in ONNX Runtime and gives PyTorch's logits.
    moved = shutil.copy(path, tmp_path / "elsewhere.onnx")
    session = ort.InferenceSession(str(moved), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    for n in (1, 5, 7):
        x = probe(n)
        (got,) = session.run(None, {"input": x.numpy()})
        assert got.shape == (n, 10)
        assert float((torch.from_numpy(got) - pytorch_logits(run_dir, x)).abs().max()) <= ATOL

    # The Python check function agrees.
    model, _ = build_from_checkpoint(run_dir)
    assert export.check_onnx(path, model, probe()) <= ATOL


def test_onnx_export_function_into_a_new_folder(trained_run, tmp_path):
    path, check = export_checkpoint(trained_run, "onnx", tmp_path / "new" / "folder" / "lenet.onnx")
    assert path.is_file() and "check: max |onnx - pytorch|" in check
    model, _ = build_from_checkpoint(trained_run)
    assert export.check_onnx(path, model, probe(3)) <= ATOL


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_function(trained_run, tmp_path):
    path, check = export_checkpoint(trained_run, "torchscript", tmp_path / "new" / "lenet.pt")
    assert path == tmp_path / "new" / "lenet.pt" and path.is_file()
    assert "check: max |torchscript - pytorch|" in check
    loaded = torch.jit.load(str(path))
    for n in (1, 5):
        x = probe(n)
        with torch.no_grad():
            assert float((loaded(x) - pytorch_logits(trained_run, x)).abs().max()) <= ATOL


def test_torchscript_command_default_path(cli, run_dir):
    code, out, _ = cli("export", run_dir, "--format", "torchscript", "--no-check")
    assert code == 0
    assert out.strip() == f"wrote {run_dir / 'model.torchscript.pt'}"
    assert (run_dir / "model.torchscript.pt").is_file()


def test_a_copy_that_differs_is_an_error(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "check_torchscript", lambda *a: 0.5)
    with pytest.raises(ClassicNetsError, match="differ from PyTorch's by 0.5"):
        export_checkpoint(trained_run, "torchscript", tmp_path / "x.pt")


def test_unknown_format_and_missing_checkpoint(trained_run, tmp_path, cli):
    with pytest.raises(ClassicNetsError, match="--format 'tflite'"):
        export_checkpoint(trained_run, "tflite")
    code, _, err = cli("export", tmp_path / "nothing")
    assert code == 2 and "nothing" in err
