"""The GPU code path of the trainer, exercised on the CPU: which precision a device gets, the
fp16 loss scaling, the cuBLAS/cuDNN settings, and nothing that waits for the device every step."""

from __future__ import annotations

import os

import pytest
import torch

import classicnets.device
from classicnets.device import autocast_dtype, configure_cuda, pick_device
from classicnets.errors import ClassicNetsError
from classicnets.train.loop import train
from classicnets.train.progress import Progress
from conftest import tiny_config

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize(("precision", "device", "model", "cuda_bf16", "cpu_bf16", "expected"), [
    # A GPU: bf16 where it has it (Ampere and later), else fp16 with loss scaling.
    ("auto", CUDA, "resnet56", True, False, torch.bfloat16),
    ("auto", CUDA, "resnet56", False, False, torch.float16),
    ("auto", CUDA, "lenet5", True, False, torch.bfloat16),
    ("fp32", CUDA, "resnet56", True, False, None),
    # A CPU: bf16 only where it is native and the net has 10 M multiply-adds per image or more.
    ("auto", CPU, "resnet20", False, True, torch.bfloat16),
    ("auto", CPU, "resnet20", False, False, None),
    ("auto", CPU, "lenet5", False, True, None),
    ("auto", MPS, "resnet20", False, True, None),
    # Asked for: given, on any device.
    ("bf16", CPU, "lenet5", False, False, torch.bfloat16),
    ("fp16", CPU, "lenet5", False, False, torch.float16),
    ("fp16", CUDA, "resnet56", True, False, torch.float16),
])
def test_autocast_dtype_per_device(monkeypatch, precision, device, model, cuda_bf16, cpu_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(classicnets.device, "cpu_has_bf16", lambda: cpu_bf16)
    assert autocast_dtype(precision, device, model) == expected


def test_asking_for_a_missing_gpu_names_the_argument(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ClassicNetsError, match=r"--device cuda:1: CUDA is not available"):
        pick_device("cuda:1")
    assert pick_device("auto").type in ("cpu", "mps")


def test_configure_cuda_for_deterministic_and_fast_runs(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    configure_cuda(deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.benchmark is False  # a timed choice of algorithm can differ between runs
    configure_cuda(deterministic=False)
    assert torch.backends.cudnn.benchmark is True

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own choice stays
    configure_cuda(deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_train_puts_back_cudnn_benchmark(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    train(tiny_config(tmp_path, train_limit=64))
    assert torch.backends.cudnn.benchmark is True


def test_fp16_scales_the_loss_and_clips_unscaled_gradients(tmp_path, monkeypatch):
    """fp16 (GPUs without bf16) needs loss scaling; gradient clipping must see the true
    gradients, so the scaler unscales them first. CPU autocast runs the same code."""
    calls: list[str] = []

    class Recorder(torch.amp.GradScaler):
        def scale(self, outputs):
            calls.append("scale")
            return super().scale(outputs)

        def unscale_(self, optimizer):
            calls.append("unscale")
            return super().unscale_(optimizer)

        def step(self, optimizer, *args, **kwargs):
            calls.append("step")
            return super().step(optimizer, *args, **kwargs)

    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kwargs):
        calls.append("clip")
        return clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", Recorder)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    result = train(tiny_config(tmp_path, train_limit=128, batch_size=64, precision="fp16", grad_clip=1.0))
    assert calls == ["scale", "unscale", "clip", "step"] * 2
    assert result.history[-1]["train_loss"] < 2.5  # finite, and not blown up by the scale

    calls.clear()  # fp32 and bf16 need no scaler
    train(tiny_config(tmp_path / "bf16", train_limit=128, batch_size=64, precision="bf16", grad_clip=1.0))
    assert calls == ["clip", "clip"]


def test_the_progress_bar_reads_the_loss_at_most_every_refresh(monkeypatch):
    """Reading a value off the device waits for it: the bar must not do it every step."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    bar = Progress(True, total=1000, epoch=1, epochs=1)
    try:
        assert bar.bar is not None
        due = [bar.update(10) for _ in range(50)]
        assert due[0] and not any(due[1:])  # 50 steps well inside one refresh interval
        bar.refresh_seconds = 0.0
        assert all(bar.update(10) for _ in range(5))
        bar.show(loss="0.100")
    finally:
        bar.close()
    assert Progress(False, total=10, epoch=1, epochs=1).update(10) is False


def test_training_on_a_terminal_shows_its_figures(tmp_path, monkeypatch):
    shown: list[dict] = []
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    monkeypatch.setattr(Progress, "refresh_seconds", 0.0)
    monkeypatch.setattr(Progress, "show", lambda self, **figures: shown.append(figures))
    train(tiny_config(tmp_path, train_limit=128, batch_size=64, quiet=False))
    assert len(shown) == 2 and set(shown[0]) == {"loss", "acc", "img_s"}
    assert 0 < float(shown[-1]["loss"]) < 3
