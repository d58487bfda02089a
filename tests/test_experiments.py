"""The case-study experiments, end to end in tiny settings: the files they write and their shape
(not their timings or numbers, which the quick protocols in docs/experiments/ report)."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json

import pytest

from classicnets import experiments
from classicnets.errors import ClassicNetsError
from classicnets.experiments.common import readme_section

PNG = b"\x89PNG\r\n\x1a\n"
KEYS = {"experiment", "title", "protocol", "settings", "seeds", "machine", "seconds", "results", "tables",
        "figures", "conclusion"}


def _fashion_available() -> bool:
    from classicnets.data.datasets import load_dataset

    try:
        load_dataset("fashion-mnist", "test")
    except Exception:
        return False
    return True


needs_fashion = pytest.mark.skipif(not _fashion_available(), reason="Fashion-MNIST is not installed")


def check_outputs(out, name: str) -> dict:
    doc = json.loads((out / "results.json").read_text())
    assert KEYS <= set(doc) and doc["experiment"] == name and doc["protocol"] == "quick"
    assert {"cpu", "cores", "torch"} <= set(doc["machine"]) and doc["seconds"] >= 0
    assert doc["figures"] and doc["tables"] and doc["conclusion"]
    for f in doc["figures"]:
        assert (out / f).read_bytes()[:8] == PNG
    report = (out / "report.md").read_text()
    for t in doc["tables"]:
        assert "| " + " | ".join(t["headers"]) + " |" in report
        assert all(len(row) == len(t["headers"]) for row in t["rows"])
    assert doc["conclusion"] in report and f"]({doc['figures'][0]})" in report
    return doc


def test_registry_lists_the_experiments():
    assert {"identity", "bottleneck", "transfer", "pooling"} <= set(experiments.list_experiments())
    with pytest.raises(ClassicNetsError, match="unknown experiment"):
        experiments.run_experiment("nope")


@pytest.mark.slow
def test_identity(tmp_path):
    doc = experiments.run_experiment("identity", out=tmp_path, deep="resnet32", steps=30, seeds=(0,))
    check_outputs(tmp_path, "identity")
    zero = doc["results"]["depth_comparison"]["zero_init_residual"]
    # gamma = 0 makes every extra block the identity: exactly equal outputs, stage by stage
    assert zero["layer1"] == zero["layer2"] == zero["layer3"] == zero["logits"] == 0.0
    assert doc["results"]["depth_comparison"]["default_init"]["logits"] > 0
    assert len(doc["results"]["identity_fit"]["curves"]["plain"][0]) == 3  # every 10th of 30 steps
    with pytest.raises(ClassicNetsError, match="'identity' has no paper protocol: it has quick"):
        experiments.run_experiment("identity", quick=False, out=tmp_path)
    with pytest.raises(ClassicNetsError, match="no cpu protocol"):
        experiments.run_experiment("identity", protocol="cpu", out=tmp_path)


@needs_fashion
def test_bottleneck(tmp_path):
    doc = experiments.run_experiment("bottleneck", out=tmp_path, train_limit=64, test_limit=64, epochs=1,
                                     reps=1, batch=2, seeds=(0, 1), width=0.25)
    check_outputs(tmp_path, "bottleneck")
    cost = doc["results"]["cost"]
    assert cost["direct_macs"] == 120_422_400 and cost["bottleneck_macs"] == [2_408_448, 10_035_200]
    nets = doc["results"]["nin_vs_plain"]
    assert set(nets) == {"nin", "plain (no 1x1)"} and all(0 <= v["test_accuracy"] <= 1 for v in nets.values())
    assert all(len(v["test_accuracies"]) == 2 and v["test_accuracy_sd"] >= 0 for v in nets.values())
    # width 0.25 scales NiN's 192 maps to 48 in every layer: the parameters of nin(width=0.25).
    from classicnets import create_model

    quarter = create_model("nin", num_classes=10, in_channels=1, width=0.25)
    assert nets["nin"]["params"] == sum(p.numel() for p in quarter.parameters())
    assert doc["settings"]["width"] == 0.25 and doc["seeds"] == [0, 1]


@needs_fashion
def test_transfer(tmp_path):
    doc = experiments.run_experiment("transfer", out=tmp_path, sizes=(64,), steps=2, seeds=(0,), digits_epochs=1)
    check_outputs(tmp_path, "transfer")
    assert set(doc["results"]["accuracy"]) == {"frozen features", "fine-tuned", "from scratch"}
    assert all(len(v["64"]) == 1 for v in doc["results"]["accuracy"].values())


@pytest.mark.parametrize("name", ["pooling", "transfer"])
def test_lenet_experiments_keep_one_recipe_on_fashion_mnist(name, tmp_path, monkeypatch):
    """Fashion-MNIST's own lenet5 budget (DATASET_RECIPES) must not leak into experiments that
    compare runs: they train with the model's recipe on every dataset."""
    from classicnets.train import loop
    from classicnets.train.loop import TrainConfig
    from classicnets.train.recipes import DATASET_RECIPES

    seen = []
    real_train = loop.train

    def spy(cfg):
        seen.append(cfg.resolved())
        # Train on 64 digits instead: only the settings asked for matter here.
        return real_train(dataclasses.replace(cfg, dataset="digits", train_limit=64, epochs=1, threads=1))

    monkeypatch.setattr(importlib.import_module(f"classicnets.experiments.{name}"), "train", spy)
    if name == "pooling":
        experiments.run_experiment(name, out=tmp_path, seeds=(0,), datasets={"fashion-mnist": {"train_limit": 64}},
                                   variants=("max + relu",))
    else:
        experiments.run_experiment(name, out=tmp_path, sizes=(64,), steps=2, seeds=(0,), digits_epochs=1)
    generic = TrainConfig(model="lenet5", dataset="digits").resolved()
    own = next(settings for model, data, settings in DATASET_RECIPES if (model, data) == ("lenet5", "fashion-mnist"))
    fashion = [c for c in seen if c.dataset == "fashion-mnist" and c.model == "lenet5"]
    assert fashion
    # Every setting the Fashion-MNIST recipe changes is the model's own (the transfer experiment
    # sets its epochs from its step budget).
    checked = set(own) - ({"epochs"} if name == "transfer" else set())
    assert {"batch_size", "lr", "augment", "label_smoothing"} <= checked
    for cfg in fashion:
        assert {k: getattr(cfg, k) for k in checked} == {k: getattr(generic, k) for k in checked}


