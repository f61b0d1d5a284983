"""Optimizer classes: semantics, keys, learning rates, construction.  Every
stepping test runs on every available backend.  Clipping and bad steps:
``test_optimizers_steps.py``; checkpoints: ``test_optimizers_checkpoints.py``."""

import inspect
import math

import numpy as np
import pytest

import fusedoptim as fo
from helpers import assert_bitwise, assert_unchanged, snapshot
from optimizers_common import (
    CONFIGS, CONFIG_IDS, DTYPES, assert_same_run, copy_params, make_grads, make_params, run)


# --- semantics --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_classes_match_course_functions(backend, dtype):
    rng = np.random.default_rng(0)
    p0 = make_params(rng, dtype)
    grads = [make_grads(p0, rng) for _ in range(5)]

    pa, pb = copy_params(p0), copy_params(p0)
    opt = fo.GD(pa, lr=0.3)
    for g in grads:
        opt.step(g)
        fo.update_parameters_with_gd(pb, g, 0.3)
    for k in p0:
        assert_bitwise(pa[k], pb[k])

    pa, pb = copy_params(p0), copy_params(p0)
    opt, v = fo.Momentum(pa, lr=0.3, beta=0.7), fo.initialize_velocity(pb)
    for g in grads:
        opt.step(g)
        fo.update_parameters_with_momentum(pb, g, v, 0.7, 0.3)
    for k in p0:
        assert_bitwise(pa[k], pb[k])
        assert_bitwise(opt.state["velocity"][k], v["d" + k])

    pa, pb = copy_params(p0), copy_params(p0)
    opt, s = fo.RMSProp(pa), fo.initialize_rmsprop(pb)
    for g in grads:
        opt.step(g)
        fo.update_parameters_with_rmsprop(pb, g, s)
    for k in p0:
        assert_bitwise(pa[k], pb[k])

    # Adam: the course's formula, rounded in PyTorch's order by the class
    # (tests/test_large_grads.py), so equal up to a few roundings.
    pa, pb = copy_params(p0), copy_params(p0)
    opt = fo.Adam(pa, lr=0.01)
    v, s = fo.initialize_adam(pb)
    for t, g in enumerate(grads, start=1):
        opt.step(g)
        fo.update_parameters_with_adam(pb, g, v, s, t, learning_rate=0.01)
    rtol = 64 * np.finfo(dtype).eps
    for k in p0:
        np.testing.assert_allclose(pa[k], pb[k], rtol=rtol, atol=0)
        np.testing.assert_allclose(opt.state["exp_avg_sq"][k], s["d" + k], rtol=rtol, atol=0)
    assert opt.t == 5


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_backend_matches_reference(backend, threads, cls, kw, dtype):
    rng = np.random.default_rng(1)
    p0 = make_params(rng, dtype, big=True)
    grads = [make_grads(p0, rng) for _ in range(4)]
    pa, pb = copy_params(p0), copy_params(p0)
    a = run(cls, kw, pa, grads, max_grad_norm=50.0)
    with fo.use_backend("numpy"):
        b = run(cls, kw, pb, grads, max_grad_norm=50.0)
    assert a.last_grad_norm == b.last_grad_norm
    assert_same_run(pa, a, pb, b)


