"""Lion and LAMB against their formulas written out here in plain NumPy
(independent of ``fusedoptim.families``: float64 norms by
``np.linalg.norm``, no block order), against optax where it is installed,
LAMB's trust-ratio edge cases, and its norm phase's independence of the
thread count on tensors of many blocks."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import _reference as R
from fusedoptim import _validate as V
from fusedoptim.backend import active
from fusedoptim.families import FAMILIES
from helpers import assert_bitwise

STEPS = 100
SHAPES = {"w": (37, 29), "b": (29,), "big": (3 * 4096 + 123,), "s": ()}


def _model(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
    grads = [{k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
             for _ in range(STEPS)]
    return params, grads


# --- the formulas, written out -------------------------------------------------------

def lion_formula(params, grads, lr, b1, b2, wd, maximize=False):
    """Chen et al. 2023, Program 1 (optax.lion): c = b1*m + (1-b1)*g;
    p -= lr * (sign(c) + wd*p); m = b2*m + (1-b2)*g."""
    p = {k: a.copy() for k, a in params.items()}
    m = {k: np.zeros_like(a) for k, a in params.items()}
    T = next(iter(params.values())).dtype.type
    for g in grads:
        for k in p:
            gk = -g[k] if maximize else g[k]
            c = T(b1) * m[k] + T(1 - b1) * gk
            p[k] = p[k] - T(lr) * (np.sign(c) + T(wd) * p[k])
            m[k] = T(b2) * m[k] + T(1 - b2) * gk
    return p, m


def lamb_formula(params, grads, lr, b1, b2, eps, wd, maximize=False):
    """optax.lamb: scale_by_adam, add_decayed_weights, scale_by_trust_ratio,
    scale(-lr), in float64 with np.linalg.norm."""
    p = {k: a.astype(np.float64) for k, a in params.items()}
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for t, g in enumerate(grads, start=1):
        for k in p:
            gk = -g[k].astype(np.float64) if maximize else g[k].astype(np.float64)
            m[k] = (1 - b1) * gk + b1 * m[k]
            v[k] = (1 - b2) * gk ** 2 + b2 * v[k]
            mhat = m[k] / (1 - b1 ** t)
            vhat = v[k] / (1 - b2 ** t)
            u = mhat / (np.sqrt(vhat) + eps) + wd * p[k]
            pn, un = np.linalg.norm(p[k]), np.linalg.norm(u)
            ratio = 1.0 if pn == 0 or un == 0 else pn / un
            p[k] = p[k] - lr * (u * ratio)
    return p, m, v


def _run(cls, params, grads, **hp):
    params = {k: a.copy() for k, a in params.items()}
    opt = cls(params, **hp)
    for g in grads:
        assert opt.step(g)
    return params, opt.state


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_matches_its_formula_float64(backend, threads, maximize, wd):
    params, grads = _model(np.float64)
    got, state = _run(fo.Lion, params, grads, lr=3e-3, betas=(0.9, 0.99), weight_decay=wd,
                      maximize=maximize)
    want_p, want_m = lion_formula(params, grads, 3e-3, 0.9, 0.99, wd, maximize)
    for k in params:
        np.testing.assert_allclose(got[k], want_p[k], rtol=1e-12, atol=1e-14, err_msg=k)
        np.testing.assert_allclose(state["exp_avg"][k], want_m[k], rtol=1e-12, atol=1e-14)


def test_lion_float32_is_the_formula_in_float32(backend, threads):
    """float32 arithmetic throughout, as the formula computes it in float32."""
    params, grads = _model(np.float32, seed=1)
    got, state = _run(fo.Lion, params, grads, lr=1e-3, weight_decay=0.05)
    want_p, want_m = lion_formula(params, grads, 1e-3, 0.9, 0.99, 0.05)
    for k in params:
        assert_bitwise(got[k], want_p[k])
        assert_bitwise(state["exp_avg"][k], want_m[k])


def test_lion_sign_of_zero_is_zero(backend):
    """sign(0) = 0: a zero gradient on a zero momentum leaves p (without
    decay) exactly as it was, -0.0 included; NaN passes through."""
    p = {"w": np.array([1.5, -0.0, 0.0, 2.0], np.float32)}
    opt = fo.Lion(p, lr=0.5)
    opt.step({"w": np.array([0.0, -0.0, 0.0, np.nan], np.float32)})
    assert p["w"][:3].tobytes() == np.array([1.5, -0.0, 0.0], np.float32).tobytes()
    assert np.isnan(p["w"][3])


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_lamb_matches_its_formula_float64(backend, threads, maximize, wd):
    params, grads = _model(np.float64, seed=2)
    got, state = _run(fo.LAMB, params, grads, lr=1e-2, betas=(0.9, 0.999), eps=1e-6,
                      weight_decay=wd, maximize=maximize)
    want_p, want_m, want_v = lamb_formula(params, grads, 1e-2, 0.9, 0.999, 1e-6, wd,
                                          maximize)
    for k in params:
        np.testing.assert_allclose(got[k], want_p[k], rtol=1e-10, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(state["exp_avg"][k], want_m[k], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(state["exp_avg_sq"][k], want_v[k], rtol=1e-10, atol=1e-14)


def test_lamb_float32_follows_the_formula(backend, threads):
    params, grads = _model(np.float32, seed=3)
    got, _state = _run(fo.LAMB, params, grads, lr=1e-2, weight_decay=0.01)
    want_p, _m, _v = lamb_formula(params, grads, 1e-2, 0.9, 0.999, 1e-6, 0.01)
    for k in params:
        np.testing.assert_allclose(got[k], want_p[k], rtol=2e-5, atol=2e-5, err_msg=k)


# --- the trust ratio's edge cases ------------------------------------------------------

def test_lamb_zero_parameter_takes_ratio_one(backend, threads):
    """||p|| = 0: the ratio is 1, so the step is -lr times the Adam
    direction (on step 1, m/c1 / (sqrt(v/c2) + eps) = g / (|g| + eps))."""
    g = np.array([0.5, -2.0, 0.0, 3.0])
    p = {"z": np.zeros(4), "o": np.ones(4)}
    fo.LAMB(p, lr=0.1).step({"z": g, "o": g})
    np.testing.assert_allclose(p["z"], -0.1 * g / (np.abs(g) + 1e-6), rtol=1e-15)
    # The other tensor's ratio is its own: ||1|| / ||u||.
    u = g / (np.abs(g) + 1e-6)
    np.testing.assert_allclose(p["o"], 1.0 - 0.1 * 2.0 / np.linalg.norm(u) * u, rtol=1e-14)


def test_lamb_zero_update_takes_ratio_one(backend, threads):
    """||u|| = 0 (zero gradient, zero moments, no decay): ratio 1 and the
    parameter is unchanged; with decay u = wd*p and the ratio is 1/wd, so
    the step is exactly -lr*p."""
    p = {"w": np.arange(1.0, 6.0), "e": np.zeros(0), "s": np.array(0.0)}
    g = {k: np.zeros_like(a) for k, a in p.items()}
    before = {k: a.copy() for k, a in p.items()}
    opt = fo.LAMB(p, lr=0.1)
    opt.step(g)
    for k in p:
        assert_bitwise(p[k], before[k])
    q = {"w": np.arange(1.0, 6.0)}
    fo.LAMB(q, lr=0.1, weight_decay=0.5).step({"w": np.zeros(5)})
    np.testing.assert_allclose(q["w"], np.arange(1.0, 6.0) * 0.9, rtol=1e-15)


def test_lamb_all_zero_keeps_zero(backend):
    p = {"w": np.zeros((3, 4), np.float32)}
    fo.LAMB(p, lr=0.1, weight_decay=0.1).step({"w": np.zeros((3, 4), np.float32)})
    assert not p["w"].any()


# --- the norm phase: thread count, block layout ---------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lamb_norms_do_not_depend_on_threads_or_backend(backend, low_threshold, dtype):
    """Tensors of 1 to 12 norm blocks, with short last blocks, one above
    ``PARALLEL_MIN_ELEMENTS`` so that every backend runs its parallel path;
    at 1 and 2 threads, every backend gives the reference's bits."""
    rng = np.random.default_rng(5)
    shapes = [(4096 * 12 + 7,), (4095,), (3, 4096), (4097,), (1,), (0,), (8193, 2)]
    params = {f"w{i}": np.asarray(rng.standard_normal(s), dtype) for i, s in enumerate(shapes)}
    grads = [{k: np.asarray(rng.standard_normal(a.shape), dtype) for k, a in params.items()}
             for _ in range(3)]
    kw = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01, maximize=False,
              gscale=1.0)

    def run(fn):
        p = {k: a.copy() for k, a in params.items()}
        st = tuple((s, {k: np.zeros_like(a) for k, a in p.items()}) for s in ("m", "v"))
        for t, g in enumerate(grads, start=1):
            fn(p, g, st, V.NAMED, bc1=1 - 0.9 ** t, bc2=1 - 0.999 ** t, **kw)
        return p, st

    want_p, want_st = run(R.lamb)
    for n in (1, 2):
        fo.set_num_threads(n)
        try:
            got_p, got_st = run(active().lamb)
        finally:
            fo.set_num_threads(1)
        for k in params:
            assert_bitwise(got_p[k], want_p[k])
            for (_s, gd), (_s2, wd) in zip(got_st, want_st):
                assert_bitwise(gd[k], wd[k])


