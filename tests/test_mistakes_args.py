"""A person's mistakes on the command line, answered the same way by every command: exit code 2,
one line that names the argument and what was expected, no traceback, and nothing written or
changed on disk. Each case was seen when a person used the tool."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from classicnets.cli import EXIT_USAGE


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def refused(result, *words: str) -> str:
    code, out, err = result
    assert code == EXIT_USAGE, (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    return err


@pytest.fixture
def image(tmp_path, trained_run):
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("L", (28, 28), 0).save(path)
    return path


# ---- devices: every command takes the same names and refuses the same way -------------------

DEVICE_COMMANDS = {
    "predict": lambda run, image: ["predict", run, image],
    "show": lambda run, image: ["show", run, image, "-o", image.parent / "pictures"],
    "evaluate": lambda run, image: ["evaluate", run],
    "train": lambda run, image: ["train", "lenet5", "--out", image.parent / "new-run"],
}


@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
@pytest.mark.parametrize(("device", "words"), [
    ("gpu", ["--device 'gpu'", "expected auto, cpu, cuda, cuda:N or mps"]),
    ("cuda:0x", ["--device 'cuda:0x'", "expected auto, cpu, cuda, cuda:N or mps"]),
    ("cuda", ["--device cuda", "CUDA is not available"]),
    ("mps", ["--device mps", "MPS is not available"]),
])
def test_every_command_refuses_the_same_devices(cli, trained_run, image, command, device, words, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = tree_digest(trained_run)
    refused(cli(*DEVICE_COMMANDS[command](trained_run, image), "--device", device), *words)
    assert tree_digest(trained_run) == before
    assert not (image.parent / "pictures").exists() and not (image.parent / "new-run").exists()


def test_predict_and_show_take_auto_as_train_and_evaluate_do(cli, trained_run, image, tmp_path):
    code, out, err = cli("predict", trained_run, image, "--device", "auto")
    assert code == 0 and str(image) in out, err
    code, out, err = cli("show", trained_run, image, "--device", "auto", "-o", tmp_path / "pictures")
    assert code == 0 and "wrote" in out, err
