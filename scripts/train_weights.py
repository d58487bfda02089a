"""Reproduce the weights shipped in ``src/classicnets/weights/``, each with its card.

    .venv/bin/python scripts/train_weights.py                    # every one (ResNet-20 takes about an hour on 2 cores)
    .venv/bin/python scripts/train_weights.py lenet5-digits      # one
    .venv/bin/python scripts/train_weights.py resnet20-fashion --from-run runs/weights/resnet20-fashion

Each set of weights is ``classicnets train`` with the command in :data:`WEIGHTS`, run in its own
process; its ``model.safetensors`` becomes ``NAME.safetensors`` (the metadata's local paths
dropped) and its card ``NAME.json`` records the dataset, the exact command, the test accuracy of
the last epoch, the training seconds, the machine, the torch version, the commit and the file's
SHA-256. ``--from-run DIR`` packages a run already made with that command (its saved config is
checked against the command) instead of training again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import git_commit  # noqa: E402  (benchmarks/common.py)

from classicnets import checkpoint as ckpt  # noqa: E402
from classicnets.cli import build_parser  # noqa: E402
from classicnets.report import machine_info  # noqa: E402
from classicnets.train import config_from_args  # noqa: E402
from classicnets.weights import FOLDER  # noqa: E402

# name -> the arguments of `classicnets train` (every one with --seed 0): the recipes' defaults,
# except where a budget is given.
WEIGHTS = {
    "lenet5-digits": ["lenet5", "--dataset", "digits"],
    "lenet5_1998-digits": ["lenet5_1998", "--dataset", "digits"],
    "lenet5-fashion": ["lenet5", "--dataset", "fashion-mnist"],
    # He et al. 2015's CIFAR recipe (SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, lr/10 at
    # 50% and 75% of training, crops and flips) for 20 epochs of Fashion-MNIST's 60,000 images.
    "resnet20-fashion": ["resnet20", "--dataset", "fashion-mnist", "--epochs", "20"],
}
SEED = ["--seed", "0"]
# Settings that make a run what it is: a run packaged with --from-run must have them as the command says.
DEFINING = ("model", "dataset", "epochs", "batch_size", "lr", "optimizer", "momentum", "nesterov", "weight_decay",
            "schedule", "milestones", "augment", "label_smoothing", "seed", "train_limit", "input_size",
            "model_kwargs", "deterministic")


def command(name: str) -> list[str]:
    return ["classicnets", "train", *WEIGHTS[name], *SEED]


def train(name: str, out: Path) -> float:
    """Train ``name`` into ``out`` in its own process; the wall-clock seconds it took. The load of
    the machine as it starts goes into the run's folder: other work sharing the cores slows the
    training seconds on the card."""
    (out.parent / "load_average_at_start").write_text(" ".join(f"{x:.2f}" for x in os.getloadavg()))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "classicnets", *command(name)[1:], "--out", str(out), "--quiet"],
                   check=True, cwd=ROOT)
    return time.perf_counter() - t0


def check_run(name: str, run: Path) -> None:
    """Refuse a run whose saved config is not what the command makes."""
    want = config_from_args(build_parser().parse_args(command(name)[1:])).resolved()
    have = json.loads((run / "config.json").read_text())
    wrong = [f"{k}: {have.get(k)!r} (the command: {getattr(want, k)!r})" for k in DEFINING
             if _plain(have.get(k)) != _plain(getattr(want, k))]
    if wrong:
        raise SystemExit(f"{run} was not made by `{' '.join(command(name))}`: {'; '.join(wrong)}")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def package(name: str, run: Path) -> dict:
    """Write ``NAME.safetensors`` from the run and its card ``NAME.json``; return the card."""
    tensors, meta = ckpt.read_tensors(run / ckpt.MODEL_FILE)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Paths of the machine it was trained on mean nothing where the package is installed.
    meta = {**meta, "data_dir": None, "config": {**meta["config"], "out": None, "data_dir": None}}
    target = FOLDER / f"{name}.safetensors"
    ckpt.save_tensors(target, tensors, meta)
    card = {
        "name": name, "model": meta["model"], "dataset": meta["dataset"], "classes": meta["classes"],
        "command": " ".join(command(name)),
        "test_accuracy": history[-1]["test_accuracy"], "epochs": len(history),
        "train_seconds": round(sum(h["epoch_seconds"] for h in history), 1),
        "params": sum(t.numel() for k, t in tensors.items() if not k.endswith(("running_mean", "running_var",
                                                                               "num_batches_tracked"))),
        "machine": _machine(meta), "load_average_at_start": _load(run), "torch": machine_info()["torch"],
        "commit": git_commit(),
        "trained": time.strftime("%Y-%m-%d", time.localtime((run / ckpt.MODEL_FILE).stat().st_mtime)),
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(), "bytes": target.stat().st_size,
    }
    ckpt.atomic_write_text(FOLDER / f"{name}.json", json.dumps(card, indent=2) + "\n")
    return card


def _load(run: Path) -> list[float] | None:
    """The 1, 5 and 15-minute load averages when training started (None for a run made elsewhere)."""
    path = run.parent / "load_average_at_start"
    return [float(x) for x in path.read_text().split()] if path.is_file() else None


def _machine(meta: dict) -> dict:
    m = machine_info()
    threads = meta["config"].get("threads") or m["torch_threads"]
    return {k: m[k] for k in ("cpu", "cpu_capability", "native_bf16", "cores_available") if k in m} | {
        "torch_threads": threads}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(WEIGHTS)} (default: all)")
    p.add_argument("--from-run", type=Path, metavar="DIR", help="package this finished run of the one NAME given")
    a = p.parse_args(argv)
    names = a.names or list(WEIGHTS)
    unknown = [n for n in names if n not in WEIGHTS]
    if unknown:
        p.error(f"unknown weights {', '.join(unknown)}: expected any of {', '.join(WEIGHTS)}")
    if a.from_run and len(names) != 1:
        p.error("--from-run packages one run: name exactly one NAME")
    for name in names:
        if a.from_run:
            check_run(name, a.from_run)
            card = package(name, a.from_run)
        else:
            with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
                train(name, Path(tmp) / "run")
                card = package(name, Path(tmp) / "run")
        print(f"{name}: test accuracy {card['test_accuracy']:.4f} after {card['epochs']} epochs, "
              f"{card['train_seconds']} s of training; wrote {FOLDER / name}.safetensors ({card['bytes']:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

