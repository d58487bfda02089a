"""The benchmark suite: one command, every figure of the performance goals, side by side.

    .venv/bin/python benchmarks/suite.py            # ~50 minutes on 2 cores with the peers
    .venv/bin/python benchmarks/suite.py --quick    # seconds: checks that it all runs (the tests)

Writes ``results.json`` (with the machine and the commit measured) and ``results.md`` in
``benchmarks/results/<machine>/`` (``--out``: elsewhere), quoted by the README:

1. **Training throughput** (images/s) of ``classicnets.train`` -- the real product path, its
   per-epoch ``images_per_second`` -- against the tutorial loop: a ``Dataset`` returning one
   augmented sample at a time through a ``DataLoader``, the model in its default memory format,
   fp32, ``torch.optim.SGD``'s default implementation, ``loss.item()`` every step. Same model,
   batch size, optimiser settings and augmentation. Workloads: LeNet-5 on Fashion-MNIST (the
   first 20,096 images); ResNet-20 on 32x32x3 (the first 2,560 Fashion-MNIST images, padded and
   repeated to three channels, so that its test accuracy means something); ResNet-56 on 32x32x3
   (random CIFAR-10-shaped images: throughput does not depend on the pixels); VGG-16 and
   ResNet-50 at 224x224 for a few steps.
   **The peers** (``peers.py``), where installed: Keras 3 on TensorFlow, Keras 3 on JAX and Flax +
   optax train LeNet-5 and ResNet-20 in the same rounds, with the same model, data, batch, epochs,
   optimiser and learning rate of every step; every contender but the tutorial loop reports its
   final test accuracy. Round r is seed r for every contender. An absent peer is skipped, and the
   report says so.
2. **Time to accuracy**: training seconds (evaluation excluded) until LeNet-5 first reaches 90%
   on the Fashion-MNIST test set, and 98.5% on the embedded digits' test split, with the default
   recipe.
3. **Inference throughput**: ``benchmarks/bench_infer.py`` (AlexNet, VGG-16, ResNet-50 at batch
   1 and 16: eager, the paths ``--fast`` serves in fp32 and bf16, ONNX Runtime), merged in; then
   VGG-16 and ResNet-50 at batch 16 in each Keras peer (``keras.applications``).
4. **LeNet-5's kernel ceiling**: ``benchmarks/bench_lenet_roofline.py`` at batch 128 (its
   convolution and linear kernels alone against the whole training step), merged in.
5. **Fraction of peak**: achieved FLOP/s (2 x multiply-adds per image forward, x3 for a training
   step: forward, input gradients and weight gradients) over the matmul peak of this machine,
   measured in the same run (fp32 and bf16 ``torch.mm``, before and after the runs).
6. **Memory**: the peak RSS of each training run; every run is its own process, so the figure
   is that run's alone (``os.wait4``'s ``ru_maxrss``).

Each contender runs ``--reps`` times, interleaved (A B C, B C A, ...), and the medians are reported.

This file runs the suite: its arguments, its sections and their order. ``training.py`` runs the
training throughput section, ``peers.py`` the peers (their own loops are in ``peer_keras.py`` and
``peer_flax.py``); ``workers.py`` holds the measurements, each run in a process of its own
(``suite.py worker ...``); ``goals.py`` judges the
performance goals and quotes the other benchmarks' results; ``render.py`` writes the report;
``common.py`` and ``tutorial.py`` are shared with the other scripts. The names
``scripts/update_readme.py`` reads from here (``isa``, ``peak_text``, ``evaluate_goals``,
``format_goal``, ``format_seconds``, ``cuda_evidence``, ``result_paths``, ``pool_as_run``) are
imported below from where they live.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/*.py, imported from this folder as the scripts run.
from common import RESULTS, git_commit, isa, machine_name, pool_as_run, result_paths, write_results
from goals import cuda_evidence, evaluate_goals, format_goal
from peer_common import PEERS
from peers import default_python, find_peers
from peers import inference_section as peer_inference_section
from render import format_seconds, peak_text, summary_table, to_markdown
from training import QUICK_WORKLOADS, WORKLOADS, log, run_worker, training_section, workload_data
from workers import worker_peak, worker_train, worker_tta

# What scripts/update_readme.py and the tests read from this module, wherever it is defined.
__all__ = ["cuda_evidence", "evaluate_goals", "format_goal", "format_seconds", "isa", "main", "median_seconds",
           "peak_text", "pool_as_run", "result_paths", "summary_table"]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def quick_without_bf16(args) -> bool:
    """A ``--quick`` run on a CPU without native bf16 leaves bf16 out of the settings and the parity:
    emulated, it took most of the quick suite's time (ResNet-20 at 22-25 img/s), and it decides
    nothing there (``precision="auto"`` never picks it on such a CPU)."""
    from classicnets.device import cpu_has_bf16

    return args.quick and not cpu_has_bf16()


def settings_section(args, tmp: Path) -> dict:
    """What the defaults are made of: classicnets.train on one workload with each precision and
    memory format, interleaved. This is the measurement behind ``BF16_MIN_MACS`` and the recipes'
    ``channels_last``."""
    out = {}
    picks = {"lenet5-fashion": [("fp32", "yes"), ("bf16", "yes"), ("fp32", "no")],
             "resnet20-32x32x3": [("fp32", "no"), ("fp32", "yes"), ("bf16", "no"), ("bf16", "yes")]}
    if quick_without_bf16(args):
        picks = {name: [v for v in variants if v[0] != "bf16"] for name, variants in picks.items()}
    table = QUICK_WORKLOADS if args.quick else WORKLOADS
    for name, variants in picks.items():
        w = table[name]
        data_dir = workload_data(w, tmp / f"settings-{name}")
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
    fp32 against bf16, same seeds, same data, same everything else. ``--quick`` on a CPU without
    native bf16 leaves it out (nothing: emulated bf16 took most of the quick suite's time)."""
    if quick_without_bf16(args):
        return {}
    data, images, epochs, seeds = (("digits", 64, 1, (0,)) if args.quick else ("fashion-mnist", 10_000, 4, (0, 1)))
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


