"""The inference benchmark runs and writes well-formed results (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_infer.py"
CONTENDERS = {"eager fp32", "fast fp32", "fast bf16", "onnxruntime fp32"}


def bench_module():
    # The benchmark scripts import benchmarks/common.py as scripts do: from their own folder.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_infer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_infer_quick_writes_json_and_markdown(tmp_path):
    pytest.importorskip("onnxruntime")
    # --bf16 yes: the bf16 path runs even where it is emulated (LeNet-5 at batch 2 is cheap).
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--quiet", "--bf16", "yes", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "inference.json").read_text())
    machine, config = results["machine"], results["config"]
    assert machine["torch_threads"] >= 1 and machine["cpu"] and machine["onnxruntime"]
    assert machine["load_average_at_start"] is not None and config["threads"] >= 1
    assert config["quick"] and set(config["contenders"]) == CONTENDERS
    (run,) = results["runs"]
    assert run["model"] == "lenet5" and run["batch_size"] == 2
    assert set(run["median_images_per_second"]) == CONTENDERS
    assert all(v > 0 for v in run["median_images_per_second"].values())
    assert all(len(v) == config["reps"] for v in run["images_per_second"].values())
    assert all(len(v) == config["reps"] for v in run["foreign_load"].values())
    assert run["ratio_vs_onnxruntime"]["onnxruntime fp32"] == pytest.approx(1.0)
    assert run["ratio_vs_eager"]["eager fp32"] == pytest.approx(1.0)
    costs = {o["contender"]: o for o in results["one_off"]}
    assert set(costs) == {"onnxruntime fp32", "fast fp32", "fast bf16"}
    assert costs["onnxruntime fp32"]["export_seconds"] > 0
    assert costs["fast fp32"]["build_seconds_batch_2"] > 0 and costs["fast fp32"]["max_diff_vs_eager"] < 1e-4
    (agree,) = results["agreement"]
    assert agree["bf16_vs_fp32"]["inputs"] == config["agree_inputs"]
    assert 0 <= agree["bf16_vs_fp32"]["top1_agreement"] <= 1
    assert results["probe"] is None and results["goals"] is None and results["total_seconds"] > 0
    md = (tmp_path / "inference.md").read_text()
    assert md.startswith("# Inference throughput")
    for name in CONTENDERS:
        assert f"| lenet5 | 2 | {name} |" in md
    assert "x** |" in md and "One-off costs" in md and "| lenet5 | 16 |" in md


def test_probe_measures_agreement_on_a_trained_model():
    import torch

    torch.set_num_threads(1)  # tiny ops: one thread is fastest, and on a shared machine by far (conftest restores)
    bench = bench_module()
    result = bench.probe("lenet5", steps=30, n_test=48, batch=16, backend="eager", seed=0, quiet=True)
    assert result["inputs"] == 48 and result["test_digits"] == 48 and result["train_images"] == 30 * 64
    assert result["accuracy_fp32"] > 0.3  # 30 steps on real digits: well above chance (10%)
    assert 0.9 <= result["top1_agreement"] <= 1 and result["backends"] == ["eager", "eager"]


def test_compare_logits_counts_agreement_and_near_ties():
    import torch

    bench = bench_module()
    ref = torch.tensor([[3.0, 1.0, 0.0], [1.0, 0.99, 0.0]])
    other = torch.tensor([[3.0, 1.1, 0.0], [0.98, 1.0, 0.0]])
    s = bench.compare_logits(ref, other)
    assert s["top1_agreement"] == 0.5 and s["near_tie_fraction"] == 0.5
    assert s["max_abs_diff"] == pytest.approx(0.1) and s["median_margin"] == pytest.approx(0.01)


@pytest.mark.slow
def test_bench_infer_without_bf16_measures_the_fp32_contenders_only(tmp_path):
    """--bf16 no (what --bf16 auto does on a CPU without native bf16): no bf16 path, no agreement
    checks (they compare bf16 with fp32), and the fp32 figures as usual."""
    pytest.importorskip("onnxruntime")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--quiet", "--bf16", "no", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "inference.json").read_text())
    fp32_only = CONTENDERS - {"fast bf16"}
    assert set(results["config"]["contenders"]) == fp32_only and results["config"]["bf16"] == "no"
    (run,) = results["runs"]
    assert set(run["median_images_per_second"]) == fp32_only
    assert {o["contender"] for o in results["one_off"]} == {"onnxruntime fp32", "fast fp32"}
    assert results["agreement"] == [] and results["probe"] is None
    md = (tmp_path / "inference.md").read_text()
    assert "| lenet5 | 2 | fast fp32 |" in md and "| fast bf16 |" not in md
    assert "No bf16 path in this run (`--bf16 no`" in md


def test_inference_goals_without_a_bf16_run_leave_the_bf16_goals_unmeasured():
    bench = bench_module()
    run = {"model": "resnet50", "batch_size": 16,
           "ratio_vs_onnxruntime": {"eager fp32": 0.6, "fast fp32": 0.84, "onnxruntime fp32": 1.0}}
    goals = bench.evaluate_goals({"runs": [run], "probe": None})
    assert goals["fast fp32 / onnxruntime fp32"] == {"target": 1.0, "measured": 0.84, "met": False}
    assert goals["fast bf16 / onnxruntime fp32"]["measured"] is None and goals["bf16 top-1 agreement"]["met"] is None
