"""The suite's report: ``results.md`` from a run's ``results.json`` (``suite.py --render`` rewrites
it from the JSON alone), and the few formats the README's generated sections share with it."""

from __future__ import annotations

import statistics

from common import isa, machine_name, result_md, result_path
from goals import (
    ALL_KEPT,
    NATIVE_ALL,
    NATIVE_CONV,
    NATIVE_FUSED,
    NATIVE_POOL,
    cuda_evidence,
    evaluate_goals,
    format_goal,
    malloc_evidence,
    native_kernel_evidence,
    per_core_evidence,
    pooling_evidence,
    preload_evidence,
    recipe_evidence,
    roofline_evidence,
    step_ideas_evidence,
    study_evidence,
)
from peer_common import PEERS, title


def gflops(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def peak_text(peak: dict) -> str:
    """"fp32 188 GFLOP/s, bf16 417 GFLOP/s", saying where bf16 is emulated (no native bf16)."""
    emulated = any(r["bf16"].get("emulated") for r in peak["runs"]) or peak["bf16_gflops"] < 0.05 * peak["fp32_gflops"]
    return (f"fp32 {gflops(peak['fp32_gflops'])} GFLOP/s, bf16 {gflops(peak['bf16_gflops'])} GFLOP/s"
            + (" (emulated: this CPU has no native bf16)" if emulated else ""))


def format_seconds(secs: float | None) -> str:
    return "not reached" if secs is None else f"{secs:.1f} s"


def recipe_text(recipe: dict | None) -> str:
    """"3 epochs of batch 128, sgd lr 0.2 onecycle, augment none, label smoothing 0.1"."""
    if not recipe:
        return ("not recorded (a run from before 2026-12-03, when LeNet-5's Fashion-MNIST recipe went from 5 epochs "
                "at lr 0.1 with flips to 3 at lr 0.2 with label smoothing)")
    return (f"{recipe['epochs']} epochs of batch {recipe['batch_size']}, {recipe['optimizer']} lr {recipe['lr']:g} "
            f"{recipe['schedule']}, augment {recipe['augment']}, label smoothing {recipe['label_smoothing']:g}")


def commit_text(commit: dict | None) -> str:
    """" Commit 1a2b3c4d5e6f (with uncommitted changes)."; nothing for runs from before it was recorded."""
    if not commit:
        return ""
    return f" Commit {commit['sha'][:12]}{' (with uncommitted changes)' if commit['dirty'] else ''}."


def to_markdown(results: dict, machine: str | None = None) -> str:
    """The whole report. ``machine``: whose result files the Decisions and Goals quote first (by
    default the machine the run records)."""
    machine = machine or machine_name(results["machine"])
    m = results["machine"]
    lines = ["# Benchmark results", "",
             f"`benchmarks/suite.py`{' --quick' if results['quick'] else ''}: {results['seconds']:.0f} s. "
             f"Machine: {m['cpu']}{isa(m)}, {m['cores_available']} cores available, torch {m['torch']}, "
             f"{m['torch_threads']} torch threads, load average at start "
             f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'] or [])}. Medians of {results['reps']} "
             f"interleaved repetitions; each run is its own process.{commit_text(results.get('commit'))}", "",
             f"**Matmul peak** (median of `torch.mm` 2048x2048, measured before and after the runs): "
             f"{peak_text(results['peak'])}.", ""]
    if "peers" in results:
        lines += ["## Summary", "", "Images/s (medians), and in brackets how many times as fast classicnets is; "
                  "details in the sections below.", "", *summary_table(results), ""]
    lines += training_section(results["training"])
    lines += peers_section(results)
    lines += time_to_accuracy_section(results["time_to_accuracy"])
    lines += settings_section(results.get("settings"), results.get("parity"))
    if results.get("inference"):
        md = results["inference"]["markdown"]
        body = md.split("\n", 1)[1] if md.startswith("#") else md
        lines += ["## Inference", "", body.replace("\n# ", "\n### ").replace("\n## ", "\n### "), ""]
    lines += decisions_section(results, machine)
    lines += ["## Goals", ""]
    for g in evaluate_goals(results):  # from the figures above, so older files get every detail too
        lines.append(f"- {format_goal(g)}")
        if g["key"] == "lenet5-ceiling" and g["measured"] is None:
            lines.append(f"  - The last measurement: {roofline_evidence(machine)}")
    lines.append(f"- {cuda_evidence()}")
    return "\n".join(one_blank_line("\n".join(lines).split("\n")) + [""])  # the inference part is one string


def one_blank_line(lines: list[str]) -> list[str]:
    """``lines`` with each run of empty lines cut to one: the sections each end and start with one,
    and an optional part that is absent must not leave two (the report has no code blocks)."""
    return [line for i, line in enumerate(lines) if line or i == 0 or lines[i - 1]]


def training_section(training: dict) -> list[str]:
    lines = ["## Training throughput", "",
             "`classicnets.train` (its per-epoch images/s: the batch pipeline, the recipe's memory format, "
             "precision and fused optimiser) against the tutorial loop (per-sample `Dataset` + `DataLoader`, "
             "fp32, default memory format, `torch.optim.SGD`, `loss.item()` every step); same model, batch, "
             "optimiser settings and augmentation. Second epoch of each run (the first warms up). "
             "Training FLOPs = 3 x 2 x forward multiply-adds per image.", "",
             "| workload | batch | classicnets img/s | tutorial img/s | speed-up | classicnets settings | "
             "classicnets GFLOP/s (% of peak) | tutorial GFLOP/s (% of fp32 peak) | peak RSS MB (ours / tutorial) |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, r in training.items():
        med, g, f = r["median_images_per_second"], r["achieved_gflops"], r["fraction_of_peak"]
        s = r["classicnets_settings"]
        settings = f"{s.get('resolved_precision')}, {'channels-last' if s.get('channels_last') else 'contiguous'}"
        lines.append(
            f"| {name} | {r['batch']} | {med['classicnets']:,.1f} | {med['tutorial']:,.1f} | **{r['speedup']:.2f}x** | "
            f"{settings} | {g['classicnets']:.1f} ({100 * f['classicnets']:.0f}% of {f['classicnets_peak']}) | "
            f"{g['tutorial']:.1f} ({100 * f['tutorial']:.0f}%) | "
            f"{r['median_peak_rss_mb']['classicnets']:,.0f} / {r['median_peak_rss_mb']['tutorial']:,.0f} |")
    return lines + ["", "All repetitions (img/s): " + "; ".join(
        f"{name}: ours {', '.join(f'{v:,.1f}' for v in r['images_per_second']['classicnets'])}, tutorial "
        f"{', '.join(f'{v:,.1f}' for v in r['images_per_second']['tutorial'])}"
        for name, r in training.items()), ""]


# ------------------------------------------------------------------------------------------
# classicnets against the peers (and the tutorial loop, and ONNX Runtime)
# ------------------------------------------------------------------------------------------


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def summary_rows(results: dict) -> list[tuple[str, dict[str, float]]]:
    """(workload, {tool: median img/s}) for every training workload and the peers' inference
    models, classicnets first ("classicnets": its training, or what ``--fast`` serves)."""
    rows = []
    for name, w in results["training"].items():
        what = f"{name} training (batch {w['batch']})"
        rows.append((what, dict(w["median_images_per_second"])))
    peer_inference = results.get("peer_inference") or {}
    runs = (results.get("inference") or {}).get("json", {}).get("runs", [])
    for run in runs:
        peers = {peer: models[run["model"]]["median_images_per_second"]
                 for peer, models in peer_inference.get("runs", {}).items()
                 if run["model"] in models and run["batch_size"] == peer_inference.get("batch")}
        if peers:
            med = run["median_images_per_second"]
            rows.append((f"{run['model']} inference (batch {run['batch_size']})",
                         {"classicnets": med["fast fp32"], **peers, "onnxruntime": med["onnxruntime fp32"]}))
    return rows


TOOL_NAMES = {"classicnets": "classicnets", "tutorial": "tutorial loop", "onnxruntime": "ONNX Runtime fp32"}


def summary_table(results: dict) -> list[str]:
    """One table: each workload's images/s with classicnets (``classicnets train``; for inference
    the path ``--fast`` serves in fp32), each peer, ONNX Runtime and the tutorial loop, and in
    brackets how many times as fast classicnets is."""
    rows = summary_rows(results)
    versions = (results.get("peers") or {}).get("versions")
    tools = ["classicnets", *[p for p in PEERS if any(p in r for _, r in rows)], "onnxruntime", "tutorial"]
    tools = [t for t in tools if any(t in r for _, r in rows)]
    names = [TOOL_NAMES.get(t) or title(t, versions) for t in tools]
    lines = ["| workload | " + " | ".join(names) + " |", "|---|" + "---:|" * len(tools)]
    for what, r in rows:
        ours = r["classicnets"]
        cells = [f"**{rate(ours)}**"] + [f"{rate(r[t])} ({ours / r[t]:.2f}x)" if t in r else "-" for t in tools[1:]]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines + accuracy_lines(results, tools, versions)


def accuracy_lines(results: dict, tools: list[str], versions: dict | None) -> list[str]:
    """Under the summary: each training workload's median final test accuracy per tool, so that
    no speed is read without the accuracy it came with."""
    lines = []
    for name, w in results["training"].items():
        acc = w.get("median_test_accuracy", {})
        if len(acc) < 2:
            continue
        seeds = len(next(iter(w["test_accuracy"].values())))
        parts = [f"{TOOL_NAMES.get(t) or title(t, versions)} {100 * acc[t]:.1f}%"
                 + (" (did not learn)" if t in w.get("peers_that_did_not_learn", []) else "")
                 for t in tools if t in acc]
        lines.append(f"- {name}, final test accuracy (median of {seeds} seed{'s' * (seeds > 1)}): {', '.join(parts)}.")
    return [""] + lines if lines else []


def peers_section(results: dict) -> list[str]:
    """Every contender of the workloads the peers ran, with its final test accuracy; which peers
    were skipped or failed, and why; the peers' inference."""
    peers = results.get("peers")
    if peers is None:
        return []
    # Runs before 2026-12-07 (no "augment" in the workload) gave classicnets the recipe's crops and flips.
    augmented = any(w.get("peers") and "augment" not in w and w["model"] == "resnet20"
                    for w in results["training"].values())
    augmentation = ("no augmentation for the peers (the ResNet-20 recipe's crops and flips are classicnets' alone)"
                    if augmented else "no augmentation for anyone (the ResNet-20 workload turns its recipe's crops "
                    "and flips off)")
    lines = ["## Against the peers", "",
             "What a learner would use instead, each in a process of its own and in the same interleaved rounds as "
             "`classicnets train`: the same model (layer for layer, the same parameter count), images, batch, "
             "epochs, optimiser and learning rate at every step, in-memory arrays (their best case); "
             f"{augmentation}. Images/s "
             "of each run's last epoch; final accuracy on the workload's test images, the median over the "
             "rounds and then each round's (round r is seed r for every tool; the tutorial loop does not "
             "evaluate). A run that ends below twice chance did not learn (marked *); a peer whose median "
             f"run did not learn is not the yardstick of the goals. Peers' interpreter: `{peers['python']}`.", "",
             "| workload | tool | median img/s | classicnets is | final test accuracy: median (each seed) "
             "| peak RSS MB | all runs (img/s) |", "|---|---|---:|---:|---|---:|---|"]
    for name, w in results["training"].items():
        if not w.get("peers") and not w.get("failed_peers"):
            continue
        med = w["median_images_per_second"]
        for tool, v in med.items():
            ratio = "-" if tool == "classicnets" else f"**{med['classicnets'] / v:.2f}x**"
            a = accuracy_cell(w, tool)
            runs = ", ".join(rate(x) for x in w["images_per_second"][tool])
            lines.append(f"| {name} | {TOOL_NAMES.get(tool) or title(tool, peers['versions'])} | {rate(v)} | {ratio} | "
                         f"{a} | {w['median_peak_rss_mb'][tool]:,.0f} | {runs} |")
        lines += [f"| {name} | {title(tool, peers['versions'])} | failed | - | - | - | {why.splitlines()[-1][:200]} |"
                  for tool, why in w.get("failed_peers", {}).items()]
    dead = [f"- {name}: {title(k, peers['versions'])}'s median run did not learn (it ends at "
            f"{100 * w['median_test_accuracy'][k]:.1f}%), so the goals measure against the fastest peer that did."
            for name, w in results["training"].items() for k in w.get("peers_that_did_not_learn", [])]
    lines += ([""] + dead) if dead else []
    lines += [""] + [f"- {title(k, None)}: skipped, {why}." for k, why in peers["skipped"].items()]
    return lines + peer_inference_lines(results) + [""]


def accuracy_cell(w: dict, tool: str) -> str:
    """"85.6% (85.6, 86.0, 10.0*)": the median final test accuracy, then each seed's, * where a run
    did not learn (``training.learned``); runs from before the seeds varied show the median alone."""
    acc = w.get("test_accuracy", {}).get(tool)
    if not acc:
        return "-"
    median = f"{100 * w['median_test_accuracy'][tool]:.1f}%"
    learnt = w.get("learnt", {}).get(tool)
    if learnt is None or len(acc) < 2:
        return median
    seeds = [f"{100 * a:.1f}" + ("" if ok else "*") for a, ok in zip(acc, learnt, strict=True)]
    return f"{median} ({', '.join(seeds)})"


def peer_inference_lines(results: dict) -> list[str]:
    pi = results.get("peer_inference")
    if not pi:
        return []
    lines = ["", f"Inference at batch {pi['batch']} in the Keras peers (`keras.applications`, random weights; their "
             "ResNet50 is the paper's v1, ours torchvision's v1.5, 5% more multiply-adds), after `bench_infer.py` "
             "measured classicnets and ONNX Runtime above:", "",
             "| model | tool | median img/s | first call s | all samples (img/s) |", "|---|---|---:|---:|---|"]
    versions = (results.get("peers") or {}).get("versions")
    for peer, models in pi["runs"].items():
        for model, r in models.items():
            lines.append(f"| {model} | {title(peer, versions)} | {rate(r['median_images_per_second'])} | "
                         f"{r['first_call_seconds']:.1f} | {', '.join(rate(x) for x in r['images_per_second'])} |")
    notes = [f"- {title(k, None)}: {why}." for k, why in {**pi["skipped"], **pi["failed"]}.items()
             if k not in (results.get("peers") or {}).get("skipped", {})]
    return lines + ([""] + notes if notes else [])


def time_to_accuracy_section(tta: dict) -> list[str]:
    if not tta:
        return []
    lines = ["## Time to accuracy", "",
             "The default recipe (`classicnets train lenet5 --dataset D`), one run per seed; training seconds "
             "summed over epochs until the test accuracy (evaluated after each epoch, not counted) first "
             "reaches the target.", "",
             "| model | dataset | target | seed | reached after | training seconds | final accuracy (epochs) "
             "| peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for t in tta.values():
        for r in t["runs"]:
            reached = r["reached"]
            lines.append(f"| {t['model']} | {t['dataset']} | {100 * t['target']:.1f}% | {r['seed']} | "
                         + (f"epoch {reached['epoch']} | {reached['seconds']:.1f} |" if reached
                            else "not reached | - |")
                         + f" {100 * r['final_accuracy']:.2f}% ({r['epochs']}) | {r['peak_rss_mb']:,.0f} |")
    lines += ["", "Median over seeds (a seed that never reached the target counts as slowest): " + "; ".join(
        f"{t['model']} to {100 * t['target']:.1f}% on {t['dataset']}: " + format_seconds(t["median_seconds"])
        for t in tta.values()) + ".", ""]
    return lines + ["Recipes: " + "; ".join(f"{t['model']} on {t['dataset']}: {recipe_text(t['runs'][0].get('recipe'))}"
                                            for t in tta.values()) + ".", ""]


def settings_section(settings: dict | None, parity: dict | None) -> list[str]:
    lines = []
    if settings:
        lines += ["## What the defaults are made of", "",
                  "`classicnets.train` on the same workload with each precision and memory format (median img/s, "
                  "relative to the first row). This decides `precision=\"auto\"` on a CPU (bf16 autocast for nets "
                  "of at least 10 M multiply-adds per image, on CPUs with native bf16) and the recipes' channels-last.",
                  "", "| workload | setting | median img/s | relative |", "|---|---|---:|---:|"]
        for name, r in settings.items():
            for k, v in r["median_images_per_second"].items():
                lines.append(f"| {name} | {k} | {v:,.0f} | {r['relative_to_first'][k]:.2f}x |")
        lines.append("")
    if parity:
        acc = parity["accuracy"]
        lines += [f"**bf16 keeps accuracy**: ResNet-20 on {parity['dataset']} ({parity['images']:,} training images, "
                  f"{parity['epochs']} epochs, seeds {parity['seeds']}), test accuracy fp32 "
                  + ", ".join(f"{100 * a:.2f}%" for a in acc["fp32"]) + " against bf16 autocast "
                  + ", ".join(f"{100 * a:.2f}%" for a in acc["bf16"])
                  + f" (means {100 * statistics.mean(acc['fp32']):.2f}% and "
                    f"{100 * statistics.mean(acc['bf16']):.2f}%).",
                  ""]
    return lines


def report(stem: str, machine: str | None, script: str) -> str:
    """Where a benchmark's report is (``results/<machine>/STEM.md``), or that it has not run yet."""
    path = result_path(stem, machine)
    return result_md(path) if path else f"`benchmarks/{script}` (not measured yet)"


IDEAS_MACHINE = "avx512-bf16"  # the step ideas' ratios written into the Decisions rows were measured there


def decisions_section(results: dict, machine: str | None = None) -> list[str]:
    """Each speed idea and what we did with it. Figures from this run where it measured them;
    the rest from the result files named (each regenerated by its own script)."""
    rel = {name: r["relative_to_first"] for name, r in (results.get("settings") or {}).items()}
    lenet, r20 = rel.get("lenet5-fashion", {}), rel.get("resnet20-32x32x3", {})
    ideas = report("lenet_step_ideas", IDEAS_MACHINE, "bench_lenet_step.py")  # where the ratios below are from

    def ratio(table: dict, key: str) -> str:
        return f"{table[key]:.2f}x" if key in table else "not measured in this run"

    training = results.get("training") or {}
    pipeline = ", ".join(f"{name} {r['speedup']:.2f}x" for name, r in training.items()) or "not measured in this run"
    inference = result_path("inference", machine)
    rows = [
        ("In-memory batch pipeline (`BatchLoader`: uint8 tensor, batches gathered, augmented and normalised "
         "whole)", "**kept** (every dataset that fits in memory)",
         f"whole training loop against the tutorial loop, this run: {pipeline}; data path alone: "
         + report("train_throughput", machine, "bench_train.py")),
        ("bf16 autocast on CPUs with native bf16 (`--precision auto`)",
         "**kept** for nets of >= 10 M multiply-adds per image",
         f"ResNet-20 bf16 channels-last against fp32 contiguous: {ratio(r20, 'bf16, channels-last')} (this run), "
         "accuracy within half a point (parity above); LeNet-5 bf16 against fp32: "
         f"{ratio(lenet, 'bf16, channels-last')}, inside the run-to-run noise (0.87x at batch 64 in an earlier "
         f"run, with the textbook layer order), 1.06-1.11x in {ideas}; accuracy kept on "
         "3 seeds (Fashion-MNIST 90.54% against 90.64% fp32, digits 98.57% against 98.60%). LeNet-5 stays fp32 "
         "for now: the gain is inside this machine's noise and switching would change the recorded experiments; "
         "`--precision bf16` gives it"),
        ("Channels-last memory format", "**kept** in the LeNet-5, ResNet and plain-net recipes",
         f"ResNet-20 fp32: {ratio(r20, 'fp32, channels-last')}; LeNet-5 fp32 contiguous against channels-last: "
         f"{ratio(lenet, 'fp32, contiguous')} (this run); {ideas}"),
        ("LeNet-5 max-pools before its ReLU (same outputs and gradients, bit for bit)", "**kept**",
         f"1.06-1.11x on top of channels-last; 0.94-0.98x without it ({ideas})"),
        ("Fused SGD/AdamW, loss read every 25 steps instead of every step", "**kept**",
         f"1.00-1.02x each, same update formula ({ideas}; its fused row compared fused with fused: see its notes)"),
        ("Deterministic mode without its NaN fill of new tensors", "**kept** (the algorithms stay deterministic)",
         "ResNet-20 bf16 channels-last 964-990 img/s without the fill against 906-929 with it (separate runs)"),
        ("`torch.compile` of the training step", "not by default (`--compile` stays)",
         "LeNet-5 12-13k img/s against 17.5k eager; ResNet-20 bf16 973 against 978 once the NaN fill was off "
         "(the 13% it first showed was the fill); separate runs, compiling took 15-30 s"),
        ("Max pool as reshape + amax, THNN or unfold convolutions, `set_to_none=False`", "not kept",
         f"0.20-0.94x ({ideas})"),
        ("LeNet-5's 2x2 max pools as a native kernel (`classicnets.native`: C with AVX2, compiled on first use; "
         "`max_pool2d`'s outputs and gradients bit for bit)",
         "**kept** (CPU, channels-last float32; PyTorch's kernel elsewhere, or without a C compiler)",
         native_kernel_evidence(NATIVE_POOL, ALL_KEPT, machine)),
        ("LeNet-5's first convolution (one-channel images) as a native kernel (`classicnets.native`: forward and "
         "weight gradient; agrees with oneDNN to float32 rounding)",
         "**kept** (CPU, channels-last float32, an image that needs no gradient; PyTorch's kernel elsewhere)",
         native_kernel_evidence(NATIVE_CONV, NATIVE_POOL, machine)),
        ("LeNet-5's conv2 input gradient as a native kernel (`classicnets.native`; the forward and weight "
         "gradient stay oneDNN's; agrees with it to float32 rounding)",
         "**kept** (CPU, channels-last float32, up to 8 input channels; PyTorch's kernel elsewhere)",
         native_kernel_evidence(NATIVE_ALL, NATIVE_CONV, machine)),
        ("LeNet-5's conv - max pool - ReLU blocks with their pool and ReLU fused (`classicnets.models.fused`: "
         "conv1, its pool and ReLU as one native kernel each way; conv2's pool and ReLU as one pass, and its "
         "backward from the pooled gradient; the same values and gradients bit for bit, but the convolutions' "
         "weight and bias gradients, to rounding)",
         "**kept** (CPU, channels-last float32, no hook on the block's layers; the layers one by one elsewhere)",
         native_kernel_evidence(NATIVE_FUSED, NATIVE_ALL, machine)),
        ("LeNet-5's first max pool + ReLU another way: default layout, strided maxima with a hand-written "
         "backward, `torch.compile`", "not kept", pooling_evidence(machine)),
        ("LeNet-5: conv2's input gradient in the default layout (the rest channels-last); conv1 and the first "
         "max pool as four stride-2 convolutions and their maximum (no pooling kernel)",
         "not kept (inside the noise, or slower)", step_ideas_evidence(machine)),
        ("Training on one process per core (`torchrun`, DDP over gloo, 1 thread each) instead of one process "
         "with a thread per core", "not kept", per_core_evidence(machine)),
        ("LeNet-5 on Fashion-MNIST: 3 epochs of batch 128 at lr 0.2, label smoothing 0.1, no augmentation",
         "kept as its dataset recipe (it replaced 5 epochs at lr 0.1 with flips) until the margin study below",
         recipe_evidence(machine)),
        ("LeNet-5 on Fashion-MNIST: a fourth epoch and a gentler peak, 4 epochs at lr 0.15 (3 epochs at lr 0.2 "
         "had ended 0.1-0.8 points past 90%, and rounding alone took two seeds under it)",
         "**kept** as its dataset recipe (2026-12-07)", study_evidence("margin", machine)),
        ("LeNet-5 on Fashion-MNIST with larger batches (256, 512) to reach 90% sooner",
         "not kept (faster epochs, but most seeds stop short of 90%; lr 0.4 at batch 256 diverged)",
         study_evidence("batch", machine)),
        ("Inference: inductor with frozen weights (fp32), bf16 weights with batch norm folded first",
         "**kept** (`classicnets.fast`, `predict --fast`)",
         ("the inference section above" if results.get("inference")
          else f"{result_md(inference) if inference else '`benchmarks/bench_infer.py`'} (not in this run)")
         + "; `src/classicnets/fast.py`"),
        ("Inference: two 1-thread streams on half batches", "not kept",
         "ResNet-50 batch 16: 24.4 img/s against 24.9 for one 2-thread call (oneDNN already scales 2x)"),
        ("Keep freed memory in the process (glibc's mmap threshold fixed at 32 MiB, trim threshold 1 GiB: "
         "`classicnets.memory`)",
         "**kept** (`classicnets.train`, `classicnets.fast`, every command)", malloc_evidence(machine)),
        ("jemalloc or tcmalloc preloaded in glibc's place (`LD_PRELOAD`, their default settings)",
         "not kept (system libraries `pip` cannot bring, and no faster)", preload_evidence(machine)),
        ("Threads", "torch's default (one per core)",
         "1 thread is 0.6x on 2 free cores, but much faster when another process holds a core: set `--threads`"),
    ]
    lines = ["## Decisions", "", "What each idea bought and what we did with it.", "",
             "| idea | decision | evidence |", "|---|---|---|"]
    lines += [f"| {idea} | {decision} | {evidence} |" for idea, decision, evidence in rows]
    return lines + [""]
