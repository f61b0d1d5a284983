"""Optimizer classes: semantics, keys, learning rates, clipping, bad steps,
checkpoints.  Every stepping test runs on every available backend."""

import math
import pathlib
import runpy

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import _reference, _validate
from helpers import assert_bitwise, assert_unchanged, snapshot

DTYPES = [np.float32, np.float64]

CONFIGS = [
    (fo.GD, dict(lr=0.1)),
    (fo.Momentum, dict(lr=0.1, beta=0.8)),
    (fo.SGD, dict(lr=0.05)),
    (fo.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (fo.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (fo.RMSProp, dict()),
    (fo.RMSProp, dict(lr=0.01, beta=0.99, eps_inside_sqrt=False, centered=True,
                      momentum=0.9, weight_decay=0.01, maximize=True)),
    (fo.Adam, dict(lr=0.01)),
    (fo.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    (fo.AdamW, dict(lr=0.01, amsgrad=True)),
    (fo.Adagrad, dict(lr=0.1)),
    (fo.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2,
                      eps=1e-6, maximize=True)),
    (fo.Adamax, dict(lr=0.01)),
    (fo.Adamax, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, maximize=True)),
    (fo.NAdam, dict(lr=0.01)),
    (fo.NAdam, dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01,
                    decoupled_weight_decay=True, maximize=True)),
    (fo.RAdam, dict(lr=0.01)),  # rectified from step 6 on: resumed across the switch
    (fo.RAdam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1,
                    decoupled_weight_decay=True, maximize=True)),
    (fo.Adadelta, dict()),
    (fo.Adadelta, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.01, maximize=True)),
]
CONFIG_IDS = [f"{cls.__name__}-{i}" for i, (cls, _kw) in enumerate(CONFIGS)]


def make_params(rng, dtype=np.float64, big=False):
    p = {
        "W1": rng.standard_normal((4, 3)).astype(dtype),
        "b1": rng.standard_normal((4, 1)).astype(dtype),
        "F": np.asfortranarray(rng.standard_normal((3, 5)).astype(dtype)),
        "s": np.array(rng.standard_normal(), dtype=dtype),
        "empty": np.zeros((0, 2), dtype=dtype),
    }
    if big:
        p["big"] = rng.standard_normal((300, 301)).astype(dtype)
    return p


def make_grads(params, rng, prefix="d"):
    return {prefix + k: rng.standard_normal(a.shape).astype(a.dtype)
            for k, a in params.items()}


def copy_params(params):
    return {k: a.copy(order="K") for k, a in params.items()}


def run(cls, kw, params, grad_list, **extra):
    opt = cls(params, **kw, **extra)
    for g in grad_list:
        opt.step(g)
    return opt


def assert_same_run(a_params, a_opt, b_params, b_opt):
    for k in a_params:
        assert_bitwise(a_params[k], b_params[k])
    assert a_opt.state.keys() == b_opt.state.keys()
    for label, d in a_opt.state.items():
        for k in d:
            assert_bitwise(d[k], b_opt.state[label][k])
    assert a_opt.t == b_opt.t


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
    (fo.GD, dict(lr=0.1, max_grad_norm=0.0), ValueError, "max_grad_norm must be > 0"),
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
    p = {"w": np.zeros(3)}
    opt = fo.GD(p, lr=0.1, max_grad_norm=1.0)
    assert opt.step({"w": np.array([np.nan, 1.0, 2.0])}) is True
    assert np.isnan(p["w"][0]) and opt.t == 1
    # the step was not clipped (the norm is not finite): other entries move by lr * g
    assert_bitwise(p["w"][1:], np.array([-0.1, -0.2]))


