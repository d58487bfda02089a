"""The training loop: what a run writes, reproducibility, resuming, and stopping on a bad loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from classicnets import checkpoint as ckpt
from classicnets.errors import CheckpointError, TrainingError
from classicnets.models.registry import BUILDERS, CARDS, register_model
from classicnets.train.loop import train
from conftest import temp_files, tiny_config

RUN_FILES = {"model.safetensors", "model.json", "train_state.safetensors", "metrics.jsonl", "curves.png",
             "config.json"}
TIMING_KEYS = {"epoch_seconds", "images_per_second"}  # the only metrics allowed to differ between runs


def weights(run: Path, name: str = ckpt.MODEL_FILE) -> dict[str, torch.Tensor]:
    return load_file(str(run / name))


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def saved_epoch(run: Path) -> int:
    with safe_open(str(run / ckpt.STATE_FILE), framework="pt") as f:
        return json.loads(f.metadata()[ckpt.META_KEY])["epoch"]


# ---- a run and its files ------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory):
    """Two 2-epoch runs with seed 0 and one with seed 1."""
    root = tmp_path_factory.mktemp("seeds")
    results = {name: train(tiny_config(root / name, epochs=2, seed=seed))
               for name, seed in [("a", 0), ("b", 0), ("other", 1)]}
    return root, results


def test_run_writes_every_file_and_one_metrics_line_per_epoch(seed_runs):
    root, results = seed_runs
    run = root / "a"
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert [h["epoch"] for h in metrics(run)] == [1, 2]
    assert metrics(run) == results["a"].history
    history = results["a"].history
    assert all(0.0 <= h["test_accuracy"] <= 1.0 and h["train_loss"] > 0 for h in history)
    assert results["a"].test_accuracy == history[-1]["test_accuracy"]
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "lenet5" and config["epochs"] == 2 and config["train_limit"] == 512
    assert config["batch_size"] == 64  # filled in from the recipe
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"] == "lenet5" and meta["epoch"] == 2 and meta["classes"] == [str(i) for i in range(10)]
    assert meta["input_size"] == [1, 32, 32] and meta["data_size"] == [28, 28]
    assert saved_epoch(run) == 2


def test_returned_model_is_the_saved_one(seed_runs):
    root, results = seed_runs
    model = results["a"].model
    assert not model.training
    assert_bit_identical({k: v.cpu() for k, v in model.state_dict().items()}, weights(root / "a"))


def test_same_seed_gives_bit_identical_weights_and_metrics(seed_runs):
    root, results = seed_runs
    assert_bit_identical(weights(root / "a"), weights(root / "b"))
    assert_bit_identical(weights(root / "a", ckpt.STATE_FILE), weights(root / "b", ckpt.STATE_FILE))
    assert without_timings(metrics(root / "a")) == without_timings(metrics(root / "b"))


def test_other_seed_gives_other_weights(seed_runs):
    root, _ = seed_runs
    a, other = weights(root / "a"), weights(root / "other")
    assert not any(torch.equal(a[k], other[k]) for k in a)


# ---- resuming -------------------------------------------------------------------------------

RESUME = dict(epochs=3, batch_size=32)  # 16 steps an epoch: room for the kill to land mid-run


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    train(tiny_config(out, **RESUME))
    return out


def interrupt_after_first_epoch(monkeypatch):
    """Make the next run stop (as Ctrl-C would) right after its first epoch is saved."""
    save = ckpt.save_epoch

    def save_then_stop(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_epoch", save_then_stop)


def assert_same_run(resumed: Path, reference: Path) -> None:
    assert_bit_identical(weights(resumed), weights(reference))
    assert_bit_identical(weights(resumed, ckpt.STATE_FILE), weights(reference, ckpt.STATE_FILE))
    assert [h["epoch"] for h in metrics(resumed)] == [1, 2, 3]
    assert without_timings(metrics(resumed)) == without_timings(metrics(reference))


@pytest.mark.slow
def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path, monkeypatch, uninterrupted):
    interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path, **RESUME))
    monkeypatch.undo()
    assert saved_epoch(tmp_path) == 1 and [h["epoch"] for h in metrics(tmp_path)] == [1]

    result = train(tiny_config(tmp_path, resume=True, **RESUME))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert_same_run(tmp_path, uninterrupted)
    assert not temp_files(tmp_path)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, cli, uninterrupted):
    """Kill -9 the command line mid-run, then ``--resume``: nothing lost, nothing repeated."""
    out = tmp_path / "run"
    argv = ["train", "lenet5", "--epochs", "3", "--batch-size", "32", "--train-limit", "512", "--threads", "1",
            "--quiet", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "classicnets", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if saved_epoch(out) >= 1:
                    break
            except Exception:  # not written yet
                pass
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err}"
    killed_at = saved_epoch(out)
    assert killed_at in (1, 2)
    # The training state is written first; the kill may land before metrics.jsonl catches up.
    written = len(metrics(out)) if (out / "metrics.jsonl").exists() else 0
    assert written in (killed_at - 1, killed_at)

    code, _, err = cli(*argv, "--resume")
    assert code == 0, err
    assert_same_run(out, uninterrupted)


# A cheap model with dropout, so resuming must restore the random number generator: without
# it, epoch 2 draws other dropout masks and the weights come out different.
@pytest.fixture
def tiny_dropout_model():
    name = "tiny_dropout_net"

    def tiny_dropout_net(num_classes=10, in_channels=1):
        return nn.Sequential(nn.Conv2d(in_channels, 4, 5, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Dropout(0.5), nn.Linear(4 * 7 * 7, num_classes))

    tiny_dropout_net.__name__ = name
    register_model(family="test", paper="-", reference="-", input_size=(1, 32, 32), num_classes=10,
                   params=0, macs=None, introduced="-")(tiny_dropout_net)
    yield name
    del BUILDERS[name], CARDS[name]


def test_resume_restores_rng_for_dropout_and_adamw_state(tmp_path, monkeypatch, tiny_dropout_model):
    config = dict(model=tiny_dropout_model, optimizer="adamw", lr=1e-3, schedule="cosine", augment="crop:2",
                  **RESUME)
    train(tiny_config(tmp_path / "reference", **config))

    interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "resumed", **config))
    monkeypatch.undo()
    torch.manual_seed(12345)  # whatever the process did in between must not matter
    torch.rand(100)
    train(tiny_config(tmp_path / "resumed", resume=True, **config))
    assert_same_run(tmp_path / "resumed", tmp_path / "reference")


# ---- a loss that stops being finite -------------------------------------------------------

def test_non_finite_loss_stops_with_last_good_checkpoint_intact(run_dir):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != "config.json"}
    with pytest.raises(TrainingError, match=r"non-finite.*epoch 2") as info:
        # Continue the one-epoch run with a learning rate that blows up within a few steps.
        train(tiny_config(run_dir, epochs=2, lr=1e6, resume=True))
    message = str(info.value)
    assert str(run_dir) in message and "--lr" in message
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != "config.json"}
    assert after == before  # epoch 1's files, byte for byte; no new or temporary files
    assert saved_epoch(run_dir) == 1


def test_non_finite_loss_in_first_epoch_leaves_no_checkpoint(tmp_path, monkeypatch):
    real_forward = nn.Linear.forward
    calls = {"n": 0}

    def forward(self, x):  # LeNet-5 has 3 linear layers: NaN from the third training step on
        calls["n"] += 1
        y = real_forward(self, x)
        return y * float("nan") if calls["n"] > 2 * 3 else y

    monkeypatch.setattr(nn.Linear, "forward", forward)
    # Checked every 25 steps and at the end of the epoch (8 steps here): caught within epoch 1.
    with pytest.raises(TrainingError, match=r"non-finite.*epoch 1, step 8.*Nothing was written"):
        train(tiny_config(tmp_path))
    assert list(tmp_path.iterdir()) == []  # a failed start leaves nothing behind, not even config.json
    assert not os.path.exists(tmp_path / ckpt.STATE_FILE)


def test_update_that_makes_weights_non_finite_is_not_saved(tmp_path, monkeypatch):
    """The last step of an epoch can turn the weights to inf/NaN while its own loss was finite:
    that epoch must not become the 'last good checkpoint'."""
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8:  # the last of the 8 steps of the epoch
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(TrainingError, match="non-finite"):
        train(tiny_config(tmp_path))
    assert not (tmp_path / ckpt.MODEL_FILE).exists()


def test_train_puts_process_settings_back(tmp_path):
    torch.use_deterministic_algorithms(False)
    threads = torch.get_num_threads()
    train(tiny_config(tmp_path, train_limit=64, threads=1 if threads > 1 else 2))
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory  # torch's default, put back


def test_deterministic_training_does_not_fill_new_tensors_with_nan(tmp_path, monkeypatch):
    """Deterministic mode keeps its algorithms but drops the NaN fill of every new tensor (a
    debugging aid that cost ResNet-20 about 6% of its step)."""
    seen = []
    real = torch.nn.functional.cross_entropy

    def spy(*args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    train(tiny_config(tmp_path, train_limit=64, epochs=1))
    assert seen and all(s == (True, False) for s in seen)


def test_resume_takes_unset_settings_from_the_run_not_from_the_recipe(tmp_path):
    """A run started with settings the recipe no longer has (a recipe changes, or the user set
    them) resumes with those settings when they are not given again."""
    train(tiny_config(tmp_path, batch_size=32, lr=0.01, augment="none", epochs=1))
    result = train(tiny_config(tmp_path, resume=True, epochs=2))
    assert [h["epoch"] for h in result.history] == [1, 2]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (saved["batch_size"], saved["lr"], saved["augment"], saved["epochs"]) == (32, 0.01, "none", 2)
    assert result.history[1]["step"] == 2 * 512 // 32


def test_resume_refuses_settings_that_would_make_it_another_run(run_dir):
    for change in (dict(batch_size=32), dict(train_limit=256), dict(seed=7)):
        with pytest.raises(CheckpointError, match="other settings") as info:
            train(tiny_config(run_dir, resume=True, **change))
        assert f"--{next(iter(change)).replace('_', '-')}" in str(info.value)
    with pytest.raises(CheckpointError, match="holds a 'lenet5' run"):
        train(tiny_config(run_dir, resume=True, model="lenet5_1998"))


def test_stale_temporary_files_of_a_killed_write_are_removed(run_dir):
    stale = run_dir / ".model.safetensors.tmp-12345"
    stale.write_bytes(b"half a file")
    train(tiny_config(run_dir, epochs=2, force=True))
    assert not stale.exists()


# ---- the options of a run -------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    dict(precision="bf16"),  # bf16 autocast on the CPU
    dict(precision="bf16", model="lenet5_1998"),  # its RBF distances (hundreds) stay float32 under autocast
    dict(optimizer="adamw", lr=1e-3, schedule="cosine", warmup_epochs=0.5, label_smoothing=0.1, grad_clip=1.0),
    dict(schedule="step", milestones=(0.5,), channels_last=False, augment="crop+flip"),
])
@pytest.mark.slow
def test_training_options_run_and_learn(tmp_path, options):
    result = train(tiny_config(tmp_path, epochs=2, train_limit=2048, **options))
    assert result.history[-1]["test_accuracy"] > 0.3  # 64 steps on 2,048 digits: well above chance (0.1)
    config = json.loads((tmp_path / "config.json").read_text())
    for key, value in options.items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value)


def test_unknown_optimizer_and_augment_are_named(tmp_path):
    from classicnets.errors import ClassicNetsError

    with pytest.raises(ClassicNetsError, match="--optimizer 'lbfgs'"):
        train(tiny_config(tmp_path, optimizer="lbfgs"))
    with pytest.raises(ClassicNetsError, match="--augment 'rotate'"):
        train(tiny_config(tmp_path, augment="rotate"))
