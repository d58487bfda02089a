"""Inference throughput: PyTorch eager, the classicnets fast paths and ONNX Runtime, side by side.

Every contender runs the same model (``create_model(name)``, random weights from a fixed seed,
eval mode, 1000 classes, 224x224x3 input) on the same random batch, on the CPU, with the same
number of threads (``torch.get_num_threads()``, or ``--threads``):

* ``eager fp32``: ``model(x)`` under ``torch.inference_mode()``, default memory format: what a
  user gets with no effort.
* ``fast fp32``: what ``classicnets.load(..., fast=True)`` and ``predict --fast`` serve:
  ``classicnets.fast_probe.fastest(model, x, "fp32")``, the fastest of eager, inductor (frozen
  weights, channels-last) and ONNX Runtime by a short probe on this batch (uncached here; its
  timings are reported with the one-off costs). ``--backend`` other than auto: that backend of
  ``classicnets.fast.optimize_for_inference`` instead.
* ``fast bf16``: ``fastest(model, x, "bf16")``: the same with the bf16 path competing too (on
  CPUs with native bf16); its outputs are float32 logits.
* ``onnxruntime fp32``: the model exported with ``classicnets.export.export_onnx`` (dynamic
  batch), run by an ONNX Runtime ``InferenceSession`` on the CPU execution provider with its
  default graph optimisations (ORT_ENABLE_ALL) and ``intra_op_num_threads`` = torch's threads.

Each input is a float32 NCHW batch; conversions a path makes (channels-last, bf16) are inside
its timing. One *sample* is enough back-to-back calls of one contender to last at least
``--min-sample`` seconds (one call at batch 16 on the big nets); img/s = images / seconds.
After a warm-up round, ``--reps`` rounds run the contenders interleaved (A B C D, then B C D A,
...), so that a slowdown of the machine hits all of them; we report the median sample of each.
One-off costs are reported apart: ONNX export and session creation, and for the fast paths
the build (compiling for the batch size, and one eager run to check the outputs) and the
first call at each other batch size (which compiles that size).

The machine these numbers come from is shared. For every sample we also record the *foreign
load*: the CPU time other processes used during it, in cores (from /proc/stat minus our own
/proc/self/stat). With 2 cores, a foreign load near 1 means another process held one of them;
PyTorch's OpenMP threads suffer far more from that than ONNX Runtime's thread pool (a parallel
region waits for its descheduled thread), so ratios from loaded samples favour ONNX Runtime.
Medians over the quiet samples (foreign load < 0.25 cores) are reported next to the medians
over all samples when every contender has at least two.

Top-1 agreement of bf16 with fp32 is measured twice:

* On each benchmark model with its random weights, on ``--agree-inputs`` smooth random images
  (noise at 1/16 of the resolution, bicubic-upsampled and standardised: natural images are
  smooth, white noise is not). Random weights say little about a trained model's logits, so we
  also report the logit margins (top-1 minus top-2) against the bf16 error.
* On a *trained* ResNet-50 (``--probe-model``): trained here for ``--probe-steps`` steps of
  ``classicnets.train.train_step`` (``make_optimizer``'s fused AdamW, one-cycle lr) on batches
  of 64 real handwritten digits (the embedded MNIST sample, padded to 32x32 and repeated to
  three channels), then evaluated on ``--probe-inputs`` held-out test digits. Its logits come
  from learned weights and batch-norm statistics on real data, so their margins are those of a
  real classifier; it is briefly trained (about one pass over the data), and an unconverged
  model has more close calls than a converged one, so if anything this underestimates the
  agreement. The convolutions sum over the same channels x kernel taps as at 224x224; only the
  final average pool averages fewer positions.

Run it with ``.venv/bin/python benchmarks/bench_infer.py``; results go to
``benchmarks/results/<machine>/inference.{json,md}``.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import script_parser, write_results  # benchmarks/*.py (scripts run from this folder)
from infer_agreement import compare_logits, probe, run_in_chunks, smooth_images

import classicnets
from classicnets.errors import ClassicNetsError
from classicnets.fast import BACKENDS, optimize_for_inference
from classicnets.fast_probe import fastest
from classicnets.report import machine_info

CONTENDERS = ("eager fp32", "fast fp32", "fast bf16", "onnxruntime fp32")
QUIET = 0.25  # cores of foreign load below which a sample counts as quiet
GOAL_MODEL, GOAL_BATCH = "resnet50", 16  # the performance goals are stated for ResNet-50 at batch 16
GOALS = {"fast fp32 / onnxruntime fp32": 1.0, "fast bf16 / onnxruntime fp32": 1.5, "bf16 top-1 agreement": 0.995}


# --------------------------------------------------------------------------------------------
# Measuring: CPU time of other processes, and one timed sample
# --------------------------------------------------------------------------------------------


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy ticks of the whole machine, ticks of this process), or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        mine = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return user + nice + system + irq + softirq + steal, int(mine[11]) + int(mine[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def timed_sample(fn, x, calls: int) -> tuple[float, float | None]:
    """(seconds for ``calls`` calls of ``fn(x)``, foreign load in cores during them)."""
    before = _cpu_ticks()
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    seconds = time.perf_counter() - start
    after = _cpu_ticks()
    if before is None or after is None:
        return seconds, None
    hz = os.sysconf("SC_CLK_TCK")
    foreign = ((after[0] - before[0]) - (after[1] - before[1])) / hz / seconds
    return seconds, max(0.0, foreign)


# --------------------------------------------------------------------------------------------
# The contenders
# --------------------------------------------------------------------------------------------


def onnx_session(model, example, folder: Path, name: str, threads: int) -> tuple[object, dict]:
    import onnxruntime as ort

    from classicnets.export import export_onnx

    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, example, path)
    export_seconds = time.perf_counter() - start
    options = ort.SessionOptions()  # default graph optimisation level: ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    start = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, {"export_seconds": export_seconds, "session_seconds": time.perf_counter() - start}


def make_contenders(model, session, fast: dict) -> dict:
    """name -> callable(x: float32 NCHW tensor) -> logits (``fast``: precision -> fast path)."""
    def eager(x):
        with torch.inference_mode():
            return model(x)

    def onnxruntime(x):
        return session.run(None, {"input": x.numpy()})[0]

    return {"eager fp32": eager, **{f"fast {p}": fm for p, fm in fast.items()}, "onnxruntime fp32": onnxruntime}


def bench_batch(contenders: dict, x: torch.Tensor, reps: int, min_sample: float, quiet: bool, label: str) -> dict:
    """Interleaved samples of every contender on batch ``x``: warm-up round, then ``reps``."""
    names = list(contenders)
    calls, rates, loads = {}, {n: [] for n in names}, {n: [] for n in names}
    for name in names:  # warm-up: also fixes how many calls make a sample
        seconds, _ = timed_sample(contenders[name], x, 1)
        calls[name] = max(1, math.ceil(min_sample / seconds))
        timed_sample(contenders[name], x, calls[name])
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            seconds, load = timed_sample(contenders[name], x, calls[name])
            rates[name].append(calls[name] * len(x) / seconds)
            loads[name].append(load)
        if not quiet:
            print(f"{label} rep {rep + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names), file=sys.stderr)
    medians = {n: statistics.median(v) for n, v in rates.items()}
    run = {"images_per_second": rates, "median_images_per_second": medians, "calls_per_sample": calls,
           "foreign_load": loads, "ratio_vs_onnxruntime": _ratios(medians, "onnxruntime fp32"),
           "ratio_vs_eager": _ratios(medians, "eager fp32"), "quiet": None}
    quiet_rates = {n: [r for r, load in zip(rates[n], loads[n], strict=True) if load is not None and load < QUIET]
                   for n in names}
    if all(len(v) >= 2 for v in quiet_rates.values()):
        qm = {n: statistics.median(v) for n, v in quiet_rates.items()}
        run["quiet"] = {"samples": {n: len(v) for n, v in quiet_rates.items()}, "median_images_per_second": qm,
                        "ratio_vs_onnxruntime": _ratios(qm, "onnxruntime fp32"),
                        "ratio_vs_eager": _ratios(qm, "eager fp32")}
    return run


def _ratios(medians: dict, base: str) -> dict:
    return {n: m / medians[base] for n, m in medians.items()}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


def bench_model(name: str, args, folder: Path, results: dict, precisions: tuple[str, ...]) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(args.seed)
    model = classicnets.create_model(name).eval().requires_grad_(False)  # the paper's classes: 1000 on ImageNet
    size = args.input_size or classicnets.model_card(name).input_size
    gen = torch.Generator().manual_seed(args.seed)
    batches = {bs: torch.randn(bs, *size, generator=gen) for bs in args.batch_sizes}
    biggest = max(args.batch_sizes)

    session, ort_costs = onnx_session(model, batches[biggest], folder, name, threads)
    results["one_off"].append({"model": name, "contender": "onnxruntime fp32", **ort_costs})
    fast = {}
    for precision in precisions:
        fm = (fastest(model, batches[biggest], precision, cache=False) if args.backend == "auto"
              else optimize_for_inference(model, batches[biggest], precision, backend=args.backend))
        first_calls = {}
        for bs in args.batch_sizes:  # compiles the other batch sizes now, not in the warm-up
            if bs != biggest:
                start = time.perf_counter()
                fm(batches[bs])
                first_calls[str(bs)] = time.perf_counter() - start
        fast[precision] = fm
        results["one_off"].append({"model": name, "contender": f"fast {precision}", "backend": fm.backend,
                                   f"build_seconds_batch_{biggest}": fm.build_seconds,
                                   "first_call_seconds": first_calls, "max_diff_vs_eager": fm.max_diff,
                                   "fallbacks": fm.fallbacks, "probe": fm.probe and fm.probe.as_dict()})
        if not args.quiet:
            print(f"{name}: fast {precision} via {fm.backend}, built in {fm.build_seconds:.1f} s", file=sys.stderr)
    contenders = make_contenders(model, session, fast)
    for bs in args.batch_sizes:
        run = bench_batch(contenders, batches[bs], args.reps, args.min_sample, args.quiet, f"{name} batch {bs}")
        results["runs"].append({"model": name, "batch_size": bs, **run})

    if args.agree_inputs and "bf16" in fast:
        start = time.perf_counter()
        x = smooth_images(args.agree_inputs, size, args.seed + 1)
        ref = run_in_chunks(fast["fp32"], x, biggest)
        entry = {"model": name, "weights": "random", "inputs": "smooth random images",
                 "bf16_vs_fp32": compare_logits(ref, run_in_chunks(fast["bf16"], x, biggest))}
        entry["seconds"] = time.perf_counter() - start
        results["agreement"].append(entry)
    del fast, contenders, session, model
    gc.collect()


def evaluate_goals(results: dict) -> dict | None:
    run = next((r for r in results["runs"] if r["model"] == GOAL_MODEL and r["batch_size"] == GOAL_BATCH), None)
    if run is None:
        return None
    ratios = run["ratio_vs_onnxruntime"]
    probe_result = results.get("probe") or {}
    measured = {"fast fp32 / onnxruntime fp32": ratios["fast fp32"],
                "fast bf16 / onnxruntime fp32": ratios.get("fast bf16"),
                "bf16 top-1 agreement": probe_result.get("top1_agreement")}
    return {goal: {"target": target, "measured": measured[goal],
                   "met": None if measured[goal] is None else measured[goal] >= target}
            for goal, target in GOALS.items()}


def run(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnx
    import onnxruntime

    machine = machine_info()
    machine.update({"onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                    "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())})
    # Without native bf16 a bf16 ResNet-50 call is emulated at well under 1 GFLOP/s: minutes per
    # sample, to learn that nobody should use it there. --bf16 auto leaves the bf16 path (and the
    # agreement checks, which are about it) to CPUs that have it.
    with_bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and machine["bf16_native"])
    precisions = ("fp32", "bf16") if with_bf16 else ("fp32",)
    with_probe = with_bf16 and not args.no_probe
    results = {"machine": machine, "config": {
        "models": args.models, "batch_sizes": args.batch_sizes, "reps": args.reps, "warmup_rounds": 1,
        "min_sample_seconds": args.min_sample, "threads": torch.get_num_threads(), "backend": args.backend,
        "input_size": args.input_size, "seed": args.seed, "quick": args.quick,
        "contenders": [c for c in CONTENDERS if not c.startswith("fast ") or c[5:] in precisions],
        "bf16": args.bf16,
        "quiet_below_cores": QUIET, "agree_inputs": args.agree_inputs,
        "probe": None if not with_probe else {"model": args.probe_model, "steps": args.probe_steps,
                                             "test": args.probe_inputs},
    }, "one_off": [], "runs": [], "agreement": [], "probe": None}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bench_model(name, args, Path(tmp), results, precisions)
    if with_probe:
        results["probe"] = probe(args.probe_model, args.probe_steps, args.probe_inputs, max(args.batch_sizes),
                                 args.backend, args.seed, args.quiet)
    results["goals"] = evaluate_goals(results)
    results["total_seconds"] = time.perf_counter() - start
    results["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _load(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def to_markdown(results: dict) -> str:
    m, c = results["machine"], results["config"]
    lines = [
        "# Inference throughput: eager PyTorch, the classicnets fast paths and ONNX Runtime",
        "",
        f"Models {', '.join(f'`{n}`' for n in c['models'])} (random weights, eval mode), float32 NCHW batches "
        f"of {', '.join(map(str, c['batch_sizes']))}. `eager fp32`: `model(x)` under `torch.inference_mode()`; "
        "`fast fp32` / `fast bf16`: the path `--fast` serves (`classicnets.fast_probe.fastest(model, x, precision)`); "
        "`onnxruntime fp32`: the `export_onnx` file in an ONNX Runtime session (CPU provider, default graph "
        f"optimisations). Median of {c['reps']} samples (each at least {c['min_sample_seconds']} s of back-to-back "
        "calls) after a warm-up round, contenders interleaved with the order rotating.",
        "",
        f"Machine: {m['cpu']}, {m['cores_available']} cores available, {c['threads']} threads for torch and "
        f"ONNX Runtime, native bf16: {m['bf16_native']}; torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
        f"onnx {m['onnx']}, Python {m['python']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'] or [])}, at end "
        f"{', '.join(f'{x:.2f}' for x in results.get('load_average_at_end') or [])}; the whole run took "
        f"{results['total_seconds'] / 60:.1f} min.",
        "",
        *([] if "fast bf16" in c["contenders"] else [
            f"No bf16 path in this run (`--bf16 {c.get('bf16')}`"
            + (": this CPU has no native bf16, where it is emulated far below fp32" if not m["bf16_native"] else "")
            + "), so no bf16 agreement checks either.", ""]),
        "Foreign load: CPU time other processes used during a sample, in cores (median over the samples). "
        "Where it is high, torch's OpenMP threads lose more than ONNX Runtime's (see the docstring of "
        "`benchmarks/bench_infer.py`).",
        "",
        "| model | batch | contender | median img/s | vs ONNX Runtime fp32 | vs eager | all samples (img/s) "
        "| foreign load |",
        "|---|---:|---|---:|---:|---:|---|---:|",
    ]
    return "\n".join(lines + _runs_tables(results) + _one_off_table(results) + _agreement_lines(results)) + "\n"


def _runs_tables(results: dict) -> list[str]:
    c = results["config"]
    lines = []
    for r in results["runs"]:
        for name, med in r["median_images_per_second"].items():
            reps = ", ".join(f"{v:.1f}" for v in r["images_per_second"][name])
            lines.append(f"| {r['model']} | {r['batch_size']} | {name} | {med:.1f} | "
                         f"**{r['ratio_vs_onnxruntime'][name]:.2f}x** | {r['ratio_vs_eager'][name]:.2f}x | {reps} | "
                         f"{_load(r['foreign_load'][name])} |")
    quiet = [r for r in results["runs"] if r["quiet"]]
    if quiet:
        lines += ["", f"Quiet samples only (foreign load < {c['quiet_below_cores']} cores), where every contender "
                  "had at least two:", "",
                  "| model | batch | contender | quiet samples | median img/s | vs ONNX Runtime fp32 | vs eager |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for r in quiet:
            q = r["quiet"]
            for name, med in q["median_images_per_second"].items():
                lines.append(f"| {r['model']} | {r['batch_size']} | {name} | {q['samples'][name]} | {med:.1f} | "
                             f"{q['ratio_vs_onnxruntime'][name]:.2f}x | {q['ratio_vs_eager'][name]:.2f}x |")
    return lines


def _one_off_table(results: dict) -> list[str]:
    lines = ["", "One-off costs (seconds):", "", "| model | contender | cost |", "|---|---|---|"]
    for o in results["one_off"]:
        if o["contender"] == "onnxruntime fp32":
            cost = f"ONNX export {o['export_seconds']:.1f}, session creation {o['session_seconds']:.1f}"
        else:
            build = next(k for k in o if k.startswith("build_seconds_batch_"))
            cost = f"build ({o['backend']}, compile at batch {build.rsplit('_', 1)[1]} + eager check) {o[build]:.1f}"
            cost += "".join(f", first call at batch {bs} {s:.1f}" for bs, s in o["first_call_seconds"].items())
            if o["fallbacks"]:
                cost += f"; fell back from: {'; '.join(o['fallbacks'])}"
            if o.get("probe"):  # which path the probe chose, at the example's batch
                p = o["probe"]
                cost += (f"; probe (every candidate built in {sum(p['build_seconds'].values()):.1f}) at batch "
                         f"{p['batch']}: " + ", ".join(
                    f"{n} {p['batch'] / t:.1f} img/s" for n, t in p["seconds_per_call"].items()))
        lines.append(f"| {o['model']} | {o['contender']} | {cost} |")
    return lines


def _agreement_lines(results: dict) -> list[str]:
    lines = []
    if results["agreement"]:
        lines += ["", "fast bf16 against fast fp32 (itself within 1e-4 of eager: the build checks it) on smooth random "
                  "images, random weights. *Near ties*: inputs whose top-1 lead is under twice their own max "
                  "logit error; random weights make many more of them than a trained model would.", "",
                  "| model | inputs | top-1 agreement | max abs logit diff | logit std | median margin | near ties "
                  "| median top-1 prob. |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for a in results["agreement"]:
            s = a["bf16_vs_fp32"]
            lines.append(f"| {a['model']} | {s['inputs']} | {100 * s['top1_agreement']:.2f}% | "
                         f"{s['max_abs_diff']:.3g} | {s['logit_std']:.3g} | {s['median_margin']:.3g} | "
                         f"{100 * s['near_tie_fraction']:.1f}% | {s['median_top1_probability']:.3f} |")
    p = results.get("probe")
    if p:
        lines += ["", f"Agreement on a trained model: `{p['model']}` trained for {p['train_steps']} AdamW steps of "
                  f"{p['train_batch']} real digits (MNIST sample, {'x'.join(map(str, p['input_size']))}; "
                  f"{p['train_seconds']:.0f} s), evaluated on {p['test_digits']} held-out test digits. Test accuracy "
                  f"fp32 {100 * p['accuracy_fp32']:.1f}%, bf16 {100 * p['accuracy_bf16']:.1f}%; "
                  f"**bf16 top-1 agreement with fp32: {100 * p['top1_agreement']:.2f}%** "
                  f"({round((1 - p['top1_agreement']) * p['inputs'])} of {p['inputs']} differ); max abs logit "
                  f"difference {p['max_abs_diff']:.3g}, logit std {p['logit_std']:.3g}, median margin "
                  f"{p['median_margin']:.3g}, near ties {100 * p['near_tie_fraction']:.1f}%, median top-1 "
                  f"probability {p['median_top1_probability']:.3f}. A briefly trained model on digits, not a "
                  "converged ImageNet model: its close calls are more frequent than a converged model's."]
    if results.get("goals"):
        lines += ["", f"Goals (`{GOAL_MODEL}`, batch {GOAL_BATCH}, medians over all samples):", ""]
        for goal, g in results["goals"].items():
            got = "not measured" if g["measured"] is None else f"{g['measured']:.3f}"
            verdict = "-" if g["met"] is None else ("met" if g["met"] else "**not met**")
            lines.append(f"* {goal} >= {g['target']}: {got}, {verdict}")
    return lines + ["", "Regenerate: `.venv/bin/python benchmarks/bench_infer.py`"]


def main(argv=None) -> int:
    ap = script_parser(__doc__, "inference")
    ap.add_argument("--models", nargs="+", default=["alexnet", "vgg16", "resnet50"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--reps", type=int, default=5, help="timed rounds after the warm-up round")
    ap.add_argument("--min-sample", type=float, default=0.4, help="seconds of back-to-back calls per sample")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    ap.add_argument("--backend", default="auto", choices=BACKENDS, help="backend of the fast paths")
    ap.add_argument("--input-size", type=int, nargs=3, default=None, metavar=("C", "H", "W"),
                    help="input size (default: each model's native size)")
    ap.add_argument("--agree-inputs", type=int, default=256, help="smooth random images for the agreement check")
    ap.add_argument("--probe-model", default="resnet50")
    ap.add_argument("--probe-steps", type=int, default=100, help="training steps (64 digits each) of the probe")
    ap.add_argument("--probe-inputs", type=int, default=1000, help="held-out digits the probe's agreement uses")
    ap.add_argument("--no-probe", action="store_true", help="skip the trained-model agreement check")
    ap.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto",
                    help="the bf16 path and its agreement checks: auto = only on CPUs with native bf16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:  # LeNet-5 (32x32), one batch size, one round, no probe: ~15 s
        args.models, args.batch_sizes, args.reps, args.min_sample = ["lenet5"], [2], 1, 0.05
        args.agree_inputs, args.no_probe = 16, True
    for flag, values in (("--batch-sizes", args.batch_sizes), ("--reps", [args.reps])):
        if any(v < 1 for v in values):
            ap.error(f"{flag} must be positive integers")
    try:
        results = run(args)
    except ClassicNetsError as exc:
        print(f"bench_infer: {exc}", file=sys.stderr)
        return 1
    write_results(args.out, "inference", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
