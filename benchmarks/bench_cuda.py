"""ResNet-56 on CIFAR-10 on a GPU: how long one epoch takes, side by side.

The CUDA figure among the performance goals. ``classicnets train resnet56 --dataset cifar10`` as it runs
on a GPU by default -- mixed precision (bf16 autocast where the GPU has bf16, else fp16 with loss
scaling), channels-last, the whole dataset held on the GPU as uint8 with each batch gathered,
cropped, flipped and normalised there -- against what each of those is worth and against the
usual loop:

* ``classicnets``: the default run (He et al.'s recipe: batch 128, SGD 0.1, crops and flips);
* ``classicnets, fp32``: without mixed precision;
* ``classicnets, contiguous``: in the default memory format;
* ``classicnets, nondeterministic``: ``--nondeterministic`` (cuDNN times its algorithms and keeps
  the fastest; deterministic runs may not);
* ``tutorial``: the PyTorch tutorials' loop on the GPU: a per-sample ``Dataset`` through a
  ``DataLoader`` with worker processes and pinned memory, fp32, default memory format,
  ``torch.optim.SGD``, ``loss.item()`` every step (``tutorial.tutorial_train``);
* ``classicnets, compiled`` (only with ``--compile``): ``--compile`` on top of the default.

Every contender runs in its own process (its own CUDA context and peak memory) for ``--epochs``
epochs; the first warms up (cuDNN's plans, the allocator's pools), the median of the others is
reported; ``--reps`` rounds, contenders in rotating order. The data: CIFAR-10 from ``--data-dir``
(a ``cifar-10-batches-py`` folder) or, without it, 50,000 random CIFAR-10-shaped images: an
epoch's time does not depend on the pixels, and nothing here reports accuracy.

Run on a GPU: ``.venv/bin/python benchmarks/bench_cuda.py`` (about 4 minutes on one H200-class
GPU). ``--device cpu --quick`` is the tiny run the tests use (it checks that every contender runs).
Results: ``benchmarks/results/<machine>/cuda_resnet56.{json,md}``, the machine named by its GPU
(``cuda-<gpu name>``; without one, by its CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import call_worker, make_random_data, resolved_precision, serve_worker, write_results  # benchmarks/*.py
from tutorial import tutorial_train

# name -> the TrainConfig settings that differ from the default run ("tutorial" is its own loop).
CONTENDERS = {
    "classicnets": {},
    "classicnets, fp32": {"precision": "fp32"},
    "classicnets, contiguous": {"channels_last": False},
    "classicnets, nondeterministic": {"deterministic": False},
    "tutorial": None,
}
COMPILED = {"classicnets, compiled": {"compile": True}}


def worker(job: dict) -> dict:
    """One contender, one process: the seconds of each epoch, and what the run was."""
    import torch

    device = torch.device(job["device"])
    images = job["images"]
    if job["settings"] is None:
        args = argparse.Namespace(model=job["model"], data=None, data_dir=job["data_dir"], batch=job["batch"],
                                  lr=None, images=images, epochs=job["epochs"])
        rates = tutorial_train(args, device=job["device"], workers=job["workers"])
        seconds = [images / r for r in rates]
        out = {"settings": {"precision": "fp32", "channels_last": False, "deterministic": False, "compile": False}}
    else:
        from classicnets.train import TrainConfig, train

        with tempfile.TemporaryDirectory() as tmp:
            r = train(TrainConfig(model=job["model"], dataset=None, data_dir=job["data_dir"], batch_size=job["batch"],
                                  epochs=job["epochs"], train_limit=images, device=job["device"], quiet=True,
                                  eval_every=10**6, out=tmp, **job["settings"]))
            cfg = json.loads((Path(tmp) / "config.json").read_text())  # the settings the run resolved
        seconds = [h["epoch_seconds"] for h in r.history]
        out = {"settings": {"precision": resolved_precision(cfg, job["device"]),
                            "channels_last": bool(cfg["channels_last"]), "deterministic": cfg["deterministic"],
                            "compile": cfg["compile"]},
               "final_train_loss": r.history[-1]["train_loss"]}
    out["epoch_seconds"] = seconds
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def device_info(device: str) -> dict:
    import torch

    from classicnets.report import machine_info

    info = {"machine": machine_info(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = {"name": props.name, "memory_gb": props.total_memory / 2**30,
                       "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                       "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported()}
    return info


def run(args) -> dict:
    started = time.perf_counter()
    contenders = dict(CONTENDERS, **(COMPILED if args.compile else {}))
    info = device_info(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or str(make_random_data("random32", Path(tmp), args.images, n_test=args.batch))
        samples: dict[str, list[dict]] = {name: [] for name in contenders}
        names = list(contenders)
        for rep in range(args.reps):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                job = dict(model=args.model, data_dir=data_dir, batch=args.batch, images=args.images,
                           epochs=args.epochs, device=args.device, workers=args.workers,
                           settings=contenders[name])
                result = call_worker(Path(__file__), [json.dumps(job)], what=f"{name} (round {rep + 1})")
                samples[name].append(result)
                if not args.quiet:
                    print(f"round {rep + 1}: {name}: epochs "
                          + ", ".join(f"{s:.2f}" for s in result["epoch_seconds"]) + " s", file=sys.stderr)
    summary = {}
    for name, runs in samples.items():
        timed = [s for r in runs for s in r["epoch_seconds"][1:]]  # the first epoch of each run warms up
        summary[name] = {"median_epoch_seconds": statistics.median(timed), "timed_epochs": timed,
                         "images_per_second": args.images / statistics.median(timed),
                         "peak_gpu_memory_mb": max((r.get("peak_gpu_memory_mb") or 0) for r in runs) or None,
                         "settings": runs[0]["settings"]}
    base = summary["classicnets"]["median_epoch_seconds"]
    for s in summary.values():
        s["relative_to_default"] = base / s["median_epoch_seconds"]
        s["speedup_over_tutorial"] = summary["tutorial"]["median_epoch_seconds"] / s["median_epoch_seconds"]
    return {**info, "model": args.model, "data": "cifar-10" if args.data_dir else "random CIFAR-10-shaped",
            "images_per_epoch": args.images, "batch": args.batch, "epochs_per_run": args.epochs, "reps": args.reps,
            "tutorial_workers": args.workers, "quick": args.quick, "contenders": summary, "runs": samples,
            "seconds": time.perf_counter() - started}


def to_markdown(r: dict) -> str:
    m, gpu = r["machine"], r.get("gpu")
    where = (f"{gpu['name']} ({gpu['memory_gb']:.0f} GB, compute capability {gpu['capability']}, CUDA {gpu['cuda']}, "
             f"cuDNN {gpu['cudnn']}, bf16 {'yes' if gpu['bf16'] else 'no'})" if gpu
             else f"device `{r['device']}` (no GPU: this checks that the benchmark runs, its times mean nothing)")
    lines = [
        f"# {r['model']} on {r['data']}: one epoch on {'a GPU' if gpu else r['device']}", "",
        f"`benchmarks/bench_cuda.py{' --quick' if r['quick'] else ''}`: {r['seconds']:.0f} s. {where}; host "
        f"{m['cpu']}, torch {m['torch']}. {r['images_per_epoch']:,} training images of 32x32x3 per epoch, batch "
        f"{r['batch']}; each contender its own process, {r['epochs_per_run']} epochs per run of which the first "
        f"warms up, {r['reps']} round(s) in rotating order; medians of the timed epochs.", "",
        "| contender | precision | memory format | deterministic | median epoch | img/s | vs the default "
        "| vs tutorial | peak GPU MB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in r["contenders"].items():
        st = s["settings"]
        mem = f"{s['peak_gpu_memory_mb']:,.0f}" if s["peak_gpu_memory_mb"] else "-"
        lines.append(f"| {name} | {st['precision']} | {'channels-last' if st['channels_last'] else 'contiguous'} | "
                     f"{'yes' if st['deterministic'] else 'no'} | {s['median_epoch_seconds']:.2f} s | "
                     f"{s['images_per_second']:,.0f} | {s['relative_to_default']:.2f}x | "
                     f"{s['speedup_over_tutorial']:.2f}x | {mem} |")
    lines += ["", "Every timed epoch (s): " + "; ".join(
        f"{name}: {', '.join(f'{t:.2f}' for t in s['timed_epochs'])}" for name, s in r["contenders"].items()) + ".",
        "", f"The tutorial loop's `DataLoader`: {r['tutorial_workers']} worker processes"
        f"{', pinned memory' if gpu else ''}. Regenerate: `.venv/bin/python benchmarks/bench_cuda.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if serve_worker(argv, worker):
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for --quick")
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--data-dir", default=None, help="a cifar-10-batches-py folder (default: random images)")
    ap.add_argument("--images", type=int, default=50_000, help="training images per epoch")
    ap.add_argument("--batch", type=int, default=128, help="batch size (He et al.: 128)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run, the first one a warm-up")
    ap.add_argument("--reps", type=int, default=1, help="rounds of all contenders")
    ap.add_argument("--workers", type=int, default=None, help="the tutorial DataLoader's worker processes "
                                                              "(default: 4 on a GPU, 0 on a CPU)")
    ap.add_argument("--compile", action="store_true", help="also time --compile")
    ap.add_argument("--quick", action="store_true", help="tiny: ResNet-20, 32 images, 2 epochs")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for cuda_resnet56.{json,md} (default: benchmarks/results/<this machine>)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"bench_cuda.py: --device {args.device}: this machine has no CUDA device (torch "
                  f"{torch.__version__}); run it on a GPU, or with --device cpu --quick to check that it runs",
                  file=sys.stderr)
            return 2
    if args.quick:
        args.model, args.images, args.batch, args.epochs, args.reps = "resnet20", 32, 16, 2, 1
    if args.workers is None:
        args.workers = 4 if args.device.startswith("cuda") else 0
    results = run(args)
    write_results(args.out, "cuda_resnet56", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
