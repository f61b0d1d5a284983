"""Learning-rate schedules: values against their formulas, the course
functions, bad arguments, and use as an optimizer's ``lr``."""

import math

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.schedules import schedule_lr_decay, update_lr
from helpers import assert_bitwise

STEPS = [0, 1, 2, 3, 7, 10, 11, 99, 100, 101, 1000, 2.5]


@pytest.mark.parametrize("step", STEPS)
def test_inverse_time_decay_formula(step):
    assert fo.InverseTimeDecay(0.1, 0.5)(step) == pytest.approx(0.1 / (1 + 0.5 * step),
                                                                rel=1e-15)
    assert fo.InverseTimeDecay(0.1, 0.5, 10)(step) == pytest.approx(
        0.1 / (1 + 0.5 * step / 10), rel=1e-15)
    assert fo.InverseTimeDecay(0.1, 0.5, 10, staircase=True)(step) == pytest.approx(
        0.1 / (1 + 0.5 * (step // 10)), rel=1e-15)


def test_inverse_time_decay_hand_values():
    s = fo.InverseTimeDecay(1.0, 1.0, 4, staircase=True)
    assert [s(k) for k in (0, 3, 4, 7, 8)] == [1.0, 1.0, 0.5, 0.5, 1 / 3]
    assert fo.InverseTimeDecay(0.2, 0.5)(2) == 0.1


@pytest.mark.parametrize("epoch", [0, 1, 2, 3, 7, 10, 999, 1000, 1001, 12345, 2.5])
@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0, 7.25])
def test_course_functions_are_inverse_time_decay_bit_for_bit(epoch, rate):
    assert update_lr(0.0123, epoch, rate) == fo.InverseTimeDecay(0.0123, rate)(epoch)
    for interval in (1, 3, 1000, 2.5):
        assert (schedule_lr_decay(0.0123, epoch, rate, interval)
                == fo.InverseTimeDecay(0.0123, rate, interval, staircase=True)(epoch))


@pytest.mark.parametrize("step", STEPS)
def test_exponential_decay_formula(step):
    assert fo.ExponentialDecay(0.1, 0.96)(step) == pytest.approx(0.1 * 0.96 ** step,
                                                                 rel=1e-15)
    assert fo.ExponentialDecay(0.1, 0.5, 10)(step) == pytest.approx(0.1 * 0.5 ** (step / 10),
                                                                    rel=1e-15)
    assert fo.ExponentialDecay(0.1, 0.5, 10, True)(step) == pytest.approx(
        0.1 * 0.5 ** (step // 10), rel=1e-15)


def test_exponential_decay_hand_values():
    s = fo.ExponentialDecay(1.0, 0.5, 2, staircase=True)
    assert [s(k) for k in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert fo.ExponentialDecay(1.0, 0.25, 2)(1) == 0.5


def test_piecewise_constant_boundaries_are_inclusive_below():
    s = fo.PiecewiseConstant([10, 20], [1.0, 0.5, 0.1])
    got = [s(k) for k in (0, 9, 10, 10.5, 11, 19, 20, 21, 10**6)]
    assert got == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1]
    assert fo.PiecewiseConstant([], [0.3])(123) == 0.3


def _cosine(step, lr0, n, alpha):
    step = min(step, n)
    return lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / n)) + alpha)


@pytest.mark.parametrize("step", STEPS)
def test_cosine_decay_formula(step):
    assert fo.CosineDecay(0.1, 100)(step) == pytest.approx(_cosine(step, 0.1, 100, 0.0),
                                                           rel=1e-14, abs=1e-17)
    assert fo.CosineDecay(0.1, 100, alpha=0.2)(step) == pytest.approx(
        _cosine(step, 0.1, 100, 0.2), rel=1e-14)


@pytest.mark.parametrize("step", STEPS)
def test_cosine_decay_warmup_formula(step):
    s = fo.CosineDecay(0.01, 50, alpha=0.1, warmup_target=0.2, warmup_steps=10)
    if step < 10:
        expected = 0.01 + (0.2 - 0.01) * step / 10
    else:
        expected = _cosine(step - 10, 0.2, 50, 0.1)
    assert s(step) == pytest.approx(expected, rel=1e-14)