@pytest.mark.slow
def test_pooling(tmp_path):
    doc = experiments.run_experiment("pooling", out=tmp_path, seeds=(0, 1),
                                     datasets={"digits": {"train_limit": 128, "epochs": 1}},
                                     variants=("avg + tanh", "max + relu", "lenet5_1998"))
    check_outputs(tmp_path, "pooling")
    assert set(doc["results"]["mean"]["digits"]) == {"avg + tanh", "max + relu", "lenet5_1998"}
    assert all(len(v) == 2 for v in doc["results"]["accuracy"]["digits"].values())
    section = readme_section(tmp_path.parent, names=[tmp_path.name])
    assert section.startswith("## Experiments")
    assert f"{tmp_path.parent.as_posix()}/{tmp_path.name}/pooling.png" in section


def test_cli_list_and_run(cli, tmp_path, monkeypatch):
    code, out, _ = cli("experiment", "--list")
    assert code == 0 and all(name in out for name in ("identity", "bottleneck", "transfer", "pooling"))
    fn, desc, paper = experiments._EXPERIMENTS["identity"]
    tiny = functools.partial(fn, deep="resnet32", steps=5, seeds=(0,))
    monkeypatch.setitem(experiments._EXPERIMENTS, "identity", (tiny, desc, paper))
    code, out, _ = cli("experiment", "identity", "--quick", "--out", tmp_path / "id")
    assert code == 0 and "wrote" in out
    check_outputs(tmp_path / "id", "identity")
    code, _, err = cli("experiment", "identity", "--protocol", "paper", "--out", tmp_path / "p")
    assert code == 2 and "'identity' has no paper protocol: it has quick" in err
