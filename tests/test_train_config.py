"""``TrainConfig`` is the ``classicnets train`` command line: one flag per field, built from the
field itself, and every flag comes back as the field's value."""

from __future__ import annotations

import dataclasses

import pytest

from classicnets.cli import build_parser
from classicnets.train import TrainConfig, config_from_args

# A value other than the default for every field: (argv after `train`, expected field value).
EXAMPLES = {
    "model": (["resnet20"], "resnet20"),
    "dataset": (["--dataset", "fashion-mnist"], "fashion-mnist"),
    "data_dir": (["--data", "some/dir"], "some/dir"),
    "epochs": (["--epochs", "3"], 3),
    "batch_size": (["--batch-size", "32"], 32),
    "lr": (["--lr", "0.2"], 0.2),
    "optimizer": (["--optimizer", "adamw"], "adamw"),
    "momentum": (["--momentum", "0"], 0.0),
    "nesterov": (["--no-nesterov"], False),
    "weight_decay": (["--weight-decay", "1e-4"], 1e-4),
    "schedule": (["--schedule", "cosine"], "cosine"),
    "milestones": (["--milestones", "0.5", "0.75"], (0.5, 0.75)),
    "milestone_iterations": (["--milestone-iterations", "32000", "48000"], (32000, 48000)),
    "iterations": (["--iterations", "64000"], 64000),
    "warmup_epochs": (["--warmup-epochs", "0.5"], 0.5),
    "warmup_lr": (["--warmup-lr", "0.01"], 0.01),
    "warmup_until_error": (["--warmup-until-error", "0.8"], 0.8),
    "label_smoothing": (["--label-smoothing", "0"], 0.0),
    "grad_clip": (["--grad-clip", "5"], 5.0),
    "augment": (["--augment", "crop+flip"], "crop+flip"),
    "precision": (["--precision", "bf16"], "bf16"),
    "channels_last": (["--no-channels-last"], False),
    "compile": (["--compile"], True),
    "device": (["--device", "cpu"], "cpu"),
    "threads": (["--threads", "1"], 1),
    "seed": (["--seed", "7"], 7),
    "deterministic": (["--nondeterministic"], False),
    "input_size": (["--input-size", "28", "30"], (28, 30)),
    "train_limit": (["--train-limit", "512"], 512),
    "test_limit": (["--test-limit", "500"], 500),
    "holdout": (["--holdout", "100"], 100),
    "model_kwargs": (["--model-arg", "shortcut=B", "--model-arg", "width=2"], {"shortcut": "B", "width": 2}),
    "freeze_features": (["--freeze-features"], True),
    "init_from": (["--init-from", "runs/x"], "runs/x"),
    "out": (["--out", "runs/y"], "runs/y"),
    "resume": (["--resume"], True),
    "force": (["--force"], True),
    "quiet": (["--quiet"], True),
    "eval_every": (["--eval-every", "5"], 5),
}


def parse(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_every_field_has_an_example():
    assert set(EXAMPLES) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_no_flags_is_the_default_config():
    assert parse("lenet5") == TrainConfig(model="lenet5")


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_flag_sets_its_field_and_nothing_else(name):
    argv, expected = EXAMPLES[name]
    cfg = parse(*argv) if name == "model" else parse("lenet5", *argv)
    assert getattr(cfg, name) == expected
    changed = {f.name for f in dataclasses.fields(TrainConfig)
               if getattr(cfg, f.name) != getattr(TrainConfig(model="lenet5"), f.name)}
    assert changed == {name}


def test_a_data_directory_alone_names_no_dataset_from_the_flags_or_the_api():
    """``--data DIR`` alone, or ``TrainConfig(data_dir=DIR)``: the folder says what it holds. The
    Python form once kept its default dataset, the embedded digits, and trained on them instead."""
    assert parse("lenet5", "--data", "some/dir").resolved().dataset is None
    assert TrainConfig(model="lenet5", data_dir="some/dir").resolved().dataset is None
    assert TrainConfig(model="lenet5").resolved().dataset == "digits"


def test_every_field_documents_its_flag():
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    helps = {action.dest: action.help for action in train._actions if action.dest != "help"}
    assert set(helps) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert all(helps.values()), [name for name, text in helps.items() if not text]


def test_a_bad_value_names_its_flag(cli):
    code, _, err = cli("train", "lenet5", "--epochs", "0")
    assert code == 2 and "--epochs" in err and "positive integer" in err