# --- checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("k", [0, 5])
@pytest.mark.parametrize("via_file", [False, True], ids=["dict", "npz"])
@pytest.mark.parametrize("schedule", [False, True], ids=["float", "schedule"])
def test_resume_is_bit_identical(backend, tmp_path, cls, kw, k, via_file, schedule):
    rng = np.random.default_rng(9)
    p0 = make_params(rng, np.float32)
    grads = [make_grads(p0, rng) for _ in range(12)]
    grads[7]["dW1"][0, 0] = np.nan  # one skipped step on each side of k
    grads[2]["ds"][()] = np.inf
    if schedule:
        kw = dict(kw, lr=fo.CosineDecay(0.05, 10, alpha=0.1, warmup_target=0.1,
                                       warmup_steps=3))
    extra = dict(max_grad_norm=3.0, skip_nonfinite=True)

    pa = copy_params(p0)
    a = run(cls, kw, pa, grads, **extra)

    pb = copy_params(p0)
    b = run(cls, kw, pb, grads[:k], **extra)
    sd = b.state_dict()
    saved_params = copy_params(pb)
    if via_file:
        np.savez(tmp_path / "opt.npz", **sd)
        np.savez(tmp_path / "params.npz", **pb)
        sd = np.load(tmp_path / "opt.npz", allow_pickle=False)
        saved_params = dict(np.load(tmp_path / "params.npz", allow_pickle=False))
    b.step(grads[k])  # the checkpoint is a snapshot: later steps do not change it

    pc = {name: np.array(saved_params[name], order="K") for name in p0}
    pc["F"] = np.asfortranarray(pc["F"])
    c = cls(pc, **dict(kw, lr=0.123 if not schedule else kw["lr"]), **extra)
    c.load_state_dict(sd)
    assert (c.lr == a.lr) if not schedule else (c.lr is kw["lr"])
    for g in grads[k:]:
        c.step(g)
    assert_same_run(pa, a, pc, c)
    assert c.skipped_steps == a.skipped_steps == 2


def test_state_dict_contents():
    p = {"W1": np.ones((2, 3), np.float32), "b/1": np.ones(2, np.float32)}
    opt = fo.Adam(p, lr=0.01, amsgrad=True, max_grad_norm=1.0)
    opt.step({"W1": np.ones((2, 3), np.float32), "b/1": np.ones(2, np.float32)})
    sd = opt.state_dict()
    assert sd["optimizer"] == "Adam" and sd["t"] == 1 and sd["skipped_steps"] == 0
    assert sd["lr"] == 0.01 and sd["hp/beta1"] == 0.9 and sd["hp/amsgrad"] is True
    assert sd["hp/max_grad_norm"] == 1.0 and sd["hp/skip_nonfinite"] is False
    assert sd["state/max_exp_avg_sq/b/1"].dtype == np.float32
    assert sum(key.startswith("state/") for key in sd) == 6
    for v in sd.values():
        assert isinstance(v, (np.ndarray, str, bool, int, float))
    sd["state/exp_avg/W1"][...] = 7.0
    assert not np.any(opt.state["exp_avg"]["W1"] == 7.0)
    assert "lr" not in fo.GD(p, lr=fo.ExponentialDecay(0.1, 1, 0.5)).state_dict()
    assert "hp/max_grad_norm" not in fo.GD(p, lr=0.1).state_dict()


def _tamper(sd, how):
    sd = dict(sd)
    if how == "missing":
        del sd["state/exp_avg_sq/b1"]
    elif how == "extra":
        sd["state/exp_avg/zzz"] = np.zeros(2)
    elif how == "shape":
        sd["state/exp_avg/W1"] = np.zeros((3, 4))
    elif how == "dtype":
        sd["state/exp_avg/W1"] = sd["state/exp_avg/W1"].astype(np.float32)
    elif how == "not_array":
        sd["state/exp_avg/W1"] = 1.0
    elif how == "kind":
        sd["optimizer"] = "AdamW"
    elif how == "hp":
        sd["hp/beta2"] = 0.99
    elif how == "flag":
        sd["hp/amsgrad"] = False
    elif how == "no_clip":
        del sd["hp/max_grad_norm"]
    elif how == "t_negative":
        sd["t"] = -1
    elif how == "t_float":
        sd["t"] = np.float64(3.0)
    elif how == "lr":
        sd["lr"] = -0.5
    elif how == "not_mapping":
        sd = list(sd.items())
    return sd


