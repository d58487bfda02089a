import math

import pytest

from classicnets.train.schedules import make_schedule


def test_step_schedule_divides_by_ten_at_the_papers_iterations():
    # He et al. 2015, section 4.2: 0.1, /10 at 32k and 48k, stop at 64k.
    lr = make_schedule("step", 0.1, 64_000, milestones=[32_000, 48_000])
    assert lr(0) == 0.1 and lr(31_999) == 0.1
    assert math.isclose(lr(32_000), 0.01) and math.isclose(lr(47_999), 0.01)
    assert math.isclose(lr(48_000), 0.001) and math.isclose(lr(63_999), 0.001)


def test_constant_warmup_for_resnet110():
    lr = make_schedule("step", 0.1, 64_000, milestones=[32_000], warmup_steps=400, warmup_lr=0.01)
    assert lr(0) == lr(399) == 0.01 and lr(400) == 0.1


def test_linear_warmup_then_cosine_to_zero():
    lr = make_schedule("cosine", 1.0, 100, warmup_steps=10)
    assert lr(0) == pytest.approx(0.1 * lr(10))
    assert lr(10) > lr(50) > lr(99) >= 0
    assert lr(50) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_onecycle_rises_then_falls_to_zero():
    lr = make_schedule("onecycle", 0.4, 100)
    assert lr(0) < lr(12) < lr(25)
    assert lr(25) == pytest.approx(0.4)
    assert lr(99) < 0.01 and lr(100) == 0


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("linear", 0.1, 10)
