"""Kill training with SIGKILL at random moments, resume it, and check nothing was lost.

    .venv/bin/python scripts/kill_resume.py            # 20 kills, results to benchmarks/results/<machine>/
    .venv/bin/python scripts/kill_resume.py --quick    # 3 kills on a smaller run (tests/test_kills.py)

First one uninterrupted run of ``classicnets train lenet5`` is the reference. Then, ``--kills``
times, the same command (same seed) is started in a fresh directory and killed with SIGKILL
(trial numbers 1, 2, 3, ...):

- trials 1, 5, 9...: after a random delay drawn uniformly from the reference's whole duration
  (start-up included: importing torch, loading the data);
- trials 2, 4, 6, 8...: after a random delay drawn from the time training ran in the reference
  (from its first file written to its last epoch saved);
- trials 3, 7, 11...: the moment the n-th temporary file of a checkpoint write appears (n random),
  i.e. in the middle of writing model.safetensors, train_state.safetensors, metrics.jsonl...

A run that finishes before its planned moment (a busier machine during the reference, or
short-lived temporary files the watcher missed) is started again with the moment drawn inside
what it showed, up to 4 attempts (the results count these misses).

After each kill the files that exist must still read as checkpoints. Then ``--resume`` (a
fresh start where no training state was written yet) runs to the end, and the run must equal
the reference: weights and training state bit for bit, metrics.jsonl with epochs 1..E once each
and the same numbers, no temporary file left.

Writes ``RESULTS.json`` and ``RESULTS.md`` (default ``benchmarks/results/<machine>/reliability``); exits
1 if any trial lost anything.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # results go where the benchmarks' do: results/<machine>/
from common import git_commit, results_dir  # noqa: E402  (benchmarks/common.py)

from classicnets.report import machine_info  # noqa: E402

FULL = ["--train-limit", "1024", "--epochs", "4", "--batch-size", "64"]
QUICK = ["--train-limit", "512", "--epochs", "2", "--batch-size", "64"]


def train_cmd(out: Path, args: list[str], resume: bool) -> list[str]:
    return [sys.executable, "-m", "classicnets", "train", "lenet5", *args, "--threads", "1", "--seed", "0",
            "--quiet", "--out", str(out), *(["--resume"] if resume else [])]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    e["OMP_NUM_THREADS"] = "1"
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def temp_files(out: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(out) if n.startswith(".") and ".tmp" in n)
    except FileNotFoundError:
        return []


def run_to_end(out: Path, args: list[str], resume: bool, epochs: int = 0) -> tuple[float, float, float]:
    """Run to the end; (seconds in all, when the run wrote its first file (the end of start-up),
    when metrics.jsonl first held all ``epochs`` lines (the end of training))."""
    t0 = time.perf_counter()
    started = trained = None
    seen_size = -1
    metrics = out / "metrics.jsonl"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(train_cmd(out, args, resume), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=err)
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if started is None and (out / "config.json").exists():
                started = now
            if started is not None and trained is None and metrics.exists() and metrics.stat().st_size != seen_size:
                seen_size = metrics.stat().st_size
                if metrics.read_text().count("\n") >= epochs:
                    trained = now
            time.sleep(0.002)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"training failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
    total = time.perf_counter() - t0
    return total, started if started is not None else total, trained if trained is not None else total


def saved_epoch(out: Path) -> int:
    from classicnets import checkpoint as ckpt

    path = out / ckpt.STATE_FILE
    return int(ckpt.read_tensors(path)[1]["epoch"]) if path.exists() else 0


def readable(out: Path) -> list[str]:
    """Problems reading the checkpoints present right after a kill (none expected)."""
    from classicnets import checkpoint as ckpt
    from classicnets.checkpoint import read_checkpoint
    from classicnets.errors import ClassicNetsError

    problems = []
    for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):
        if (out / name).exists():
            try:
                read_checkpoint(out / name)
            except ClassicNetsError as exc:
                problems.append(str(exc))
    for name in ("metrics.jsonl", ckpt.META_FILE, "config.json"):
        path = out / name
        if path.exists():
            try:
                [json.loads(line) for line in path.read_text().splitlines()] if name.endswith("l") else \
                    json.loads(path.read_text())
            except ValueError as exc:
                problems.append(f"{path}: {exc}")
    return problems


def kill_at(proc: subprocess.Popen, out: Path, delay: float | None,
            nth_write: int | None) -> tuple[float | None, float, int]:
    """SIGKILL ``proc`` after ``delay`` s, or when the ``nth_write``-th temporary file appears.
    Return (the kill's moment in s after start, or None if the run finished first; the seconds
    watched; how many temporary files were seen appearing)."""
    t0 = time.perf_counter()
    seen = set()
    appeared = 0
    while proc.poll() is None:
        now = time.perf_counter() - t0
        if delay is not None and now >= delay:
            break
        if nth_write is not None:
            tmp = set(temp_files(out))
            appeared += len(tmp - seen)
            seen = tmp
            if appeared >= nth_write:
                break
            time.sleep(0.0002)
        else:
            time.sleep(min(0.002, max(delay - now, 0)))
    if proc.poll() is not None:
        return None, time.perf_counter() - t0, appeared
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    moment = time.perf_counter() - t0
    return moment, moment, appeared


# A kill planned for a moment the run never reached is tried again (see kill_trial).
MAX_ATTEMPTS = 4


def kill_trial(out: Path, args: list[str], rng: random.Random, window: tuple[float, float] | None,
               writes: int) -> tuple[str, float | None, int]:
    """Start the run in a fresh ``out`` and SIGKILL it after a delay drawn from ``window`` (s),
    or, without a window, when its n-th temporary file appears (n drawn from 1..``writes``).

    A run can finish before its planned moment: the reference that set the window ran on a busier
    machine, or the watcher missed short-lived temporary files while the cores were shared (as
    under CI's parallel tests). Then the trial starts again with the moment drawn inside what that
    run showed (the window cut to its length, n to the files it saw), up to MAX_ATTEMPTS times.
    Return (the plan that was carried out, the kill's moment or None, attempts)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        delay = rng.uniform(*window) if window else None
        nth = None if window else rng.randint(1, writes)
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen(train_cmd(out, args, resume=False), env=env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moment, watched, appeared = kill_at(proc, out, delay, nth)
        planned = f"at temp file #{nth}" if nth else f"after {delay:.2f}s"
        if moment is not None:
            return planned, moment, attempt
        if window:
            end = min(window[1], 0.9 * watched)
            window = (min(window[0], end / 2), end)
        else:
            writes = max(1, appeared)
    return planned, None, MAX_ATTEMPTS


def compare(out: Path, ref: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from classicnets import checkpoint as ckpt

    differing_bytes = 0
    identical = True
    for name in (ckpt.MODEL_FILE, ckpt.STATE_FILE):
        a, b = load_file(str(out / name)), load_file(str(ref / name))
        if a.keys() != b.keys():
            identical = False
            continue
        for k in a:
            same = a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k])
            if not same:
                identical = False
                x = a[k].contiguous().view(-1).view(torch.uint8) if a[k].shape == b[k].shape else None
                y = b[k].contiguous().view(-1).view(torch.uint8)
                differing_bytes += int((x != y).sum()) if x is not None else y.numel()

    def rows(d):
        return [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]

    def untimed(rs):
        return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")} for r in rs]

    metrics = rows(out)
    return {"bit_identical": identical, "bytes_lost": differing_bytes,
            "epochs": [r["epoch"] for r in metrics],
            "metrics_equal": untimed(metrics) == untimed(rows(ref)),
            "temp_files_left": temp_files(out)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="3 kills of a 2-epoch run on 512 images")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--results", type=Path,
                   help="write RESULTS.json and RESULTS.md (default benchmarks/results/MACHINE/reliability)")
    p.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder, removed)")
    a = p.parse_args(argv)
    machine = machine_info()
    args = QUICK if a.quick else FULL
    kills = 3 if a.quick and a.kills == 20 else a.kills
    epochs = int(args[args.index("--epochs") + 1])
    rng = random.Random(a.seed)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref = work / "reference"
        shutil.rmtree(ref, ignore_errors=True)
        duration, startup, trained = run_to_end(ref, args, resume=False, epochs=epochs)
        print(f"reference: {duration:.1f}s: start-up until {startup:.1f}s, training until {trained:.1f}s")
        trials = []
        for i in range(kills):
            out = work / f"trial{i + 1:02d}"
            # Every fourth kill anywhere in the run; the others while training runs, where there
            # is something to lose (the reference's last save ends it); every fourth in a write.
            window = None if i % 4 == 2 else (0, duration) if i % 4 == 0 else (startup, trained)
            planned, moment, attempts = kill_trial(out, args, rng, window, writes=1 + 4 * epochs)
            left = temp_files(out)
            epoch = saved_epoch(out) if moment is not None else epochs
            problems = readable(out) if moment is not None else []
            phase = ("not killed: finished first" if moment is None else
                     f"writing a file after epoch {epoch}: {', '.join(left)}" if left else
                     "start-up, before any epoch was saved" if epoch == 0 and moment < startup
                     else f"training epoch {epoch + 1}" if epoch < epochs else "after the last epoch was saved")
            resumes = 0
            t0 = time.perf_counter()
            if moment is not None:
                run_to_end(out, args, resume=epoch > 0)
                resumes = 1
            result = compare(out, ref)
            ok = (result["bit_identical"] and result["metrics_equal"] and not result["temp_files_left"]
                  and result["epochs"] == list(range(1, epochs + 1)) and not problems)
            trials.append({"trial": i + 1, "planned": planned, "attempts": attempts,
                           "killed_at_s": None if moment is None else round(moment, 3), "moment": phase,
                           "epoch_saved_at_kill": epoch, "killed_inside_a_write": bool(left),
                           "checkpoints_readable_after_kill": not problems, "read_problems": problems,
                           "resumes": resumes, "resume_s": round(time.perf_counter() - t0, 2), **result, "ok": ok})
            print(f"trial {i + 1:2d}: {phase:55s} -> {'ok' if ok else 'LOST SOMETHING'}")
        killed = [t for t in trials if t["killed_at_s"] is not None]
        summary = {
            "command": " ".join(["classicnets train lenet5", *args, "--threads 1 --seed 0"]),
            "reference_seconds": round(duration, 2), "startup_seconds": round(startup, 2),
            "training_ends_seconds": round(trained, 2),
            "kills": len(killed), "trials": len(trials),
            "missed_before_kill": sum(t["attempts"] - (t["killed_at_s"] is not None) for t in trials),
            "killed_inside_a_write": sum(t["killed_inside_a_write"] for t in killed),
            "survived": sum(t["ok"] for t in killed),
            "bit_identical": sum(t["bit_identical"] for t in trials),
            "bytes_lost": sum(t["bytes_lost"] for t in trials),
            "checkpoints_unreadable_after_kill": sum(not t["checkpoints_readable_after_kill"] for t in trials),
            "temp_files_left": sum(bool(t["temp_files_left"]) for t in trials),
            "seed": a.seed, "python": sys.version.split()[0], "machine": machine, "commit": git_commit(),
            "details": trials,
        }
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results = a.results or results_dir(machine) / "reliability"
    write(summary, results)
    print(f"{summary['survived']}/{summary['kills']} kills survived, {summary['bit_identical']}/{len(trials)} "
          f"bit-identical, {summary['bytes_lost']} bytes lost; wrote {results}.json/.md")
    return 0 if all(t["ok"] for t in trials) else 1