@pytest.mark.parametrize("how,exc,match", [
    ("missing", KeyError, r"state_dict has no 'state/exp_avg_sq/b1'"),
    ("extra", ValueError, r"unexpected key 'state/exp_avg/zzz'"),
    ("shape", ValueError, r"state_dict\['state/exp_avg/W1'\] has shape \(3, 4\)"),
    ("dtype", TypeError, r"has dtype float32 but the parameter has float64"),
    ("not_array", TypeError, r"must be a numpy.ndarray"),
    ("kind", ValueError, r"state_dict is from 'AdamW', not 'Adam'"),
    ("hp", ValueError, r"beta2 is 0.99 in state_dict but 0.999 here"),
    ("flag", ValueError, r"amsgrad is False in state_dict but True here"),
    ("no_clip", KeyError, r"state_dict has no 'hp/max_grad_norm'"),
    ("t_negative", ValueError, r"state_dict\['t'\] must be >= 0"),
    ("t_float", TypeError, r"state_dict\['t'\] must be an integer"),
    ("lr", ValueError, r"lr'\] must be >= 0"),
    ("not_mapping", TypeError, r"state_dict must be a mapping"),
])
def test_load_state_dict_validates_first(backend, how, exc, match):
    rng = np.random.default_rng(10)
    src = fo.Adam(make_params(rng), lr=0.01, amsgrad=True, max_grad_norm=5.0)
    for _ in range(3):
        src.step(make_grads(src.parameters, rng))
    params = make_params(rng)
    opt = fo.Adam(params, lr=0.02, amsgrad=True, max_grad_norm=5.0)
    opt.step(make_grads(params, rng))
    before = snapshot(params, *opt.state.values())
    norm = opt.last_grad_norm
    with pytest.raises(exc, match=match):
        opt.load_state_dict(_tamper(src.state_dict(), how))
    assert_unchanged(before, params, *opt.state.values())
    assert (opt.t, opt.skipped_steps, opt.lr, opt.last_grad_norm) == (1, 0, 0.02, norm)


