"""The fast path's probe: it serves the fastest candidate that agrees with eager, remembers its
choice, survives a broken cache and says what it left out. Timing is injected (``time_call``) and
the backends are fakes that run the eager model, so nothing here depends on this machine's speed."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import classicnets
from classicnets import fast, fast_probe
from classicnets.errors import ClassicNetsError
from classicnets.export import onnxruntime_missing
from classicnets.fast_probe import fastest
from classicnets.predict import Predictor

# Seconds per call the fake clock gives each backend: ONNX Runtime fastest, then inductor, then eager.
SPEED = {"eager": 3e-3, "inductor": 2e-3, "onnxruntime": 1e-3}


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Every backend a fake that runs the model eagerly (so its outputs agree), counting builds;
    ONNX Runtime counted as installed; the cache in tmp_path."""
    monkeypatch.setenv("CLASSICNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fast_probe, "onnxruntime_missing", lambda: None)
    built = []

    def backend(name):
        def build(model, precision, channels_last, example):
            built.append(f"{name} {precision}")
            return fast._Prepared(model, torch.float32, False, False, False)
        return build

    for name in SPEED:
        monkeypatch.setitem(fast._BACKENDS, name, backend(name))
    return built


def fake_clock(fm, x) -> float:
    return SPEED[fm.backend]


def lenet(batch: int = 2):
    torch.manual_seed(0)
    return classicnets.create_model("lenet5").eval(), torch.randn(batch, 1, 32, 32)


def test_the_fastest_candidate_serves_and_every_timing_is_reported(fakes):
    model, x = lenet()
    fm = fastest(model, x, time_call=fake_clock)
    assert fm.backend == "onnxruntime" and fm.precision == "fp32"
    probe = fm.probe
    assert probe.chosen == "onnxruntime fp32" and not probe.cached and probe.batch == 2
    assert probe.seconds_per_call == {"eager fp32": 3e-3, "inductor fp32": 2e-3, "onnxruntime fp32": 1e-3}
    assert probe.images_per_second()["onnxruntime fp32"] == pytest.approx(2000)
    assert set(probe.build_seconds) == set(probe.seconds_per_call) and probe.rejected == {}
    assert "inductor bf16" in probe.skipped  # fp32 asked for
    assert probe.summary().startswith("fast path: onnxruntime fp32, chosen by a probe at batch 2: eager fp32 666.7")
    torch.testing.assert_close(fm(x), model(x))


def test_rounds_are_interleaved_and_the_median_decides(fakes, monkeypatch):
    """A candidate slowed once (the machine got busy during one of its samples) still wins on its median."""
    model, x = lenet()
    calls = []

    def clock(fm, x):
        calls.append(fm.backend)
        slow = fm.backend == "onnxruntime" and calls.count("onnxruntime") == 1
        return 1.0 if slow else SPEED[fm.backend]

    fm = fastest(model, x, time_call=clock, cache=False)
    assert fm.probe.chosen == "onnxruntime fp32"
    assert calls[:3] == ["eager", "inductor", "onnxruntime"] and calls[3:6] == ["inductor", "onnxruntime", "eager"]
    assert len(calls) == 3 * fast_probe.MIN_ROUNDS  # the slow sample used up the time budget


def test_every_candidate_is_called_once_untimed_before_the_timed_rounds(fakes, monkeypatch):
    """The first call after the builds is slow for every path (cold caches): it is not a sample."""
    model, x = lenet()
    events = []
    call = fast.FastModel.__call__

    def recording_call(self, x):
        events.append(("call", self.backend))
        return call(self, x)

    def clock(fm, x):
        events.append(("timed", fm.backend))
        return SPEED[fm.backend]

    monkeypatch.setattr(fast.FastModel, "__call__", recording_call)
    fastest(model, x, time_call=clock, cache=False)
    first_timed = events.index(("timed", "eager"))
    assert events[first_timed - 3:first_timed] == [("call", "eager"), ("call", "inductor"), ("call", "onnxruntime")]
    assert sum(e[0] == "timed" for e in events) == 3 * fast_probe.MAX_ROUNDS  # fake samples: budget not spent


def test_the_second_load_uses_the_cached_choice_without_probing(fakes, tmp_path):
    model, x = lenet()
    fastest(model, x, time_call=fake_clock)
    path = tmp_path / "cache" / "fast-paths.json"
    saved = json.loads(path.read_text())
    assert saved["format"] == 1 and len(saved["choices"]) == 1
    fakes.clear()

    def no_probe(fm, x):
        raise AssertionError("the probe ran although the choice was cached")

    other, _ = lenet()  # the same architecture, another copy: speed does not depend on the weights
    fm = fastest(other, x, time_call=no_probe)
    assert fakes == ["onnxruntime fp32"]  # only the cached choice was built, and checked
    assert fm.backend == "onnxruntime" and fm.probe.cached
    assert fm.probe.summary().startswith("fast path: onnxruntime fp32, chosen by an earlier probe (cached)")
    # Another batch shape or precision is another key: probed afresh.
    fastest(model, torch.randn(4, 1, 32, 32), time_call=fake_clock)
    assert len(json.loads(path.read_text())["choices"]) == 2


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"format": 99, "choices": {}}'])
def test_a_corrupt_cache_is_ignored_with_a_warning_and_rewritten(fakes, tmp_path, content):
    path = tmp_path / "cache" / "fast-paths.json"
    path.parent.mkdir()
    path.write_bytes(content)
    model, x = lenet()
    with pytest.warns(RuntimeWarning, match="ignoring the fast-path cache .*fast-paths.json"):
        fm = fastest(model, x, time_call=fake_clock)
    assert fm.probe.chosen == "onnxruntime fp32" and not fm.probe.cached
    assert len(json.loads(path.read_text())["choices"]) == 1


