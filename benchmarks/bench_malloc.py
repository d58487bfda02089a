"""Does keeping freed memory in the process (``classicnets.memory``) pay? Side by side, by process.

glibc's malloc hands large freed blocks back to the kernel, so a loop that frees and reallocates
the same activation buffers takes a page fault for every 4 KiB of them, every step.
``classicnets.memory.keep_freed_memory`` raises glibc's mmap and trim thresholds so the blocks
are reused. The setting is process-wide and cannot be undone, so each measurement is its own
process, started with ``CLASSICNETS_KEEP_FREED_MEMORY=0`` ("returned", glibc's default) or
without it ("kept"); the two alternate, the order swapping every repetition, and we report
medians. Each worker reports images/s (median of its timed samples), minor page faults per
step (or per call) while timed, and its peak RSS.

Workloads (what ``classicnets.train`` and ``classicnets.fast`` run; the ``-step`` and ``-b16`` rows
on random tensors, so that the data path is out of the picture):

* ``lenet5-step``, ``resnet20-step``: ``classicnets.train.train_step`` as the recipe runs it on
  Fashion-MNIST / CIFAR-10 (channels-last, ``make_optimizer``'s fused SGD with momentum, the
  recipe's precision on this CPU and its label smoothing), batch 128, 1x32x32 / 3x32x32.
* ``resnet50-eager-b16``: ResNet-50 inference, eager, channels-last fp32, batch 16 at 224x224.
* ``resnet50-fast-b16``: the same through ``optimize_for_inference(..., "fp32")`` (inductor).
* ``lenet5-train``, ``resnet20-train``: ``classicnets.train`` of LeNet-5 on 20,096 Fashion-MNIST
  images (the embedded digits where Fashion-MNIST is not installed) and of ResNet-20 on 2,560
  random CIFAR-shaped images, the second epoch's images/s.

``--preload jemalloc tcmalloc`` also runs each workload under those allocators (``LD_PRELOAD``,
with ``CLASSICNETS_KEEP_FREED_MEMORY=0``: glibc's settings do not reach them), the drop-in
replacements ``torch.backends.xeon.run_cpu`` offers; their libraries come from the system
(Debian: ``libjemalloc2``, ``libtcmalloc-minimal4``), which a ``pip install`` cannot bring.

Run: ``.venv/bin/python benchmarks/bench_malloc.py`` (~10 minutes on 2 cores). Results:
``benchmarks/results/<machine>/malloc.{json,md}``. ``--quick`` is the tiny run the tests use.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    call_worker,
    git_commit,
    isa,
    make_random_data,
    peak_rss_mb,
    results_dir,
    script_parser,
    serve_worker,
    write_results,
)

MODES = ("returned", "kept")
# Allocators that --preload can put in place of glibc's malloc: (library, Debian package).
PRELOADS = {"jemalloc": ("jemalloc", "libjemalloc2"), "tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4")}

# name -> (what it runs, timed steps per sample, samples per process)
WORKLOADS = {
    "lenet5-step": dict(kind="step", model="lenet5", batch=128, steps=40, samples=5),
    "resnet20-step": dict(kind="step", model="resnet20", batch=128, steps=4, samples=5),
    "resnet50-eager-b16": dict(kind="infer", model="resnet50", batch=16, backend="eager", steps=1, samples=5),
    "resnet50-fast-b16": dict(kind="infer", model="resnet50", batch=16, backend="fast", steps=1, samples=5),
    "lenet5-train": dict(kind="train", model="lenet5", batch=128, images=20_096),
    "resnet20-train": dict(kind="train", model="resnet20", batch=128, images=2_560),
}
# The dataset whose recipe the -step workloads take (the -train rows train on them, or on their shape).
STEP_DATASETS = {"lenet5": "fashion-mnist", "resnet20": "cifar10"}
QUICK = {
    "lenet5-step": dict(kind="step", model="lenet5", batch=16, steps=3, samples=2),
    "lenet5-train": dict(kind="train", model="lenet5", batch=32, images=256),
}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(fn, images: int, steps: int, samples: int) -> dict:
    """Median images/s over ``samples`` runs of ``steps`` calls, and faults per call while timed."""
    rates, faults = [], 0
    for _ in range(samples):
        f0, t0 = _faults(), time.perf_counter()
        for _ in range(steps):
            fn()
        rates.append(images * steps / (time.perf_counter() - t0))
        faults += _faults() - f0
    return {"images_per_second": statistics.median(rates), "samples": rates,
            "faults_per_step": faults / (samples * steps)}


def worker(w: dict) -> dict:
    import torch

    from classicnets import create_model
    from classicnets.memory import keep_freed_memory

    state = keep_freed_memory()  # as every classicnets command does first
    torch.manual_seed(0)
    if w["kind"] == "step":
        out = _step_workload(w)
    elif w["kind"] == "infer":
        from classicnets.fast import optimize_for_inference

        model = create_model(w["model"], num_classes=1000).eval()
        x = torch.randn(w["batch"], 3, 224, 224)
        if w["backend"] == "fast":
            fn = optimize_for_inference(model, x, "fp32")
        else:
            model.to(memory_format=torch.channels_last)

            def fn(x):
                with torch.inference_mode():
                    return model(x.contiguous(memory_format=torch.channels_last))
        for _ in range(2):
            fn(x)
        out = _timed(lambda: fn(x), w["batch"], w["steps"], w["samples"])
    else:
        from classicnets.data import load_dataset
        from classicnets.errors import DataFormatError
        from classicnets.train import TrainConfig, train

        with tempfile.TemporaryDirectory() as tmp:
            data_dir = None
            if w["model"].startswith("lenet"):
                dataset = "fashion-mnist"
                try:
                    load_dataset(dataset, split="test", download=False, progress=False)
                except DataFormatError:  # not installed here: the embedded digits, and the report says so
                    dataset = "digits"
            else:  # random 32x32x3 images in CIFAR-10's format, as the suite's ResNet workloads
                dataset, data_dir = "random CIFAR-shaped", str(make_random_data("random32", Path(tmp), w["images"]))
            f0 = _faults()
            r = train(TrainConfig(model=w["model"], dataset=None if data_dir else dataset, data_dir=data_dir,
                                  batch_size=w["batch"], train_limit=w["images"], epochs=2, eval_every=10**6,
                                  quiet=True, out=str(Path(tmp) / "run")))
            steps = 2 * -(-r.split_sizes["train"] // w["batch"])  # two epochs, the last batch short
            # Faults of the whole run, reading the data included: the steps alone are the rows above.
            out = {"images_per_second": r.history[-1]["images_per_second"],
                   "samples": [h["images_per_second"] for h in r.history],
                   "faults_per_step": None, "faults_whole_run_per_step": (_faults() - f0) / steps,
                   "dataset": dataset}
    return {**out, "state": state, "allocator": _allocator(), "peak_rss_mb": peak_rss_mb()}


def _step_workload(w: dict) -> dict:
    """``classicnets.train.train_step`` as the recipe runs it (its memory format, ``make_optimizer``'s
    fused SGD, its precision and label smoothing on this CPU) on one random batch, timed."""
    import torch

    from classicnets import create_model
    from classicnets.device import autocast_dtype
    from classicnets.train import TrainConfig, make_optimizer, train_step

    cfg = TrainConfig(model=w["model"], dataset=STEP_DATASETS[w["model"]], batch_size=w["batch"]).resolved()
    channels = 1 if w["model"].startswith("lenet") else 3
    model = create_model(w["model"], num_classes=10, in_channels=channels)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    optimizer = make_optimizer(cfg, model)
    amp = autocast_dtype(cfg.precision, torch.device("cpu"), w["model"])
    x = torch.randn(w["batch"], channels, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (w["batch"],))

    def step():
        train_step(model, optimizer, x, y, label_smoothing=cfg.label_smoothing, amp_dtype=amp)

    for _ in range(max(3, w["steps"])):
        step()
    return {**_timed(step, w["batch"], w["steps"], w["samples"]), "precision": "bf16" if amp is not None else "fp32"}


def _allocator() -> str:
    """Whose malloc this process runs: a preloaded library's, if one is mapped, else glibc's."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").is_file() else ""
    return next((name for name, (lib, _) in PRELOADS.items() if f"lib{lib}.so" in maps), "glibc")