def test_trainer_example_runs(backend, capsys):
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "trainer.py"
    runpy.run_path(str(path), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    first, last = lines[0].split(), lines[-2].split()
    loss = {w: float(v) for w, v in zip(first[::2], first[1::2]) if w == "loss"}
    final = {w: float(v) for w, v in zip(last[::2], last[1::2]) if w in ("loss", "acc")}
    assert final["loss"] < loss["loss"] / 10 and final["acc"] > 0.95
    assert lines[-1].startswith(
        f"restored at step 320, skipped 0, 2 groups, backend {backend.split('-')[0]}")


def test_lr_restore_rules():
    p = {"w": np.ones(2)}
    schedule = fo.PiecewiseConstantDecay([3], [0.1, 0.01])
    saved_float = fo.SGD(p, lr=0.5).state_dict()
    saved_schedule = fo.SGD(p, lr=schedule).state_dict()
    opt = fo.SGD({"w": np.ones(2)}, lr=schedule)
    opt.load_state_dict(saved_float)  # a saved float replaces the schedule
    assert opt.lr == 0.5
    opt = fo.SGD({"w": np.ones(2)}, lr=0.25)
    opt.load_state_dict(saved_schedule)  # nothing saved: the current lr stays
    assert opt.lr == 0.25


# --- Adagrad ------------------------------------------------------------------


def test_adagrad_lr_decay_and_initial_accumulator(backend):
    """lr_t = lr / (1 + (t - 1) * lr_decay); s starts at initial_accumulator_value."""
    p = {"w": np.array([1.0, -2.0])}
    opt = fo.Adagrad(p, lr=1.0, lr_decay=1.0, initial_accumulator_value=5.0, eps=0.0)
    assert opt.lr_decay == 1.0 and opt.initial_accumulator_value == 5.0
    g = np.array([2.0, -1.0])
    want_p, want_s = p["w"].copy(), np.full(2, 5.0)
    for t in range(1, 4):
        opt.step({"w": g})
        lr_t = 1.0 / (1.0 + (t - 1) * 1.0)
        want_s = want_s + g * g
        want_p = want_p - lr_t * (g / (np.sqrt(want_s) + 0.0))
        assert_bitwise(opt.state["sum"]["w"], want_s)
        assert_bitwise(p["w"], want_p)
    assert_bitwise(opt.state["sum"]["w"], np.array([17.0, 8.0]))
    # step 1 moved by exactly lr * g / sqrt(5 + g^2): 2 / 3 and -1 / sqrt(6)
    q = {"w": np.array([1.0, -2.0])}
    fo.Adagrad(q, lr=1.0, initial_accumulator_value=5.0, eps=0.0).step({"w": g})
    assert_bitwise(q["w"], np.array([1.0 - 2.0 / 3.0, -2.0 - (-1.0 / np.sqrt(6.0))]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_lr_decay_with_schedule_uses_the_step_count(backend, dtype):
    """The decay divides the scheduled rate of each step."""
    rng = np.random.default_rng(12)
    p0 = make_params(rng, dtype)
    grads = [make_grads(p0, rng, prefix="") for _ in range(4)]
    schedule = fo.PiecewiseConstantDecay([2], [0.5, 0.1])
    pa, pb = copy_params(p0), copy_params(p0)
    a = fo.Adagrad(pa, lr=schedule, lr_decay=0.25)
    b = fo.Adagrad(pb, lr=0.5, lr_decay=0.25)
    for t, g in enumerate(grads, start=1):
        a.step(g)
        # the same rate, given as a float: schedule(t - 1), decayed by the step count
        b.lr = schedule(t - 1)
        b.step(g)
    assert_same_run(pa, a, pb, b)


def test_adagrad_state_dict_round_trip(backend, tmp_path):
    rng = np.random.default_rng(13)
    p0 = make_params(rng, np.float32)
    grads = [make_grads(p0, rng) for _ in range(6)]
    kw = dict(lr=0.2, lr_decay=0.1, weight_decay=0.01, initial_accumulator_value=0.4, eps=1e-6)
    pa = copy_params(p0)
    a = run(fo.Adagrad, kw, pa, grads)
    pb = copy_params(p0)
    b = run(fo.Adagrad, kw, pb, grads[:3])
    sd = b.state_dict()
    assert sd["optimizer"] == "Adagrad" and sd["t"] == 3 and sd["lr"] == 0.2
    assert sd["hp/lr_decay"] == 0.1 and sd["hp/initial_accumulator_value"] == 0.4
    assert sd["hp/eps"] == 1e-6 and sd["hp/weight_decay"] == 0.01
    assert sd["hp/maximize"] is False
    assert sorted(k for k in sd if k.startswith("state/")) == sorted(
        f"state/sum/{name}" for name in p0)
    assert sd["state/sum/W1"].dtype == np.float32
    np.savez(tmp_path / "opt.npz", **sd)
    pc = copy_params(pb)
    c = fo.Adagrad(pc, **kw)
    assert_bitwise(c.state["sum"]["W1"], np.full((4, 3), 0.4, np.float32))
    c.load_state_dict(np.load(tmp_path / "opt.npz", allow_pickle=False))
    for g in grads[3:]:
        c.step(g)
    assert_same_run(pa, a, pc, c)


@pytest.mark.parametrize("name,value,saved", [
    ("initial_accumulator_value", 0.0, 0.4),
    ("lr_decay", 0.2, 0.1),
    ("eps", 1e-10, 1e-6),
])
def test_adagrad_checkpoint_hyperparameters_must_match(name, value, saved):
    kw = dict(lr=0.2, lr_decay=0.1, initial_accumulator_value=0.4, eps=1e-6)
    sd = fo.Adagrad({"w": np.ones(2)}, **kw).state_dict()
    params = {"w": np.ones(2)}
    opt = fo.Adagrad(params, **dict(kw, **{name: value}))
    before = snapshot(params, *opt.state.values())
    msg = f"{name} is {saved!r} in state_dict but {value!r} here"
    with pytest.raises(ValueError, match=msg):
        opt.load_state_dict(sd)
    assert_unchanged(before, params, *opt.state.values())
    assert opt.t == 0


def test_step_scaled_is_step_after_the_callers_norm(backend):
    # The hook of fusedoptim.distributed: the caller decides clipping and skipping.
    rng = np.random.default_rng(3)
    pa = {"w": rng.standard_normal(5), "b": rng.standard_normal(3)}
    pb = {k: v.copy() for k, v in pa.items()}
    a = fo.AdamW(pa, lr=0.01, max_grad_norm=0.5, skip_nonfinite=True)
    b = fo.AdamW(pb, lr=0.01, max_grad_norm=0.5, skip_nonfinite=True)
    g = {"w": rng.standard_normal(5), "b": rng.standard_normal(3)}
    assert a.step(g)
    norm = a.last_grad_norm
    assert b.step_scaled(g, 0.5 / (norm + 1e-6), norm)
    assert (b.t, b.last_grad_norm) == (1, norm)
    for k in pa:
        assert pa[k].tobytes() == pb[k].tobytes()
    before = {k: v.copy() for k, v in pb.items()}
    assert b.step_scaled(g, 1.0, float("nan"), skip=True) is False
    assert (b.t, b.skipped_steps) == (1, 1) and np.isnan(b.last_grad_norm)
    for k in pb:
        assert pb[k].tobytes() == before[k].tobytes()
