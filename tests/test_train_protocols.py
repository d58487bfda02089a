"""Iteration-based protocols (He et al. 2015, section 4.2): stop at N iterations, divide the
learning rate at given iterations, a held-out validation split, and ResNet-110's warm-up that
lasts until the training error is below 80%."""

import json

import pytest

from classicnets.errors import ClassicNetsError
from classicnets.train.loop import ErrorWarmup, TrainConfig, train
from classicnets.train.recipes import recipe_for
from conftest import tiny_config


def _one_step_epochs(tmp_path, **overrides):
    # 64 images in batches of 64: one iteration per epoch, so each epoch's lr is one step's.
    values = dict(train_limit=64, batch_size=64, lr=0.1, schedule="step", augment="none")
    values.update(overrides)
    return train(tiny_config(tmp_path / "run", **values))


def test_iterations_set_the_epochs_and_milestones_are_iterations(tmp_path):
    r = _one_step_epochs(tmp_path, iterations=5, milestone_iterations=(2, 4))
    assert [h["step"] for h in r.history] == [1, 2, 3, 4, 5]
    assert [h["lr"] for h in r.history] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    config = json.loads((r.out_dir / "config.json").read_text())
    assert config["epochs"] == 5 and config["iterations"] == 5 and config["milestone_iterations"] == [2, 4]


def test_the_last_epoch_is_cut_short_at_the_iteration_count(tmp_path):
    # 512 images in batches of 64 = 8 iterations an epoch; 11 iterations = 2 epochs, the 2nd cut at 3.
    r = train(tiny_config(tmp_path / "run", batch_size=64, iterations=11))
    assert [h["step"] for h in r.history] == [8, 11]


@pytest.mark.slow
def test_holdout_is_the_last_images_evaluated_every_epoch_and_never_trained_on(tmp_path):
    r = train(tiny_config(tmp_path / "run", train_limit=None, holdout=500, epochs=1, batch_size=100))
    h = r.history[-1]
    assert "val_accuracy" in h and "test_accuracy" in h
    # The embedded digits have 7,000 training images: 6,500 remain, 65 iterations of 100.
    assert h["step"] == 65
    meta = json.loads((r.out_dir / "model.json").read_text())
    assert meta["config"]["holdout"] == 500


def test_holdout_larger_than_the_training_set_is_named(tmp_path):
    with pytest.raises(ClassicNetsError, match="--holdout 7000"):
        train(tiny_config(tmp_path / "run", holdout=7000))


def test_warmup_until_error_holds_the_warmup_lr_until_the_error_falls(tmp_path):
    # Never below 0.1% error on untrained digits: the warm-up lr holds for the whole run.
    held = _one_step_epochs(tmp_path / "a", iterations=3, warmup_until_error=0.001, warmup_lr=0.01)
    assert [h["lr"] for h in held.history] == pytest.approx([0.01] * 3)
    assert all("warmup_end_step" not in h for h in held.history)


def test_warmup_ends_once_the_window_error_is_below_the_threshold():
    w = ErrorWarmup(0.8, 0.01)
    import torch

    from classicnets.distributed import DistInfo

    solo = DistInfo()
    for step in range(1, ErrorWarmup.window):  # 90% error: still warming up
        w.update(torch.tensor(1), 10, step, solo)
    assert w.active
    w.update(torch.tensor(1), 10, ErrorWarmup.window, solo)
    assert w.active  # the window is full, but its error is 90%
    for step in range(ErrorWarmup.window + 1, 2 * ErrorWarmup.window + 1):  # 30% error
        w.update(torch.tensor(7), 10, step, solo)
        if not w.active:
            break
    # the window's error drops below 80% once enough 30% batches replace 90% ones: (90k + 30(20-k))/20 < 80
    assert not w.active and w.ended_at == ErrorWarmup.window + 4
    w2 = ErrorWarmup(0.8, 0.01)
    w2.restore([{"epoch": 1, "warmup_end_step": 24}])
    assert not w2.active and w2.ended_at == 24


def test_resnet110_recipe_warms_up_at_001_until_80_percent_error():
    r = recipe_for("resnet110")
    assert r["warmup_lr"] == 0.01 and r["warmup_until_error"] == 0.8 and r["lr"] == 0.1
    assert "warmup_until_error" not in recipe_for("resnet56")


def test_lenet5_has_its_own_fashion_mnist_budget():
    digits, fashion = recipe_for("lenet5", "digits"), recipe_for("lenet5", "fashion-mnist")
    assert digits == recipe_for("lenet5")
    assert (digits["epochs"], digits["batch_size"], digits["lr"]) == (15, 64, 0.03)
    assert (fashion["epochs"], fashion["batch_size"], fashion["lr"], fashion["augment"]) == (4, 128, 0.15, "none")
    assert fashion["label_smoothing"] == 0.1 and "label_smoothing" not in digits
    assert {k for k in fashion if fashion[k] != digits.get(k)} == {"epochs", "batch_size", "lr", "augment",
                                                                  "label_smoothing"}
    # Exact names: the 1998 network and a data folder keep their model's recipe.
    assert recipe_for("lenet5_1998", "fashion-mnist") == recipe_for("lenet5_1998")
    assert recipe_for("lenet5", None) == digits


def test_train_config_takes_the_dataset_recipe_and_the_user_wins():
    cfg = TrainConfig(model="lenet5", dataset="fashion-mnist").resolved()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.augment, cfg.label_smoothing) == (4, 128, 0.15, "none", 0.1)
    cfg = TrainConfig(model="lenet5", dataset="fashion-mnist", batch_size=64, epochs=15, label_smoothing=0.0).resolved()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.label_smoothing) == (15, 64, 0.15, 0.0)
    digits = TrainConfig(model="lenet5", dataset="digits").resolved()
    assert (digits.batch_size, digits.label_smoothing) == (64, 0.0)


def test_cli_label_smoothing_comes_from_the_recipe_unless_given():
    """``--label-smoothing`` left out takes the recipe's; given (even 0) it wins."""
    from classicnets.cli import build_parser
    from classicnets.train import config_from_args

    def cli_config(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert cli_config("lenet5", "--dataset", "fashion-mnist").resolved().label_smoothing == 0.1
    given = cli_config("lenet5", "--dataset", "fashion-mnist", "--label-smoothing", "0")
    assert given.resolved().label_smoothing == 0.0
    assert cli_config("lenet5").resolved().label_smoothing == 0.0


@pytest.mark.slow
def test_cli_takes_the_iteration_flags(tmp_path, cli):
    code, out, err = cli("train", "lenet5", "--train-limit", "64", "--batch-size", "32", "--iterations", "3",
                         "--milestone-iterations", "1", "2", "--holdout", "100", "--threads", "1", "--quiet",
                         "--out", str(tmp_path / "run"))
    assert code == 0, err
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 3 and "val_accuracy" in lines[-1]
