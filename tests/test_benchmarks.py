"""The benchmarks run and write well-formed results (no timing is asserted: that is their job)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, out: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--quiet", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_bench_train_quick_writes_json_and_markdown(tmp_path):
    run_quick("bench_train.py", tmp_path)
    results = json.loads((tmp_path / "train_throughput.json").read_text())
    assert results["machine"]["torch_threads"] >= 1 and results["machine"]["cpu"]
    assert results["config"]["model"] == "lenet5"
    assert [r["batch_size"] for r in results["runs"]] == [16, 32]
    for run in results["runs"]:
        names = set(run["median_images_per_second"])
        assert names == {"classicnets", "tutorial (num_workers=0)", "tutorial (num_workers=2)"}
        assert all(v > 0 for v in run["median_images_per_second"].values())
        assert all(len(v) == results["config"]["reps"] for v in run["images_per_second"].values())
        assert set(run["speedup_vs"]) == names - {"classicnets"}
    md = (tmp_path / "train_throughput.md").read_text()
    assert md.startswith("# Training throughput") and "| 16 | classicnets |" in md and "x** |" in md


@pytest.mark.slow
def test_bench_lenet_step_quick_writes_the_idea_table(tmp_path):
    run_quick("bench_lenet_step.py", tmp_path)
    results = json.loads((tmp_path / "lenet_step_ideas.json").read_text())
    (run,) = results["runs"]
    assert run["ideas"][0]["ratio"] == pytest.approx(1.0)
    assert all(i["after"] > 0 for i in run["ideas"])
    md = (tmp_path / "lenet_step_ideas.md").read_text()
    assert "| idea | img/s before | img/s after | ratio |" in md

