"""The benchmarks run and write well-formed results (no timing is asserted: that is their job)."""

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from classicnets import native
from classicnets.device import cpu_has_bf16

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
@pytest.mark.xdist_group("ranks")  # it starts two ranks, like test_distributed's tests
def test_bench_per_core_quick_trains_both_ways_on_the_same_batches(tmp_path):
    run_quick("bench_per_core.py", tmp_path)
    r = json.loads((tmp_path / "per_core.json").read_text())
    one, two = r["runs"].values()
    assert len(one) == len(two) == 1 and r["ratio"] > 0 and r["machine"]["cpu"]
    # The global batch is split between the ranks: the same steps, so nearly the same accuracy.
    assert abs(one[0]["test_accuracy"] - two[0]["test_accuracy"]) < 0.05
    assert "| torchrun: 2 processes, 1 thread each (DDP over gloo) |" in (tmp_path / "per_core.md").read_text()


def test_bench_lenet_step_quick_writes_the_idea_table(tmp_path):
    run_quick("bench_lenet_step.py", tmp_path)
    results = json.loads((tmp_path / "lenet_step_ideas.json").read_text())
    assert results["machine"]["cpu"] and "cpu_capability" in results["machine"]
    (run,) = results["runs"]
    assert run["ideas"][0]["ratio"] == pytest.approx(1.0)
    assert all(i["after"] > 0 for i in run["ideas"])
    assert {"all kept ideas + the native 2x2 max pool",
            "all kept ideas + the native max pool and one-channel convolution",
            "all kept ideas + the native pool, conv1 and conv2's input gradient"} <= {i["idea"] for i in run["ideas"]}
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


def _installed(library: str) -> bool:
    import ctypes.util

    return ctypes.util.find_library(library) is not None


@pytest.mark.slow
@pytest.mark.skipif(not _installed("tcmalloc_minimal"), reason="libtcmalloc-minimal4 is not installed")
def test_bench_malloc_preloads_another_allocator_in_its_own_processes(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_malloc.py"), "--quick", "--quiet",
                           "--workloads", "lenet5-step", "--preload", "tcmalloc", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "malloc.json").read_text())["workloads"]["lenet5-step"]
    # Each worker checked whose malloc it ran with (the library mapped into it) and that glibc's
    # settings were off where another allocator stands in.
    assert [x["allocator"] for x in r["runs"]["tcmalloc"]] == ["tcmalloc"]
    assert [x["state"] for x in r["runs"]["tcmalloc"]] == ["off"]
    assert [x["allocator"] for x in r["runs"]["kept"]] == ["glibc"]
    assert set(r["preloaded_vs_kept"]) == {"tcmalloc"} and r["preloaded_vs_kept"]["tcmalloc"] > 0
    assert "| lenet5-step | tcmalloc |" in (tmp_path / "malloc.md").read_text()