def _oracle(kind, p, g, st, t, lr, **kw):
    """torch.optim's documented algorithms in float64 NumPy, written
    independently of the kernels."""
    if kw.get("maximize"):
        g = -g
    wd = kw.get("weight_decay", 0.0)
    if kind == "sgd":
        if wd:
            g = g + wd * p
        mu, tau = kw.get("momentum", 0.0), kw.get("dampening", 0.0)
        if mu:
            st["b"] = g.copy() if t == 1 else mu * st["b"] + (1 - tau) * g
            g = g + mu * st["b"] if kw.get("nesterov") else st["b"]
        return p - lr * g
    if kind == "rmsprop":
        if wd:
            g = g + wd * p
        a = kw["alpha"]
        st["sq"] = a * st.get("sq", 0.0) + (1 - a) * g * g
        d = st["sq"]
        if kw.get("centered"):
            st["ga"] = a * st.get("ga", 0.0) + (1 - a) * g
            d = d - st["ga"] ** 2
        r = np.sqrt(d) + kw["eps"]
        if kw.get("momentum"):
            st["b"] = kw["momentum"] * st.get("b", 0.0) + g / r
            return p - lr * st["b"]
        return p - lr * g / r
    if kind == "adagrad":
        if wd:
            g = g + wd * p
        clr = lr / (1 + (t - 1) * kw.get("lr_decay", 0.0))
        st["sum"] = st.get("sum", kw.get("initial_accumulator_value", 0.0)) + g * g
        return p - clr * g / (np.sqrt(st["sum"]) + kw["eps"])
    b1, b2 = kw["betas"]
    if kind == "adamw":
        p = p * (1 - lr * wd)
    elif wd:
        g = g + wd * p
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    v = st["v"]
    if kw.get("amsgrad"):
        st["vmax"] = np.maximum(st.get("vmax", 0.0), v)
        v = st["vmax"]
    return p - lr * (st["m"] / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + kw["eps"])


ORACLE_CASES = [
    ("sgd", fo.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("sgd", fo.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("rmsprop", fo.RMSProp, dict(lr=0.01, alpha=0.95, eps=1e-6, centered=True,
                                 momentum=0.5, weight_decay=0.02)),
    ("rmsprop", fo.RMSProp, dict(lr=0.01, alpha=0.99, eps=1e-8, maximize=True)),
    ("adam", fo.Adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1,
                           amsgrad=True)),
    ("adamw", fo.AdamW, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1,
                             maximize=True)),
    ("adagrad", fo.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.02,
                                 initial_accumulator_value=0.3, eps=1e-8, maximize=True)),
    ("adagrad", fo.Adagrad, dict(lr=0.05, eps=1e-10)),
]


@pytest.mark.parametrize("kind,cls,kw", ORACLE_CASES, ids=[c[0] for c in ORACLE_CASES])
def test_torch_semantics_against_numpy_oracle(backend, kind, cls, kw):
    rng = np.random.default_rng(2)
    params = make_params(rng)
    expected = copy_params(params)
    ckw = dict(kw)
    if kind == "rmsprop":
        ckw["beta"] = ckw.pop("alpha")
        ckw["eps_inside_sqrt"] = False
    opt = cls(params, **ckw)
    states = {k: {} for k in params}
    for t in range(1, 31):
        grads = make_grads(params, rng, prefix="")
        opt.step(grads)
        for k in params:
            expected[k] = _oracle(kind, expected[k], grads[k], states[k], t, **kw)
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-12)


def test_sgd_first_step_stores_raw_gradient(backend):
    p = {"w": np.array([1.0, 2.0])}
    opt = fo.SGD(p, lr=0.5, momentum=0.5, dampening=0.75)
    opt.step({"w": np.array([2.0, -4.0])})
    assert_bitwise(opt.state["momentum_buffer"]["w"], np.array([2.0, -4.0]))
    assert_bitwise(p["w"], np.array([0.0, 4.0]))
    opt.step({"w": np.array([2.0, 4.0])})
    # later steps: b = 0.5 b + 0.25 g
    assert_bitwise(opt.state["momentum_buffer"]["w"], np.array([1.5, -1.0]))
    assert_bitwise(p["w"], np.array([-0.75, 4.5]))


def test_state_slots_follow_options():
    p = {"w": np.zeros(3)}
    assert fo.GD(p, 0.1).state == {}
    assert list(fo.SGD(p, 0.1).state) == []
    assert list(fo.SGD(p, 0.1, momentum=0.5).state) == ["momentum_buffer"]
    assert list(fo.RMSProp(p, centered=True, momentum=0.1).state) == [
        "square_avg", "grad_avg", "momentum_buffer"]
    assert list(fo.Adam(p, amsgrad=True).state) == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    assert list(fo.Adagrad(p).state) == ["sum"]
    f = {"w": np.asfortranarray(np.zeros((3, 2)))}
    assert fo.Adam(f).state["exp_avg"]["w"].flags.f_contiguous
    a = fo.Adagrad(f, initial_accumulator_value=0.25).state["sum"]["w"]
    assert a.flags.f_contiguous and a.dtype == np.float64
    assert_bitwise(a, np.full((3, 2), 0.25))
    assert_bitwise(fo.Adagrad(p).state["sum"]["w"], np.zeros(3))


