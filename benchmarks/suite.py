"""The benchmark suite: one command, every figure of the performance issue, side by side.

    .venv/bin/python benchmarks/suite.py            # ~25-35 minutes on 2 cores
    .venv/bin/python benchmarks/suite.py --quick    # seconds: checks that it all runs (the tests)

Writes ``benchmarks/results.json`` and ``benchmarks/results.md`` (quoted by the README):

1. **Training throughput** (images/s) of ``classicnets.train`` -- the real product path, its
   per-epoch ``images_per_second`` -- against the tutorial loop: a ``Dataset`` returning one
   augmented sample at a time through a ``DataLoader``, the model in its default memory format,
   fp32, ``torch.optim.SGD``'s default implementation, ``loss.item()`` every step. Same model,
   batch size, optimiser settings and augmentation. Workloads: LeNet-5 on Fashion-MNIST (the
   first 20,000 images); ResNet-20 and ResNet-56 on 32x32x3 (random CIFAR-10-shaped images:
   throughput does not depend on the pixels); VGG-16 and ResNet-50 at 224x224 for a few steps.
2. **Time to accuracy**: training seconds (evaluation excluded) until LeNet-5 first reaches 90%
   on the Fashion-MNIST test set, and 98.5% on the embedded digits' test split, with the default
   recipe.
3. **Inference throughput**: ``benchmarks/bench_infer.py`` (AlexNet, VGG-16, ResNet-50 at batch
   1 and 16: eager, the fastest fp32 and bf16 paths, ONNX Runtime), merged in.
4. **Fraction of peak**: achieved FLOP/s (2 x multiply-adds per image forward, x3 for a training
   step: forward, input gradients and weight gradients) over the matmul peak of this machine,
   measured in the same run (fp32 and bf16 ``torch.mm``, before and after the runs).
5. **Memory**: the peak RSS of each training run; every run is its own process, so the figure
   is that run's alone (``os.wait4``'s ``ru_maxrss``).

Each contender runs ``--reps`` times, interleaved (A B, B A, ...), and the medians are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import call_worker, write_results  # benchmarks/common.py (scripts run from this folder)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (model, data kind, batch size, training images, timed epochs per run)
WORKLOADS = {
    # Batch 128: the lenet5 recipe's batch on Fashion-MNIST (recipes.DATASET_RECIPES).
    "lenet5-fashion": dict(model="lenet5", data="fashion-mnist", batch=128, images=20_096, size=32),
    "resnet20-32x32x3": dict(model="resnet20", data="random32", batch=128, images=2_560, size=32),
    "resnet56-32x32x3": dict(model="resnet56", data="random32", batch=128, images=1_024, size=32),
    # A few steps: two of batch 8 per epoch (VGG-16 trains at about 1 image/s in fp32 on 2 cores).
    "vgg16-224": dict(model="vgg16", data="random224", batch=8, images=16, size=224),
    "resnet50-224": dict(model="resnet50", data="random224", batch=8, images=32, size=224),
}
QUICK_WORKLOADS = {
    "lenet5-fashion": dict(model="lenet5", data="digits", batch=64, images=256, size=32),
    "resnet20-32x32x3": dict(model="resnet20", data="random32", batch=32, images=64, size=32),
}


# ------------------------------------------------------------------------------------------
# Workers: each measurement runs in a fresh process so its peak RSS is its own.
# ------------------------------------------------------------------------------------------


def run_worker(argv: list[str], env_threads: int | None) -> dict:
    """Run ``suite.py worker ...`` and return its JSON, with the process's peak RSS."""
    env = dict(os.environ)
    if env_threads:
        env["OMP_NUM_THREADS"] = str(env_threads)
    return call_worker(Path(__file__).resolve(), argv, env)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (the worker's, as it ends)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024


def make_random_data(kind: str, root: Path, n_train: int, n_test: int = 16) -> Path:
    """A CIFAR-10 folder of random 32x32x3 images, or a folder of random 224x224 PNGs."""
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "random32":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
        (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
        per = math.ceil(n_train / 5)
        for i, (name, n) in enumerate([*[(f"data_batch_{k}", per) for k in range(1, 6)], ("test_batch", n_test)]):
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            (d / name).write_bytes(pickle.dumps({b"data": data, b"labels": [(i + j) % 10 for j in range(n)]},
                                                protocol=2))
        return d
    from PIL import Image

    for split, n in (("train", n_train), ("test", n_test)):
        for j in range(n):
            cls = root / split / f"class{j % 4}"
            cls.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(cls / f"{j}.png")
    return root


def worker_train(args) -> dict:
    """One contender on one workload: two epochs (the first warms up), the second's images/s."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or None
    dataset = None if data_dir else args.data
    if args.contender == "classicnets":
        from classicnets.train.loop import TrainConfig, train

        with tempfile.TemporaryDirectory() as tmp:
            r = train(TrainConfig(model=args.model, dataset=dataset, data_dir=data_dir, batch_size=args.batch,
                                  train_limit=args.images, epochs=args.epochs, quiet=True, out=tmp,
                                  eval_every=10**6, lr=args.lr, precision=args.precision or "auto",
                                  channels_last={"yes": True, "no": False}.get(args.channels_last),
                                  seed=args.seed))
            ips = [h["images_per_second"] for h in r.history]
            cfg = json.loads((Path(tmp) / "config.json").read_text())
        return {"images_per_second": ips[-1], "epochs": ips, "precision": cfg["precision"],
                "resolved_precision": _resolved_precision(cfg), "channels_last": cfg["channels_last"],
                "peak_rss_mb": _peak_rss_mb()}
    ips = tutorial_train(args)
    return {"images_per_second": ips[-1], "epochs": ips, "precision": "fp32", "resolved_precision": "fp32",
            "channels_last": False, "peak_rss_mb": _peak_rss_mb()}


def _resolved_precision(cfg: dict, device: str = "cpu") -> str:
    """What a run's ``precision`` setting (its config.json) came to on ``device``: fp32, bf16 or fp16."""
    import torch

    from classicnets.train.loop import autocast_dtype

    dtype = autocast_dtype(cfg["precision"], torch.device(device), cfg["model"])
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def tutorial_train(args, device: str = "cpu", workers: int = 0) -> list[float]:
    """The tutorial loop: per-sample Dataset + DataLoader, default memory format, fp32. On a GPU
    (``bench_cuda.py``) as the PyTorch tutorials run it there: the model on the device, batches
    assembled by ``workers`` processes in pinned memory and copied to it every step."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from tutorial import TutorialSet  # benchmarks/tutorial.py

    import classicnets
    from classicnets.data.sources import load_split
    from classicnets.models import model_card
    from classicnets.train.loop import TrainConfig, parse_augment

    cfg = TrainConfig(model=args.model, dataset=None if args.data_dir else args.data, data_dir=args.data_dir or None,
                      batch_size=args.batch, lr=args.lr).resolved()
    card = model_card(args.model)
    size = tuple(card.input_size[1:])
    data = load_split(cfg.dataset, cfg.data_dir, "train", size=size, channels=card.input_size[0])
    images, labels = data.images[:args.images], data.labels[:args.images]
    aug = parse_augment(cfg.augment, cfg.dataset)
    dataset = TutorialSet(images, labels, size, data.mean, data.std, aug.crop_padding, aug.flip)

    torch.manual_seed(0)
    model = classicnets.create_model(args.model, num_classes=len(data.classes), in_channels=images.shape[1])
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=bool(cfg.nesterov),
                          weight_decay=cfg.weight_decay)
    on_gpu = torch.device(device).type == "cuda"
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=workers, pin_memory=on_gpu,
                        persistent_workers=workers > 0)
    rates = []
    for _ in range(args.epochs):
        seen, running = 0, 0.0
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t0))
    return rates


# What the time-to-accuracy runs record of the recipe they trained with (recipes change).
RECIPE_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "augment", "label_smoothing")


def recipe_text(recipe: dict | None) -> str:
    """"3 epochs of batch 128, sgd lr 0.2 onecycle, augment none, label smoothing 0.1"."""
    if not recipe:
        return ("not recorded (a run from before 2026-12-03, when LeNet-5's Fashion-MNIST recipe went from 5 epochs "
                "at lr 0.1 with flips to 3 at lr 0.2 with label smoothing)")
    return (f"{recipe['epochs']} epochs of batch {recipe['batch_size']}, {recipe['optimizer']} lr {recipe['lr']:g} "
            f"{recipe['schedule']}, augment {recipe['augment']}, label smoothing {recipe['label_smoothing']:g}")


def worker_tta(args) -> dict:
    """Train with the default recipe; training seconds until the test accuracy first reaches the target."""
    from classicnets.train.loop import TrainConfig, train

    cfg = TrainConfig(model=args.model, dataset=args.data, quiet=True, threads=args.threads, epochs=args.epochs,
                      train_limit=args.images, precision=args.precision or "auto", seed=args.seed)
    resolved = cfg.resolved()
    with tempfile.TemporaryDirectory() as tmp:
        r = train(dataclasses.replace(cfg, out=tmp))
    elapsed, reached = 0.0, None
    for h in r.history:
        elapsed += h["epoch_seconds"]
        if reached is None and h["test_accuracy"] >= args.target:
            reached = {"epoch": h["epoch"], "seconds": elapsed}
    return {"reached": reached, "final_accuracy": r.history[-1]["test_accuracy"],
            "total_train_seconds": elapsed, "epochs": len(r.history),
            "curve": [[h["epoch"], h["test_accuracy"], h["epoch_seconds"]] for h in r.history],
            "recipe": {k: getattr(resolved, k) for k in RECIPE_KEYS}, "peak_rss_mb": _peak_rss_mb()}


def worker_peak(args) -> dict:
    """Matmul peak: median GFLOP/s of n x n torch.mm, fp32 and bf16."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from classicnets.report import machine_info

    out = {}
    native_bf16 = machine_info()["native_bf16"]
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        # Without native bf16 a bf16 matmul is emulated at well under 1 GFLOP/s: 18 products of
        # 2048 would take 12 minutes to say so. Nothing trains in bf16 there (--precision auto),
        # so a few small products record the figure.
        emulated = dtype == torch.bfloat16 and not native_bf16
        n, reps = (min(args.n, 512), min(args.reps, 3)) if emulated else (args.n, args.reps)
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(1 if emulated else 3):
            a @ b
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
        out[name] = {"median_gflops": statistics.median(rates), "max_gflops": max(rates), "n": n,
                     "emulated": emulated}
    out["threads"] = torch.get_num_threads()
    return out


# ------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------


def log(args, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr, flush=True)


def training_section(args, workloads: dict, tmp: Path) -> dict:
    from classicnets.train.loop import TrainConfig

    results = {}
    for name, w in workloads.items():
        data_dir = ""
        if w["data"].startswith("random"):
            data_dir = str(make_random_data(w["data"], tmp / name, w["images"]))
        # The recipe's learning rate for this model and data (random data: the model's own).
        dataset = None if w["data"].startswith("random") else w["data"]
        lr = TrainConfig(model=w["model"], dataset=dataset, data_dir=data_dir or None).resolved().lr
        # Two epochs per run (the first warms up), one epoch being at least a few steps.
        common = ["--model", w["model"], "--data", w["data"], "--data-dir", data_dir, "--batch", str(w["batch"]),
                  "--images", str(w["images"]), "--epochs", "2", "--lr", str(lr)]
        if args.threads:
            common += ["--threads", str(args.threads)]
        samples = {"classicnets": [], "tutorial": []}
        rss = {"classicnets": [], "tutorial": []}
        info = {}
        names = list(samples)
        for rep in range(args.reps):
            for contender in names[rep % 2:] + names[:rep % 2]:
                r = run_worker(["train", "--contender", contender, *common], args.threads)
                samples[contender].append(r["images_per_second"])
                rss[contender].append(r["peak_rss_mb"])
                if contender == "classicnets":
                    info = {k: r[k] for k in ("precision", "resolved_precision", "channels_last")}
            log(args, f"{name} rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.1f} img/s" for k, v in samples.items()))
        med = {k: statistics.median(v) for k, v in samples.items()}
        macs = _macs(w["model"], w)
        results[name] = {**w, "lr": lr, "images_per_second": samples, "median_images_per_second": med,
                         "speedup": med["classicnets"] / med["tutorial"], "peak_rss_mb": rss,
                         "median_peak_rss_mb": {k: statistics.median(v) for k, v in rss.items()},
                         "macs_per_image": macs, "classicnets_settings": info}
    return results


def _macs(model: str, w: dict) -> int:
    """Forward multiply-adds per image at the workload's input (1 channel for Fashion/digits)."""
    from classicnets import create_model
    from classicnets.summary_table import summary

    channels = 1 if w["data"] in ("fashion-mnist", "digits") else 3
    classes = 4 if w["data"] == "random224" else 10
    m = create_model(model, num_classes=classes, in_channels=channels)
    return summary(m, (channels, w["size"], w["size"])).total_macs


def settings_section(args, tmp: Path) -> dict:
    """What the defaults are made of: classicnets.train on one workload with each precision and
    memory format, interleaved. This is the measurement behind ``BF16_MIN_MACS`` and the recipes'
    ``channels_last``."""
    out = {}
    picks = {"lenet5-fashion": [("fp32", "yes"), ("bf16", "yes"), ("fp32", "no")],
             "resnet20-32x32x3": [("fp32", "no"), ("fp32", "yes"), ("bf16", "no"), ("bf16", "yes")]}
    table = QUICK_WORKLOADS if args.quick else WORKLOADS
    for name, variants in picks.items():
        w = table[name]
        data_dir = str(make_random_data(w["data"], tmp / f"settings-{name}", w["images"])) \
            if w["data"].startswith("random") else ""
        common = ["--contender", "classicnets", "--model", w["model"], "--data", w["data"], "--data-dir", data_dir,
                  "--batch", str(w["batch"]), "--images", str(w["images"]), "--epochs", "2"]
        if args.threads:
            common += ["--threads", str(args.threads)]
        samples = {f"{p}, {'channels-last' if cl == 'yes' else 'contiguous'}": [] for p, cl in variants}
        keys = list(samples)
        for rep in range(args.reps):
            order = list(range(len(variants)))
            order = order[rep % len(order):] + order[:rep % len(order)]
            for i in order:
                p, cl = variants[i]
                r = run_worker(["train", *common, "--precision", p, "--channels-last", cl], args.threads)
                samples[keys[i]].append(r["images_per_second"])
        med = {k: statistics.median(v) for k, v in samples.items()}
        base = med[keys[0]]
        out[name] = {"images_per_second": samples, "median_images_per_second": med,
                     "relative_to_first": {k: v / base for k, v in med.items()}}
        log(args, f"settings {name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in med.items()))
    return out


def parity_section(args) -> dict:
    """bf16 autocast must keep accuracy: ResNet-20 on Fashion-MNIST (1 channel, padded to 32x32),
    fp32 against bf16, same seeds, same data, same everything else."""
    data, images, epochs, seeds = (("digits", 256, 1, (0,)) if args.quick else ("fashion-mnist", 10_000, 4, (0, 1)))
    out = {"dataset": data, "images": images, "epochs": epochs, "seeds": list(seeds), "accuracy": {}}
    for precision in ("fp32", "bf16"):
        accs = []
        for seed in seeds:
            argv = ["tta", "--model", "resnet20", "--data", data, "--target", "2", "--epochs", str(epochs),
                    "--images", str(images), "--precision", precision, "--seed", str(seed)]
            if args.threads:
                argv += ["--threads", str(args.threads)]
            accs.append(run_worker(argv, args.threads)["final_accuracy"])
        out["accuracy"][precision] = accs
        log(args, f"parity resnet20 {precision}: {accs}")
    return out


def time_to_accuracy_section(args) -> dict:
    """Each target with the default recipe and several seeds (a short run ends near its target,
    so one seed could land on either side); the goal reads the median."""
    targets = ([("lenet5", "fashion-mnist", 0.90), ("lenet5", "digits", 0.985)] if not args.quick
               else [("lenet5", "digits", 0.5)])
    seeds = (0,) if args.quick else (0, 1, 2)
    out = {}
    for model, data, target in targets:
        runs = []
        for seed in seeds:
            argv = ["tta", "--model", model, "--data", data, "--target", str(target), "--seed", str(seed)]
            if args.quick:
                argv += ["--epochs", "1"]
            if args.threads:
                argv += ["--threads", str(args.threads)]
            r = run_worker(argv, args.threads)
            runs.append({"seed": seed, **r})
            log(args, f"time to {target:.1%} on {data}, seed {seed}: {r['reached']}, final {r['final_accuracy']:.4f}")
        out[f"{model}-{data}"] = {"model": model, "dataset": data, "target": target, "runs": runs,
                                  "median_seconds": median_seconds(runs)}
    return out


def median_seconds(runs: list[dict]) -> float | None:
    """Median training seconds to the target over seeds, a seed that never got there counting as
    infinitely slow; None when the median seed did not get there."""
    secs = statistics.median([r["reached"]["seconds"] if r["reached"] else math.inf for r in runs])
    return None if math.isinf(secs) else secs


def peak_section(args) -> dict:
    argv = ["peak", "--n", "256" if args.quick else "2048", "--reps", "3" if args.quick else "15"]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return run_worker(argv, args.threads)


def inference_section(args, tmp: Path) -> dict | None:
    if args.skip_inference:
        return None
    script = HERE / "bench_infer.py"
    if not script.exists():
        return None
    out = tmp / "infer"
    cmd = [sys.executable, str(script), "--out", str(out), "--quiet"]
    if args.quick:
        cmd.append("--quick")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return {"json": json.loads((out / "inference.json").read_text()),
            "markdown": (out / "inference.md").read_text()}


def run(args) -> dict:
    from classicnets.report import machine_info

    started = time.perf_counter()
    workloads = QUICK_WORKLOADS if args.quick else WORKLOADS
    if args.workloads:
        unknown = set(args.workloads) - set(WORKLOADS)
        if unknown:
            raise SystemExit(f"--workloads: unknown {', '.join(sorted(unknown))}; "
                             f"expected some of {', '.join(WORKLOADS)}")
        workloads = {k: (QUICK_WORKLOADS if args.quick and k in QUICK_WORKLOADS else WORKLOADS)[k]
                     for k in args.workloads}
    results = {"machine": machine_info(), "quick": args.quick, "reps": args.reps}
    with tempfile.TemporaryDirectory(prefix="classicnets-bench-") as tmp:
        tmp = Path(tmp)
        log(args, "matmul peak ...")
        peaks = [peak_section(args)]
        first = {"runs": peaks, "fp32_gflops": peaks[0]["fp32"]["median_gflops"],
                 "bf16_gflops": peaks[0]["bf16"]["median_gflops"]}
        log(args, f"  {peak_text(first)}")
        results["training"] = training_section(args, workloads, tmp)
        results["settings"] = {} if args.skip_settings else settings_section(args, tmp)
        results["parity"] = {} if args.skip_settings else parity_section(args)
        results["time_to_accuracy"] = {} if args.skip_tta else time_to_accuracy_section(args)
        results["inference"] = inference_section(args, tmp)
        peaks.append(peak_section(args))
    results["peak"] = {
        "runs": peaks,
        "fp32_gflops": statistics.median([p["fp32"]["median_gflops"] for p in peaks]),
        "bf16_gflops": statistics.median([p["bf16"]["median_gflops"] for p in peaks]),
    }
    for r in results["training"].values():
        flops = 3 * 2 * r["macs_per_image"]
        r["achieved_gflops"] = {k: flops * v / 1e9 for k, v in r["median_images_per_second"].items()}
        peak_key = "bf16_gflops" if r["classicnets_settings"].get("resolved_precision") == "bf16" else "fp32_gflops"
        r["fraction_of_peak"] = {
            "classicnets": r["achieved_gflops"]["classicnets"] / results["peak"][peak_key],
            "classicnets_peak": peak_key.split("_")[0],
            "tutorial": r["achieved_gflops"]["tutorial"] / results["peak"]["fp32_gflops"],
        }
    results["goals"] = evaluate_goals(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def evaluate_goals(results: dict) -> list[dict]:
    """The issue's goals against this run's numbers (only those this run measured)."""
    goals = []
    lenet = results["training"].get("lenet5-fashion")
    if lenet:
        goals.append({"key": "lenet5-speedup", "goal": "LeNet-5 training >= 3x the tutorial loop", "target": 3.0,
                      "measured": lenet["speedup"], "met": lenet["speedup"] >= 3.0, "unit": "x",
                      "needs": _needs(results, lenet, 3.0)})
        frac = lenet["fraction_of_peak"]["classicnets"]
        goals.append({"key": "lenet5-peak",
                      "goal": f"LeNet-5 training >= 50% of the {lenet['fraction_of_peak']['classicnets_peak']} "
                              f"matmul peak", "target": 0.5, "measured": frac, "met": frac >= 0.5, "unit": "fraction"})
    tta = results["time_to_accuracy"].get("lenet5-fashion-mnist")
    if tta:
        secs = tta["median_seconds"]
        goals.append({"key": "lenet5-fashion-90",
                      "goal": f"LeNet-5 to 90% Fashion-MNIST test accuracy in <= 15 s of training "
                              f"(median of {len(tta['runs'])} seeds)", "target": 15.0,
                      "measured": secs, "met": secs is not None and secs <= 15.0, "unit": "s"})
    r20 = results["training"].get("resnet20-32x32x3")
    if r20:
        acc = results.get("parity", {}).get("accuracy")
        gap = (statistics.mean(acc["bf16"]) - statistics.mean(acc["fp32"])) if acc else None
        # "Equal final accuracy": bf16 within half a point of fp32 on the parity runs. Where
        # classicnets trained in fp32 too (a CPU without native bf16), the arithmetic is the
        # tutorial's and there is nothing to compare.
        same_precision = r20["classicnets_settings"].get("resolved_precision") == "fp32"
        equal = same_precision or (gap is not None and abs(gap) <= 0.005)
        goals.append({"key": "resnet20-speedup",
                      "goal": "ResNet-20 training >= 2x the tutorial fp32 loop at equal final accuracy",
                      "target": 2.0, "measured": r20["speedup"], "met": r20["speedup"] >= 2.0 and equal,
                      "unit": "x", "accuracy_gap_bf16_minus_fp32": gap, "fp32_on_both_sides": same_precision,
                      "needs": _needs(results, r20, 2.0)})
    inference = (results.get("inference") or {}).get("json", {}).get("goals", {})
    for name, g in inference.items():
        if g["measured"] is None:  # the bf16 goals, where bench_infer left bf16 out (no native bf16)
            continue
        goals.append({"key": f"resnet50-inference: {name}",
                      "goal": f"ResNet-50 inference, batch 16: {name} >= {g['target']}", "target": g["target"],
                      "measured": g["measured"], "met": g["met"], "unit": "fraction" if "agreement" in name else "x"})
    return goals


def _needs(results: dict, workload: dict, target: float) -> dict:
    """What a speed-up goal asks of the machine: ``target`` times the tutorial loop's FLOP/s, as a
    fraction of the matmul peak of the precision classicnets trained in (above 1: out of reach
    at that precision, whatever the code does)."""
    peak = workload["fraction_of_peak"]["classicnets_peak"]
    gflops = target * workload["achieved_gflops"]["tutorial"]
    return {"gflops": gflops, "peak": peak, "fraction_of_peak": gflops / results["peak"][f"{peak}_gflops"]}


def format_seconds(secs: float | None) -> str:
    return "not reached" if secs is None else f"{secs:.1f} s"


def format_goal(g: dict) -> str:
    m = g["measured"]
    value = ("not reached" if m is None else f"{m:.2f}x" if g["unit"] == "x" else f"{m:.1f} s" if g["unit"] == "s"
             else f"{100 * m:.1f}%")
    extra = ""
    if g.get("fp32_on_both_sides"):
        extra = "; fp32 on both sides (this CPU has no native bf16)"
    elif g.get("accuracy_gap_bf16_minus_fp32") is not None:
        extra = f"; bf16 - fp32 accuracy {100 * g['accuracy_gap_bf16_minus_fp32']:+.2f} points"
    if g.get("needs"):
        n = g["needs"]
        extra += (f"; {g['target']:g}x the tutorial loop is {n['gflops']:.0f} GFLOP/s, "
                  f"{100 * n['fraction_of_peak']:.0f}% of this machine's {n['peak']} matmul peak"
                  + (": more than the peak" if n["fraction_of_peak"] > 1 else ""))
    return f"{g['goal']}: {value}{extra}: **{'met' if g['met'] else 'not met'}**"


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

def gflops(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def peak_text(peak: dict) -> str:
    """"fp32 188 GFLOP/s, bf16 417 GFLOP/s", saying where bf16 is emulated (no native bf16)."""
    emulated = any(r["bf16"].get("emulated") for r in peak["runs"]) or peak["bf16_gflops"] < 0.05 * peak["fp32_gflops"]
    return (f"fp32 {gflops(peak['fp32_gflops'])} GFLOP/s, bf16 {gflops(peak['bf16_gflops'])} GFLOP/s"
            + (" (emulated: this CPU has no native bf16)" if emulated else ""))


def isa(machine: dict) -> str:
    """" (AVX2, no native bf16)": the vector unit, which decides more than the CPU's name does
    (recorded since 2026-12; older results leave it out)."""
    if "cpu_capability" not in machine:
        return ""
    return f" ({machine['cpu_capability']}, {'native' if machine.get('native_bf16') else 'no native'} bf16)"


def to_markdown(results: dict) -> str:
    m = results["machine"]
    p = results["peak"]
    lines = ["# Benchmark results", "",
             f"`benchmarks/suite.py`{' --quick' if results['quick'] else ''}: {results['seconds']:.0f} s. "
             f"Machine: {m['cpu']}{isa(m)}, {m['cores_available']} cores available, torch {m['torch']}, "
             f"{m['torch_threads']} torch threads, load average at start "
             f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'] or [])}. Medians of {results['reps']} "
             f"interleaved repetitions; each run is its own process.", "",
             f"**Matmul peak** (median of `torch.mm` 2048x2048, measured before and after the runs): "
             f"{peak_text(p)}.", "",
             "## Training throughput", "",
             "`classicnets.train` (its per-epoch images/s: the batch pipeline, the recipe's memory format, "
             "precision and fused optimiser) against the tutorial loop (per-sample `Dataset` + `DataLoader`, "
             "fp32, default memory format, `torch.optim.SGD`, `loss.item()` every step); same model, batch, "
             "optimiser settings and augmentation. Second epoch of each run (the first warms up). "
             "Training FLOPs = 3 x 2 x forward multiply-adds per image.", "",
             "| workload | batch | classicnets img/s | tutorial img/s | speed-up | classicnets settings | "
             "classicnets GFLOP/s (% of peak) | tutorial GFLOP/s (% of fp32 peak) | peak RSS MB (ours / tutorial) |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, r in results["training"].items():
        med, g, f = r["median_images_per_second"], r["achieved_gflops"], r["fraction_of_peak"]
        s = r["classicnets_settings"]
        settings = f"{s.get('resolved_precision')}, {'channels-last' if s.get('channels_last') else 'contiguous'}"
        lines.append(
            f"| {name} | {r['batch']} | {med['classicnets']:,.1f} | {med['tutorial']:,.1f} | **{r['speedup']:.2f}x** | "
            f"{settings} | {g['classicnets']:.1f} ({100 * f['classicnets']:.0f}% of {f['classicnets_peak']}) | "
            f"{g['tutorial']:.1f} ({100 * f['tutorial']:.0f}%) | "
            f"{r['median_peak_rss_mb']['classicnets']:,.0f} / {r['median_peak_rss_mb']['tutorial']:,.0f} |")
    lines += ["", "All repetitions (img/s): " + "; ".join(
        f"{name}: ours {', '.join(f'{v:,.1f}' for v in r['images_per_second']['classicnets'])}, tutorial "
        f"{', '.join(f'{v:,.1f}' for v in r['images_per_second']['tutorial'])}"
        for name, r in results["training"].items()),
        ""]
    if results["time_to_accuracy"]:
        lines += ["## Time to accuracy", "",
                  "The default recipe (`classicnets train lenet5 --dataset D`), one run per seed; training seconds "
                  "summed over epochs until the test accuracy (evaluated after each epoch, not counted) first "
                  "reaches the target.", "",
                  "| model | dataset | target | seed | reached after | training seconds | final accuracy (epochs) "
                  "| peak RSS MB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for t in results["time_to_accuracy"].values():
            for r in t["runs"]:
                reached = r["reached"]
                lines.append(f"| {t['model']} | {t['dataset']} | {100 * t['target']:.1f}% | {r['seed']} | "
                             + (f"epoch {reached['epoch']} | {reached['seconds']:.1f} |" if reached
                                else "not reached | - |")
                             + f" {100 * r['final_accuracy']:.2f}% ({r['epochs']}) | {r['peak_rss_mb']:,.0f} |")
        lines += ["", "Median over seeds (a seed that never reached the target counts as slowest): " + "; ".join(
            f"{t['model']} to {100 * t['target']:.1f}% on {t['dataset']}: " + format_seconds(t["median_seconds"])
            for t in results["time_to_accuracy"].values()) + ".", ""]
        lines += ["Recipes: " + "; ".join(f"{t['model']} on {t['dataset']}: {recipe_text(t['runs'][0].get('recipe'))}"
                                          for t in results["time_to_accuracy"].values()) + ".", ""]
    if results.get("settings"):
        lines += ["## What the defaults are made of", "",
                  "`classicnets.train` on the same workload with each precision and memory format (median img/s, "
                  "relative to the first row). This decides `precision=\"auto\"` on a CPU (bf16 autocast for nets "
                  "of at least 10 M multiply-adds per image, on CPUs with native bf16) and the recipes' channels-last.",
                  "", "| workload | setting | median img/s | relative |", "|---|---|---:|---:|"]
        for name, r in results["settings"].items():
            for k, v in r["median_images_per_second"].items():
                lines.append(f"| {name} | {k} | {v:,.0f} | {r['relative_to_first'][k]:.2f}x |")
        lines.append("")
    if results.get("parity"):
        pr = results["parity"]
        acc = pr["accuracy"]
        lines += [f"**bf16 keeps accuracy**: ResNet-20 on {pr['dataset']} ({pr['images']:,} training images, "
                  f"{pr['epochs']} epochs, seeds {pr['seeds']}), test accuracy fp32 "
                  + ", ".join(f"{100 * a:.2f}%" for a in acc["fp32"]) + " against bf16 autocast "
                  + ", ".join(f"{100 * a:.2f}%" for a in acc["bf16"])
                  + f" (means {100 * statistics.mean(acc['fp32']):.2f}% and "
                    f"{100 * statistics.mean(acc['bf16']):.2f}%).",
                  ""]
    if results.get("inference"):
        md = results["inference"]["markdown"]
        body = md.split("\n", 1)[1] if md.startswith("#") else md
        lines += ["## Inference", "", body.replace("\n# ", "\n### ").replace("\n## ", "\n### "), ""]
    lines += decisions_section(results)
    lines += ["## Goals", ""]
    for g in evaluate_goals(results):  # from the figures above, so older files get every detail too
        lines.append(f"- {format_goal(g)}")
        if g["key"] == "lenet5-peak":
            lines.append(f"  - {roofline_evidence()}")
    lines.append(f"- {cuda_evidence()}")
    return "\n".join(lines + [""])


def result_file(stem: str) -> dict | None:
    """``results/STEM.json``, written by the benchmark script that measures it; None before it ran."""
    path = HERE / "results" / f"{stem}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def malloc_evidence() -> str:
    """The allocator row's evidence, from ``results/malloc.json`` (``bench_malloc.py``: the setting is
    process-wide, so it is measured process against process, not in this run)."""
    m = result_file("malloc")
    if m is None:
        return "`results/malloc.md` (not measured yet)"
    parts, processes = [], set()
    for name, r in m["workloads"].items():
        processes |= {len(r["runs"][mode]) for mode in r["runs"]}
        a, b = r["median"]["returned"], r["median"]["kept"]
        faults = (f", page faults per step {a['faults_per_step']:,.0f} -> {b['faults_per_step']:,.0f}"
                  if a.get("faults_per_step") is not None else "")
        parts.append(f"{name} {r['ratio']:.2f}x{faults}")
    counts = "-".join(str(n) for n in sorted(processes))
    return (f"{'; '.join(parts)} (medians of {counts} processes each, {m['machine']['cpu']}{isa(m['machine'])}; "
            "`results/malloc.md`)")


def preload_evidence() -> str:
    """The preloaded allocators' row, from ``results/malloc.json`` (``bench_malloc.py --preload``:
    each against the kept setting, in the same rounds)."""
    m = result_file("malloc")
    rows = {name: r["preloaded_vs_kept"] for name, r in (m or {}).get("workloads", {}).items()
            if r.get("preloaded_vs_kept")}
    if not rows:
        return "`bench_malloc.py --preload` (not measured yet)"
    parts = [f"{name}: " + ", ".join(f"{alloc} {ratio:.2f}x" for alloc, ratio in ratios.items())
             for name, ratios in rows.items()]
    return (f"against the kept setting, {'; '.join(parts)} ({m['machine']['cpu']}{isa(m['machine'])}; "
            "`results/malloc.md`)")


def recipe_evidence() -> str:
    """The LeNet-5 Fashion-MNIST recipe row's evidence, from ``results/lenet_fashion_recipe.json``
    (``bench_lenet_fashion_recipe.py``: several variants over five seeds, more than this run does)."""
    r = result_file("lenet_fashion_recipe")
    if r is None:
        return "`results/lenet_fashion_recipe.md` (not measured yet)"
    parts = []
    for name, v in r["variants"].items():
        secs = v["median_seconds_to_target"]
        lo, hi = 100 * v["final_accuracy_min"], 100 * v["final_accuracy_max"]
        parts.append(f"{name}: {v['seeds_reaching_target']} of {v['seeds']} seeds past {100 * r['target']:.0f}% "
                     f"({lo:.1f}-{hi:.1f}%), "
                     + (f"median {secs:.1f} s" if secs is not None else "median seed short of it"))
    return (f"{'; '.join(parts)} ({r['machine']['cpu']}{isa(r['machine'])}, {r['threads']} threads; "
            "`results/lenet_fashion_recipe.md`)")


def roofline_evidence() -> str:
    """What LeNet-5's own layers allow, from ``results/lenet_roofline.json`` (``bench_lenet_roofline.py``
    times each convolution and linear kernel alone at the step's shapes)."""
    r = result_file("lenet_roofline")
    if r is None:
        return "Its ceiling: `results/lenet_roofline.md` (not measured yet)"
    parts = [f"{100 * run['kernels']['ceiling_fraction_of_peak']:.0f}% at batch {run['batch']} (the whole step "
             f"there: {100 * run['step']['fraction_of_peak']:.0f}%, "
             f"the kernels {100 * run['kernels']['share_of_step']:.0f}% of its time)" for run in r["runs"]]
    return (f"Its ceiling on {r['machine']['cpu']}{isa(r['machine'])}, {r['threads']} threads: were pooling, "
            "activations, loss and optimiser free, LeNet-5's convolution and linear kernels alone would reach at most "
            f"{' and '.join(parts)} of the fp32 peak (`results/lenet_roofline.md`)")


def pooling_evidence() -> str:
    """The pooling alternatives' row, from ``results/lenet_roofline.json`` (forward + backward of the
    first pool and its ReLU, each way, in the same rounds)."""
    r = result_file("lenet_roofline")
    if r is None:
        return "`results/lenet_roofline.md` (not measured yet)"
    parts = []
    for run in r["runs"]:
        as_run, kept_ms = pool_as_run(run["pool1"])
        others = [(name, ms) for name, ms in run["pool1"]["alternatives_ms"].items() if name != as_run]
        parts.append(f"batch {run['batch']}: {kept_ms:.2f} ms as the step runs it; "
                     + ", ".join(f"{name} {ms:.2f} ms ({kept_ms / ms:.2f}x)" for name, ms in others))
    return (f"forward + backward, {'; '.join(parts)} ({r['machine']['cpu']}{isa(r['machine'])}, "
            f"{r['threads']} threads; `results/lenet_roofline.md`)")


def cuda_evidence() -> str:
    """The issue's CUDA figure (reported, no target), from ``results/cuda_resnet56.json``
    (``bench_cuda.py``, which needs a GPU: the suite runs on the CPU it measures)."""
    r = result_file("cuda_resnet56")
    if r is None or not r.get("gpu") or r.get("quick"):
        return ("ResNet-56 CIFAR-10 epoch on CUDA: **not measured** (no GPU on the machines this ran on; "
                "`benchmarks/bench_cuda.py` measures it on one)")
    c, gpu = r["contenders"], r["gpu"]
    default, tutorial = c["classicnets"], c["tutorial"]
    s = default["settings"]
    return (f"ResNet-56 CIFAR-10 epoch on CUDA ({gpu['name']}): **{default['median_epoch_seconds']:.1f} s** "
            f"({s['precision']}, {'channels-last' if s['channels_last'] else 'contiguous'}, data on the GPU; "
            f"{default['images_per_second']:,.0f} img/s), the tutorial loop {tutorial['median_epoch_seconds']:.1f} s "
            f"({default['speedup_over_tutorial']:.2f}x) (`results/cuda_resnet56.md`)")


def pool_as_run(pool1: dict) -> tuple[str, float]:
    """(name, ms) of the pooling the training step runs, among a roofline run's alternatives (files
    from before the name was recorded list it first)."""
    name = pool1.get("as_run") or next(iter(pool1["alternatives_ms"]))
    return name, pool1["alternatives_ms"][name]


def decisions_section(results: dict) -> list[str]:
    """Each speed idea and what we did with it. Figures from this run where it measured them;
    the rest from the result files named (each regenerated by its own script)."""
    rel = {name: r["relative_to_first"] for name, r in (results.get("settings") or {}).items()}
    lenet, r20 = rel.get("lenet5-fashion", {}), rel.get("resnet20-32x32x3", {})

    def ratio(table: dict, key: str) -> str:
        return f"{table[key]:.2f}x" if key in table else "not measured in this run"

    training = results.get("training") or {}
    pipeline = ", ".join(f"{name} {r['speedup']:.2f}x" for name, r in training.items()) or "not measured in this run"
    rows = [
        ("In-memory batch pipeline (`BatchLoader`: uint8 tensor, batches gathered, augmented and normalised "
         "whole)", "**kept** (every dataset that fits in memory)",
         f"whole training loop against the tutorial loop, this run: {pipeline}; data path alone: "
         "`results/train_throughput.md`"),
        ("bf16 autocast on CPUs with native bf16 (`--precision auto`)",
         "**kept** for nets of >= 10 M multiply-adds per image",
         f"ResNet-20 bf16 channels-last against fp32 contiguous: {ratio(r20, 'bf16, channels-last')} (this run), "
         "accuracy within half a point (parity above); LeNet-5 bf16 against fp32: "
         f"{ratio(lenet, 'bf16, channels-last')}, inside the run-to-run noise (0.87x at batch 64 in an earlier "
         "run, with the textbook layer order), 1.06-1.11x in `results/lenet_step_ideas.md`; accuracy kept on "
         "3 seeds (Fashion-MNIST 90.54% against 90.64% fp32, digits 98.57% against 98.60%). LeNet-5 stays fp32 "
         "for now: the gain is inside this machine's noise and switching would change the recorded experiments; "
         "`--precision bf16` gives it"),
        ("Channels-last memory format", "**kept** in the LeNet-5, ResNet and plain-net recipes",
         f"ResNet-20 fp32: {ratio(r20, 'fp32, channels-last')}; LeNet-5 fp32 contiguous against channels-last: "
         f"{ratio(lenet, 'fp32, contiguous')} (this run); `results/lenet_step_ideas.md`"),
        ("LeNet-5 max-pools before its ReLU (same outputs and gradients, bit for bit)", "**kept**",
         "1.06-1.11x on top of channels-last; 0.94-0.98x without it (`results/lenet_step_ideas.md`)"),
        ("Fused SGD/AdamW, loss read every 25 steps instead of every step", "**kept**",
         "1.00-1.02x each, same update formula (`results/lenet_step_ideas.md`)"),
        ("Deterministic mode without its NaN fill of new tensors", "**kept** (the algorithms stay deterministic)",
         "ResNet-20 bf16 channels-last 964-990 img/s without the fill against 906-929 with it (separate runs)"),
        ("`torch.compile` of the training step", "not by default (`--compile` stays)",
         "LeNet-5 12-13k img/s against 17.5k eager; ResNet-20 bf16 973 against 978 once the NaN fill was off "
         "(the 13% it first showed was the fill); separate runs, compiling took 15-30 s"),
        ("Max pool as reshape + amax, THNN or unfold convolutions, `set_to_none=False`", "not kept",
         "0.20-0.94x (`results/lenet_step_ideas.md`)"),
        ("LeNet-5's first max pool + ReLU another way: default layout, strided maxima with a hand-written "
         "backward, `torch.compile`", "not kept (`max_pool2d` on channels-last stays)", pooling_evidence()),
        ("LeNet-5 on Fashion-MNIST: 3 epochs of batch 128 at lr 0.2, label smoothing 0.1, no augmentation",
         "**kept** as its dataset recipe (it replaced 5 epochs at lr 0.1 with flips)", recipe_evidence()),
        ("Inference: inductor with frozen weights (fp32), bf16 weights with batch norm folded first",
         "**kept** (`classicnets.fast`, `predict --fast`)",
         ("the inference section above" if results.get("inference") else "`results/inference.md` (not in this run)")
         + "; `src/classicnets/fast.py`"),
        ("Inference: two 1-thread streams on half batches", "not kept",
         "ResNet-50 batch 16: 24.4 img/s against 24.9 for one 2-thread call (oneDNN already scales 2x)"),
        ("Keep freed memory in the process (glibc's mmap threshold fixed at 32 MiB, trim threshold 1 GiB: "
         "`classicnets.memory`)",
         "**kept** (`classicnets.train`, `classicnets.fast`, every command)", malloc_evidence()),
        ("jemalloc or tcmalloc preloaded in glibc's place (`LD_PRELOAD`, their default settings)",
         "not kept (system libraries `pip` cannot bring, and no faster)", preload_evidence()),
        ("Threads", "torch's default (one per core)",
         "1 thread is 0.6x on 2 free cores, but much faster when another process holds a core: set `--threads`"),
    ]
    lines = ["## Decisions", "", "What each idea bought and what we did with it.", "",
             "| idea | decision | evidence |", "|---|---|---|"]
    lines += [f"| {idea} | {decision} | {evidence} |" for idea, decision, evidence in rows]
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    w.add_argument("kind", choices=["train", "tta", "peak"])
    w.add_argument("--contender", choices=["classicnets", "tutorial"])
    w.add_argument("--model")
    w.add_argument("--data")
    w.add_argument("--data-dir", default="")
    w.add_argument("--batch", type=int)
    w.add_argument("--images", type=int)
    w.add_argument("--epochs", type=int)
    w.add_argument("--lr", type=float)
    w.add_argument("--precision", choices=["auto", "fp32", "bf16"])
    w.add_argument("--channels-last", choices=["yes", "no"])
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--target", type=float)
    w.add_argument("--threads", type=int)
    w.add_argument("--n", type=int, default=2048)
    w.add_argument("--reps", type=int, default=15)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each training contender")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--workloads", nargs="+", help=f"a subset of: {', '.join(WORKLOADS)}")
    ap.add_argument("--skip-tta", action="store_true", help="leave out the time-to-accuracy runs")
    ap.add_argument("--skip-inference", action="store_true", help="leave out bench_infer.py")
    ap.add_argument("--skip-settings", action="store_true", help="leave out the precision/memory-format and "
                                                                   "bf16 accuracy runs")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.{json,md}")
    ap.add_argument("--quick", action="store_true", help="tiny run to check that the suite works")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render", type=Path, default=None,
                    help="only rewrite results.md in --out from this results.json (after editing the report)")
    args = ap.parse_args(argv)
    if args.render:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(to_markdown(json.loads(args.render.read_text())))
        return 0
    if args.mode == "worker":
        fn = {"train": worker_train, "tta": worker_tta, "peak": worker_peak}[args.kind]
        print(json.dumps(fn(args)))
        return 0
    if args.quick:
        args.reps = min(args.reps, 1) or 1
    results = run(args)
    write_results(args.out, "results", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
