"""Regenerate the README's generated sections from the package itself.

The README's model table, the LeNet-5 summary and the 1x1 cost example are produced by the
code, not typed: each sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``.
Run ``.venv/bin/python scripts/update_readme.py`` after changing a model; ``--check`` exits 1
if the README is out of date (tests/test_readme.py runs that check).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The suite as it was run on an AVX2 machine without native bf16 (its results under results/avx2).
AVX2_COMMAND = " --out benchmarks/results/avx2 --skip-settings"


def kills_line() -> str:
    """The kill/resume figures, from scripts/kill_resume.py's results file."""
    import json

    r = json.loads((ROOT / "benchmarks" / "results" / "reliability.json").read_text())
    return (f"- **Kills**: {r['kills']} SIGKILLs of `classicnets train` at random moments, "
            f"{r['killed_inside_a_write']} in the middle of a checkpoint write,\n"
            f"  each resumed with `--resume`: {r['survived']}/{r['trials']} survived, final weights "
            f"bit-identical to the uninterrupted run in {r['bit_identical']}/{r['trials']},\n"
            f"  {r['bytes_lost']} bytes lost, {r['checkpoints_unreadable_after_kill']} unreadable checkpoints, "
            f"{r['temp_files_left']} temporary files left (`scripts/kill_resume.py`,\n"
            f"  [results](benchmarks/results/reliability.md)).")


def benchmarks_section(folder: str = "benchmarks", command: str = "") -> str:
    """The suite's headline figures and goals, from FOLDER/results.json (the suite's ``--out``)."""
    import json

    r = json.loads((ROOT / folder / "results.json").read_text())
    m, p = r["machine"], r["peak"]
    lines = [f"From `{folder}/results.md` (`.venv/bin/python benchmarks/suite.py{command}`, "
             f"{r['seconds'] / 60:.0f} min): "
             f"{m['cpu']}{_suite().isa(m)}, {m['cores_available']} cores, torch {m['torch']}, "
             f"{m['torch_threads']} threads; matmul peak "
             f"{_suite().peak_text(p)}; medians of {r['reps']} "
             "interleaved runs, each in its own process.", "",
             "| training workload | classicnets img/s | tutorial loop img/s | speed-up | classicnets settings "
             "| % of peak | peak RSS MB |", "|---|---:|---:|---:|---|---:|---:|"]
    for name, w in r["training"].items():
        med, s = w["median_images_per_second"], w["classicnets_settings"]
        f = w["fraction_of_peak"]
        lines.append(f"| {name} (batch {w['batch']}) | {med['classicnets']:,.1f} | {med['tutorial']:,.1f} | "
                     f"**{w['speedup']:.2f}x** | {s['resolved_precision']}, "
                     f"{'channels-last' if s['channels_last'] else 'contiguous'} | "
                     f"{100 * f['classicnets']:.0f}% of {f['classicnets_peak']} | "
                     f"{w['median_peak_rss_mb']['classicnets']:,.0f} |")
    tta = r.get("time_to_accuracy") or {}
    if tta:
        lines += ["", "Time to accuracy (default recipe, training seconds, median over seeds; each seed's epoch): "
                  + "; ".join(f"{t['model']} to {100 * t['target']:.1f}% on {t['dataset']}: "
                              f"{format_seconds(t['median_seconds'])} (epochs "
                              + ", ".join(str(r["reached"]["epoch"]) if r["reached"] else "-" for r in t["runs"]) + ")"
                              for t in tta.values()) + "."]
    lines += ["", "Goals of the performance issue, as measured by this run:", ""]
    lines += [f"- {format_goal(g)}" for g in _suite().evaluate_goals(r)]
    if not command:  # the main run's section: the GPU figure is no CPU's
        lines.append(f"- {_suite().cuda_evidence()}")
    return "\n".join(lines)


def roofline_section() -> str:
    """What LeNet-5's own layers allow (``benchmarks/bench_lenet_roofline.py``), batch by batch."""
    r = _suite().result_file("lenet_roofline")
    m = r["machine"]
    lines = [f"From `benchmarks/results/lenet_roofline.md` (`.venv/bin/python benchmarks/bench_lenet_roofline.py`): "
             f"{m['cpu']}{_suite().isa(m)}, {r['threads']} threads, fp32, channels-last.", "",
             "| batch | whole step img/s | % of fp32 peak | kernels' share of the step | ceiling: kernels alone "
             "| first pool + ReLU (fwd + bwd) |", "|---:|---:|---:|---:|---:|---:|"]
    for run in r["runs"]:
        s, k = run["step"], run["kernels"]
        pool_ms = _suite().pool_as_run(run["pool1"])[1]
        lines.append(f"| {run['batch']} | {s['images_per_second']:,.0f} | {100 * s['fraction_of_peak']:.0f}% | "
                     f"{100 * k['share_of_step']:.0f}% | {100 * k['ceiling_fraction_of_peak']:.0f}% of peak, "
                     f"{k['images_per_second']:,.0f} img/s | {pool_ms:.2f} ms ({100 * pool_ms / s['ms']:.0f}%) |")
    return "\n".join(lines)


def _suite():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import suite

    return suite


def format_goal(g: dict) -> str:
    return _suite().format_goal(g)


def format_seconds(secs: float | None) -> str:
    return _suite().format_seconds(secs)


def sections() -> dict[str, str]:
    from classicnets.summary_table import format_cost_table, model_summary, stack_cost
    from classicnets.zoo_table import format_models_table, models_table

    fence = "```"
    lecture = (28, 28, 192)  # the lecture's example input, H x W x C

    def cost(layers):
        return format_cost_table(stack_cost(lecture, layers), in_shape=lecture)

    from classicnets.experiments.common import readme_section

    return {
        "experiments": readme_section(ROOT / "docs" / "experiments",
                                      ["degradation", "identity", "bottleneck", "transfer", "pooling"],
                                      link_root="docs/experiments", title=False),
        "kills": kills_line(),
        "benchmarks": benchmarks_section(),
        "benchmarks-avx2": benchmarks_section("benchmarks/results/avx2", AVX2_COMMAND),
        "lenet-roofline": roofline_section(),
        "models": format_models_table(models_table(), markdown=True),
        "summary-lenet5": f"{fence}text\n$ classicnets summary lenet5\n{model_summary('lenet5')}\n{fence}",
        "cost": (
            f"{fence}text\n$ classicnets cost 32x5\n{cost([(32, 5)])}\n\n"
            f"$ classicnets cost 16x1 32x5\n{cost([(16, 1), (32, 5)])}\n{fence}"
        ),
    }


def render(text: str, parts: dict[str, str]) -> str:
    for name, body in parts.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- generated:{name} --> section")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is out of date; write nothing")
    args = ap.parse_args()
    old = README.read_text()
    new = render(old, sections())
    if args.check:
        if new != old:
            print("README.md is out of date: run .venv/bin/python scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
