"""The degradation experiment: a tiny quick run, and the paper protocol's plumbing (CIFAR-10
reader, 45k/5k split, per-channel normalisation, schedule by iterations) in a 2-iteration dry run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from classicnets import experiments
from classicnets.data.imageset import channel_stats
from classicnets.errors import ClassicNetsError
from test_experiments import check_outputs


@pytest.mark.slow
def test_quick_protocol_in_a_tiny_setting(tmp_path):
    doc = experiments.run_experiment("degradation", out=tmp_path, dataset="digits", train_limit=128, epochs=2,
                                     depths=(20, 32), width=2, verbose=False)
    check_outputs(tmp_path, "degradation")
    assert set(doc["results"]["final"]) == {"plain20", "resnet20", "plain32", "resnet32"}
    # Plain and residual nets of a depth have the same parameters (option A shortcuts are free).
    params = doc["results"]["parameters"]
    assert params["plain20"] == params["resnet20"] < params["plain32"] == params["resnet32"]
    assert all(len(run) == 2 for runs in doc["results"]["curves"].values() for run in runs)
    assert doc["settings"]["width"] == 2 and doc["results"]["images"]["train"] == 128
    assert "Plain-32 ended at" in doc["conclusion"] and "ResNet-32 ended at" in doc["conclusion"]


def test_unknown_setting_is_named(tmp_path):
    with pytest.raises(ClassicNetsError, match="unknown setting.*depth\\b"):
        experiments.run_experiment("degradation", out=tmp_path, depth=20)


def _fake_cifar10(root, n_train=50_000, n_test=500):
    """CIFAR-10's python batches at full training size (5 x 10,000 random images)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in names]}, protocol=2))
    rng = np.random.default_rng(0)
    per = n_train // 5
    for i, (name, n) in enumerate([*[(f"data_batch_{k}", per) for k in range(1, 6)], ("test_batch", n_test)]):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, :1024] //= 2  # a red channel unlike the others, so per-channel statistics differ
        (d / name).write_bytes(pickle.dumps({b"batch_label": name.encode(), b"data": data,
                                             b"labels": [(i + j) % 10 for j in range(n)],
                                             b"filenames": [b"x.png"] * n}, protocol=2))
    return d


@pytest.mark.slow
def test_paper_protocol_dry_run_two_iterations(tmp_path):
    data = _fake_cifar10(tmp_path / "data")
    runs = tmp_path / "runs"
    doc = experiments.run_experiment("degradation", quick=False, out=tmp_path / "out", data_dir=str(data),
                                     runs_dir=runs, iterations=2, depths=(20,), verbose=False)
    s = doc["settings"]
    assert doc["protocol"] == "paper" and s["dataset"] == "cifar10"
    # Section 4.2: 45k/5k split, lr /10 at 32k and 48k iterations (here stopped after 2).
    assert doc["results"]["images"] == {"train": 45_000, "validation": 5_000, "test": 500}
    assert s["holdout"] == 5_000 and s["milestone_iterations"] == [32_000, 48_000] and s["iterations"] == 2
    for name in ("plain20", "resnet20"):
        (run,) = doc["results"]["curves"][name]
        assert run[-1]["step"] == 2 and run[-1]["lr"] == 0.1
        assert {"train_accuracy", "val_accuracy", "test_accuracy"} <= set(run[-1])
        meta = json.loads((runs / f"{name}-s0" / "model.json").read_text())
        config = meta["config"]
        assert (config["batch_size"], config["lr"], config["momentum"], config["weight_decay"]) == (128, 0.1, 0.9, 1e-4)
        assert config["augment"] == "crop+flip" and config["model_kwargs"] == {}
        # Per-channel mean/std of the 45k images trained on, not of all 50k.
        from classicnets.data.cifar import load_cifar10

        train = load_cifar10(data, "train")
        mean, std = channel_stats(train.images[:45_000])
        assert meta["mean"] == pytest.approx(list(mean)) and meta["std"] == pytest.approx(list(std))
        assert meta["mean"][0] < meta["mean"][1]
    assert "Only depth 20" in doc["conclusion"]


@pytest.mark.slow
def test_cli_passes_data_and_settings(cli, tmp_path, monkeypatch):
    seen = {}
    experiments.list_experiments()  # loads the registry
    fn, desc, paper = experiments._EXPERIMENTS["degradation"]

    def spy(**kw):
        seen.update(kw)
        return fn(**kw)

    monkeypatch.setitem(experiments._EXPERIMENTS, "degradation", (spy, desc, paper))
    code, out, err = cli("experiment", "degradation", "--out", tmp_path / "d", "--set", "dataset=digits",
                         "--set", "train_limit=64", "--set", "epochs=1", "--set", "depths=[20]", "--set", "width=2",
                         "--set", "verbose=false")
    assert code == 0, err
    assert seen["depths"] == (20,) and seen["width"] == 2 and seen["verbose"] is False
    assert seen["protocol"] == "quick"  # no flag: the quick protocol
    code, _, err = cli("experiment", "pooling", "--set", "depths=[20]", "--out", tmp_path / "p")
    assert code != 0 and "has no setting depths" in err and "seeds" in err
    code, _, err = cli("experiment", "degradation", "--set", "depths", "--out", tmp_path / "x")
    assert code != 0 and "--set 'depths': expected key=value" in err