def write(s: dict, results: Path) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(s, indent=2) + "\n")
    lines = [
        "# Kill and resume",
        "",
        f"`{s['command']}`, SIGKILLed at random moments and resumed with `--resume` "
        f"(`scripts/kill_resume.py`, seed {s['seed']}, Python {s['python']}); reference run "
        f"{s['reference_seconds']} s: start-up (importing torch, loading the data) until "
        f"{s['startup_seconds']} s, training until {s['training_ends_seconds']} s (the last epoch saved), "
        f"then the curves and exit.",
        "",
        f"- kills: **{s['kills']}** ({s['killed_inside_a_write']} in the middle of writing a checkpoint file); "
        f"runs that finished before their planned kill and were started again: {s['missed_before_kill']}",
        f"- survived (resumed to the reference's exact result): **{s['survived']}/{s['kills']}**",
        f"- final weights and training state bit-identical to the uninterrupted run: "
        f"**{s['bit_identical']}/{s['trials']}**",
        f"- bytes lost: **{s['bytes_lost']}**; checkpoints unreadable after a kill: "
        f"{s['checkpoints_unreadable_after_kill']}; temporary files left after resuming: {s['temp_files_left']}",
        "",
        "| trial | planned kill | attempts | killed at (s) | moment | resumed | bit-identical "
        "| epochs in metrics.jsonl |",
        "|---:|---|---:|---:|---|---:|---|---|",
    ]
    for t in s["details"]:
        killed_at = t["killed_at_s"] if t["killed_at_s"] is not None else "-"
        lines.append(f"| {t['trial']} | {t['planned']} | {t['attempts']} | {killed_at} "
                     f"| {t['moment']} | {t['resumes']} | {'yes' if t['bit_identical'] else 'NO'} "
                     f"| {','.join(map(str, t['epochs']))} |")
    results.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
