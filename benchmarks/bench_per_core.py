"""One training process per core instead of one process with a thread per core?

On a 2-core CPU, `classicnets train` runs one process whose convolutions use both cores (two
torch threads). The other way to use them is data parallelism: `torchrun --nproc_per_node 2`,
two processes of one thread each, each taking half of every global batch (`--batch-size` stays
the global batch, so both contenders take the same steps on the same images) and averaging
gradients over gloo after every backward (DistributedDataParallel). Small kernels lose less to
a thread team on one thread; the all-reduce and the two processes' memory traffic cost back.

Both train LeNet-5 with its recipe, each run its own command line, the contenders alternating
round by round (the order rotating) so that a slow spell of the machine falls on both; images/s
of each run's last epoch (the first warms up), medians over rounds, and each run's final test
accuracy (the same batches, so within floating-point noise of each other).

Run: ``.venv/bin/python benchmarks/bench_per_core.py`` (about 3 minutes on 2 cores; needs
Fashion-MNIST: ``apt-get install dataset-fashion-mnist``). Results:
``benchmarks/results/<machine>/per_core.{json,md}``. ``--quick`` is the tiny run the tests use
(1 epoch on 256 of the embedded digits, one round).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import isa, script_parser, write_results  # benchmarks/common.py (scripts run from this folder)

from classicnets.report import machine_info

CONTENDERS = {
    "one process, 2 threads": (["-m", "classicnets"], ["--threads", "2"]),
    "torchrun: 2 processes, 1 thread each (DDP over gloo)": (
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "classicnets"],
        ["--threads", "1"]),
}


def run_once(launcher: list[str], threads: list[str], train: list[str], seed: int) -> dict:
    """One ``classicnets train`` run; its last epoch's images/s and its final test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, *launcher, "train", *train, *threads, "--seed", str(seed), "--out", tmp, "--quiet"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        epochs = [json.loads(line) for line in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    return {"images_per_second": epochs[-1]["images_per_second"], "test_accuracy": epochs[-1]["test_accuracy"]}


def run(args) -> dict:
    train = (["lenet5", "--dataset", "digits", "--epochs", "1", "--train-limit", "256"] if args.quick
             else ["lenet5", "--dataset", args.dataset, "--epochs", str(args.epochs)])
    names = list(CONTENDERS)
    runs = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(run_once(*CONTENDERS[name], train, seed=r))
            if not args.quiet:
                print(f"round {r + 1}: {name} {runs[name][-1]['images_per_second']:,.0f} img/s", file=sys.stderr)
    med = {name: statistics.median(x["images_per_second"] for x in v) for name, v in runs.items()}
    return {"machine": machine_info(), "train_args": train, "rounds": args.rounds, "runs": runs,
            "median_images_per_second": med, "ratio": med[names[1]] / med[names[0]]}


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# One training process per core, or one with a thread per core", "",
             f"`benchmarks/bench_per_core.py`. Machine: {m['cpu']}{isa(m)}, {m['cores_available']} cores available, "
             f"torch {m['torch']}. `classicnets train {' '.join(r['train_args'])}`, seeds 0-{r['rounds'] - 1} (round r "
             "is seed r for both), images/s of the last epoch, medians over the rounds.", "",
             "| how | median img/s | ratio | every round (img/s) | final test accuracy, every round |",
             "|---|---:|---:|---|---|"]
    first = next(iter(r["median_images_per_second"].values()))
    for name, v in r["runs"].items():
        med = r["median_images_per_second"][name]
        rates = ", ".join(f"{x['images_per_second']:,.0f}" for x in v)
        accuracies = ", ".join(f"{100 * x['test_accuracy']:.2f}%" for x in v)
        lines.append(f"| {name} | {med:,.0f} | {med / first:.2f}x | {rates} | {accuracies} |")
    verdict = ("faster: worth making the default on small CPUs" if r["ratio"] > 1.05 else
               "no faster: `classicnets train` keeps one process with a thread per core")
    lines += ["", f"Two processes of one thread each ran at {r['ratio']:.2f}x one process of two threads: {verdict}.",
              "", "Regenerate: `.venv/bin/python benchmarks/bench_per_core.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = script_parser(__doc__, "per_core")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    results = run(args)
    write_results(args.out, "per_core", results, to_markdown(results), args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