def roofline_section(args, tmp: Path, threads: int) -> dict | None:
    """LeNet-5's kernel ceiling at batch 128 (``bench_lenet_roofline.py``, without its
    torch.compile pooling, which only the Decisions need): the yardstick of its step goal."""
    if args.skip_roofline:
        return None
    out = tmp / "roofline"
    cmd = [sys.executable, str(HERE / "bench_lenet_roofline.py"), "--batch", "128", "--no-compile",
           "--threads", str(args.threads or threads), "--out", str(out), "--quiet"]
    subprocess.run(cmd + (["--quick"] if args.quick else []), check=True, cwd=ROOT)
    return json.loads((out / "lenet_roofline.json").read_text())


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
    results = {"machine": machine_info(), "commit": git_commit(), "quick": args.quick, "reps": args.reps}
    wanted = [] if args.peers == ["none"] else args.peers
    results["peers"] = find_peers(args.peer_python or default_python(), wanted)
    for name, why in results["peers"]["skipped"].items():
        log(args, f"peer {name}: skipped, {why}")
    with tempfile.TemporaryDirectory(prefix="classicnets-bench-") as tmp:
        tmp = Path(tmp)
        log(args, "matmul peak ...")
        peaks = [peak_section(args)]
        first = {"runs": peaks, "fp32_gflops": peaks[0]["fp32"]["median_gflops"],
                 "bf16_gflops": peaks[0]["bf16"]["median_gflops"]}
        log(args, f"  {peak_text(first)}")
        results["training"] = training_section(args, workloads, tmp, results["peers"])
        results["settings"] = {} if args.skip_settings else settings_section(args, tmp)
        results["parity"] = {} if args.skip_settings else parity_section(args)
        results["time_to_accuracy"] = {} if args.skip_tta else time_to_accuracy_section(args)
        results["roofline"] = roofline_section(args, tmp, results["machine"]["torch_threads"])
        results["inference"] = inference_section(args, tmp)
        results["peer_inference"] = None if args.skip_inference else peer_inference_section(
            results["peers"], args.quick, args.threads, lambda msg: log(args, msg))
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
            **{k: g / results["peak"]["fp32_gflops"] for k, g in r["achieved_gflops"].items() if k != "classicnets"},
        }
    results["goals"] = evaluate_goals(results)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def parse_args(argv=None) -> argparse.Namespace:
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
    w.add_argument("--augment", help="none, crop, flip or crop+flip (default: the recipe's)")
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
    ap.add_argument("--skip-inference", action="store_true", help="leave out bench_infer.py and the peers' inference")
    ap.add_argument("--skip-roofline", action="store_true", help="leave out LeNet-5's kernel ceiling")
    ap.add_argument("--peers", nargs="+", choices=[*PEERS, "none"], default=None,
                    help="the peers to run, where installed (default: every one installed; none: no peer)")
    ap.add_argument("--peer-python", default=None, metavar="PATH",
                    help="the interpreter the peers run in (default: this one when it has any of them, else "
                         ".venv-peers/bin/python when there is one)")
    ap.add_argument("--skip-settings", action="store_true", help="leave out the precision/memory-format and "
                                                                   "bf16 accuracy runs")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for results.{json,md} (default: benchmarks/results/<this machine>; with --render, "
                         "the folder of the results.json)")
    ap.add_argument("--quick", action="store_true", help="tiny run to check that the suite works")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render", type=Path, default=None,
                    help="only rewrite results.md from this results.json (after editing the report)")
    return ap.parse_args(argv)


def render(path: Path, out: Path | None) -> None:
    """``results.md`` from ``path`` (a results.json), in ``out`` or beside it. The Decisions and
    Goals quote the other benchmarks' results of the machine the run records (or, for runs from
    before the vector unit was recorded, of the ``results/<machine>`` folder it is in)."""
    results = json.loads(path.read_text())
    folder = path.resolve().parent
    machine = machine_name(results["machine"]) or (folder.name if folder.parent == RESULTS else None)
    out = out or folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(to_markdown(results, machine))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        render(args.render, args.out)
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