def test_bench_malloc_names_a_missing_allocator_and_its_package(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_malloc

    monkeypatch.setitem(bench_malloc.PRELOADS, "jemalloc", ("no_such_allocator_xyz", "libjemalloc2"))
    with pytest.raises(SystemExit, match=r"--preload jemalloc: libno_such_allocator_xyz is not installed .*"
                                         r"apt-get install libjemalloc2"):
        bench_malloc.preload_library("jemalloc")


@pytest.mark.slow
def test_bench_lenet_fashion_recipe_quick_runs_each_variant_in_its_own_process(tmp_path):
    run_quick("bench_lenet_fashion_recipe.py", tmp_path)
    results = json.loads((tmp_path / "lenet_fashion_recipe.json").read_text())
    assert results["dataset"] == "digits" and results["seeds"] == [0] and len(results["variants"]) == 2
    for v in results["variants"].values():
        (run,) = v["runs"]
        assert [c["epoch"] for c in run["curve"]] == [1] and 0 <= run["curve"][0]["test_accuracy"] <= 1
        assert (run["reached"] is not None) == (run["curve"][0]["test_accuracy"] >= results["target"])
        assert v["seeds_reaching_target"] == int(run["reached"] is not None)
        assert v["final_accuracy_min"] == v["final_accuracy_max"] == run["curve"][0]["test_accuracy"]
    smoothing = {v["settings"]["label_smoothing"] for v in results["variants"].values()}
    assert smoothing == {0.0, 0.1}
    md = (tmp_path / "lenet_fashion_recipe.md").read_text()
    assert md.startswith("# LeNet-5 on Fashion-MNIST") and "| variant | seed | curve |" in md


def test_recipe_bench_counts_the_first_epoch_at_the_target(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_lenet_fashion_recipe import reached, summarise

    def curve(*accs):
        return [{"epoch": i + 1, "test_accuracy": a, "train_seconds": 6.0 * (i + 1)} for i, a in enumerate(accs)]

    assert reached(curve(0.85, 0.90, 0.91), 0.90) == {"epoch": 2, "seconds": 12.0}
    assert reached(curve(0.85, 0.899), 0.90) is None
    runs = [{"curve": curve(0.88, 0.905), "reached": {"epoch": 2, "seconds": 12.0}},
            {"curve": curve(0.88, 0.899), "reached": None},
            {"curve": curve(0.91, 0.92), "reached": {"epoch": 1, "seconds": 6.0}}]
    s = summarise(runs, 0.90)
    assert (s["seeds_reaching_target"], s["seeds"], s["median_seconds_to_target"]) == (2, 3, 12.0)
    assert (s["final_accuracy_min"], s["final_accuracy_median"], s["final_accuracy_max"]) == (0.899, 0.905, 0.92)
    assert s["median_epoch_seconds"] == 6.0
    runs[0]["reached"] = None
    assert summarise(runs, 0.90)["median_seconds_to_target"] is None
    # A seed whose loss diverged (the worker's TrainingError) never gets there, at 0% accuracy.
    runs.append({"curve": [], "diverged": "the loss became non-finite", "reached": None})
    s = summarise(runs, 0.90)
    assert (s["seeds_diverged"], s["seeds"], s["final_accuracy_min"]) == (1, 4, 0.0)


def test_recipe_bench_batch_study_shares_all_but_batch_size_epochs_and_lr(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_lenet_fashion_recipe import BATCH_VARIANTS, STUDIES, to_markdown

    assert STUDIES["batch"] == (BATCH_VARIANTS, "lenet_fashion_batch")
    assert all(set(v) == {"batch_size", "epochs", "lr", "augment", "label_smoothing"} for v in BATCH_VARIANTS.values())
    assert {(v["augment"], v["label_smoothing"]) for v in BATCH_VARIANTS.values()} == {("none", 0.1)}
    results = {"machine": {"cpu": "x", "cores_available": 2, "torch": "t"}, "quick": False, "dataset": "fashion-mnist",
               "target": 0.9, "seeds": [0], "threads": 2, "seconds": 60, "common": {"model": "lenet5"},
               "variants": {"batch 256": {"seeds_reaching_target": 0, "seeds": 1, "seeds_diverged": 1,
                                          "final_accuracy_min": 0.0, "final_accuracy_median": 0.0,
                                          "final_accuracy_max": 0.0, "median_seconds_to_target": None,
                                          "median_epoch_seconds": float("nan"),
                                          "runs": [{"seed": 0, "curve": [], "diverged": "non-finite"}]}}}
    md = to_markdown(results)
    assert "| batch 256 | 0 of 1 (1 diverged) |" in md and "| batch 256 | 0 | diverged: non-finite |" in md


def test_recipe_bench_margin_study_varies_epochs_and_lr_only(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_lenet_fashion_recipe import MARGIN_VARIANTS, STUDIES

    assert STUDIES["margin"] == (MARGIN_VARIANTS, "lenet_fashion_margin")
    assert {(v["augment"], v["label_smoothing"]) for v in MARGIN_VARIANTS.values()} == {("none", 0.1)}
    assert {(v["epochs"], v["lr"]) for v in MARGIN_VARIANTS.values()} == {(3, 0.2), (3, 0.15), (4, 0.2), (4, 0.15)}


@pytest.mark.slow
def test_suite_quick_writes_every_section(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--quiet",
                           "--skip-inference", "--peers", "none", "--out", str(tmp_path)],
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
    assert run["recipe"]["epochs"] == 1 and run["recipe"]["batch_size"] == 64  # --epochs 1, the digits' batch
    assert tta["median_seconds"] == (run["reached"]["seconds"] if run["reached"] else None)
    assert set(r["settings"]) == {"lenet5-fashion", "resnet20-32x32x3"}
    # bf16 is measured where the CPU has it natively; a --quick run elsewhere leaves it out.
    bf16 = r["machine"]["native_bf16"]
    assert set(r["parity"].get("accuracy", {})) == ({"fp32", "bf16"} if bf16 else set())
    assert any(k.startswith("bf16") for k in r["settings"]["resnet20-32x32x3"]["median_images_per_second"]) == bf16
    goals = {g["key"]: g for g in r["goals"]}
    assert len(goals) == len(r["goals"])
    assert {"lenet5-vs-peers", "resnet20-vs-peers", "lenet5-ceiling"} <= set(goals)  # --quick: no Fashion-MNIST
    # --peers none: the peer goals say why they were not measured; the kernel ceiling was.
    assert goals["resnet20-vs-peers"]["measured"] is None and goals["resnet20-vs-peers"]["met"] is None
    assert r["peers"]["available"] == [] and set(r["peers"]["skipped"]) == {"keras-tensorflow", "keras-jax", "flax"}
    ceiling = goals["lenet5-ceiling"]
    assert ceiling["measured"] == r["roofline"]["runs"][0]["kernels"]["share_of_step"]
    assert isinstance(ceiling["met"], bool)
    # Every contender but the tutorial loop reports its final test accuracy (real images at 32x32x3).
    for w in r["training"].values():
        assert set(w["median_test_accuracy"]) == {"classicnets"} and 0 <= w["median_test_accuracy"]["classicnets"] <= 1
    md = (tmp_path / "results.md").read_text()
    assert "- Keras 3 on JAX: skipped, left out by --peers." in md
    assert "**met**" in md or "**not met**" in md
    assert "| idea | decision | evidence |" in md
    # Everything the Decisions quote was measured, but bf16 where a --quick run left it out (emulated).
    unmeasured = [line for line in md.splitlines() if "not measured in this run" in line]
    assert all(line.startswith("| bf16 autocast") for line in unmeasured)
    assert bool(unmeasured) == (not r["machine"]["native_bf16"])
    # The commit measured, next to the machine (this checkout is a git one).
    assert list(r)[:2] == ["machine", "commit"]
    if (ROOT / ".git").exists():
        assert len(r["commit"]["sha"]) == 40 and isinstance(r["commit"]["dirty"], bool)
        assert f"Commit {r['commit']['sha'][:12]}" in md
    (tmp_path / "results.md").unlink()
    # --render rewrites the results.md beside the results.json, from the JSON alone.
    render = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--render",
                             str(tmp_path / "results.json")], capture_output=True, text=True)
    assert render.returncode == 0, render.stderr
    assert (tmp_path / "results.md").read_text() == md
    for heading in ("## Training throughput", "## Time to accuracy", "## What the defaults are made of",
                    "## Decisions", "## Goals"):
        assert heading in md


@pytest.mark.slow
def test_suite_quick_trains_an_installed_peer_beside_classicnets(monkeypatch, tmp_path):
    """The peers are an optional extra (never in CI): where one is installed, it trains LeNet-5 in
    the suite's rounds and the report puts it in the summary table."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from peer_common import missing, title, versions

    have = versions()
    peer = next((p for p in ("flax", "keras-jax", "keras-tensorflow") if not missing(p, have)), None)
    if peer is None:
        pytest.skip("no peer installed (pip install -c constraints.txt -e '.[bench]')")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "suite.py"), "--quick", "--quiet", "--workloads",
                           "lenet5-fashion", "--peers", peer, "--skip-settings", "--skip-tta", "--skip-inference",
                           "--skip-roofline", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "results.json").read_text())
    w = r["training"]["lenet5-fashion"]
    assert w["peers"] == [peer] and set(w["median_images_per_second"]) == {"classicnets", "tutorial", peer}
    assert set(w["median_test_accuracy"]) == {"classicnets", peer}
    # The quick run's 256 images may leave the peer at chance; then it is no yardstick, and says so.
    learnt = w["median_test_accuracy"][peer] >= 0.2
    assert w["peers_that_did_not_learn"] == ([] if learnt else [peer])
    assert ("versus_fastest_peer" in w) == learnt and (not learnt or w["versus_fastest_peer"]["peer"] == peer)
    assert r["peers"]["versions"][peer.split("-")[-1]]
    md = (tmp_path / "results.md").read_text()
    assert "## Summary" in md and f"| {title(peer, r['peers']['versions'])} |" in md


def test_time_to_accuracy_median_counts_a_seed_that_never_got_there_as_slowest(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import format_seconds, median_seconds

    def run(secs):
        return {"reached": None if secs is None else {"epoch": 1, "seconds": secs}}

    assert median_seconds([run(12.0), run(None), run(14.0)]) == 14.0
    assert median_seconds([run(12.0), run(None), run(None)]) is None
    assert median_seconds([run(9.0)]) == 9.0
    assert format_seconds(None) == "not reached" and format_seconds(13.25) == "13.2 s"


def peer_results(ours: float, theirs: dict, accuracy: dict | None = None) -> dict:
    """A suite run's figures for the ResNet-20 workload: classicnets and the peers ``theirs`` (img/s)."""
    from training import workload_result  # benchmarks/ is on the path (monkeypatch.syspath_prepend)

    runs = {"classicnets": [{"images_per_second": ours, "peak_rss_mb": 400.0, "precision": "auto",
                             "resolved_precision": "fp32", "channels_last": True,
                             "test_accuracy": (accuracy or {}).get("classicnets", 0.8)}],
            "tutorial": [{"images_per_second": ours / 2, "peak_rss_mb": 400.0}]}
    for peer, ips in theirs.items():
        runs[peer] = [{"images_per_second": ips, "peak_rss_mb": 900.0,
                       "test_accuracy": (accuracy or {}).get(peer, 0.8)}]
    w = dict(model="resnet20", data="digits32x3", batch=128, images=256, size=32, test_images=64)
    r20 = workload_result(w, 0.1, runs, {})
    r20["achieved_gflops"] = {k: v * 0.246 for k, v in r20["median_images_per_second"].items()}
    r20["fraction_of_peak"] = {"classicnets_peak": "fp32"}
    versions = {"keras": "3.15.1", "tensorflow": "2.21.0", "jax": "0.10.2", "flax": "0.12.8", "optax": "0.2.8"}
    return {"training": {"resnet20-32x32x3": r20}, "time_to_accuracy": {}, "peak": {"fp32_gflops": 150.0},
            "peers": {"python": "python", "versions": versions, "available": list(theirs), "skipped": {}}}


def test_resnet20_goal_is_against_the_fastest_peer_at_equal_final_accuracy(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import evaluate_goals, format_goal

    (goal,) = [g for g in evaluate_goals(peer_results(330.0, {"keras-tensorflow": 110.0, "flax": 80.0}))
               if g["key"] == "resnet20-vs-peers"]
    assert goal["peer"] == "keras-tensorflow" and goal["measured"] == pytest.approx(3.0) and goal["met"]
    assert format_goal(goal).startswith("ResNet-20 training >= 3x the fastest peer at equal final accuracy: 3.00x "
                                        "Keras 3.15.1 on TensorFlow 2.21.0; final test accuracy 80.0% against its "
                                        "80.0%; 3x it is 81 GFLOP/s, 54% of this machine's fp32 matmul peak: **met**")
    # More than a point below the fastest peer's accuracy is not "equal"; a point is.
    lower = peer_results(330.0, {"keras-tensorflow": 110.0}, {"classicnets": 0.789, "keras-tensorflow": 0.80})
    assert not [g for g in evaluate_goals(lower) if g["key"] == "resnet20-vs-peers"][0]["met"]
    close = peer_results(330.0, {"keras-tensorflow": 110.0}, {"classicnets": 0.791, "keras-tensorflow": 0.80})
    assert [g for g in evaluate_goals(close) if g["key"] == "resnet20-vs-peers"][0]["met"]
    slow = peer_results(300.0, {"keras-jax": 110.0})
    (goal,) = [g for g in evaluate_goals(slow) if g["key"] == "resnet20-vs-peers"]
    assert not goal["met"]
    slow["peak"]["fp32_gflops"] = 50.0  # 3x the peer asks more than the machine has
    (goal,) = [g for g in evaluate_goals(slow) if g["key"] == "resnet20-vs-peers"]
    assert format_goal(goal).endswith("3x it is 81 GFLOP/s, 162% of this machine's fp32 matmul peak: more than the "
                                      "peak: **not met**")


def test_a_goal_without_its_measurement_says_why(monkeypatch):
    """No peer installed, no roofline in the run, a results file from before either: **not measured**."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import evaluate_goals, format_goal

    r = peer_results(330.0, {})
    r["peers"]["skipped"] = {"flax": "flax, optax not installed in python (pip install ...)"}
    goals = {g["key"]: g for g in evaluate_goals(r)}
    assert format_goal(goals["resnet20-vs-peers"]) == (
        "ResNet-20 training >= 3x the fastest peer at equal final accuracy: **not measured**, no peer ran in this "
        "run; Flax + optax: flax, optax not installed in python (pip install ...)")
    assert "lenet5-ceiling" not in goals  # nothing of LeNet-5 in this run
    del r["peers"]
    r["training"]["lenet5-fashion"] = r["training"]["resnet20-32x32x3"]
    goals = {g["key"]: g for g in evaluate_goals(r)}
    assert goals["lenet5-vs-peers"]["missing"] == "no peer ran in this run (a run from before the peers)"
    assert format_goal(goals["lenet5-ceiling"]).endswith("**not measured**, `bench_lenet_roofline.py` was not part "
                                                         "of this run")
    r["roofline"] = {"runs": [{"batch": 128, "step": {"images_per_second": 12_477.0},
                               "kernels": {"share_of_step": 0.58, "images_per_second": 21_505.0,
                                           "ceiling_fraction_of_peak": 0.37}}]}
    goal = {g["key"]: g for g in evaluate_goals(r)}["lenet5-ceiling"]
    assert format_goal(goal) == ("LeNet-5 training step >= 75% of its kernel ceiling: 58.0% (batch 128: the step "
                                 "12,477 img/s, its convolution and linear kernels alone 21,505 img/s, 37% of the "
                                 "fp32 peak): **not met**")


def test_time_to_accuracy_goal_needs_every_seed_past_the_target(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import evaluate_goals, format_goal

    def tta(*secs):
        runs = [{"reached": None if s is None else {"epoch": 3, "seconds": s}} for s in secs]
        return {"training": {}, "time_to_accuracy": {"lenet5-fashion-mnist": {"runs": runs, "median_seconds": 14.0}}}

    (goal,) = evaluate_goals(tta(13.0, 14.0, 14.5))
    assert goal["met"] and format_goal(goal).endswith("14.0 s; 3 of 3 seeds got there: **met**")
    (goal,) = evaluate_goals(tta(13.0, 14.0, None))
    assert not goal["met"] and "2 of 3 seeds got there" in format_goal(goal)


def test_summary_table_has_classicnets_each_peer_onnxruntime_and_the_tutorial_loop(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import summary_table

    r = peer_results(330.0, {"keras-tensorflow": 110.0, "keras-jax": 75.0, "flax": 82.5})
    r["inference"] = {"json": {"runs": [{"model": "resnet50", "batch_size": 16, "median_images_per_second":
                                         {"eager fp32": 10.5, "fast fp32": 19.4, "onnxruntime fp32": 19.4}},
                                        {"model": "resnet50", "batch_size": 1, "median_images_per_second":
                                         {"eager fp32": 10.5, "fast fp32": 18.8, "onnxruntime fp32": 18.8}}]}}
    r["peer_inference"] = {"batch": 16, "runs": {"keras-jax": {"resnet50": {"median_images_per_second": 9.7}}}}
    assert summary_table(r) == [
        "| workload | classicnets | Keras 3.15.1 on TensorFlow 2.21.0 | Keras 3.15.1 on JAX 0.10.2 | "
        "Flax 0.12.8 + optax 0.2.8 (JAX 0.10.2) | ONNX Runtime fp32 | tutorial loop |",
        "|---|---:|---:|---:|---:|---:|---:|",
        "| resnet20-32x32x3 training (batch 128) | **330** | 110 (3.00x) | 75.0 (4.40x) | 82.5 (4.00x) | - | "
        "165 (2.00x) |",
        "| resnet50 inference (batch 16) | **19.4** | - | 9.7 (2.00x) | - | 19.4 (1.00x) | - |", "",
        "- resnet20-32x32x3, final test accuracy (median of 1 seed): classicnets 80.0%, Keras 3.15.1 on TensorFlow "
        "2.21.0 80.0%, Keras 3.15.1 on JAX 0.10.2 80.0%, Flax 0.12.8 + optax 0.2.8 (JAX 0.10.2) 80.0%."]


def test_a_peer_whose_median_run_did_not_learn_is_not_the_yardstick(monkeypatch):
    """Flax fastest but at chance (a diverged run): the goal is against the fastest peer that learnt,
    and the report says why; a run below twice chance is marked in the seed list."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from render import accuracy_cell, peers_section, summary_table
    from suite import evaluate_goals
    from training import learned

    assert learned(0.2, 10) and not learned(0.199, 10) and not learned(0.1, 10)
    r = peer_results(330.0, {"keras-tensorflow": 110.0, "flax": 160.0},
                     {"classicnets": 0.80, "keras-tensorflow": 0.79, "flax": 0.10})
    w = r["training"]["resnet20-32x32x3"]
    assert w["versus_fastest_peer"]["peer"] == "keras-tensorflow" and w["peers_that_did_not_learn"] == ["flax"]
    assert w["learnt"] == {"classicnets": [True], "keras-tensorflow": [True], "flax": [False]}
    (goal,) = [g for g in evaluate_goals(r) if g["key"] == "resnet20-vs-peers"]
    assert goal["peer"] == "keras-tensorflow" and goal["measured"] == pytest.approx(3.0)
    assert summary_table(r)[-1].endswith("Flax 0.12.8 + optax 0.2.8 (JAX 0.10.2) 10.0% (did not learn).")
    assert any("Flax 0.12.8 + optax 0.2.8 (JAX 0.10.2)'s median run did not learn (it ends at 10.0%)" in line
               for line in peers_section(r))
    w["test_accuracy"]["flax"] = [0.866, 0.10, 0.863]
    w["learnt"]["flax"] = [True, False, True]
    w["median_test_accuracy"]["flax"] = 0.863
    assert accuracy_cell(w, "flax") == "86.3% (86.6, 10.0*, 86.3)"
    assert accuracy_cell(w, "classicnets") == "80.0%" and accuracy_cell(w, "tutorial") == "-"


def test_each_round_of_the_training_section_is_one_seed_for_every_contender(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import training

    calls = []

    def fake(args, contender, common, job, peers, seed):
        calls.append((contender, seed))
        return {"images_per_second": 100.0 + seed, "peak_rss_mb": 300.0, "precision": "auto", "seed": seed,
                "resolved_precision": "fp32", "channels_last": True,
                **({"test_accuracy": 0.5 + seed / 10} if contender == "classicnets" else {})}

    monkeypatch.setattr(training, "run_contender", fake)
    args = type("Args", (), {"reps": 3, "threads": None, "quiet": True})()
    peers = {"available": [], "python": None}
    out = training.training_section(args, {"lenet5-fashion": training.QUICK_WORKLOADS["lenet5-fashion"]}, tmp_path,
                                    peers)["lenet5-fashion"]
    assert sorted(calls) == [(c, s) for c in ("classicnets", "tutorial") for s in (0, 1, 2)]
    assert out["seeds"] == {"classicnets": [0, 1, 2], "tutorial": [0, 1, 2]}
    assert out["test_accuracy"]["classicnets"] == [0.5, 0.6, 0.7] and out["median_test_accuracy"]["classicnets"] == 0.6


def test_gray_images_as_cifar_and_the_peers_job_match_what_classicnets_trains_on(monkeypatch, tmp_path):
    """ResNet-20's workload: the embedded digits at 32x32x3 in CIFAR-10's format; the peers' job
    holds the same images (NHWC), statistics and every step's learning rate of classicnets' schedule."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import numpy as np
    from common import make_gray_cifar
    from peers import training_job

    from classicnets.data.sources import load_split
    from classicnets.train import TrainConfig
    from classicnets.train.schedules import make_schedule

    folder = make_gray_cifar("digits", tmp_path / "data", 40, 12)
    train = load_split(None, folder, "train", size=(32, 32), channels=3)
    digits = load_split("digits", None, "train", size=(32, 32), channels=1)
    assert tuple(train.images.shape) == (40, 3, 32, 32) and train.classes == digits.classes
    assert train.labels.tolist() == digits.labels[:40].tolist()
    assert (train.images[:, 0, 2:30, 2:30] == digits.images[:40, 0]).all() and (train.images[:, :, :2] == 0).all()
    w = dict(model="resnet20", data="digits32x3", batch=16, images=40, size=32, test_images=12, augment="none")
    job = training_job(w, str(folder), 0.1, tmp_path / "job", epochs=2)
    # The peers do not augment: a workload whose classicnets run would (the recipe's crops and flips) is refused.
    with pytest.raises(SystemExit, match="augmentation 'crop\\+flip'"):
        training_job({**w, "augment": None}, str(folder), 0.1, tmp_path / "job", epochs=2)
    cfg = TrainConfig(model="resnet20", dataset=None, data_dir=str(folder)).resolved()
    assert (job["momentum"], job["nesterov"], job["weight_decay"]) == (cfg.momentum, False, cfg.weight_decay)
    schedule = make_schedule("step", 0.1, 6, milestones=[3, 4])  # 3 steps of 16 (the last partial) x 2 epochs
    assert job["lrs"] == [schedule(s) for s in range(6)]
    with np.load(job["data"]) as f:
        assert f["x_train"].shape == (40, 32, 32, 3) and f["x_test"].shape == (12, 32, 32, 3)
        assert np.array_equal(f["x_train"], train.images.permute(0, 2, 3, 1).numpy())
        np.testing.assert_allclose(f["mean"], train.mean) and int(f["classes"]) == 10


def test_every_workload_the_peers_train_is_the_same_job_for_every_contender(monkeypatch):
    """Nobody augments where the peers train (they do not): each such workload's classicnets and
    tutorial runs resolve to no augmentation, and the suite passes the workload's setting to both."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from peers import TRAIN_MODELS
    from suite import parse_args
    from training import QUICK_WORKLOADS, WORKLOADS, contender_args

    from classicnets.train import TrainConfig

    data_names = {"fashion32x3": "cifar10", "digits32x3": "cifar10"}
    for w in [*WORKLOADS.values(), *QUICK_WORKLOADS.values()]:
        if w["model"] in TRAIN_MODELS:
            worker = parse_args(["worker", "train", "--contender", "tutorial",
                                 *contender_args(w, "", 0.1, 2, None)])
            cfg = TrainConfig(model=w["model"], dataset=data_names.get(w["data"], w["data"]),
                              augment=worker.augment).resolved()
            assert cfg.augment == "none", w


def test_absent_peers_are_skipped_and_named(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from peer_common import missing, title
    from peers import find_peers

    found = find_peers(None, ["flax"])
    assert found["available"] == [] and set(found["skipped"]) == {"keras-tensorflow", "keras-jax", "flax"}
    assert found["skipped"]["flax"].startswith("not installed (pip install -c constraints.txt -e '.[bench]'")
    assert found["skipped"]["keras-jax"] == "left out by --peers"
    assert missing("keras-jax", {"keras": "3.15.1", "jax": None}) == ["jax"]
    assert title("keras-jax", {"keras": "3.15.1"}) == "Keras 3 on JAX"  # versions unknown: the plain name


def test_peak_text_says_where_bf16_is_emulated(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from suite import peak_text

    def peak(fp32, bf16, emulated=None):
        run = {"fp32": {"median_gflops": fp32}, "bf16": {"median_gflops": bf16}}
        if emulated is not None:
            run["bf16"]["emulated"] = emulated
        return {"runs": [run], "fp32_gflops": fp32, "bf16_gflops": bf16}

    assert peak_text(peak(188.0, 417.0, False)) == "fp32 188 GFLOP/s, bf16 417 GFLOP/s"
    assert peak_text(peak(119.0, 0.2856, True)) == ("fp32 119 GFLOP/s, bf16 0.29 GFLOP/s "
                                                    "(emulated: this CPU has no native bf16)")
    # Results from before the flag was recorded: a bf16 peak far below fp32 says it.
    assert peak_text(peak(119.0, 0.29)).endswith("(emulated: this CPU has no native bf16)")
    assert peak_text(peak(188.0, 417.0)) == "fp32 188 GFLOP/s, bf16 417 GFLOP/s"


@pytest.mark.slow
def test_bench_lenet_roofline_quick_writes_the_layer_table(tmp_path):
    run_quick("bench_lenet_roofline.py", tmp_path)
    results = json.loads((tmp_path / "lenet_roofline.json").read_text())
    (run,) = results["runs"]
    assert [row["layer"] for row in run["layers"]] == ["features.conv1", "features.conv2", "features.fc1",
                                                        "features.fc2", "fc3"]
    assert [row["needs_input_grad"] for row in run["layers"]] == [False, True, True, True, True]
    assert sum(row["macs_per_image"] for row in run["layers"]) == run["forward_macs_per_image"] == 416_520
    kernel_ms = sum(row["forward_ms"] + row["backward_ms"] for row in run["layers"])
    assert run["kernels"]["ms"] == pytest.approx(kernel_ms)
    # The ceiling is the step's credited FLOPs over the kernels' time, as a fraction of the same peak.
    flops = 6 * 416_520 * run["batch"]
    assert run["kernels"]["ceiling_fraction_of_peak"] == pytest.approx(
        flops / (kernel_ms / 1e3) / 1e9 / run["peak_gflops"])
    assert 0 < run["step"]["fraction_of_peak"] and run["kernels"]["share_of_step"] > 0
    if native.library("fused_blocks") is not None:
        as_run = "inside conv1's fused native kernel (what the step runs): the fused block less conv1's kernels"
    else:
        as_run = ("native 2x2 max pool, then ReLU, channels-last (what the step runs)" if native.library("pool")
                  else "max_pool2d, channels-last (what the step runs: the native kernel is unavailable)")
    assert run["pool1"]["as_run"] == as_run
    assert run["pool1"]["as_run"] in run["pool1"]["alternatives_ms"]
    assert "max_pool2d, channels-last (PyTorch's kernel)" in run["pool1"]["alternatives_ms"]
    timed = dict(run["pool1"]["alternatives_ms"])
    if native.library("fused_blocks") is not None:
        timed.pop(run["pool1"]["as_run"])  # a difference of two timings: at this tiny batch, either sign
    assert len(timed) == 5 and all(v > 0 for v in timed.values())
    md = (tmp_path / "lenet_roofline.md").read_text()
    assert md.startswith("# LeNet-5 training step: the ceiling") and "| features.conv2 | 6x14x14 -> 16x10x10" in md


def test_roofline_times_the_kernels_autograd_runs(monkeypatch):
    """Each layer's timed backward computes exactly the gradients a training step's autograd does:
    the layer's own, or where the step fuses its block (conv, 2x2 max pool, ReLU), the block's from
    the gradient of its pooled output."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from bench_lenet_roofline import layer_inputs, layer_kernels

    from classicnets import create_model
    from classicnets.models.fused import conv_pool_relu

    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=torch.channels_last)
    f = model.features
    layers = layer_inputs(model, 4)
    assert [shape for _, _, shape in layers] == [(4, 1, 32, 32), (4, 6, 14, 14), (4, 400), (4, 120), (4, 84)]
    fused = native.library("fused_blocks") is not None
    from_pool = "backward from {}'s gradient, as the fused block runs it"
    expected = {0: f" (native kernels; the {from_pool.format('pool1')})" if fused else " (native kernel)",
                1: f" (native {from_pool.format('pool2')}; oneDNN's forward)" if fused else " (native input gradient)"}
    blocks = {0: (f.pool1, f.act1), 1: (f.pool2, f.act2)}
    for i, (name, layer, shape) in enumerate(layers):
        k = layer_kernels(layer, shape, needs_input_grad=i > 0)
        # the convolutions as the step runs them: classicnets.native's kernels where they can be built
        note = expected.get(i, "") if native.library("gray_conv") is not None else ""
        assert ("(native" in k["shape"]) == bool(note) and k["shape"].endswith(note), name
        assert (k["pooled_grad"] is not None) == (fused and i in blocks), name
        x = k["input"].clone().requires_grad_(i > 0)
        torch.testing.assert_close(k["kernels"]["forward"](), layer(x).detach(), msg=name)
        if k["pooled_grad"] is not None:
            conv_pool_relu(x, layer, *blocks[i]).backward(k["pooled_grad"])
        else:
            layer(x).backward(k["grad"])
        grad_input, grad_weight, grad_bias = k["kernels"]["backward"]()
        torch.testing.assert_close(grad_weight, layer.weight.grad, msg=name)
        torch.testing.assert_close(grad_bias, layer.bias.grad, msg=name)
        if i > 0:
            torch.testing.assert_close(grad_input, x.grad, msg=name)
        else:
            assert grad_input is None
        layer.zero_grad()


def test_roofline_strided_max_pool_is_max_pool2d_ties_included(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    import torch.nn.functional as F
    from bench_lenet_roofline import StridedMaxPool2x2

    torch.manual_seed(0)
    # Small integers: most windows hold ties, where the gradient must go to the first maximum only.
    x = torch.randint(-2, 3, (3, 6, 8, 8)).float().contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 6, 4, 4)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out = F.max_pool2d(a, 2), StridedMaxPool2x2.apply(b)
    out_ref.backward(grad)
    out.backward(grad)
    assert torch.equal(out, out_ref) and torch.equal(b.grad, a.grad)


def results_in(monkeypatch, tmp_path):
    """The benchmarks' modules, reading and writing their results under tmp_path/results/<machine>."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common
    import goals

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    return common, goals


def write_result(tmp_path, machine: str, stem: str, results: dict) -> None:
    (tmp_path / "results" / machine).mkdir(parents=True, exist_ok=True)
    (tmp_path / "results" / machine / f"{stem}.json").write_text(json.dumps(results))


def test_suite_quotes_the_roofline_under_the_peak_goal(monkeypatch, tmp_path):
    _, goals = results_in(monkeypatch, tmp_path)
    assert "not measured yet" in goals.roofline_evidence()
    run = {"batch": 128, "kernels": {"ceiling_fraction_of_peak": 0.371, "share_of_step": 0.58},
           "step": {"fraction_of_peak": 0.214}}
    machine = {"cpu": "Some CPU", "cpu_capability": "AVX2", "native_bf16": False}
    write_result(tmp_path, "avx2", "lenet_roofline", {"machine": machine, "threads": 2, "runs": [run]})
    text = goals.roofline_evidence()
    assert text.startswith("Its ceiling on Some CPU (AVX2, no native bf16), 2 threads:")
    assert "at most 37% at batch 128 (the whole step there: 21%, the kernels 58% of its time)" in text
    assert text.endswith("(`benchmarks/results/avx2/lenet_roofline.md`)")
    # Where several machines measured it, the one asked for is quoted, else the first by name.
    faster = dict(run, kernels={"ceiling_fraction_of_peak": 0.6, "share_of_step": 0.5})
    write_result(tmp_path, "avx512-bf16", "lenet_roofline", {"machine": machine, "threads": 2, "runs": [faster]})
    assert "at most 60% at batch 128" in goals.roofline_evidence("avx512-bf16")
    assert "at most 37% at batch 128" in goals.roofline_evidence()


def test_suite_decisions_quote_the_pooling_alternatives(monkeypatch, tmp_path):
    _, goals = results_in(monkeypatch, tmp_path)
    run = {"batch": 128, "pool1": {"alternatives_ms": {"max_pool2d, channels-last (what the step runs)": 1.5,
                                                        "max_pool2d, default layout": 3.0}}}
    machine = {"cpu": "Some CPU"}
    write_result(tmp_path, "avx2", "lenet_roofline", {"machine": machine, "threads": 2, "runs": [run]})
    assert goals.pooling_evidence() == ("forward + backward, batch 128: 1.50 ms as the step runs it; "
                                        "max_pool2d, default layout 3.00 ms (0.50x) (Some CPU, 2 threads; "
                                        "`benchmarks/results/avx2/lenet_roofline.md`)")
    # Newer files name the pooling the step runs, wherever it stands among the alternatives.
    run["pool1"] = {"as_run": "strided", "alternatives_ms": {"max_pool2d": 3.0, "strided": 1.5}}
    write_result(tmp_path, "avx2", "lenet_roofline", {"machine": machine, "threads": 2, "runs": [run]})
    assert goals.pooling_evidence().startswith("forward + backward, batch 128: 1.50 ms as the step runs it; "
                                               "max_pool2d 3.00 ms (0.50x) (")


@pytest.mark.slow
def test_bench_cuda_quick_runs_every_contender_in_its_own_process(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cuda.py"), "--device", "cpu", "--quick",
                           "--quiet", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "cuda_resnet56.json").read_text())
    assert r["device"] == "cpu" and "gpu" not in r and r["quick"]
    c = r["contenders"]
    assert list(c) == ["classicnets", "classicnets, fp32", "classicnets, contiguous",
                       "classicnets, nondeterministic", "tutorial"]
    # On a CPU, "auto" precision is bf16 where it is native (ResNet-56 has the work for it), else fp32.
    auto = "bf16" if cpu_has_bf16() else "fp32"
    assert c["classicnets"]["settings"] == {"precision": auto, "channels_last": True, "deterministic": True,
                                            "compile": False}
    assert c["classicnets, contiguous"]["settings"]["channels_last"] is False
    assert c["classicnets, nondeterministic"]["settings"]["deterministic"] is False
    assert c["tutorial"]["settings"]["channels_last"] is False
    for name, s in c.items():
        assert len(s["timed_epochs"]) == 1 and s["median_epoch_seconds"] > 0, name  # epoch 1 of 2 warms up
        assert len(r["runs"][name]) == 1 and len(r["runs"][name][0]["epoch_seconds"]) == 2
    assert c["classicnets"]["relative_to_default"] == 1.0 and c["tutorial"]["speedup_over_tutorial"] == 1.0
    md = (tmp_path / "cuda_resnet56.md").read_text()
    assert "no GPU: this checks that the benchmark runs" in md and "| tutorial | fp32 | contiguous | no |" in md


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_bench_cuda_says_so_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cuda.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and not list(tmp_path.iterdir())
    assert "--device cuda: this machine has no CUDA device" in proc.stderr and "--device cpu --quick" in proc.stderr


def test_suite_reports_the_cuda_epoch_only_from_a_gpu_run(monkeypatch, tmp_path):
    _, goals = results_in(monkeypatch, tmp_path)
    assert "**not measured**" in goals.cuda_evidence()
    settings = {"precision": "bf16", "channels_last": True, "deterministic": True, "compile": False}
    contenders = {
        "classicnets": {"median_epoch_seconds": 4.0, "images_per_second": 12_500, "speedup_over_tutorial": 2.5,
                        "settings": settings},
        "tutorial": {"median_epoch_seconds": 10.0, "images_per_second": 5_000, "speedup_over_tutorial": 1.0,
                     "settings": settings}}
    write_result(tmp_path, "avx2", "cuda_resnet56", {"quick": True, "contenders": contenders})  # a CPU check
    assert "**not measured**" in goals.cuda_evidence()
    # The GPU's run is quoted, not the CPU check that sorts before it.
    write_result(tmp_path, "cuda-some-gpu", "cuda_resnet56",
                 {"quick": False, "gpu": {"name": "Some GPU"}, "contenders": contenders})
    assert goals.cuda_evidence() == (
        "ResNet-56 CIFAR-10 epoch on CUDA (Some GPU): **4.0 s** (bf16, channels-last, data on the GPU; 12,500 img/s), "
        "the tutorial loop 10.0 s (2.50x) (`benchmarks/results/cuda-some-gpu/cuda_resnet56.md`)")


def test_suite_decisions_quote_the_preloaded_allocators(monkeypatch, tmp_path):
    _, goals = results_in(monkeypatch, tmp_path)
    assert "not measured yet" in goals.preload_evidence()
    workloads = {"lenet5-step": {"preloaded_vs_kept": {}},
                 "resnet20-step": {"preloaded_vs_kept": {"jemalloc": 0.64, "tcmalloc": 1.03}}}
    write_result(tmp_path, "avx2", "malloc", {"machine": {"cpu": "Some CPU"}, "workloads": workloads})
    assert goals.preload_evidence() == ("against the kept setting, resnet20-step: jemalloc 0.64x, tcmalloc 1.03x "
                                        "(Some CPU; `benchmarks/results/avx2/malloc.md`)")


def test_results_go_to_a_folder_named_by_the_machine_with_the_commit(monkeypatch, tmp_path):
    common, _ = results_in(monkeypatch, tmp_path)
    assert common.machine_name({"cpu_capability": "AVX512", "native_bf16": True}) == "avx512-bf16"
    assert common.machine_name({"cpu_capability": "AVX2", "native_bf16": False}) == "avx2"
    assert common.machine_name({"cpu": "AMD EPYC"}) is None  # recorded before the vector unit was
    assert common.machine_name({}, {"name": "NVIDIA H100 80GB HBM3"}) == "cuda-nvidia-h100-80gb-hbm3"
    machine = {"cpu": "Some CPU", "cpu_capability": "AVX2", "native_bf16": False}
    out = common.write_results(None, "thing", {"machine": machine, "runs": [1]}, "# Thing\n", quiet=True)
    assert out == tmp_path / "results" / "avx2" and (out / "thing.md").read_text() == "# Thing\n"
    written = json.loads((out / "thing.json").read_text())
    assert list(written) == ["machine", "commit", "runs"]
    if (ROOT / ".git").exists():
        assert len(written["commit"]["sha"]) == 40 and isinstance(written["commit"]["dirty"], bool)
    # --out wins, and a commit the results already record is kept.
    common.write_results(tmp_path / "elsewhere", "thing", {"machine": machine, "commit": None}, "", quiet=True)
    assert json.loads((tmp_path / "elsewhere" / "thing.json").read_text())["commit"] is None


def test_each_result_file_is_in_the_folder_of_the_machine_it_records(monkeypatch):
    """Files from before the vector unit was recorded say at most whether bf16 was native."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common

    files = sorted((ROOT / "benchmarks" / "results").glob("*/*.json"))
    assert files and not list((ROOT / "benchmarks" / "results").glob("*.json"))
    assert not (ROOT / "benchmarks" / "results.json").exists()
    for path in files:
        machine = json.loads(path.read_text()).get("machine") or {}
        name = common.machine_name(machine)
        if name is not None:
            assert path.parent.name == name, path
        elif machine.get("bf16_native") or machine.get("native_bf16"):
            assert path.parent.name.endswith("-bf16"), path


def test_update_readme_finds_what_it_reads_in_suite(monkeypatch):
    """scripts/update_readme.py imports ``suite`` and reads these names from it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import suite

    for name in ("isa", "peak_text", "evaluate_goals", "format_goal", "format_seconds", "cuda_evidence",
                 "result_paths", "pool_as_run", "summary_table"):
        assert callable(getattr(suite, name)), name
    assert suite.result_paths("lenet_roofline") and suite.result_paths("no_such_benchmark") == []


def test_no_benchmark_but_the_baselines_has_a_training_step_of_its_own():
    """Every timed classicnets step is ``classicnets.train.train_step``: a ``.backward()`` outside
    the tutorial and peer baselines would be a copy of it."""
    copies = [f.name for f in (ROOT / "benchmarks").rglob("*.py")
              if not f.name.startswith(("tutorial", "peer")) and ".backward()" in f.read_text()]
    assert copies == []


def test_lenet_step_ideas_change_only_what_train_step_is_given(monkeypatch):
    """The reference's optimiser is make_optimizer's switched to foreach (same update), and the
    set_to_none=False idea keeps the gradient tensors whatever train_step asks for."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from bench_lenet_step import foreach, reference_model, zeroing_in_place

    from classicnets.train import TrainConfig, make_optimizer, train_step

    torch.set_num_threads(1)  # conftest restores
    cfg = TrainConfig(model="lenet5", dataset="digits", batch_size=8).resolved()
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    weights = []
    for change in (lambda opt: opt, foreach, zeroing_in_place):
        torch.manual_seed(0)
        model = reference_model()
        opt = change(make_optimizer(cfg, model))
        train_step(model, opt, x, y)
        grad = model.fc3.weight.grad
        train_step(model, opt, x, y)
        assert (model.fc3.weight.grad is grad) == (change is zeroing_in_place)
        assert all(g["fused"] != (change is foreach) for g in opt.param_groups)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[1], weights[0])
    torch.testing.assert_close(weights[2], weights[0])


@pytest.mark.skipif(native.library("fused_blocks") is None, reason=f"native kernels unavailable: {native.status()}")
def test_only_the_native_rows_run_the_native_kernels(monkeypatch):
    """Every other row runs PyTorch's kernels, as in the runs before the native ones, so that the
    rows stay comparable; the native pool's row adds the pool, the next rows conv1, then conv2's
    input gradient, and the last native row (what classicnets.train runs) fuses each block's
    pool and ReLU (conv1's into its kernel)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from bench_lenet_step import NATIVE_ALL, NATIVE_CONV, NATIVE_FUSED, NATIVE_POOL, variants

    from classicnets.train import TrainConfig
    from test_fused import fused_calls
    from test_native import native_calls
    from test_native_conv import conv_calls, input_grad_calls

    pools, convs, grads = native_calls(monkeypatch), conv_calls(monkeypatch), input_grad_calls(monkeypatch)
    fused = fused_calls(monkeypatch)
    torch.set_num_threads(1)  # conftest restores
    cfg = TrainConfig(model="lenet5", dataset="digits", batch_size=4).resolved()
    batches = [(torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,)))]
    used = {}
    for v in variants([]):
        if v.bf16 or not v.mkldnn or "unfold" in v.name:
            continue  # slow here, and in the default layout or another dtype anyway
        v.build(cfg, batches, 2, 0)
        for calls in (pools, convs, grads, fused):
            calls.clear()
        v.run()
        used[v.name] = (bool(pools), bool(convs), bool(grads), sorted(set(fused)))
    assert used.pop(NATIVE_POOL) == (True, False, False, []), used
    assert used.pop(NATIVE_CONV) == (True, True, False, []), used
    assert used.pop(NATIVE_ALL) == (True, True, True, []), used
    assert used.pop(NATIVE_FUSED) == (False, False, False, ["_ConvPoolReLU", "_GrayConvPoolReLU"]), used
    assert not any(any(kernels) for kernels in used.values()), used


def test_the_committed_reports_keep_one_blank_line_between_blocks(monkeypatch):
    """An absent optional part (no skipped peer, no note) must not leave two empty lines, and a
    note after a table starts a block of its own, not a line the table might swallow."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from render import one_blank_line, to_markdown

    assert one_blank_line(["# a", "", "", "b", "", "", "", "c", ""]) == ["# a", "", "b", "", "c", ""]
    for machine in ("avx2", "avx512-bf16"):
        results = json.loads((ROOT / "benchmarks" / "results" / machine / "results.json").read_text())
        lines = to_markdown(results, machine).split("\n")
        pairs = list(zip(lines, lines[1:], strict=False))  # each line with the next
        assert "" not in [line for prev, line in pairs if not prev], machine
        assert not [line for prev, line in pairs if prev.startswith("|") and line.startswith("- ")], machine


def test_the_layout_and_four_phase_step_ideas_compute_what_lenet5_computes(monkeypatch):
    """Each idea changes how, not what: the same logits, and (away from ties) the same gradients."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from bench_lenet_step import four_phase_model, input_grad_model, pool_first_model

    torch.set_num_threads(1)  # conftest restores
    x = torch.randn(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)  # random pixels: no ties
    runs = []
    for make in (pool_first_model, input_grad_model, four_phase_model):
        torch.manual_seed(0)
        model = make().to(memory_format=torch.channels_last)
        logits = model(x)
        logits.square().sum().backward()
        conv1 = model.features.conv1
        conv1 = getattr(conv1, "conv", conv1)
        runs.append((logits.detach(), conv1.weight.grad, conv1.bias.grad, model.fc3.weight.grad))
    assert isinstance(runs[0][0], torch.Tensor) and runs[0][1].abs().sum() > 0
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
