"""The fast inference path: same outputs as eager (fp32 tightly, bf16 loosely), for any batch
size, with clear fallbacks and errors. No timing is asserted: benchmarks/bench_infer.py measures."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import classicnets
from classicnets import fast
from classicnets.errors import ClassicNetsError
from classicnets.fast import optimize_for_inference
from classicnets.predict import Predictor, load


def model_and_input(name: str, batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = classicnets.create_model(name).eval()
    c, h, w = classicnets.model_card(name).input_size
    gen = torch.Generator().manual_seed(seed)
    return model, torch.randn(batch, c, h, w, generator=gen)


def eager(model, x):
    with torch.no_grad():
        return model(x)


def scale(ref: torch.Tensor) -> float:
    return max(1.0, float(ref.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_fp32_inductor_equals_eager_at_every_batch_size(name):
    model, x = model_and_input(name, 2)
    fm = optimize_for_inference(model, x, "fp32")
    assert fm.backend == "inductor" and fm.precision == "fp32" and fm.fallbacks == []
    assert fm.max_diff <= 1e-4 * scale(eager(model, x)) and fm.build_seconds > 0
    # batch 2 is the compiled one; 1 compiles its own graph; 5 runs as 2 + 2 + 1 (chunks of max_batch)
    for n in (2, 1, 5):
        y = torch.randn(n, *x.shape[1:])
        got, want = fm(y), eager(model, y)
        assert got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * scale(want))


@pytest.mark.slow
def test_bf16_inductor_is_close_to_fp32_and_leaves_the_model_alone():
    model, x = model_and_input("resnet20", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fm = optimize_for_inference(model, x, "bf16")
    assert fm.backend == "inductor" and fm.precision == "bf16"
    got, want = fm(x), eager(model, x)
    assert got.dtype == torch.float32
    assert float((got - want).abs().max()) <= 0.1 * scale(want)
    assert not torch.equal(got, want)  # it really computed in bf16
    for k, v in model.state_dict().items():  # the caller's model: same dtype, layout and values
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]) and v.is_contiguous()


@pytest.mark.slow
def test_each_fast_model_keeps_its_own_weights():
    """Two models of one class compiled in turn: each gives its own outputs (the frozen
    constants are not shared through dynamo's cache, which is keyed on the code)."""
    (a, x), (b, _) = model_and_input("lenet5", 2, seed=0), model_and_input("lenet5", 2, seed=1)
    fa, fb = optimize_for_inference(a, x), optimize_for_inference(b, x)
    torch.testing.assert_close(fa(x), eager(a, x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fb(x), eager(b, x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(fa(x), fb(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998", "resnet20", "nin"])
def test_eager_backend_any_registry_model(name):
    model, x = model_and_input(name, 3)
    want = eager(model, x)
    fm = optimize_for_inference(model, x, "fp32", backend="eager")
    torch.testing.assert_close(fm(x), want, rtol=1e-4, atol=1e-5 * scale(want))
    fb = optimize_for_inference(model, x, "bf16", backend="eager")
    assert float((fb(x) - want).abs().max()) <= 0.1 * scale(want)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_jit_backend(name):
    model, x = model_and_input(name, 2)
    fm = optimize_for_inference(model, x, backend="jit")
    assert fm.backend == "jit"
    y = torch.randn(3, *x.shape[1:])  # another batch size than the traced one
    torch.testing.assert_close(fm(y), eager(model, y), rtol=1e-4, atol=1e-5)


def broken(model, precision, channels_last, example):
    """A backend that compiles but computes the wrong thing."""
    return fast._Prepared(lambda x: torch.zeros(len(x), 10), torch.float32, False, False, False)


def failing(model, precision, channels_last, example):
    raise RuntimeError("no C++ compiler")


def test_auto_falls_back_with_a_warning_and_says_why(monkeypatch):
    monkeypatch.setitem(fast._BACKENDS, "inductor", failing)
    model, x = model_and_input("lenet5", 2)
    with pytest.warns(RuntimeWarning, match=re.escape("inductor: RuntimeError: no C++ compiler; trying jit")):
        fm = optimize_for_inference(model, x)
    assert fm.backend == "jit" and fm.fallbacks == ["inductor: RuntimeError: no C++ compiler"]
    torch.testing.assert_close(fm(x), eager(model, x), rtol=1e-4, atol=1e-5)


def test_outputs_that_differ_from_eager_are_refused(monkeypatch):
    monkeypatch.setitem(fast._BACKENDS, "inductor", broken)
    model, x = model_and_input("lenet5", 2)
    with pytest.raises(ClassicNetsError, match="backend inductor: .*differ from eager fp32"):
        optimize_for_inference(model, x, backend="inductor")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = optimize_for_inference(model, x, "bf16")  # bf16 goes inductor -> eager
    assert fm.backend == "eager" and "differ from eager" in fm.fallbacks[0]
    unchecked = optimize_for_inference(model, x, backend="inductor", check=False)
    assert unchecked.backend == "inductor" and unchecked.max_diff > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(precision="fp16"), r"precision='fp16'; expected one of \('fp32', 'bf16'\)"),
    (dict(backend="tvm"), r"backend='tvm'; expected one of"),
    (dict(backend="jit", precision="bf16"), r"backend='jit' supports precision='fp32' only"),
])
def test_bad_arguments_are_named(kwargs, message):
    model, x = model_and_input("lenet5", 1)
    with pytest.raises(ClassicNetsError, match=message):
        optimize_for_inference(model, x, **kwargs)


def test_bad_model_and_example_are_named():
    model, x = model_and_input("lenet5", 1)
    with pytest.raises(ClassicNetsError, match="model must be a torch.nn.Module, got function"):
        optimize_for_inference(lambda t: t, x)
    with pytest.raises(ClassicNetsError, match=r"example must be a float32 batch .*torch.uint8"):
        optimize_for_inference(model, x.to(torch.uint8))
    with pytest.raises(ClassicNetsError, match=r"example must be a float32 batch .*got list"):
        optimize_for_inference(model, [x])
    fm = optimize_for_inference(model, x, backend="eager")
    with pytest.raises(ClassicNetsError, match="expected a non-empty floating-point batch"):
        fm(x[:0])


@pytest.mark.slow
def test_fast_predictor_predicts_like_the_plain_one(trained_run, monkeypatch, tmp_path):
    from classicnets.data.sources import load_split

    monkeypatch.setenv("CLASSICNETS_CACHE", str(tmp_path / "cache"))  # the probe's choice: not in the user's cache
    images = load_split("digits", None, "test", size=(32, 32), channels=1).images[:200]
    plain = load(trained_run)
    fp32 = load(trained_run, fast=True)  # whichever path the probe found fastest here
    assert plain.fast_model is None and fp32.fast_model.backend == fp32.fast_path.chosen.split()[0]
    assert fp32.fast_path.rejected == {} and fp32.fast_model.precision == "fp32"
    torch.testing.assert_close(fp32.logits(images), plain.logits(images), rtol=1e-4, atol=1e-4)
    bf16 = Predictor(plain.model, plain.meta, fast=True, precision="bf16")
    agreement = float((bf16.predict(images) == plain.predict(images)).double().mean())
    assert agreement >= 0.99  # a trained LeNet-5 on real digits: confident logits


def test_predictor_fast_arguments_are_checked(trained_run):
    with pytest.raises(ClassicNetsError, match="precision='bf16' needs fast=True"):
        load(trained_run, precision="bf16")
    with pytest.raises(ClassicNetsError, match="precision='int8': expected 'fp32' or 'bf16'"):
        load(trained_run, fast=True, precision="int8")
    with pytest.raises(ClassicNetsError, match="fast='yes': expected True or False"):
        load(trained_run, fast="yes")
