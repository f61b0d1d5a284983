"""Optimizer classes: global-norm clipping and steps with non-finite gradients
(skipped or applied).  Every stepping test runs on every available backend."""

import math

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import _reference, _validate
from helpers import assert_bitwise, assert_unchanged, snapshot
from optimizers_common import (
    CONFIGS, CONFIG_IDS, DTYPES, assert_same_run, copy_params, make_grads, make_params)


# --- clipping ---------------------------------------------------------------


def numpy_norm(grads):
    return math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])
def test_clipping_matches_numpy(backend, dtype, max_norm):
    rng = np.random.default_rng(5)
    params = make_params(rng, dtype)
    grads = make_grads(params, rng)
    grads_before = snapshot(grads)
    expected = copy_params(params)
    opt = fo.GD(params, lr=0.1, max_grad_norm=max_norm)
    assert opt.step(grads) is True
    assert_unchanged(grads_before, grads)
    assert opt.last_grad_norm == pytest.approx(numpy_norm(grads), rel=1e-13)
    scale = min(1.0, max_norm / (opt.last_grad_norm + 1e-6))
    for k, p in expected.items():
        g = grads["d" + k] * dtype(scale) if scale < 1.0 else grads["d" + k]
        assert_bitwise(params[k], p - dtype(0.1) * g)


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
def test_clipping_equals_stepping_on_clipped_grads(backend, cls, kw):
    rng = np.random.default_rng(6)
    p0 = make_params(rng, np.float32)
    grads = [make_grads(p0, rng) for _ in range(4)]
    pa, pb = copy_params(p0), copy_params(p0)
    a = cls(pa, **kw, max_grad_norm=1.0)
    b = cls(pb, **kw)
    for g in grads:
        a.step(g)
        scale = 1.0 / (a.last_grad_norm + 1e-6)
        assert scale < 1.0
        b.step({k: np.asarray(x * np.float32(scale)) for k, x in g.items()})
    assert_same_run(pa, a, pb, b)


def test_norm_is_the_reference_sum_and_thread_independent(backend, threads):
    rng = np.random.default_rng(7)
    params = make_params(rng, big=True)
    grads = make_grads(params, rng)
    opt = fo.SGD(params, lr=0.0, max_grad_norm=1.0)
    opt.step(grads)
    ref = _reference.grad_sumsq(params, grads, _validate.NAMED)
    assert opt.last_grad_norm == math.sqrt(ref)


def test_no_norm_without_clipping_or_skipping(backend):
    opt = fo.Adam({"w": np.ones(3)})
    opt.step({"w": np.ones(3)})
    assert opt.last_grad_norm is None


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_huge_finite_grads_are_clipped_not_skipped(backend):
    # float64 values above ~1e154 overflow the sum of squares while finite.
    g = np.array([3e200, -4e200, 0.0])
    p = {"w": np.zeros(3)}
    opt = fo.GD(p, lr=1.0, max_grad_norm=1.0, skip_nonfinite=True)
    assert opt.step({"w": g}) is True
    assert opt.skipped_steps == 0
    assert opt.last_grad_norm == pytest.approx(5e200, rel=1e-15)
    scale = 1.0 / (opt.last_grad_norm + 1e-6)
    assert_bitwise(p["w"], 0.0 - 1.0 * (g * scale))
    np.testing.assert_allclose(p["w"], [-0.6, 0.8, 0.0], rtol=1e-14)

    # a norm beyond float64's range still gives a finite, clipped step
    p = {"w": np.zeros(4)}
    opt = fo.GD(p, lr=1.0, max_grad_norm=2.0)
    opt.step({"w": np.full(4, 1e308)})
    assert opt.last_grad_norm == math.inf
    np.testing.assert_allclose(p["w"], np.full(4, -1.0), rtol=1e-14)


# --- bad steps --------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
def test_nonfinite_step_is_skipped(backend, cls, kw, bad):
    rng = np.random.default_rng(8)
    params = make_params(rng, np.float32)
    calls = []
    lr = kw.get("lr", 0.01)
    kw = dict(kw, lr=lambda step: calls.append(step) or lr)
    opt = cls(params, **kw, skip_nonfinite=True)
    opt.step(make_grads(params, rng))
    before = snapshot(params, *opt.state.values())
    grads = make_grads(params, rng)
    grads["dF"][1, 2] = bad
    grads_before = snapshot(grads)
    assert opt.step(grads) is False
    assert_unchanged(before, params, *opt.state.values())
    assert_unchanged(grads_before, grads)
    assert opt.t == 1 and opt.skipped_steps == 1
    assert not math.isfinite(opt.last_grad_norm)
    assert opt.step(make_grads(params, rng)) is True
    assert opt.t == 2 and opt.skipped_steps == 1 and calls == [0, 1, 1]


def test_skipped_first_step_keeps_sgd_first(backend):
    p = {"w": np.array([0.0, 0.0])}
    opt = fo.SGD(p, lr=1.0, momentum=0.9, dampening=0.5, skip_nonfinite=True)
    assert opt.step({"w": np.array([np.nan, 1.0])}) is False
    opt.step({"w": np.array([2.0, 4.0])})
    assert_bitwise(opt.state["momentum_buffer"]["w"], np.array([2.0, 4.0]))


def test_nonfinite_without_skip_reaches_parameters(backend):
    # Clipped as clip_grad_norm_ (and torch) clip: by NaN for a NaN norm ...
    p = {"w": np.zeros(3)}
    opt = fo.GD(p, lr=0.1, max_grad_norm=1.0)
    assert opt.step({"w": np.array([np.nan, 1.0, 2.0])}) is True
    assert np.isnan(p["w"]).all() and opt.t == 1
    # ... and by 0 for an infinite one: the infinite entry NaN, the others unmoved.
    p = {"w": np.zeros(3)}
    opt = fo.GD(p, lr=0.1, max_grad_norm=1.0)
    with np.errstate(invalid="ignore"):
        assert opt.step({"w": np.array([np.inf, 1.0, 2.0])}) is True
    assert np.isnan(p["w"][0]) and opt.t == 1
    assert_bitwise(p["w"][1:], np.array([0.0, 0.0]))