# --- gradient keys ----------------------------------------------------------


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
def test_grad_key_styles_agree(backend, cls, kw):
    rng = np.random.default_rng(3)
    p0 = make_params(rng)
    grads = [make_grads(p0, rng) for _ in range(3)]
    pa, pb = copy_params(p0), copy_params(p0)
    a = run(cls, kw, pa, grads)
    b = run(cls, kw, pb, [{k[1:]: g for k, g in gd.items()} for gd in grads])
    assert_same_run(pa, a, pb, b)


def test_grad_key_errors_change_nothing(backend):
    rng = np.random.default_rng(4)
    params = make_params(rng)
    opt = fo.Adam(params, lr=0.01, max_grad_norm=1.0)
    opt.step(make_grads(params, rng))
    norm = opt.last_grad_norm
    before = snapshot(params, *opt.state.values())

    missing = make_grads(params, rng)
    del missing["dF"]
    with pytest.raises(KeyError, match=r"'F' or 'dF'"):
        opt.step(missing)
    both = make_grads(params, rng)
    both["W1"] = both["dW1"]
    with pytest.raises(ValueError, match=r"both 'W1' and 'dW1'"):
        opt.step(both)
    wrong = make_grads(params, rng)
    wrong["db1"] = wrong["db1"].astype(np.float32)
    with pytest.raises(TypeError, match=r"grads\['db1'\]"):
        opt.step(wrong)
    assert_unchanged(before, params, *opt.state.values())
    assert opt.t == 1 and opt.last_grad_norm == norm and opt.skipped_steps == 0


# --- learning rate ----------------------------------------------------------


def test_schedule_called_with_steps_taken(backend):
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.5 / (step + 1)

    p = {"w": np.array([1.0])}
    opt = fo.GD(p, lr=schedule)
    for _ in range(3):
        opt.step({"w": np.array([1.0])})
    assert calls == [0, 1, 2]
    assert_bitwise(p["w"], np.array(1.0 - 0.5 - 0.25 - 0.5 / 3).reshape(1))
    assert opt.lr is schedule


def test_lr_settable_between_steps(backend):
    p = {"w": np.array([1.0])}
    opt = fo.Momentum(p, lr=0.5, beta=0.0)
    opt.step({"dw": np.array([1.0])})
    opt.lr = 0.25
    opt.step({"dw": np.array([1.0])})
    assert opt.lr == 0.25 and opt.t == 2
    assert_bitwise(p["w"], np.array([0.25]))
    opt.lr = fo.InverseTimeDecay(1.0, 1, 1.0)
    opt.step({"dw": np.array([1.0])})  # schedule(2) = 1/3
    assert_bitwise(p["w"], np.array([0.25 - 1.0 / 3.0]))