def test_cosine_decay_landmarks():
    s = fo.CosineDecay(2.0, 10, alpha=0.25)
    assert s(0) == 2.0 and s(10) == 0.5 and s(1000) == 0.5
    assert s(5) == pytest.approx(1.25, rel=1e-15)
    w = fo.CosineDecay(0.0, 10, warmup_target=1.0, warmup_steps=4)
    assert [w(k) for k in (0, 1, 2, 4)] == [0.0, 0.25, 0.5, 1.0]
    assert w(14) == 0.0 and w(9) == pytest.approx(0.5, rel=1e-15)
    # warmup_steps=0 with a target decays from the target right away (Keras)
    assert fo.CosineDecay(0.0, 10, warmup_target=1.0)(0) == 1.0


@pytest.mark.parametrize("make,exc,match", [
    (lambda: fo.InverseTimeDecay(-0.1, 0.5), ValueError, "lr0 must be >= 0"),
    (lambda: fo.InverseTimeDecay(0.1, -0.5), ValueError, "decay_rate must be >= 0"),
    (lambda: fo.InverseTimeDecay(0.1, 0.5, 0), ValueError, "decay_steps must be > 0"),
    (lambda: fo.InverseTimeDecay(0.1, 0.5, staircase=1), TypeError, "staircase"),
    (lambda: fo.InverseTimeDecay("0.1", 0.5), TypeError, "lr0 must be a real number"),
    (lambda: fo.ExponentialDecay(0.1, 0.0), ValueError, "decay_rate must be > 0"),
    (lambda: fo.ExponentialDecay(0.1, 0.5, -1), ValueError, "decay_steps must be > 0"),
    (lambda: fo.ExponentialDecay(float("nan"), 0.5), ValueError, "lr0 must be finite"),
    (lambda: fo.PiecewiseConstant([1, 2], [0.1, 0.2]), ValueError, "one more entry"),
    (lambda: fo.PiecewiseConstant([2, 2], [0.1, 0.2, 0.3]), ValueError, "strictly increasing"),
    (lambda: fo.PiecewiseConstant([1], [0.1, -0.2]), ValueError, r"values\[1\] must be >= 0"),
    (lambda: fo.PiecewiseConstant(5, [0.1]), TypeError, "boundaries must be a sequence"),
    (lambda: fo.PiecewiseConstant([float("inf")], [0.1, 0.2]), ValueError,
     r"boundaries\[0\] must be finite"),
    (lambda: fo.CosineDecay(0.1, 0), ValueError, "decay_steps must be > 0"),
    (lambda: fo.CosineDecay(0.1, 10, alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
    (lambda: fo.CosineDecay(0.1, 10, warmup_steps=5), ValueError, "needs a warmup_target"),
    (lambda: fo.CosineDecay(0.1, 10, warmup_target=-1.0, warmup_steps=5), ValueError,
     "warmup_target must be >= 0"),
    (lambda: fo.CosineDecay(0.1, 10, warmup_target=1.0, warmup_steps=-5), ValueError,
     "warmup_steps must be >= 0"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("schedule", [fo.InverseTimeDecay(0.1, 0.5),
                                      fo.ExponentialDecay(0.1, 0.5),
                                      fo.PiecewiseConstant([1], [0.1, 0.2]),
                                      fo.CosineDecay(0.1, 10)])
def test_bad_step(schedule):
    with pytest.raises(ValueError, match="step must be >= 0"):
        schedule(-1)
    with pytest.raises(TypeError, match="step must be a real number"):
        schedule("3")
    assert isinstance(schedule(3), float)
    assert type(schedule).__name__ in repr(schedule)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_uses_schedule_of_steps_taken(backend, dtype):
    schedule = fo.CosineDecay(0.5, 4, alpha=0.0, warmup_target=1.0, warmup_steps=2)
    p = {"w": np.zeros(3, dtype)}
    g = np.array([1.0, -2.0, 0.5], dtype)
    expected = p["w"].copy()
    opt = fo.GD(p, lr=schedule)
    for step in range(8):
        opt.step({"dw": g})
        expected = expected - dtype(schedule(step)) * g
    assert_bitwise(p["w"], expected)
    assert opt.t == 8
