"""Regenerate the generated sections of README.md and docs/*.md from the package and its results.

The model tables, the LeNet-5 summary, the 1x1 cost example, the benchmark and experiment figures
are produced by the code and the results files, not typed: each sits between
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` in whichever of README.md and
docs/*.md holds it, and its links are written relative to that file. Run
``.venv/bin/python scripts/update_readme.py`` after changing a model or a results file; ``--check``
writes nothing and exits 1 if any file is out of date (tests/test_readme.py runs that check). A
known section found in no file, an unknown one, or one without its closing marker is an error.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Where the results files are, relative to ROOT (benchmarks/results/<machine>/): the suite's main
# run, the latest, with the peers (2026-12-07, on the AVX-512 machine with native bf16); the
# suite's latest run on the other machine, AVX2 without native bf16 (2026-12-07, with the peers;
# its command left out the settings section, which compares bf16 with fp32); and
# scripts/kill_resume.py's.
MAIN_RESULTS = "benchmarks/results/avx512-bf16"
MAIN_COMMAND = ""
OTHER_RESULTS = "benchmarks/results/avx2"
OTHER_COMMAND = f" --out {OTHER_RESULTS} --skip-settings"
# The latest kill/resume run (2026-12-06), made after a fresh run began to write only at its first epoch.
RELIABILITY = "benchmarks/results/avx2/reliability"

# A section's text may link to files: it is given ``link``, which turns a path relative to the
# repository root into one relative to the file the section is written into.
Link = Callable[[str], str]


def files() -> list[Path]:
    """The files whose generated sections are kept current: README.md and docs/*.md."""
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def linker(target: Path) -> Link:
    """``link`` for a section written into ``target``."""
    folder = target.resolve().parent
    return lambda path: Path(os.path.relpath(ROOT / path, folder)).as_posix()


def kills_line(link: Link) -> str:
    """The kill/resume figures, from scripts/kill_resume.py's results file."""
    import json

    r = json.loads((ROOT / f"{RELIABILITY}.json").read_text())
    return (f"- **Kills**: {r['kills']} SIGKILLs of `classicnets train` at random moments, "
            f"{r['killed_inside_a_write']} in the middle of a checkpoint write,\n"
            f"  each resumed with `--resume`: {r['survived']}/{r['trials']} survived, final weights "
            f"bit-identical to the uninterrupted run in {r['bit_identical']}/{r['trials']},\n"
            f"  {r['bytes_lost']} bytes lost, {r['checkpoints_unreadable_after_kill']} unreadable checkpoints, "
            f"{r['temp_files_left']} temporary files left (`scripts/kill_resume.py`,\n"
            f"  [results]({link(f'{RELIABILITY}.md')})).")


def _results(folder: str = MAIN_RESULTS) -> dict:
    import json

    return json.loads((ROOT / folder / "results.json").read_text())


def benchmarks_section(folder: str = MAIN_RESULTS, command: str = "") -> str:
    """The suite's headline figures and goals, from FOLDER/results.json (the suite's ``--out``;
    ``command``: the options it ran with). The main run's section also says where the GPU figure
    stands."""
    r = _results(folder)
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
    lines += ["", "Performance goals, as measured by this run:", ""]
    lines += [f"- {format_goal(g)}" for g in _suite().evaluate_goals(r)]
    if folder == MAIN_RESULTS:  # the GPU figure is no CPU's: said once, under the main run
        lines.append(f"- {_suite().cuda_evidence()}")
    return "\n".join(lines)


def benchmarks_headline(link: Link) -> str:
    """The README's one table of performance figures, from the same benchmarks/results.json as the
    ``benchmarks`` section: classicnets against each peer, ONNX Runtime and the tutorial loop
    (``summary_table``); for runs from before the peers, training against the tutorial loop."""
    r = _results()
    m = r["machine"]
    if "peers" in r:
        return "\n".join([f"Images/s on {m['cpu']}{_suite().isa(m)} with {m['cores_available']} cores "
                          f"(torch {m['torch']}), medians of {r['reps']} interleaved runs, and in brackets how many "
                          "times as fast classicnets is (inference: the path `--fast` serves), from "
                          f"[`{MAIN_RESULTS}/results.md`]({link(f'{MAIN_RESULTS}/results.md')}):", "",
                          *_suite().summary_table(r)])
    lines = [f"Training throughput on {m['cpu']}{_suite().isa(m)} with {m['cores_available']} cores "
             f"(torch {m['torch']}), against the tutorial loop (a per-sample `Dataset` + `DataLoader`, fp32); "
             f"medians of {r['reps']} interleaved runs from "
             f"[`{MAIN_RESULTS}/results.md`]({link(f'{MAIN_RESULTS}/results.md')}):", "",
             "| training workload | classicnets img/s | tutorial loop img/s | speed-up | precision |",
             "|---|---:|---:|---:|---|"]
    for name, w in r["training"].items():
        med = w["median_images_per_second"]
        lines.append(f"| {name} (batch {w['batch']}) | {med['classicnets']:,.1f} | {med['tutorial']:,.1f} | "
                     f"**{w['speedup']:.2f}x** | {w['classicnets_settings']['resolved_precision']} |")
    return "\n".join(lines)


def degradation_headline(link: Link) -> str:
    """The README's degradation result: the cpu protocol's training errors by depth and its figure,
    from docs/experiments/degradation-cpu/results.json (``classicnets experiment degradation
    --protocol cpu``)."""
    import json

    folder = "docs/experiments/degradation-cpu"
    doc = json.loads((ROOT / folder / "results.json").read_text())
    s, m, r = doc["settings"], doc["machine"], doc["results"]

    def cell(net: str) -> str:
        seeds = " / ".join(f"{100 * row['train_error']:.1f}" for row in r["per_seed"][net])
        return f"**{100 * r['final'][net]['train_error']:.1f}** ({seeds})"

    lines = [f"`classicnets experiment degradation --protocol cpu`: plain and residual nets of "
             f"{', '.join(map(str, s['depths']))} layers (He et al. 2015, section 4.2) with one budget for all: "
             f"{s['epochs']} epochs of batch {s['batch_size']} on the first {s['train_limit']:,} Fashion-MNIST images, "
             f"width {s['width']}, seeds {doc['seeds']}; {doc['seconds'] / 60:.0f} minutes on {m['cpu']}"
             f"{_suite().isa(m)}, {m['cores']} cores. Training error (%) of a final pass over the un-augmented "
             "training images, mean over seeds (each seed):", "",
             "| layers | plain | ResNet |", "|---:|---:|---:|",
             *(f"| {d} | {cell(f'plain{d}')} | {cell(f'resnet{d}')} |" for d in s["depths"]), "",
             _seed_exceptions(r, s["depths"]), "",
             f"![plain nets left, ResNets right: training error dashed, test error bold]"
             f"({link(f'{folder}/degradation.png')})", "",
             f"The report, with the gradient flow: [{folder}/report.md]({link(f'{folder}/report.md')})."]
    return "\n".join(lines)


def _seed_exceptions(r: dict, depths: list[int]) -> str:
    """Whether every seed goes the paper's way: each deeper plain net above plain-20, each deeper
    ResNet at or below ResNet-20; the seeds that do not, named."""
    from classicnets.experiments.degradation_report import seed_differences

    lo = min(depths)
    against = seed_differences(r["per_seed"], depths)
    plain_ok = all(diff > 0 for (kind, _), by in against.items() if kind == "plain" for diff in by.values())
    above = [f"ResNet-{d} on seed {seed} ({diff:+.2f} points)"
             for (kind, d), by in against.items() if kind == "resnet" for seed, diff in by.items() if diff > 0]
    plain = ("Every deeper plain net ended above plain-{lo} on every seed; " if plain_ok
             else "Not every deeper plain net ended above plain-{lo} on every seed; ").format(lo=lo)
    return plain + (f"every deeper ResNet at or below ResNet-{lo} on every seed." if not above
                    else f"every deeper ResNet at or below ResNet-{lo} except {', '.join(above)}.")


def roofline_section() -> str:
    """What LeNet-5's own layers allow (``benchmarks/bench_lenet_roofline.py``), machine by machine
    (the main run's first) and batch by batch."""
    import json

    main = Path(MAIN_RESULTS).name
    paths = sorted(_suite().result_paths("lenet_roofline"), key=lambda p: p.parent.name != main)
    lines = ["From `benchmarks/results/<machine>/lenet_roofline.md` (`.venv/bin/python "
             "benchmarks/bench_lenet_roofline.py`): 2 threads, fp32, channels-last, the kernels the step runs.", "",
             "| machine | batch | whole step img/s | % of fp32 peak | kernels' share of the step "
             "| ceiling: kernels alone | first pool + ReLU (fwd + bwd) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for path in paths:
        r = json.loads(path.read_text())
        where = f"{r['machine']['cpu']}{_suite().isa(r['machine'])}, {r['threads']} threads"
        for run in r["runs"]:
            s, k = run["step"], run["kernels"]
            pool_ms = _suite().pool_as_run(run["pool1"])[1]
            lines.append(f"| {where} | {run['batch']} | {s['images_per_second']:,.0f} | "
                         f"{100 * s['fraction_of_peak']:.0f}% | {100 * k['share_of_step']:.0f}% | "
                         f"{100 * k['ceiling_fraction_of_peak']:.0f}% of peak, {k['images_per_second']:,.0f} img/s | "
                         f"{pool_ms:.2f} ms ({100 * pool_ms / s['ms']:.0f}%) |")
    return "\n".join(lines)


@functools.cache
def _suite():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import suite

    return suite


def format_goal(g: dict) -> str:
    return _suite().format_goal(g)


def format_seconds(secs: float | None) -> str:
    return _suite().format_seconds(secs)


@functools.cache
def _models() -> tuple[dict, ...]:
    """Every model's row, counted from the real layers (builds each model once per run)."""
    from classicnets.zoo_table import models_table

    return tuple(models_table())


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _span(values: list[int], exact_below: float = 0) -> str:
    """"1.79 G to 11.51 G"; every figure in full where the largest is below ``exact_below``."""
    fmt = (lambda n: f"{n:,}") if max(values) < exact_below else _count
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo} to {hi}"


def models_short() -> str:
    """The models table in brief: one row per family and native input size, the family of the oldest
    paper first."""
    groups: dict[tuple[str, tuple[int, ...]], list[dict]] = {}
    for row in _models():
        groups.setdefault((row["family"], tuple(row["input_size"])), []).append(row)

    def year(rows):
        return min(int(y) for r in rows for y in re.findall(r"\b(?:19|20)\d\d\b", r["paper"])[:1])

    def natural(name):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]

    lines = ["| family | models | input (C x H x W) | params | multiply-adds | paper |", "|---|---|---|---|---|---|"]
    first = {}  # each family's first paper
    for (family, _), rows in groups.items():
        first[family] = min(first.get(family, 9999), year(rows))
    for (family, size), rows in sorted(groups.items(), key=lambda kv: (first[kv[0][0]], kv[0][0], -kv[0][1][-1])):
        papers = dict.fromkeys(re.match(r".*?\b(?:19|20)\d\d\b", r["paper"]).group(0) for r in rows)
        names = ", ".join(r["name"] for r in sorted(rows, key=lambda r: natural(r["name"])))
        params, macs = _span([r["params"] for r in rows], exact_below=1e6), _span([r["macs"] for r in rows])
        lines.append(f"| {family} | {names} | {' x '.join(map(str, size))} | {params} | {macs} | {'; '.join(papers)} |")
    return "\n".join(lines)


def weights_section(link: Link) -> str:
    """The shipped weights, from their cards (src/classicnets/weights/*.json)."""
    from classicnets.weights import list_weights, weights_card

    lines = ["| weights | model | trained on | test accuracy | epochs | training s | reproduced by |",
             "|---|---|---|---:|---:|---:|---|"]
    for name in list_weights():
        c = weights_card(name)
        m = c["machine"]
        load = c.get("load_average_at_start")
        lines.append(f"| `{name}` | {c['model']} | {c['dataset']} | {c['test_accuracy']:.2%} | {c['epochs']} | "
                     f"{c['train_seconds']:,.0f} ({m['cpu_capability']}, {m['torch_threads']} threads"
                     f"{f', load {load[0]:.1f} at start' if load else ''}) | `{c['command']}` |")
    return "\n".join(lines)


def sections() -> dict[str, Callable[[Link], str]]:
    """Every generated section by name: a function of ``link`` (see ``linker``) giving its text."""
    from classicnets.summary_table import format_cost_table, model_summary, stack_cost
    from classicnets.zoo_table import format_models_table

    fence = "```"
    lecture = (28, 28, 192)  # the lecture's example input, H x W x C

    def cost(layers):
        return format_cost_table(stack_cost(lecture, layers), in_shape=lecture)

    def experiments(link: Link) -> str:
        from classicnets.experiments.common import readme_section

        return readme_section(ROOT / "docs" / "experiments",
                              ["degradation", "degradation-cpu", "identity", "bottleneck", "bottleneck-cpu", "transfer",
                               "pooling"],
                              link_root=link("docs/experiments"), title=False)

    return {
        "experiments": experiments,
        "kills": kills_line,
        "degradation-cpu": degradation_headline,
        "benchmarks": lambda link: benchmarks_section(MAIN_RESULTS, MAIN_COMMAND),
        "benchmarks-headline": benchmarks_headline,
        "benchmarks-avx2": lambda link: benchmarks_section(OTHER_RESULTS, OTHER_COMMAND),
        "lenet-roofline": lambda link: roofline_section(),
        "models": lambda link: format_models_table(list(_models()), markdown=True),
        "models-short": lambda link: models_short(),
        "weights": weights_section,
        "summary-lenet5": lambda link: f"{fence}text\n$ classicnets summary lenet5\n{model_summary('lenet5')}\n{fence}",
        "cost": lambda link: (
            f"{fence}text\n$ classicnets cost 32x5\n{cost([(32, 5)])}\n\n"
            f"$ classicnets cost 16x1 32x5\n{cost([(16, 1), (32, 5)])}\n{fence}"
        ),
    }


# A marker is a line of its own, so a page may mention one in its text.
MARKER = re.compile(r"^<!-- generated:([\w-]+) -->$", re.M)


def render(text: str, parts: dict[str, Callable[[Link], str]], link: Link,
           where: str = "README.md") -> tuple[str, set[str]]:
    """``text`` with every generated section it holds rewritten; and the names of those sections."""
    found = set(MARKER.findall(text))
    unknown = found - set(parts)
    if unknown:
        raise SystemExit(f"{where}: unknown generated section(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(parts))})")
    for name in sorted(found):
        pattern = re.compile(rf"^(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)$", re.S | re.M)
        if not pattern.search(text):
            raise SystemExit(f"{where}: <!-- generated:{name} --> has no <!-- /generated:{name} --> "
                             "on a line of its own")
        body = parts[name](link)
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text, found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if README.md or a docs/*.md file is out of date; write nothing")
    args = ap.parse_args()
    parts = sections()
    placed: set[str] = set()
    changed = []
    for path in files():
        where = path.relative_to(ROOT).as_posix()
        old = path.read_text()
        new, found = render(old, parts, linker(path), where)
        placed |= found
        if new != old:
            changed.append((path, where, new))
    missing = set(parts) - placed
    if missing:
        print(f"no file holds the generated section(s) {', '.join(sorted(missing))}: each must sit in "
              "README.md or a docs/*.md file", file=sys.stderr)
        return 1
    if args.check:
        for _, where, _ in changed:
            print(f"{where} is out of date: run .venv/bin/python scripts/update_readme.py", file=sys.stderr)
        return 1 if changed else 0
    for path, where, new in changed:
        path.write_text(new)
        print(f"updated {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