@pytest.mark.parametrize("bad,exc", [(-0.1, ValueError), (float("nan"), ValueError),
                                     ("0.1", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_lr_rejected_and_kept(bad, exc):
    opt = fo.SGD({"w": np.zeros(2)}, lr=0.1)
    with pytest.raises(exc, match="lr"):
        opt.lr = bad
    assert opt.lr == 0.1
    with pytest.raises(exc, match="lr"):
        fo.Adam({"w": np.zeros(2)}, lr=bad)


def test_bad_schedule_value_changes_nothing(backend):
    p = {"w": np.array([1.0, 2.0])}
    opt = fo.Adam(p, lr=lambda step: 0.1 if step < 1 else -1.0, max_grad_norm=1.0)
    opt.step({"w": np.array([1.0, 1.0])})
    before = snapshot(p, *opt.state.values())
    norm = opt.last_grad_norm
    with pytest.raises(ValueError, match=r"lr schedule value at step 1 must be >= 0"):
        opt.step({"w": np.array([1.0, 1.0])})
    assert_unchanged(before, p, *opt.state.values())
    assert opt.t == 1 and opt.last_grad_norm == norm


# --- construction -----------------------------------------------------------

P = {"w": np.zeros(2)}

BAD_ARGS = [
    (fo.GD, dict(lr=0.1, max_grad_norm=-1.0), ValueError, "max_grad_norm must be >= 0"),
    (fo.GD, dict(lr=0.1, max_grad_norm=float("inf")), ValueError,
     "max_grad_norm must be finite"),
    (fo.GD, dict(lr=0.1, max_grad_norm="1"), TypeError, "max_grad_norm"),
    (fo.GD, dict(lr=0.1, skip_nonfinite=1), TypeError, "skip_nonfinite"),
    (fo.Momentum, dict(lr=0.1, beta=1.0), ValueError, r"beta must be in \[0, 1\)"),
    (fo.SGD, dict(lr=0.1, momentum=-0.1), ValueError, "momentum must be >= 0"),
    (fo.SGD, dict(lr=0.1, dampening=float("inf")), ValueError, "dampening must be finite"),
    (fo.SGD, dict(lr=0.1, nesterov=True), ValueError, "nesterov needs momentum > 0"),
    (fo.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "dampening == 0"),
    (fo.SGD, dict(lr=0.1, weight_decay=-1.0), ValueError, "weight_decay must be >= 0"),
    (fo.SGD, dict(lr=0.1, maximize="yes"), TypeError, "maximize must be True or False"),
    (fo.RMSProp, dict(beta=-0.1), ValueError, "beta must be in"),
    (fo.RMSProp, dict(eps=-1e-8), ValueError, "eps must be >= 0"),
    (fo.RMSProp, dict(centered=None), TypeError, "centered"),
    (fo.RMSProp, dict(eps_inside_sqrt=0), TypeError, "eps_inside_sqrt"),
    (fo.Adam, dict(betas=(0.9,)), TypeError, "betas must be a pair"),
    (fo.Adam, dict(betas=0.9), TypeError, "betas must be a pair"),
    (fo.Adam, dict(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0, 1\)"),
    (fo.Adam, dict(betas=(-0.1, 0.9)), ValueError, r"betas\[0\]"),
    (fo.AdamW, dict(weight_decay=-0.01), ValueError, "weight_decay must be >= 0"),
    (fo.AdamW, dict(amsgrad="no"), TypeError, "amsgrad"),
    (fo.Adagrad, dict(lr_decay=-0.1), ValueError, "lr_decay must be >= 0"),
    (fo.Adagrad, dict(lr_decay="0.1"), TypeError, "lr_decay must be a real number"),
    (fo.Adagrad, dict(weight_decay=float("nan")), ValueError, "weight_decay must be finite"),
    (fo.Adagrad, dict(initial_accumulator_value=-1.0), ValueError,
     "initial_accumulator_value must be >= 0"),
    (fo.Adagrad, dict(initial_accumulator_value=None), TypeError, "initial_accumulator_value"),
    (fo.Adagrad, dict(eps=-1e-10), ValueError, "eps must be >= 0"),
    (fo.Adagrad, dict(maximize=1), TypeError, "maximize must be True or False"),
    (fo.Adagrad, dict(lr=-0.01), ValueError, "lr must be >= 0"),
]


@pytest.mark.parametrize("cls,kw,exc,match", BAD_ARGS)
def test_bad_hyperparameters(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls(P, **kw)


@pytest.mark.parametrize("params,exc,match", [
    ([np.zeros(2)], TypeError, "parameters must be a dict"),
    ({}, ValueError, "parameters is empty"),
    ({1: np.zeros(2)}, TypeError, "parameter names must be str"),
    ({"w": np.zeros(2, dtype=np.int64)}, TypeError, r"parameters\['w'\] has dtype int64"),
    ({"w": np.zeros((4, 4))[:, ::2]}, ValueError, r"parameters\['w'\] is not contiguous"),
])
def test_bad_parameters(params, exc, match):
    with pytest.raises(exc, match=match):
        fo.Adam(params)


def test_hyperparameters_are_read_only():
    opt = fo.AdamW(P, betas=(0.8, 0.9), max_grad_norm=2.0)
    assert opt.betas == (0.8, 0.9) and opt.weight_decay == 0.01 and opt.max_grad_norm == 2.0
    with pytest.raises(AttributeError):
        opt.weight_decay = 0.0
    with pytest.raises(AttributeError):
        opt.t = 3
    assert "AdamW" in repr(opt)


@pytest.mark.parametrize("name", sorted(fo.OPTIMIZERS))
def test_repr_spells_the_constructors_keywords(name):
    """``repr`` names every hyperparameter as the constructor takes it
    (``betas=(0.8, 0.9)``, not the checkpoint's ``beta1=0.8``)."""
    cls = fo.OPTIMIZERS[name]
    opt = cls({"w": np.ones(3)}, lr=0.5)
    text = repr(opt)
    for h in cls.hyper:
        assert f"{h.name}={getattr(opt, h.name)!r}" in text, h.name
    assert "beta1=" not in text and "lr=0.5" in text


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
def test_get_config_rebuilds_the_same_optimizer(cls, kw):
    """type(opt)(params, **opt.get_config()) has every setting of opt, the
    options (clipping, skipping, reduced-precision state) included, and
    steps with the same bits."""
    rng = np.random.default_rng(4)
    p1 = {"w": rng.standard_normal((4, 3)).astype(np.float32)}
    p2 = snapshot(p1)[0]
    opts = dict(max_grad_norm=0.5, skip_nonfinite=True)
    if cls in (fo.Adam, fo.AdamW, fo.Lion) and not kw.get("amsgrad"):
        opts.update(state_dtype="bfloat16", state_rounding="stochastic", state_seed=7)
    a = cls(p1, **kw, **opts)
    config = a.get_config()
    assert set(config) == set(inspect.signature(cls).parameters) - {"parameters"}
    b = cls(p2, **config)
    assert b.get_config() == config and repr(b) == repr(a)
    for _ in range(3):
        g = {"w": rng.standard_normal((4, 3)).astype(np.float32)}
        assert a.step(g) == b.step(g)
    assert_bitwise(p1["w"], p2["w"])
    assert repr(cls({"w": np.ones(2)}, lr=0.1)).startswith(f"{cls.__name__}(1 parameter, ")


def test_step_counters_are_read_only_properties():
    params = {"w": np.ones(3)}
    opt = fo.Adam(params, max_grad_norm=1.0, skip_nonfinite=True)
    assert opt.last_grad_norm is None and opt.skipped_steps == 0
    opt.step({"w": np.full(3, 2.0)})
    assert opt.last_grad_norm == math.sqrt(12.0)
    assert opt.step({"w": np.array([np.nan, 0.0, 0.0])}) is False
    assert opt.skipped_steps == 1
    for name in ("last_grad_norm", "skipped_steps"):
        with pytest.raises(AttributeError):
            setattr(opt, name, 3)
        assert getattr(type(opt), name).__doc__  # documented in help()
    assert opt.skipped_steps == 1
    restored = fo.Adam({"w": np.ones(3)}, max_grad_norm=1.0, skip_nonfinite=True)
    restored.load_state_dict(opt.state_dict())
    assert restored.skipped_steps == 1 and restored.last_grad_norm is None


def test_the_callers_dict_is_not_the_optimizers(backend):
    # As torch keeps its own list of tensors: keys added to or removed from
    # the caller's dict afterwards (or from opt.parameters) neither break the
    # step nor change what it steps; the arrays stay shared and stepped.
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal(50), "b": rng.standard_normal(7)}
    grads = {"a": rng.standard_normal(50), "b": rng.standard_normal(7)}
    mine, ref = fo.Adam(params, lr=0.1), fo.Adam({k: p.copy() for k, p in params.items()}, lr=0.1)
    a, b = params["a"], params["b"]
    params["c"] = np.zeros(3)
    del params["b"]
    params["a"] = a.copy()
    mine.parameters["d"] = np.zeros(2)
    for opt in (mine, ref):
        opt.step(grads)
    assert list(mine.parameters) == ["a", "b"]
    assert mine.parameters["a"] is a and mine.parameters["b"] is b
    for k in ("a", "b"):
        assert_bitwise(mine.parameters[k], ref.parameters[k])
    assert not params["c"].any() and not np.array_equal(params["a"], a)