def test_a_malformed_cached_entry_means_a_new_probe(fakes, tmp_path):
    model, x = lenet()
    fastest(model, x, time_call=fake_clock)
    path = tmp_path / "cache" / "fast-paths.json"
    saved = json.loads(path.read_text())
    (key,) = saved["choices"]
    saved["choices"][key]["chosen"] = "tvm fp32"
    path.write_text(json.dumps(saved))
    with pytest.warns(RuntimeWarning, match="ignoring the cached fast path for this model"):
        fm = fastest(model, x, time_call=fake_clock)
    assert not fm.probe.cached and fm.probe.chosen == "onnxruntime fp32"


def test_an_unwritable_cache_costs_a_warning_not_the_load(fakes, tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CLASSICNETS_CACHE", str(tmp_path / "blocker"))
    model, x = lenet()
    with pytest.warns(RuntimeWarning, match="could not save the fast-path choice"):
        fm = fastest(model, x, time_call=fake_clock)
    assert fm.backend == "onnxruntime"


def test_a_candidate_that_disagrees_is_rejected_however_fast(fakes, monkeypatch):
    def wrong(model, precision, channels_last, example):
        return fast._Prepared(lambda x: torch.zeros(len(x), 10), torch.float32, False, False, False)

    monkeypatch.setitem(fast._BACKENDS, "onnxruntime", wrong)
    model, x = lenet()
    fm = fastest(model, x, time_call=fake_clock)
    assert fm.backend == "inductor"
    assert list(fm.probe.rejected) == ["onnxruntime fp32"] and "onnxruntime fp32" not in fm.probe.seconds_per_call
    assert fm.probe.rejected["onnxruntime fp32"].startswith("outputs differ from eager fp32 by")
    assert "rejected: onnxruntime fp32 (outputs differ" in fm.probe.summary()


def test_no_candidate_at_all_is_an_error_naming_each(fakes, monkeypatch):
    def failing(model, precision, channels_last, example):
        raise RuntimeError("no C++ compiler")

    for name in SPEED:
        monkeypatch.setitem(fast._BACKENDS, name, failing)
    model, x = lenet()
    with pytest.raises(ClassicNetsError, match="no inference path could be built: eager fp32: RuntimeError"):
        fastest(model, x, time_call=fake_clock)


def test_without_onnxruntime_its_candidate_is_skipped(fakes, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert onnxruntime_missing() == "onnxruntime not installed (pip install 'classicnets[onnx]')"
    monkeypatch.setattr(fast_probe, "onnxruntime_missing", onnxruntime_missing)
    model, x = lenet()
    fm = fastest(model, x, time_call=fake_clock)
    assert fm.backend == "inductor" and "onnxruntime fp32" not in fakes
    assert fm.probe.skipped["onnxruntime fp32"].startswith("onnxruntime not installed")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_competes_only_where_asked_for_and_native(fakes, monkeypatch, native):
    monkeypatch.setattr(fast_probe, "cpu_has_bf16", lambda: native)
    model, x = lenet()
    fm = fastest(model, x, "bf16", time_call=lambda fm, x: 5e-4 if fm.precision == "bf16" else fake_clock(fm, x))
    assert ("inductor bf16" in fakes) == native
    assert fm.probe.chosen == ("inductor bf16" if native else "onnxruntime fp32")
    if not native:
        assert "no native bf16" in fm.probe.skipped["inductor bf16"]
    with pytest.raises(ClassicNetsError, match="precision='fp16'"):
        fastest(model, x, "fp16")


def test_predictor_and_predict_command_report_the_path(fakes, trained_run, cli, monkeypatch, tmp_path):
    monkeypatch.setattr(fast_probe, "time_calls", fake_clock)
    plain = classicnets.load(trained_run)
    predictor = Predictor(plain.model, plain.meta, fast=True)
    assert predictor.fast_path is predictor.fast_model.probe and predictor.fast_path.chosen == "onnxruntime fp32"
    assert predictor.fast_path.batch == Predictor.fast_batch
    assert plain.fast_path is None
    image = torch.zeros(28, 28, dtype=torch.uint8)
    torch.testing.assert_close(predictor.logits(image), plain.logits(image))
    from PIL import Image

    Image.fromarray(image.numpy()).save(tmp_path / "blank.png")
    code, out, err = cli("predict", trained_run, tmp_path / "blank.png", "--fast", "--format", "json")
    assert code == 0, err
    json.loads(out)  # stdout stays the predictions
    assert "classicnets predict: fast path: onnxruntime fp32, chosen by an earlier probe (cached)" in err


@pytest.mark.slow  # a real ONNX export: 4-10 s
@pytest.mark.skipif(onnxruntime_missing() is not None, reason="the onnx extra is not installed")
def test_onnxruntime_backend_agrees_with_eager_at_any_batch_size():
    model, x = lenet(2)
    fm = fast.optimize_for_inference(model, x, backend="onnxruntime")
    assert fm.backend == "onnxruntime" and fm.max_diff <= 1e-4
    y = torch.randn(5, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fm(y), model(y), rtol=1e-4, atol=1e-5)
    with pytest.raises(ClassicNetsError, match="backend='onnxruntime' supports precision='fp32' only"):
        fast.optimize_for_inference(model, x, "bf16", backend="onnxruntime")
