"""What every experiment writes: ``results.json`` (settings, seeds, machine, time taken, numbers,
the table), ``report.md`` (the table, the figures, a paragraph computed from the numbers) and
the README section rendered from the results files."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from ..report import machine_info


@contextlib.contextmanager
def runs_directory(runs_dir: str | Path | None, experiment: str) -> Iterator[Path]:
    """Where an experiment's training runs go: ``runs_dir`` if given (kept), else a temporary
    directory removed afterwards (only the experiment's own results are worth keeping)."""
    if runs_dir is not None:
        yield Path(runs_dir)
        return
    with tempfile.TemporaryDirectory(prefix=f"classicnets-{experiment}-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` torch threads (None or 0: as set), and restore the count after,
    whatever happens: an experiment's choice of threads must not leak into the caller's."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers(threads: int | None, jobs: int) -> int:
    """How many training runs to have going at once on this machine: one per core (``threads``
    cores each, if given), at most one per job, and one where a GPU trains (the runs would share it).

    Why: the small CIFAR nets (width 8, batch 128) do not speed up with a second thread: ResNet-56
    trained 2,000 images in 8.4 s on one thread and 9.5 s on two (2-core AMD EPYC, AVX2), so two
    runs side by side, one thread each, nearly halve the wall time of an experiment."""
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(jobs, cores // (threads or 1)))


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)


def run_jobs(fn: Callable[..., dict], jobs: Sequence[dict], *, workers: int, threads: int | None) -> list[dict]:
    """``[fn(**job) for job in jobs]``, ``workers`` at a time, each in its own process with
    ``threads`` torch threads (default 1 where there are several workers), results in the jobs'
    order. ``fn`` must be a module-level function (the processes are spawned, so it is imported,
    not copied) and its results picklable. One worker runs the jobs here, in this process.

    Jobs start in the order given, so put the longest first: the last to finish is then a short one."""
    if workers <= 1 or len(jobs) <= 1:
        with torch_threads(threads):
            return [fn(**job) for job in jobs]
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-flight
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_threads,
                             initargs=(threads or 1,)) as pool:
        futures = [pool.submit(fn, **job) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def warmup_cosine(total: int, warmup: int):
    """The learning-rate factor at step ``s``: linear from 1/warmup to 1 over ``warmup`` steps, then
    a cosine from 1 to 0 over the rest. Why a warm-up (bottleneck's nets): Adam's first steps are
    full-size whatever the gradient; without one the plain net stalled at 51-54% over its first 6
    epochs on Fashion-MNIST, with one it reached 75% by epoch 5 (docs/experiments.md, "Bottleneck
    (b)")."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))
    return factor


def sd(xs: Sequence[float]) -> float:
    """Sample standard deviation over seeds; 0 for a single seed."""
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v) -> str:
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    from ..report import _pyplot

    return _pyplot()


def finish(out: Path, *, name: str, title: str, protocol: str, started: float, settings: dict,
           seeds: Sequence[int], results: dict, tables: list[dict], figures: list[str],
           conclusion: str) -> dict:
    """Write ``results.json`` and ``report.md``; return the results dict.

    ``tables`` are ``{"caption", "headers", "rows"}``; ``figures`` are file names inside ``out``;
    ``conclusion`` is the paragraph computed from the numbers by the experiment.
    """
    doc = {
        "experiment": name,
        "title": title,
        "protocol": protocol,
        "settings": settings,
        "seeds": list(seeds),
        "machine": machine_info(),
        "seconds": round(time.perf_counter() - started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
        "tables": tables,
        "figures": list(figures),
        "conclusion": conclusion,
    }
    atomic_write_text(out / "results.json", json.dumps(doc, indent=2) + "\n", hint="--out DIR")
    atomic_write_text(out / "report.md", render_report(doc), hint="--out DIR")
    return doc


def render_report(doc: dict, link_prefix: str = "", heading: str = "#") -> str:
    m = doc["machine"]
    paper = f" --protocol {doc['protocol']}" if doc["protocol"] != "quick" else ""
    threads = doc["settings"].get("threads") or m["torch_threads"]  # what the runs used, if set
    workers = doc["settings"].get("workers") or 1
    side = f"{workers} runs side by side, each with " if workers > 1 else ""
    parts = [f"{heading} {doc['title']}", "",
             f"`classicnets experiment {doc['experiment']}{paper}`. "
             f"Protocol `{doc['protocol']}`, seeds {doc['seeds']}, {doc['seconds']:.0f} s on {m['cpu']} "
             f"({m['cores']} cores, {side}{threads} torch thread{'s' * (threads != 1)}), torch {m['torch']}.", ""]
    for t in doc["tables"]:
        if t.get("caption"):
            parts += [f"**{t['caption']}**", ""]
        parts += [markdown_table(t["headers"], t["rows"]), ""]
    for f in doc["figures"]:
        parts += [f"![{Path(f).stem}]({link_prefix}{f})", ""]
    parts += [doc["conclusion"], ""]
    return "\n".join(parts)


def readme_section(root: str | Path = "docs/experiments", names: Sequence[str] | None = None, *,
                   link_root: str | None = None, title: bool = True) -> str:
    """The README's "Experiments" section, rendered from ``root/<name>/results.json`` (numbers are
    never typed by hand). Image links start with ``link_root`` (default: ``root`` as given, i.e.
    relative to the repository root when run from there); ``title=False`` leaves out the heading
    (for a ``<!-- generated:... -->`` block under a heading of its own)."""
    root = Path(root)
    link_root = root.as_posix() if link_root is None else link_root.rstrip("/")
    files = ([root / n / "results.json" for n in names] if names is not None
             else sorted(root.glob("*/results.json")))
    parts = (["## Experiments", ""] if title else []) + [
             "Each is one command, `classicnets experiment NAME` (the quick protocol unless `--protocol paper`), "
             "and writes results.json, figures and report.md; the numbers below are rendered from those files "
             "by `classicnets.experiments.common.readme_section()`.", ""]
    for f in files:
        doc = json.loads(f.read_text())
        parts.append(render_report(doc, link_prefix=f"{link_root}/{f.parent.name}/", heading="###"))
    return "\n".join(parts)
