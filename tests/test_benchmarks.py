"""The benchmarks run and write well-formed results (no timing is asserted: that is their job)."""

import json
import platform
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


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting it measures exists only with glibc")
def test_bench_malloc_quick_measures_both_allocator_settings_in_their_own_processes(tmp_path):
    run_quick("bench_malloc.py", tmp_path)
    results = json.loads((tmp_path / "malloc.json").read_text())
    assert set(results["workloads"]) == {"lenet5-step", "lenet5-train"}
    for r in results["workloads"].values():
        # Each worker checked that its process ran with the setting it was started for.
        assert [x["state"] for x in r["runs"]["returned"]] == ["off"]
        assert [x["state"] for x in r["runs"]["kept"]] == ["kept"]
        assert r["ratio"] > 0 and r["median"]["kept"]["peak_rss_mb"] > 0
    assert results["workloads"]["lenet5-step"]["median"]["returned"]["faults_per_step"] >= 0
    md = (tmp_path / "malloc.md").read_text()
    assert md.startswith("# Keeping freed memory") and "| lenet5-step (fp32) |" in md


@pytest.mark.slow
def test_suite_quick_writes_every_section(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--quiet",
                           "--skip-inference", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["peak"]["fp32_gflops"] > 0 and r["peak"]["bf16_gflops"] > 0 and len(r["peak"]["runs"]) == 2
    assert set(r["training"]) == {"lenet5-fashion", "resnet20-32x32x3"}
    for w in r["training"].values():
        assert set(w["median_images_per_second"]) == {"classicnets", "tutorial"}
        assert all(v > 0 for v in w["median_images_per_second"].values())
        assert w["speedup"] > 0 and 0 < w["fraction_of_peak"]["classicnets"]
        assert all(v > 50 for v in w["median_peak_rss_mb"].values())  # MB: a torch process is hundreds
        assert w["macs_per_image"] > 0
    # LeNet-5 at 1x32x32: the card's 416,520 multiply-adds.
    assert r["training"]["lenet5-fashion"]["macs_per_image"] == 416_520
    (tta,) = r["time_to_accuracy"].values()
    (run,) = tta["runs"]
    assert tta["target"] == 0.5 and run["seed"] == 0 and run["curve"] and run["peak_rss_mb"] > 0
    assert tta["median_seconds"] == (run["reached"]["seconds"] if run["reached"] else None)
    assert set(r["settings"]) == {"lenet5-fashion", "resnet20-32x32x3"}
    assert set(r["parity"]["accuracy"]) == {"fp32", "bf16"}
    goals = {g["goal"]: g for g in r["goals"]}
    assert "LeNet-5 training >= 3x the tutorial loop" in goals
    resnet = goals["ResNet-20 training >= 2x the tutorial fp32 loop at equal final accuracy"]
    assert resnet["measured"] == r["training"]["resnet20-32x32x3"]["speedup"]
    assert isinstance(resnet["met"], bool) and resnet["accuracy_gap_bf16_minus_fp32"] is not None
    md = (tmp_path / "results.md").read_text()
    assert "**met**" in md or "**not met**" in md
    assert "| idea | decision | evidence |" in md and "not measured in this run" not in md
    (tmp_path / "results.md").unlink()
    render = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--render",
                             str(tmp_path / "results.json"), "--out", str(tmp_path)], capture_output=True, text=True)
    assert render.returncode == 0, render.stderr
    assert (tmp_path / "results.md").read_text() == md
    for heading in ("## Training throughput", "## Time to accuracy", "## What the defaults are made of",
                    "## Decisions", "## Goals"):
        assert heading in md


def test_time_to_accuracy_median_counts_a_seed_that_never_got_there_as_slowest(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import format_seconds, median_seconds

    def run(secs):
        return {"reached": None if secs is None else {"epoch": 1, "seconds": secs}}

    assert median_seconds([run(12.0), run(None), run(14.0)]) == 14.0
    assert median_seconds([run(12.0), run(None), run(None)]) is None
    assert median_seconds([run(9.0)]) == 9.0
    assert format_seconds(None) == "not reached" and format_seconds(13.25) == "13.2 s"
