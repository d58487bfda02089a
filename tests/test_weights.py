"""Trained weights in the box: each file matches its card, scores what its card says, and its name
works wherever a checkpoint path does."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import classicnets
from classicnets import checkpoint as ckpt
from classicnets.data import load_dataset
from classicnets.errors import DataFormatError
from classicnets.weights import FOLDER, UnknownWeightsError, list_weights, weights_card, weights_file

ROOT = Path(__file__).resolve().parents[1]


def script():
    spec = importlib.util.spec_from_file_location("train_weights", ROOT / "scripts" / "train_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHIPPED = {"lenet5-digits", "lenet5_1998-digits", "lenet5-fashion", "resnet20-fashion"}


def test_every_shipped_weights_comes_from_the_script_with_its_card():
    assert SHIPPED <= set(list_weights()) <= set(script().WEIGHTS)
    assert all((FOLDER / f"{name}.json").is_file() for name in list_weights())


@pytest.mark.parametrize("name", list_weights())
def test_file_matches_its_card(name):
    card = weights_card(name)
    data = weights_file(name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["sha256"] and len(data) == card["bytes"]
    assert card["command"] == " ".join(script().command(name))
    for key in ("dataset", "test_accuracy", "train_seconds", "machine", "torch", "epochs"):
        assert card[key] not in (None, ""), key
    assert {"cpu", "cpu_capability", "torch_threads"} <= set(card["machine"])
    _, meta = ckpt.read_checkpoint(name)
    assert meta["data_dir"] is None and meta["config"]["out"] is None  # no path of the machine it came from
    assert (meta["model"], meta["dataset"]) == (card["model"], card["dataset"])


@pytest.mark.parametrize("name", list_weights())
def test_accuracy_is_what_the_card_says(name):
    """Evaluated here on the test split it was trained for: the embedded digits, or Fashion-MNIST
    where it is installed (Debian's dataset-fashion-mnist)."""
    card = weights_card(name)
    try:
        load_dataset(card["dataset"], "test", download=False)
    except DataFormatError:
        pytest.skip(f"{card['dataset']} is not installed here")
    result = classicnets.evaluate.evaluate_checkpoint(name, device="cpu", figure=False)
    assert result["count"] == 10_000 if card["dataset"] == "fashion-mnist" else 1_000
    assert result["accuracy"] == pytest.approx(card["test_accuracy"], abs=1e-9)


def test_the_promised_accuracies():
    cards = {name: weights_card(name) for name in list_weights()}
    assert cards["lenet5-digits"]["test_accuracy"] >= 0.98
    assert cards["lenet5_1998-digits"]["test_accuracy"] >= 0.97
    assert cards["lenet5-fashion"]["test_accuracy"] >= 0.90
    if "resnet20-fashion" in cards:
        assert cards["resnet20-fashion"]["test_accuracy"] >= 0.93  # Zalando's benchmark: ResNet-18 94.9%


def test_the_package_stays_small():
    """The wheel holds src/classicnets: everything in it, weights included, under 10 MB."""
    total = sum(p.stat().st_size for p in (ROOT / "src" / "classicnets").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts)
    assert total < 10_000_000, total


def test_load_a_name_and_predict(tmp_path):
    predictor = classicnets.load("lenet5-digits")
    digits = load_dataset("digits", "test")
    assert (predictor.predict(digits.images[:200]) == digits.labels[:200]).float().mean() >= 0.97


def test_create_model_with_weights():
    model = classicnets.create_model("lenet5", weights="digits")
    same = classicnets.create_model("lenet5", weights="lenet5-digits")
    reference, _ = ckpt.read_checkpoint("lenet5-digits")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]) and torch.equal(tensor, same.state_dict()[name])
    with pytest.raises(UnknownWeightsError, match="lenet5 has weights 'digits', 'fashion'"):
        classicnets.create_model("lenet5", weights="cifar")
    with pytest.raises(ValueError, match="num_classes=3 .they have 10."):
        classicnets.create_model("lenet5", num_classes=3, weights="digits")


def test_an_unknown_name_lists_the_weights(cli):
    code, _, err = cli("predict", "lenet5-digts", ROOT / "docs" / "figures" / "lenet5-filters.png")
    assert code == 2 and "'lenet5-digts' is neither an existing checkpoint path nor shipped weights" in err
    assert all(name in err for name in list_weights()) and "Traceback" not in err


def test_an_existing_path_wins_over_a_name(trained_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet5-digits").symlink_to(trained_run, target_is_directory=True)
    assert ckpt.resolve("lenet5-digits") == Path("lenet5-digits") / ckpt.MODEL_FILE
    assert ckpt.home("lenet5-digits") == Path("lenet5-digits")


def test_every_command_takes_a_name(cli, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # outputs about shipped weights go to ./NAME/, never into the package
    digits = load_dataset("digits", "test")
    Image.fromarray(digits.images[0, 0].numpy()).save(tmp_path / "digit.png")
    before = {p.name: p.stat().st_mtime_ns for p in FOLDER.iterdir()}

    code, out, err = cli("predict", "lenet5-digits", tmp_path / "digit.png", "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["class"] == str(int(digits.labels[0]))
    code, out, err = cli("evaluate", "lenet5-digits", "--format", "json")
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx(weights_card("lenet5-digits")["test_accuracy"])
    assert (tmp_path / "lenet5-digits" / "confusion.png").is_file()
    code, out, err = cli("show", "lenet5-digits", tmp_path / "digit.png")
    assert code == 0 and (tmp_path / "lenet5-digits" / "lenet5-filters.png").is_file(), err
    code, out, err = cli("export", "lenet5-digits", "--format", "torchscript")
    assert code == 0 and (tmp_path / "lenet5-digits" / "lenet5-digits.torchscript.pt").is_file(), err
    code, out, err = cli("train", "lenet5", "--init-from", "lenet5-digits", "--train-limit", "64", "--epochs", "1",
                         "--threads", "1", "--quiet", "--out", tmp_path / "transfer")
    assert code == 0, err
    assert {p.name: p.stat().st_mtime_ns for p in FOLDER.iterdir()} == before


def test_weights_command_lists_them(cli):
    code, out, _ = cli("weights")
    assert code == 0 and all(name in out for name in list_weights())
    code, out, _ = cli("weights", "--format", "json")
    assert [card["name"] for card in json.loads(out)] == list_weights()
