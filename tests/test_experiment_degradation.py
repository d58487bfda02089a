"""The degradation experiment: a tiny quick run (two seeds, the final un-augmented training pass,
the gradient flow), the cpu protocol's settings with training stubbed out, and the paper
protocol's plumbing (CIFAR-10 reader, 45k/5k split, per-channel normalisation, schedule by
iterations) in a 2-iteration dry run."""

from __future__ import annotations

import copy
import json
import math
import pickle

import numpy as np
import pytest
import torch

from classicnets import create_model, experiments
from classicnets.data.imageset import channel_stats
from classicnets.errors import ClassicNetsError
from classicnets.experiments import degradation
from classicnets.experiments.common import default_workers
from classicnets.experiments.gradient_flow import conv_gradient_norms, watch_steps
from test_experiments import PNG, check_outputs, needs_fashion


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny quick run, shared: 4 nets x 2 seeds, 1 step each, the gradient flow after it."""
    root = tmp_path_factory.mktemp("degradation")
    doc = experiments.run_experiment("degradation", out=root / "out", runs_dir=root / "runs", dataset="digits",
                                     train_limit=128, epochs=1, depths=(20, 32), width=2, seeds=(0, 1),
                                     gradient_steps=1, threads=1, verbose=False)
    return root, doc


@pytest.mark.slow
def test_quick_protocol_in_a_tiny_setting(tiny):
    root, doc = tiny
    check_outputs(root / "out", "degradation")
    assert set(doc["results"]["final"]) == {"plain20", "resnet20", "plain32", "resnet32"}
    # Plain and residual nets of a depth have the same parameters (option A shortcuts are free).
    params = doc["results"]["parameters"]
    assert params["plain20"] == params["resnet20"] < params["plain32"] == params["resnet32"]
    # Curves per seed, one point an epoch, against iterations (128 images in batches of 32: 4 steps).
    assert all(len(runs) == 2 and [h["step"] for h in run] == [4]
               for runs in doc["results"]["curves"].values() for run in runs)
    assert doc["settings"]["width"] == 2 and doc["results"]["images"]["train"] == 128
    assert "Plain-32 ended at" in doc["conclusion"] and "ResNet-32 ended at" in doc["conclusion"]
    assert doc["figures"] == ["degradation.png", "gradient_flow.png"]


@pytest.mark.slow
def test_each_seed_and_the_final_training_pass_are_reported(tiny):
    root, doc = tiny
    results = doc["results"]
    for name, rows in results["per_seed"].items():
        assert [r["seed"] for r in rows] == [0, 1]
        for row, run in zip(rows, results["curves"][name], strict=True):
            # The running error is the trainer's (augmented batches); train_error is the final pass.
            assert row["running_train_error"] == pytest.approx(1 - run[-1]["train_accuracy"])
            assert row["test_error"] == pytest.approx(1 - run[-1]["test_accuracy"])
            assert 0 <= row["train_error"] <= 1 and (row["train_error"] * 128) == pytest.approx(
                round(row["train_error"] * 128))
        final = results["final"][name]
        for key in ("train_error", "running_train_error", "test_error"):
            assert final[key] == pytest.approx(sum(r[key] for r in rows) / 2)
    # train_error is what the saved net gets on the 128 un-augmented training images, in eval mode.
    from classicnets.checkpoint import build_from_checkpoint
    from classicnets.data.datasets import load_dataset
    from classicnets.data.pipeline import make_loader
    from classicnets.data.sources import head
    from classicnets.device import autocast_dtype
    from classicnets.evaluate import evaluate_model

    model, meta = build_from_checkpoint(root / "runs" / "resnet32-s1")
    loader = make_loader(head(load_dataset("digits", "train"), 128), 256, mean=meta["mean"], std=meta["std"],
                         size=(32, 32))
    # at the precision the run evaluated in ("auto": bf16 on a CPU with native bf16, else fp32)
    amp = autocast_dtype(doc["settings"]["precision"], torch.device("cpu"), "resnet32")
    ev = evaluate_model(model, loader, 10, amp_dtype=amp)
    assert results["per_seed"]["resnet32"][1]["train_error"] == pytest.approx(1 - ev["accuracy"])
    table = doc["tables"][0]
    assert "by seed" in table["headers"] and "running training error (%)" in table["headers"]
    assert "un-augmented" in table["caption"] and "augmented batches" in table["caption"]
    assert "By seed:" in doc["conclusion"] and "seed 1" in doc["conclusion"]


@pytest.mark.slow
def test_runs_side_by_side_match_runs_one_after_another(tiny, tmp_path):
    """The tiny run trained its nets two at a time in worker processes (default on 2 or more cores,
    one thread each); the same nets trained here, in this process, end with the same numbers."""
    root, doc = tiny
    assert doc["settings"]["workers"] == default_workers(1, 8) and doc["settings"]["threads"] == 1
    alone = experiments.run_experiment("degradation", out=tmp_path / "out", dataset="digits", train_limit=128,
                                       epochs=1, depths=(20,), width=2, seeds=(0,), gradient_steps=0, threads=1,
                                       workers=1, verbose=False)
    assert alone["settings"]["workers"] == 1
    for name in ("plain20", "resnet20"):
        ours, theirs = alone["results"]["per_seed"][name][0], doc["results"]["per_seed"][name][0]
        for key in ("train_error", "running_train_error", "test_error"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-9), (name, key)


@pytest.mark.slow
def test_gradient_flow_of_the_deepest_nets(tiny):
    root, doc = tiny
    flow = doc["results"]["gradient_flow"]
    assert set(flow) == {"plain32", "resnet32"}  # no depth 56 here: the deepest
    for f in flow.values():
        assert f["steps"] == 1
        for when in ("init", "after"):
            # One value per conv layer: 6n+2 layers are 6n+1 convs and the fc layer.
            assert len(f[when]) == 31 and all(math.isfinite(v) and v > 0 for v in f[when])
        assert f["init"] != f["after"]  # the step moved the weights
    assert (root / "out" / "gradient_flow.png").read_bytes()[:8] == PNG
    assert doc["tables"][1]["caption"].startswith("gradient flow (gradient_flow.png)")
    assert "Gradient flow" in doc["conclusion"] and "section 4.1" in doc["conclusion"]


def test_conv_gradient_norms_in_depth_order_and_leaves_the_net_alone():
    torch.manual_seed(0)
    net = create_model("plain20", num_classes=10, in_channels=1, width=2).eval()
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    ref = copy.deepcopy(net).train()
    torch.nn.functional.cross_entropy(ref(x), y).backward()
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    norms = conv_gradient_norms(net, x, y)
    assert len(norms) == 19 and all(math.isfinite(v) and v > 0 for v in norms)
    # Input to output, in train mode: the stem conv's first, the last block's second conv's last.
    assert norms[0] == pytest.approx(float(ref.conv1.weight.grad.norm()), rel=1e-5)
    assert norms[-1] == pytest.approx(float(ref.layer3[-1].conv2.weight.grad.norm()), rel=1e-5)
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())


def test_watch_steps_copies_the_weights_before_the_first_step_and_after_the_nth():
    lin = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in lin.parameters()]
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    seen = []
    with watch_steps(2) as snap:
        for _ in range(3):
            opt.zero_grad()
            lin(torch.ones(4, 3)).sum().backward()
            opt.step()
            seen.append([p.detach().clone() for p in lin.parameters()])
    opt.step()  # the hooks are gone: nothing changes
    assert snap.steps == 2
    assert all(torch.equal(a, b) for a, b in zip(snap.init, start, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(snap.after, seen[1], strict=True))


@needs_fashion
@pytest.mark.slow
def test_cpu_protocol_settings_dry_run(tmp_path, monkeypatch):
    """The cpu protocol's 18 runs as they would be trained (each config recorded, one optimiser
    step on a fresh net instead of training), through the final pass, gradient flow, table and figures."""
    from classicnets.train.loop import TrainResult

    configs = []

    def fake_train(cfg):
        configs.append(cfg)
        model = create_model(cfg.model, num_classes=10, in_channels=1, **cfg.model_kwargs)
        torch.optim.SGD(model.parameters(), lr=0.1).step()  # no gradients: the weights stay, the hooks fire
        history = [{"epoch": 5, "step": 200, "lr": 0.001, "train_accuracy": 0.5, "test_accuracy": 0.5}]
        return TrainResult(tmp_path, history, 0.5, 1.0, model.eval(), {"train": 5000, "test": 10000})

    monkeypatch.setattr(degradation, "train", fake_train)
    doc = degradation.run_degradation(tmp_path / "out", "cpu", train_eval_limit=16, threads=1, workers=1,
                                     verbose=False)
    s = doc["settings"]
    assert doc["protocol"] == "cpu" and doc["seeds"] == [0, 1, 2] and s["depths"] == [20, 56, 110]
    assert (s["dataset"], s["train_limit"], s["epochs"], s["width"], s["precision"]) == (
        "fashion-mnist", 2000, 20, 8, "auto")
    assert (s["batch_size"], s["lr"], s["schedule"], s["test_limit"]) == (32, 0.1, "onecycle", 2000)
    assert sorted((c.model, c.seed) for c in configs) == sorted(
        (f"{k}{d}", seed) for k in ("plain", "resnet") for d in (20, 56, 110) for seed in (0, 1, 2))
    assert all(c.model_kwargs == {"width": 8} and c.train_limit == 2000 and c.epochs == 20 and c.batch_size == 32
               and c.schedule == "onecycle" and c.test_limit == 2000 for c in configs)
    assert all(len(rows) == 3 for rows in doc["results"]["per_seed"].values())
    assert set(doc["results"]["gradient_flow"]) == {"plain56", "resnet56"}
    assert len(doc["results"]["gradient_flow"]["plain56"]["init"]) == 55
    assert "By seed:" in doc["conclusion"] and "seed 2" in doc["conclusion"]
    assert "Training error by depth" in doc["conclusion"]
    for f in doc["figures"]:
        assert (tmp_path / "out" / f).read_bytes()[:8] == PNG


def test_unknown_protocol_is_named(tmp_path):
    with pytest.raises(ClassicNetsError, match="unknown protocol 'fast'.*quick, cpu, paper"):
        degradation.run_degradation(tmp_path, "fast")


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
    # train_eval_limit: the final un-augmented pass over 256 of the 45k training images, not all of them.
    doc = experiments.run_experiment("degradation", quick=False, out=tmp_path / "out", data_dir=str(data),
                                     runs_dir=runs, iterations=2, depths=(20,), train_eval_limit=256, workers=1,
                                     verbose=False)
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


def test_cli_runs_the_cpu_protocol_and_refuses_it_where_there_is_none(cli, tmp_path, monkeypatch):
    seen = {}
    experiments.list_experiments()  # loads the registry
    _, desc, protocols = experiments._EXPERIMENTS["degradation"]
    assert protocols == ("quick", "cpu", "paper")

    def spy(**kw):  # records what the command asks for, trains nothing
        seen.update(kw)
        return {"title": "t", "protocol": kw["protocol"], "seconds": 0.0, "conclusion": "c", "figures": []}

    monkeypatch.setitem(experiments._EXPERIMENTS, "degradation", (spy, desc, protocols))
    code, out, err = cli("experiment", "degradation", "--protocol", "cpu", "--out", tmp_path / "d")
    assert code == 0, err
    assert seen["protocol"] == "cpu" and "(cpu protocol" in out
    code, _, err = cli("experiment", "pooling", "--protocol", "cpu", "--out", tmp_path / "p")
    assert code != 0 and "'pooling' has no cpu protocol: it has quick" in err


def test_gradient_flow_verdict_follows_the_numbers():
    from classicnets.experiments.gradient_flow import describe

    even, steep = [1.0, 2.0, 1.5], [150.0, 1.0, 0.5]
    vanishing = [0.001, 0.05, 0.2]  # after training starts: smallest next to the input
    flow = {"plain56": {"init": steep, "after": vanishing, "steps": 250}, "resnet56": {"init": even, "after": even}}
    text = describe(flow, 56)
    assert "the lecture notes' reading holds" in text and "vanishing gradients in the early layers" in text
    assert "within 2x of each other" in text
    flow["plain56"] = {"init": even, "after": [1.0, 3.0, 2.0], "steps": 250}
    assert "no vanishing or exploding gradient explains" in describe(flow, 56)
    flow["resnet56"] = {"init": steep, "after": steep}
    flow["plain56"] = {"init": steep, "after": steep, "steps": 250}
    assert "both nets' norms span 100x or more" in describe(flow, 56)