def test_lamb_accounts_for_its_second_pass():
    fam = FAMILIES["lamb"]
    kw = {"maximize": False}
    assert fam.arrays_moved(kw) == 10  # p, g, m, v read; m, v written; p, m, v read; p written
    assert FAMILIES["lion"].arrays_moved(kw) == 5  # 20 bytes per float32 element


def test_copy_yardstick_two_read_only_arrays():
    yardstick = pytest.importorskip("fusedoptim._ext._yardstick")
    x = np.arange(5.0)
    a, b = np.full(5, 0.5), np.full(5, 2.0)
    yardstick.copy_like([x], [a, b])
    np.testing.assert_array_equal(x, np.arange(5.0) + 2.5)
    with pytest.raises(ValueError, match="read-only"):
        yardstick.copy_like([x], [a, b, b])


# --- optax, where installed ------------------------------------------------------------

def _optax_run(tx, params, grads):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    p = {k: jnp.asarray(a) for k, a in params.items()}
    state = tx.init(p)
    optax = pytest.importorskip("optax")
    for g in grads:
        upd, state = tx.update({k: jnp.asarray(a) for k, a in g.items()}, state, p)
        p = optax.apply_updates(p, upd)
    return {k: np.asarray(a) for k, a in p.items()}


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_matches_optax(name):
    optax = pytest.importorskip("optax")
    params, grads = _model(np.float32, seed=7)
    grads = grads[:50]
    if name == "Lion":
        tx = optax.lion(1e-3, b1=0.9, b2=0.99, weight_decay=0.01)
        got, _ = _run(fo.Lion, params, grads, lr=1e-3, weight_decay=0.01)
    else:
        tx = optax.lamb(1e-2, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01)
        got, _ = _run(fo.LAMB, params, grads, lr=1e-2, weight_decay=0.01)
    want = _optax_run(tx, params, grads)
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