def preload_library(name: str) -> str:
    """The shared library to preload for allocator ``name``; a clear error where it is missing."""
    import ctypes.util

    library, package = PRELOADS[name]
    found = ctypes.util.find_library(library)
    if found is None:
        raise SystemExit(f"--preload {name}: lib{library} is not installed on this machine "
                         f"(Debian/Ubuntu: apt-get install {package})")
    return found


def run_worker(name: str, w: dict, mode: str, threads: int | None, preload: str | None = None) -> dict:
    """One measurement in its own process; ``preload``: the library of allocator ``mode``, if it is one."""
    env = dict(os.environ)
    env.pop("CLASSICNETS_KEEP_FREED_MEMORY", None)
    env.pop("LD_PRELOAD", None)
    if mode != "kept":  # glibc's default, or another allocator that glibc's settings do not reach
        env["CLASSICNETS_KEEP_FREED_MEMORY"] = "0"
    if preload:
        env["LD_PRELOAD"] = preload
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    r = call_worker(Path(__file__).resolve(), [json.dumps(w)], env, what=f"{name} ({mode})")
    expected = "kept" if mode == "kept" else "off"
    if r["state"] != expected:
        raise RuntimeError(f"{name} ({mode}): the worker's allocator setting is {r['state']!r}, not {expected!r}")
    if r["allocator"] != (mode if mode in PRELOADS else "glibc"):
        raise RuntimeError(f"{name} ({mode}): the worker ran with {r['allocator']}'s malloc")
    return r


