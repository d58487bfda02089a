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


# ---- train: every argument checked before any data is read or any file written ----------------

@pytest.mark.parametrize(("argv", "words"), [
    (["--input-size", "100000", "100000"], ["--input-size 100000 100000", "at most 65,536 pixels a side"]),
    (["--input-size", "28", "28"], ["--input-size 28 28", "lenet5 takes 32x32 images"]),
    (["--model-arg", "foo=1"], ["--model-arg foo", "lenet5 has no argument 'foo'", "activation, pool"]),
    (["--model-arg", "num_classes=0"], ["--model-arg num_classes", "comes from the data"]),
    (["--model-arg", "pool=median"], ["--model-arg pool='median'", "pool must be one of"]),
    (["--batch-size", "100000000"], ["--batch-size 100000000", "needs about", "is available"]),
])
def test_train_checks_its_arguments_before_touching_data_or_files(cli, tmp_path, argv, words):
    """The data directory does not exist: an error about the arguments proves they were checked
    before the data was looked at; --out must not appear."""
    out = tmp_path / "run"
    refused(cli("train", "lenet5", "--data", tmp_path / "no-such-data", "--out", out, *argv), *words)
    assert not out.exists()


def test_train_refuses_inputs_too_small_for_the_layers(cli, tmp_path):
    err = refused(cli("train", "alexnet", "--data", tmp_path / "nothing", "--input-size", "32", "32"),
                  "--input-size 32 32", "too small for alexnet")
    assert "the smallest input alexnet takes is 3 x 63 x 63 (--input-size 63 63)" in err


def test_a_finished_run_is_never_overwritten_without_force(cli, run_dir, tmp_path):
    before = tree_digest(run_dir)
    refused(cli("train", "lenet5", "--train-limit", "64", "--epochs", "1", "--threads", "1", "--quiet",
                "--out", run_dir), f"--out {run_dir} holds a run already", "--resume", "--force")
    assert tree_digest(run_dir) == before


def test_force_replaces_a_run_only_once_the_new_one_has_an_epoch(cli, run_dir):
    before = tree_digest(run_dir)
    # A forced run that fails before its first epoch ends leaves the old run whole.
    code, _, err = cli("train", "lenet5", "--train-limit", "128", "--epochs", "1", "--threads", "1", "--quiet",
                       "--out", run_dir, "--force", "--lr", "1e30")
    assert code == EXIT_USAGE and "Nothing was written" in err and "Traceback" not in err
    assert tree_digest(run_dir) == before
    code, _, err = cli("train", "lenet5", "--train-limit", "64", "--epochs", "1", "--threads", "1", "--quiet",
                       "--out", run_dir, "--force")
    assert code == 0, err
    import json

    assert json.loads((run_dir / "config.json").read_text())["train_limit"] == 64
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_failed_start_leaves_nothing_behind(cli, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli("train", "lenet5", "--train-limit", "128", "--epochs", "1", "--threads", "1", "--quiet",
                       "--out", out, "--lr", "1e30")
    assert code == EXIT_USAGE and "non-finite" in err and "Nothing was written" in err
    assert not out.exists()


# ---- summary and draw: sizes and builder arguments checked before anything is built for real -----

@pytest.mark.parametrize("command", ["summary", "draw"])
@pytest.mark.parametrize(("argv", "words"), [
    (["vgg16", "--input-size", "3", "1", "1"],
     ["--input-size 3 1 1", "the smallest input vgg16 takes is 3 x 32 x 32 (--input-size 3 32 32)"]),
    (["vgg16", "--input-size", "3", "100000", "100000"], ["at most 65,536 pixels a side"]),
    (["lenet5", "--input-size", "1", "28", "28"], ["lenet5 takes 32x32 images"]),
    (["resnet20", "--model-arg", "foo=1"], ["resnet20 has no argument 'foo'", "shortcut, width, zero_init_residual"]),
    (["resnet20", "--model-arg", "num_classes=0"], ["--model-arg num_classes"]),
    (["resnet20", "--model-arg", "shortcut=Z"], ["--model-arg shortcut='Z'", "shortcut must be 'A', 'B' or 'C'"]),
    (["resnet20", "--model-arg", "shortcut"], ["--model-arg 'shortcut'", "expected key=value"]),
    (["resnet2O"], ["unknown model 'resnet2O'"]),
])
def test_summary_and_draw_refuse_what_the_model_cannot_take(cli, tmp_path, command, argv, words):
    extra = ["-o", tmp_path / "net.svg"] if command == "draw" else []
    refused(cli(command, *argv, *extra), *words)
    assert not (tmp_path / "net.svg").exists()


def test_summary_of_a_large_input_allocates_nothing(cli):
    code, out, err = cli("summary", "vgg16", "--input-size", "3", "60000", "60000")
    assert code == 0, err
    assert "60000 x 60000 x 64" in out


def test_train_out_naming_a_file_is_refused_before_training(cli, tmp_path):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    refused(cli("train", "lenet5", "--data", tmp_path / "no-such-data", "--out", not_a_folder),
            f"{not_a_folder} is a file, not a folder", "--out DIR")
    assert not_a_folder.read_text() == "mine"
