"""The suite's workers: one measurement each, in a process of its own (``suite.py worker KIND ...``),
so that its peak RSS is its own. Each returns what it measured as a dict (printed as JSON)."""

from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import peak_rss_mb, resolved_precision
from tutorial import tutorial_train


def worker_train(args) -> dict:
    """One contender on one workload: ``args.epochs`` epochs (the first warms up), each one's images/s."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or None
    dataset = None if data_dir else args.data
    if args.contender == "classicnets":
        from classicnets.train import TrainConfig, train

        with tempfile.TemporaryDirectory() as tmp:
            r = train(TrainConfig(model=args.model, dataset=dataset, data_dir=data_dir, batch_size=args.batch,
                                  train_limit=args.images, epochs=args.epochs, quiet=True, out=tmp,
                                  eval_every=10**6, lr=args.lr, augment=args.augment,
                                  precision=args.precision or "auto",
                                  channels_last={"yes": True, "no": False}.get(args.channels_last),
                                  seed=args.seed))
            ips = [h["images_per_second"] for h in r.history]
            cfg = json.loads((Path(tmp) / "config.json").read_text())
        # The run evaluates once, after its last epoch (eval_every above): the final test accuracy
        # the peers' runs are compared with.
        return {"images_per_second": ips[-1], "epochs": ips, "precision": cfg["precision"],
                "resolved_precision": resolved_precision(cfg), "channels_last": cfg["channels_last"],
                "test_accuracy": r.history[-1].get("test_accuracy"), "peak_rss_mb": peak_rss_mb()}
    ips = tutorial_train(args)
    return {"images_per_second": ips[-1], "epochs": ips, "precision": "fp32", "resolved_precision": "fp32",
            "channels_last": False, "peak_rss_mb": peak_rss_mb()}


# What the time-to-accuracy runs record of the recipe they trained with (recipes change).
RECIPE_KEYS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "augment", "label_smoothing")


def worker_tta(args) -> dict:
    """Train with the default recipe; training seconds until the test accuracy first reaches the target."""
    from classicnets.train import TrainConfig, train

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
            "recipe": {k: getattr(resolved, k) for k in RECIPE_KEYS}, "peak_rss_mb": peak_rss_mb()}


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
