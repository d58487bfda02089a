"""What the benchmark scripts share: where results go (a folder per machine, with the commit they
measured), workers in their own processes, the results other scripts wrote, and the pieces of a
run that several scripts set up the same way (random datasets, timed epochs of the training step).

The scripts import this module from their own folder (``from common import ...``).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"  # RESULTS/<machine>/<stem>.{json,md}


# --------------------------------------------------------------------------------------------
# The machine and the commit a result belongs to
# --------------------------------------------------------------------------------------------


def machine_name(machine: dict, gpu: dict | None = None) -> str | None:
    """The folder a machine's results go to, named by what decides its speed: the vector unit and
    native bf16 (``avx512-bf16``, ``avx2``), or the GPU (``cuda-nvidia-h100-80gb-hbm3``). None for
    records from before the vector unit was recorded (2026-12)."""
    if gpu:
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", gpu["name"].lower()).strip("-")
    if "cpu_capability" not in machine:
        return None
    return machine["cpu_capability"].lower() + ("-bf16" if machine.get("native_bf16") else "")


def isa(machine: dict) -> str:
    """" (AVX2, no native bf16)": the vector unit, which decides more than the CPU's name does
    (recorded since 2026-12; older results leave it out)."""
    if "cpu_capability" not in machine:
        return ""
    return f" ({machine['cpu_capability']}, {'native' if machine.get('native_bf16') else 'no native'} bf16)"


def git_commit() -> dict | None:
    """The commit this checkout is at and whether its files differ from it (uncommitted changes or
    files git does not know); None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    try:
        return {"sha": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def results_dir(machine: dict, gpu: dict | None = None) -> Path:
    """``RESULTS/<machine>``: where a run on this machine writes unless told otherwise."""
    return RESULTS / (machine_name(machine, gpu) or "unknown")


def write_results(out: Path | None, stem: str, results: dict, markdown: str, quiet: bool = False) -> Path:
    """``out/STEM.json`` and ``out/STEM.md``, ``out`` by default the folder of the machine the results
    record (``results_dir``). The JSON records the commit measured next to the machine (where the
    results do not have it already); the markdown is printed unless ``quiet``. Returns the folder."""
    out = out or results_dir(results["machine"], results.get("gpu"))
    if "commit" not in results:
        results = {"machine": results["machine"], "commit": git_commit(), **results}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    if not quiet:
        print(markdown)
    return out


# --------------------------------------------------------------------------------------------
# Results other scripts wrote
# --------------------------------------------------------------------------------------------


def result_paths(stem: str) -> list[Path]:
    """Every machine's ``RESULTS/<machine>/STEM.json``, by folder name."""
    return sorted(RESULTS.glob(f"*/{stem}.json"))


def result_path(stem: str, machine: str | None = None) -> Path | None:
    """``RESULTS/<machine>/STEM.json``, written by the script that measures it; where ``machine`` has
    none (or is not given), the first machine's that has one, by folder name; None before any ran."""
    paths = sorted(result_paths(stem), key=lambda p: p.parent.name != machine)  # stable: that machine's first
    return paths[0] if paths else None


def result_file(stem: str, machine: str | None = None) -> dict | None:
    """The results in ``result_path(stem, machine)``; None before they were measured."""
    path = result_path(stem, machine)
    return json.loads(path.read_text()) if path else None


def result_md(path: Path) -> str:
    """"`benchmarks/results/avx2/malloc.md`": the report beside a results file, as the text quotes it."""
    return f"`benchmarks/results/{path.parent.name}/{path.with_suffix('.md').name}`"


def pool_as_run(pool1: dict) -> tuple[str, float]:
    """(name, ms) of the pooling the training step runs, among a roofline run's alternatives (files
    from before the name was recorded list it first)."""
    name = pool1.get("as_run") or next(iter(pool1["alternatives_ms"]))
    return name, pool1["alternatives_ms"][name]


# --------------------------------------------------------------------------------------------
# Workers: a measurement in a process of its own
# --------------------------------------------------------------------------------------------


def serve_worker(argv: list[str], worker) -> bool:
    """``SCRIPT worker JSON``: run ``worker`` on the decoded JSON and print its result as JSON (the
    last stdout line, which the parent reads); False when ``argv`` is not a worker call."""
    if not argv or argv[0] != "worker":
        return False
    print(json.dumps(worker(json.loads(argv[1]))))
    return True


def call_worker(script: Path, args: list[str], env: dict | None = None, what: str | None = None,
                python: str | Path | None = None) -> dict:
    """Run ``SCRIPT worker ARGS...`` in its own process (from the repository root; with ``python``,
    by default this interpreter) and return the JSON it printed last (see ``serve_worker``); a
    failure raises with its stderr, named by ``what``."""
    proc = subprocess.run([str(python or sys.executable), str(script), "worker", *args], capture_output=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{what or 'worker ' + ' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode()[-3000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak resident memory (a worker's, as it ends)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def resolved_precision(cfg: dict, device: str = "cpu") -> str:
    """What a run's ``precision`` setting (its config.json) came to on ``device``: fp32, bf16 or fp16."""
    import torch

    from classicnets.device import autocast_dtype

    dtype = autocast_dtype(cfg["precision"], torch.device(device), cfg["model"])
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


# --------------------------------------------------------------------------------------------
# What several benchmarks set up the same way
# --------------------------------------------------------------------------------------------


def make_random_data(kind: str, root: Path, n_train: int, n_test: int = 16) -> Path:
    """A CIFAR-10 folder of random 32x32x3 images (``random32``), or a folder of random 224x224 PNGs."""
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "random32":
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        splits = {split: (rng.integers(0, 256, (n, 3072), dtype=np.uint8), [(i + j) % 10 for j in range(n)])
                  for i, (split, n) in enumerate((("train", n_train), ("test", n_test)))}
        return write_cifar_folder(root, splits, names)
    from PIL import Image

    for split, n in (("train", n_train), ("test", n_test)):
        for j in range(n):
            cls = root / split / f"class{j % 4}"
            cls.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(cls / f"{j}.png")
    return root


def make_gray_cifar(dataset: str, root: Path, n_train: int, n_test: int) -> Path:
    """A CIFAR-10 folder of a grey dataset's first images (``fashion-mnist``, ``digits``), padded to
    32x32 as classicnets pads them and repeated to three channels: real images at 32x32x3, whose
    test accuracy means something, where CIFAR-10 itself is not at hand."""
    from classicnets.data.pipeline import fit_to_size
    from classicnets.data.sources import load_split

    splits = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = load_split(dataset, None, split, size=(32, 32), channels=1)
        images = fit_to_size(data.images[:n], (32, 32)).expand(-1, 3, -1, -1)
        splits[split] = (images.reshape(len(images), -1).numpy(), data.labels[:n].tolist())
    return write_cifar_folder(root, splits, data.classes)


def write_cifar_folder(root: Path, splits: dict, names: list[str]) -> Path:
    """``root/cifar-10-batches-py`` in CIFAR-10's format: ``splits`` maps "train" and "test" to
    (uint8 rows of 3072 values, channel by channel, labels); the training rows in 5 batches."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=2))
    data, labels = splits["train"]
    per = math.ceil(len(labels) / 5)
    files = [(f"data_batch_{k + 1}", data[k * per:(k + 1) * per], labels[k * per:(k + 1) * per]) for k in range(5)]
    for name, rows, rows_labels in [*files, ("test_batch", *splits["test"])]:
        (d / name).write_bytes(pickle.dumps({b"data": rows, b"labels": list(rows_labels)}, protocol=2))
    return d


def timed_epoch(model, optimizer, batches, lr_at, step: int, *, label_smoothing: float = 0.0, amp_dtype=None,
                read_loss: bool = False) -> tuple[int, float, int]:
    """One pass over ``batches`` stepped as ``classicnets.train``'s loop steps: the learning rate
    ``lr_at(step)`` set, ``classicnets.train.train_step``, the running loss and accuracy sums, their
    finiteness read every 25 steps. ``read_loss``: also ``loss.item()`` after every step, as a plain
    loop logs it. Returns (images, seconds, the next step)."""
    import torch

    from classicnets.train import train_step

    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.long)
    seen = 0
    t0 = time.perf_counter()
    for x, y in batches:
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, loss = train_step(model, optimizer, x, y, label_smoothing=label_smoothing, amp_dtype=amp_dtype)
        step += 1
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if (read_loss and not math.isfinite(loss.item())) or (step % 25 == 0 and not torch.isfinite(loss_sum)):
            raise RuntimeError("non-finite loss")
    return seen, time.perf_counter() - t0, step


def script_parser(doc: str, stem: str) -> argparse.ArgumentParser:
    """A benchmark's command line with the options every one has: where its ``STEM.{json,md}`` go,
    ``--quick`` (the tiny run the tests use) and ``--quiet``; the script adds its own."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None,
                    help=f"folder for {stem}.{{json,md}} (default: benchmarks/results/<this machine>)")
    ap.add_argument("--quick", action="store_true", help="tiny run to check that the benchmark works")
    ap.add_argument("--quiet", action="store_true")
    return ap
