"""The suite's training-throughput section: its workloads and their data, every contender's runs
(classicnets, the tutorial loop, the peers where installed), interleaved, and their figures.
Each run is a process of its own (``suite.py worker train ...``, or a peer's script), so its peak
RSS is its own."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from common import call_worker, make_gray_cifar, make_random_data
from peer_common import PEERS
from peers import TRAIN_MODELS, run_peer, training_job

SUITE = Path(__file__).resolve().parent / "suite.py"

# name -> (model, data kind, batch size, training images, input size[, epochs per run: 2 by default,
# the first warming up, the last timed])
WORKLOADS = {
    # Batch 128: the lenet5 recipe's batch on Fashion-MNIST (recipes.DATASET_RECIPES).
    "lenet5-fashion": dict(model="lenet5", data="fashion-mnist", batch=128, images=20_096, size=32),
    # Real images at 32x32x3 (Fashion-MNIST made CIFAR-shaped), so the final accuracies compare. Four
    # epochs: after two (40 steps) the test accuracy of one net spread from 25% to 61% over three
    # seeds, its batch-norm statistics still chasing the weights; after four, 68-73%. No augmentation
    # for any contender: the peers do none, and in 80 steps the recipe's crops and flips cost
    # classicnets 4-8 points on every seed (seeds 0-4, bf16: 73.5, 67.7, 66.0, 69.1, 69.0% with them,
    # 76.6, 73.9, 74.3, 75.8, 72.7% without; fp32 alike; 2026-12-07), so with them on one side only
    # neither the speed nor the accuracy compared.
    "resnet20-32x32x3": dict(model="resnet20", data="fashion32x3", batch=128, images=2_560, size=32,
                             test_images=2_000, epochs=4, augment="none"),
    "resnet56-32x32x3": dict(model="resnet56", data="random32", batch=128, images=1_024, size=32),
    # A few steps: two of batch 8 per epoch (VGG-16 trains at about 1 image/s in fp32 on 2 cores).
    "vgg16-224": dict(model="vgg16", data="random224", batch=8, images=16, size=224),
    "resnet50-224": dict(model="resnet50", data="random224", batch=8, images=32, size=224),
}
QUICK_WORKLOADS = {
    "lenet5-fashion": dict(model="lenet5", data="digits", batch=64, images=256, size=32, augment="none"),
    "resnet20-32x32x3": dict(model="resnet20", data="digits32x3", batch=32, images=64, size=32, test_images=64,
                             augment="none"),
}
GRAY_AS_CIFAR = {"fashion32x3": "fashion-mnist", "digits32x3": "digits"}


def run_worker(argv: list[str], env_threads: int | None) -> dict:
    """Run ``suite.py worker ...`` and return its JSON, with the process's peak RSS."""
    env = dict(os.environ)
    if env_threads:
        env["OMP_NUM_THREADS"] = str(env_threads)
    return call_worker(SUITE, argv, env)


