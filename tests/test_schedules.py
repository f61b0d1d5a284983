"""Learning-rate schedules: values against their formulas, the course
functions, bad arguments, and use as an optimizer's ``lr``."""

import inspect
import math
import re
from fractions import Fraction

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.schedules import schedule_lr_decay, update_lr
from helpers import assert_bitwise

STEPS = [0, 1, 2, 3, 7, 10, 11, 99, 100, 101, 1000, 2.5]


@pytest.mark.parametrize("step", STEPS)
def test_inverse_time_decay_formula(step):
    assert fo.InverseTimeDecay(0.1, 1, 0.5)(step) == pytest.approx(0.1 / (1 + 0.5 * step),
                                                                rel=1e-15)
    assert fo.InverseTimeDecay(0.1, 10, 0.5)(step) == pytest.approx(
        0.1 / (1 + 0.5 * step / 10), rel=1e-15)
    assert fo.InverseTimeDecay(0.1, 10, 0.5, staircase=True)(step) == pytest.approx(
        0.1 / (1 + 0.5 * (step // 10)), rel=1e-15)


def test_inverse_time_decay_hand_values():
    s = fo.InverseTimeDecay(1.0, 4, 1.0, staircase=True)
    assert [s(k) for k in (0, 3, 4, 7, 8)] == [1.0, 1.0, 0.5, 0.5, 1 / 3]
    assert fo.InverseTimeDecay(0.2, 1, 0.5)(2) == 0.1


@pytest.mark.parametrize("fn", [update_lr, schedule_lr_decay])
def test_course_functions_are_documented(fn):
    doc = inspect.getdoc(fn)
    for section in ("Parameters\n----------\n", "Returns\n-------\nfloat\n"):
        assert section in doc, fn.__name__
    assert ".. math::" in doc and "In words: ``learning_rate0 / (1 + decay_rate * " in doc
    for name in inspect.signature(fn).parameters:
        assert re.search(rf"^{name} : float\n    \S", doc, re.M), name


@pytest.mark.parametrize("epoch", [0, 1, 2, 3, 7, 10, 999, 1000, 1001, 12345, 2.5])
@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0, 7.25])
def test_course_functions_are_inverse_time_decay_bit_for_bit(epoch, rate):
    assert update_lr(0.0123, epoch, rate) == fo.InverseTimeDecay(0.0123, 1, rate)(epoch)
    for interval in (1, 3, 1000, 2.5):
        assert (schedule_lr_decay(0.0123, epoch, rate, interval)
                == fo.InverseTimeDecay(0.0123, interval, rate, staircase=True)(epoch))


@pytest.mark.parametrize("step", STEPS)
def test_exponential_decay_formula(step):
    assert fo.ExponentialDecay(0.1, 1, 0.96)(step) == pytest.approx(0.1 * 0.96 ** step,
                                                                 rel=1e-15)
    assert fo.ExponentialDecay(0.1, 10, 0.5)(step) == pytest.approx(0.1 * 0.5 ** (step / 10),
                                                                    rel=1e-15)
    assert fo.ExponentialDecay(0.1, 10, 0.5, True)(step) == pytest.approx(
        0.1 * 0.5 ** (step // 10), rel=1e-15)


def test_exponential_decay_hand_values():
    s = fo.ExponentialDecay(1.0, 2, 0.5, staircase=True)
    assert [s(k) for k in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert fo.ExponentialDecay(1.0, 2, 0.25)(1) == 0.5


def test_piecewise_constant_boundaries_are_inclusive_below():
    s = fo.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    got = [s(k) for k in (0, 9, 10, 10.5, 11, 19, 20, 21, 10**6)]
    assert got == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1]
    assert fo.PiecewiseConstantDecay([], [0.3])(123) == 0.3


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
    (lambda: fo.InverseTimeDecay(-0.1, 1, 0.5), ValueError,
     "initial_learning_rate must be >= 0"),
    (lambda: fo.InverseTimeDecay(0.1, 1, -0.5), ValueError, "decay_rate must be >= 0"),
    (lambda: fo.InverseTimeDecay(0.1, 0, 0.5), ValueError, "decay_steps must be > 0"),
    (lambda: fo.InverseTimeDecay(0.1, 1, 0.5, staircase=1), TypeError, "staircase"),
    (lambda: fo.InverseTimeDecay("0.1", 1, 0.5), TypeError,
     "initial_learning_rate must be a real number"),
    (lambda: fo.ExponentialDecay(0.1, 1, 0.0), ValueError, "decay_rate must be > 0"),
    (lambda: fo.ExponentialDecay(0.1, -1, 0.5), ValueError, "decay_steps must be > 0"),
    (lambda: fo.ExponentialDecay(float("nan"), 1, 0.5), ValueError,
     "initial_learning_rate must be finite"),
    (lambda: fo.PiecewiseConstantDecay([1, 2], [0.1, 0.2]), ValueError, "one more entry"),
    (lambda: fo.PiecewiseConstantDecay([2, 2], [0.1, 0.2, 0.3]), ValueError,
     "strictly increasing"),
    (lambda: fo.PiecewiseConstantDecay([1], [0.1, -0.2]), ValueError,
     r"values\[1\] must be >= 0"),
    (lambda: fo.PiecewiseConstantDecay(5, [0.1]), TypeError, "boundaries must be a sequence"),
    (lambda: fo.PiecewiseConstantDecay([float("inf")], [0.1, 0.2]), ValueError,
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


@pytest.mark.parametrize("schedule", [fo.InverseTimeDecay(0.1, 1, 0.5),
                                      fo.ExponentialDecay(0.1, 1, 0.5),
                                      fo.PiecewiseConstantDecay([1], [0.1, 0.2]),
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


@pytest.mark.parametrize("step", STEPS + [250, 299.5, 300, 301, 1e6])
@pytest.mark.parametrize("power, end", [(1.0, 0.0001), (2.0, 0.01), (0.5, 0.0), (0.0, 0.3)])
def test_polynomial_decay_formula(step, power, end):
    s = fo.PolynomialDecay(0.1, 300, end, power)
    k = min(step, 300)
    assert s(step) == pytest.approx((0.1 - end) * (1 - k / 300) ** power + end, rel=1e-15)
    c = fo.PolynomialDecay(0.1, 300, end, power, cycle=True)
    n = 300 * (math.ceil(step / 300) if step else 1)
    assert c(step) == pytest.approx((0.1 - end) * (1 - step / n) ** power + end, rel=1e-15)


def test_polynomial_decay_landmarks():
    s = fo.PolynomialDecay(1.0, 10)
    assert s(0) == 1.0 and s(10) == 0.0001 and s(5) == pytest.approx(0.50005, rel=1e-15)
    c = fo.PolynomialDecay(1.0, 10, 0.0, cycle=True)
    assert [c(k) for k in (0, 10, 11, 20, 21)] == [1.0, 0.0, 1 - 11 / 20, 0.0, 1 - 21 / 30]


def _sgdr(step, lr0, n, t_mul, m_mul, alpha):
    """SGDR by walking the periods (no logarithm)."""
    start, length, i = 0.0, float(n), 0
    while step >= start + length:
        start += length
        length *= t_mul
        i += 1
    f = (step - start) / length
    return lr0 * ((1 - alpha) * 0.5 * m_mul ** i * (1 + math.cos(math.pi * f)) + alpha)


@pytest.mark.parametrize("t_mul, m_mul, alpha", [(2.0, 1.0, 0.0), (1.0, 0.5, 0.1),
                                                 (3.0, 0.7, 0.05), (1.5, 1.0, 0.0)])
def test_cosine_decay_restarts_formula(t_mul, m_mul, alpha):
    s = fo.CosineDecayRestarts(0.1, 10, t_mul, m_mul, alpha)
    for step in list(range(0, 400)) + [2.5, 1e4 + 0.5]:
        assert s(step) == pytest.approx(_sgdr(step, 0.1, 10, t_mul, m_mul, alpha),
                                        rel=1e-12, abs=1e-16), step


def test_cosine_decay_restarts_peaks_at_every_restart():
    s = fo.CosineDecayRestarts(1.0, 10, t_mul=3.0, m_mul=0.5)
    starts = [0, 10, 40, 130, 400, 1210, 3640]   # 10 * (3**i - 1) / 2
    assert [s(k) for k in starts] == [0.5 ** i for i in range(len(starts))]
    assert all(s(k - 1) < s(k) / 10 for k in starts[1:])  # a jump up at each restart


def _restarts(n, t_mul, limit):
    """The exact starts of SGDR's periods (index, step) up to ``limit`` that
    a float holds exactly, for ``t_mul`` as written (Fraction("1.1") = 11/10)."""
    t, start, length, out = Fraction(t_mul), Fraction(0), Fraction(n), []
    for i in range(1, 200):
        start, length = start + length, length * t
        if start > limit:
            return out
        if float(start) == start:
            out.append((i, float(start)))
    return out


@pytest.mark.parametrize("t_mul", ["1.1", "1.05", "1.01", "1.2", "1.25", "1.5", "1.75",
                                   "2", "2.5", "3", "4/3", "5/3", "1.00001"])
def test_cosine_decay_restarts_peak_exactly_at_every_exact_restart(t_mul):
    """331 = 100 + 110 + 121 starts period 3 of (100, t_mul=1.1), but its start
    computes as 331.00000000000006 from the float 1.1: the step must still get
    the peak, and the steps around it their own periods' values."""
    checked = 0
    for n in list(range(1, 130)) + [200, 300, 1000, 3**8, 10**5, 2**20]:
        t = float(Fraction(t_mul))
        s = fo.CosineDecayRestarts(1.0, n, t, 0.5)
        for i, start in _restarts(n, t_mul, 10**7):
            checked += 1
            assert s(start) == 0.5 ** i, (n, i, start)
            for near in (start - 1, start - 0.5, start + 0.5, start + 1):
                assert s(near) == pytest.approx(_sgdr(near, 1.0, n, t, 0.5, 0.0),
                                                rel=1e-9, abs=1e-15), (n, i, near)
    assert checked > 100


def test_cosine_decay_restarts_review_cases():
    for n in (100, 200, 300):
        s = fo.CosineDecayRestarts(1.0, n, t_mul=1.1)
        assert [s(3.31 * n - 1) < 1e-3, s(3.31 * n), s(3.31 * n + 1) > 0.999] == [True, 1.0, True]
    # t_mul = 1 with a decimal first_decay_steps: the starts k * 0.1 are at the
    # steps k / 10 too (0.3 / 0.1 is 2.9999999999999996).
    s = fo.CosineDecayRestarts(1.0, 0.1, 1.0)
    assert [s(k / 10) for k in range(1, 50)] == [1.0] * 49


def test_cosine_decay_restarts_growing_peaks_overflow_to_inf():
    # m_mul > 1: the peaks grow past float range; inf, which an optimizer
    # refuses with its usual message, not a bare OverflowError.
    s = fo.CosineDecayRestarts(1.0, 1, 1.0, 2.0)
    assert s(5000) == math.inf
    opt = fo.SGD({"w": np.zeros(2)}, lr=lambda t: s(5000))
    with pytest.raises(ValueError, match="must be finite"):
        opt.step({"w": np.ones(2)})
    assert opt.t == 0 and not opt.parameters["w"].any()


@pytest.mark.parametrize("make,exc,match", [
    (lambda: fo.PolynomialDecay(0.1, 0), ValueError, "decay_steps must be > 0"),
    (lambda: fo.PolynomialDecay(0.1, 10, -1.0), ValueError, "end_learning_rate must be >= 0"),
    (lambda: fo.PolynomialDecay(0.1, 10, power=-1.0), ValueError, "power must be >= 0"),
    (lambda: fo.PolynomialDecay(0.1, 10, cycle=1), TypeError, "cycle"),
    (lambda: fo.CosineDecayRestarts(0.1, 0), ValueError, "first_decay_steps must be > 0"),
    (lambda: fo.CosineDecayRestarts(0.1, 10, t_mul=0.5), ValueError, "t_mul must be >= 1"),
    (lambda: fo.CosineDecayRestarts(0.1, 10, m_mul=-1.0), ValueError, "m_mul must be >= 0"),
    (lambda: fo.CosineDecayRestarts(0.1, 10, alpha=2.0), ValueError, "alpha must be in"),
    (lambda: fo.CosineDecay(0.1, 10, 0.0, 5), TypeError, "name must be a str"),
])
def test_bad_arguments_new(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_keras_positional_order():
    """The issue's example: Keras's ExponentialDecay(0.1, 100, 0.5) at step 5."""
    assert fo.ExponentialDecay(0.1, 100, 0.5)(5) == pytest.approx(0.1 * 0.5 ** 0.05, rel=1e-15)
    # CosineDecay's fourth positional argument is Keras's name.
    assert fo.CosineDecay(0.1, 10, 0.0, "warm", 1.0, 5)(5) == 1.0