def run(args) -> dict:
    from classicnets.report import machine_info

    table = QUICK if args.quick else WORKLOADS
    names = args.workloads or list(table)
    results = {"machine": machine_info(), "commit": git_commit(), "reps": args.reps, "quick": args.quick,
               "workloads": {}}
    previous = (args.out or results_dir(results["machine"])) / "malloc.json"
    if args.workloads and previous.is_file():
        # Measuring some workloads again keeps the others' rows (and says when they were measured).
        results["workloads"] = json.loads(previous.read_text())["workloads"]
    # Found before any measurement: a missing library stops the run at once.
    libraries = {mode: preload_library(mode) for mode in args.preload or ()}
    modes = MODES + tuple(libraries)
    start = time.perf_counter()
    for name in names:
        w = table[name]
        runs = {m: [] for m in modes}
        for rep in range(args.reps):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                runs[mode].append(run_worker(name, w, mode, args.threads, libraries.get(mode)))
            if not args.quiet:
                last = {m: runs[m][-1] for m in modes}
                print(f"{name} rep {rep + 1}: " + ", ".join(
                    f"{m} {r['images_per_second']:,.1f} img/s ({_count(r['faults_per_step'])} faults)"
                    for m, r in last.items()), flush=True)
        med = {m: {k: (statistics.median(r[k] for r in runs[m]) if runs[m][0][k] is not None else None)
                   for k in ("images_per_second", "faults_per_step", "peak_rss_mb")} for m in modes}
        kept = med["kept"]["images_per_second"]
        results["workloads"][name] = {**w, "runs": runs, "median": med, "measured": time.strftime("%Y-%m-%d %H:%M"),
                                      "commit": results["commit"],
                                      "load_average_at_start": results["machine"]["load_average_at_start"],
                                      "ratio": kept / med["returned"]["images_per_second"],
                                      "preloaded_vs_kept": {m: med[m]["images_per_second"] / kept
                                                            for m in libraries},
                                      "precision": runs["kept"][0].get("precision"),
                                      "dataset": runs["kept"][0].get("dataset")}
    results["seconds"] = time.perf_counter() - start
    return results


def _count(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def to_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Keeping freed memory in the process: what it buys", "",
        f"`benchmarks/bench_malloc.py`{' --quick' if results['quick'] else ''}: {results['seconds']:.0f} s. "
        f"Machine: {m['cpu']}{isa(m)}, {m['cores_available']} cores available, torch {m['torch']}, "
        f"{m['torch_threads']} torch threads, load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'] or [])}. Rows measured: "
        + ", ".join(sorted({r.get("measured", "?") for r in results["workloads"].values()})) + ".", "",
        "Each row: one process per measurement, glibc's default (*returned*: "
        "`CLASSICNETS_KEEP_FREED_MEMORY=0`) against `classicnets.memory.keep_freed_memory()` (*kept*), "
        "alternating (how many of each: the list below); medians over the processes. Faults: minor page faults per "
        "training step or inference call while timed (not counted for the `-train` rows, whose whole runs "
        "include reading the data: their steps are the `-step` rows).", "",
        "| workload | img/s returned | img/s kept | ratio | faults returned | faults kept "
        "| peak RSS MB (returned / kept) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["workloads"].items():
        a, b = r["median"]["returned"], r["median"]["kept"]
        what = name + (f" ({r['precision']})" if r.get("precision") else "") + \
            (f" ({r['dataset']})" if r.get("dataset") else "")
        lines.append(f"| {what} | {a['images_per_second']:,.1f} | {b['images_per_second']:,.1f} | "
                     f"**{r['ratio']:.2f}x** | {_count(a['faults_per_step'])} | {_count(b['faults_per_step'])} | "
                     f"{a['peak_rss_mb']:,.0f} / {b['peak_rss_mb']:,.0f} |")
    preloaded = {name: r for name, r in results["workloads"].items() if r.get("preloaded_vs_kept")}
    if preloaded:
        lines += ["", "Other allocators in glibc's place (`--preload`: `LD_PRELOAD`, their default settings), "
                  "against *kept*, in the same rounds:", "",
                  "| workload | allocator | img/s | against kept | faults | peak RSS MB |",
                  "|---|---|---:|---:|---:|---:|"]
        for name, r in preloaded.items():
            for mode, ratio in r["preloaded_vs_kept"].items():
                x = r["median"][mode]
                lines.append(f"| {name} | {mode} | {x['images_per_second']:,.1f} | **{ratio:.2f}x** | "
                             f"{_count(x['faults_per_step'])} | {x['peak_rss_mb']:,.0f} |")
    lines += ["", "All processes (img/s):", ""]
    for name, r in results["workloads"].items():
        lines.append(f"* {name}: " + "; ".join(
            f"{m} " + ", ".join(f"{x['images_per_second']:,.1f}" for x in r["runs"][m]) for m in r["runs"]))
    lines += ["", "Regenerate: `.venv/bin/python benchmarks/bench_malloc.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if serve_worker(argv, worker):
        return 0
    ap = script_parser(__doc__, "malloc")
    ap.add_argument("--reps", type=int, default=5, help="processes per mode and workload")
    ap.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), help="only these")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the workers")
    ap.add_argument("--preload", nargs="+", choices=list(PRELOADS),
                    help="also measure these allocators, preloaded in glibc's place")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps = 1
    results = run(args)
    write_results(args.out, "malloc", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