def log(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def workload_data(w: dict, root: Path) -> str:
    """The folder a workload's data is written to, or "" for a named dataset."""
    if w["data"].startswith("random"):
        return str(make_random_data(w["data"], root, w["images"]))
    if w["data"] in GRAY_AS_CIFAR:
        return str(make_gray_cifar(GRAY_AS_CIFAR[w["data"]], root, w["images"], w["test_images"]))
    return ""


def training_section(args, workloads: dict, tmp: Path, peers: dict) -> dict:
    from classicnets.train import TrainConfig

    results = {}
    for name, w in workloads.items():
        data_dir = workload_data(w, tmp / name)
        # The recipe's learning rate for this model and data (random data: the model's own).
        dataset = None if data_dir else w["data"]
        lr = TrainConfig(model=w["model"], dataset=dataset, data_dir=data_dir or None).resolved().lr
        epochs = w.get("epochs", 2)
        common = contender_args(w, data_dir, lr, epochs, args.threads)
        names, job = ["classicnets", "tutorial"], None
        if w["model"] in TRAIN_MODELS and peers["available"]:
            names += peers["available"]
            job = training_job(w, data_dir, lr, tmp / name / "peers", epochs=epochs)
        runs, failed = {n: [] for n in names}, {}
        for rep in range(args.reps):
            # Round r is seed r for every contender: a recipe near the edge of stability (LeNet-5's
            # peak rate 0.2) can lose one seed of one framework, and one seed must not stand for all.
            for contender in names[rep % len(names):] + names[:rep % len(names)]:
                if contender in failed:
                    continue
                try:
                    runs[contender].append(run_contender(args, contender, common, job, peers, seed=rep))
                except RuntimeError as exc:  # a peer that fails costs its own figures, not the suite's
                    if contender not in PEERS:
                        raise
                    failed[contender] = str(exc)[-2000:]
            log(args, f"{name} rep {rep + 1}: " + ", ".join(f"{k} {v[-1]['images_per_second']:,.1f} img/s"
                                                             for k, v in runs.items() if v))
        results[name] = workload_result(w, lr, runs, failed)
    return results


def contender_args(w: dict, data_dir: str, lr: float, epochs: int, threads: int | None) -> list[str]:
    """The worker arguments classicnets' and the tutorial loop's runs of workload ``w`` share."""
    out = ["--model", w["model"], "--data", w["data"], "--data-dir", data_dir, "--batch", str(w["batch"]),
           "--images", str(w["images"]), "--epochs", str(epochs), "--lr", str(lr)]
    if w.get("augment"):
        out += ["--augment", w["augment"]]
    return out + (["--threads", str(threads)] if threads else [])


def run_contender(args, contender: str, common: list[str], job: dict | None, peers: dict, seed: int) -> dict:
    if contender in PEERS:
        result = run_peer(contender, {**job, "seed": seed}, peers["python"], args.threads)
    else:
        result = run_worker(["train", "--contender", contender, *common, "--seed", str(seed)], args.threads)
    return {**result, "seed": seed}


def learned(accuracy: float, classes: int) -> bool:
    """Whether a run learnt anything: a final test accuracy of at least twice chance. A run that
    diverged (its ReLUs dead, every image given one class) ends at chance, 1 / classes."""
    return accuracy >= 2 / classes


def workload_result(w: dict, lr: float, runs: dict, failed: dict) -> dict:
    """A workload's figures: each contender's runs, their medians, classicnets against the tutorial
    loop (``speedup``) and against the fastest peer that ran (``versus_fastest_peer``)."""
    ran = {k: v for k, v in runs.items() if v}
    samples = {k: [r["images_per_second"] for r in v] for k, v in ran.items()}
    rss = {k: [r["peak_rss_mb"] for r in v] for k, v in ran.items()}
    accuracy = {k: [r["test_accuracy"] for r in v] for k, v in ran.items() if v[0].get("test_accuracy") is not None}
    med = {k: statistics.median(v) for k, v in samples.items()}
    med_acc = {k: statistics.median(v) for k, v in accuracy.items()}
    classes = _classes(w)
    learnt = {k: [learned(a, classes) for a in v] for k, v in accuracy.items()}
    info = {k: ran["classicnets"][-1][k] for k in ("precision", "resolved_precision", "channels_last")}
    out = {**w, "lr": lr, "images_per_second": samples, "median_images_per_second": med,
           "speedup": med["classicnets"] / med["tutorial"], "peak_rss_mb": rss,
           "median_peak_rss_mb": {k: statistics.median(v) for k, v in rss.items()},
           "test_accuracy": accuracy, "median_test_accuracy": med_acc, "learnt": learnt,
           "seeds": {k: [r.get("seed", 0) for r in v] for k, v in ran.items()},
           "macs_per_image": _macs(w["model"], w), "classicnets_settings": info,
           "peers": [k for k in ran if k in PEERS], "failed_peers": failed}
    # The yardstick is the fastest peer whose median run learnt: a peer that ends at chance with
    # this recipe is no alternative at it (and would make "equal final accuracy" an easy bar).
    usable = [k for k in out["peers"] if med_acc.get(k) is None or learned(med_acc[k], classes)]
    out["peers_that_did_not_learn"] = [k for k in out["peers"] if k not in usable]
    if usable:
        fastest = max(usable, key=med.get)
        out["versus_fastest_peer"] = {"peer": fastest, "ratio": med["classicnets"] / med[fastest],
                                      "accuracy_gap": med_acc["classicnets"] - med_acc[fastest]}
    return out


def _macs(model: str, w: dict) -> int:
    """Forward multiply-adds per image at the workload's input (1 channel for Fashion/digits)."""
    from classicnets import create_model
    from classicnets.summary_table import summary

    channels = 1 if w["data"] in ("fashion-mnist", "digits") else 3
    m = create_model(model, num_classes=_classes(w), in_channels=channels)
    return summary(m, (channels, w["size"], w["size"])).total_macs


def _classes(w: dict) -> int:
    """A workload's classes: 4 for the random 224x224 images (``common.make_random_data``), else 10."""
    return 4 if w["data"] == "random224" else 10
