"""The course-compatible functional API: values, in-place semantics, keys.

Every test that steps runs once per available backend (the ``backend``
fixture), so the same expectations hold for cython, numba and numpy.
"""

import math

import numpy as np
import pytest

import fusedoptim as fo
from helpers import assert_bitwise

DTYPES = [np.float32, np.float64]


def course_params(dtype=np.float64):
    # Exactly representable values keep the hand computations exact.
    return {
        "W1": np.array([[1.0, -2.0], [0.5, 4.0]], dtype=dtype),
        "b1": np.array([[0.0], [1.0]], dtype=dtype),
    }


def course_grads(dtype=np.float64):
    return {
        "dW1": np.array([[0.5, 1.0], [-2.0, 0.25]], dtype=dtype),
        "db1": np.array([[4.0], [-1.0]], dtype=dtype),
        "dZ1": np.ones(3),  # caches that backprop leaves in grads are ignored
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_gd_hand_values(backend, dtype):
    p, g = course_params(dtype), course_grads(dtype)
    out = fo.update_parameters_with_gd(p, g, learning_rate=0.5)
    assert out is p
    assert_bitwise(p["W1"], np.array([[0.75, -2.5], [1.5, 3.875]], dtype=dtype))
    assert_bitwise(p["b1"], np.array([[-2.0], [1.5]], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_momentum_hand_values(backend, dtype):
    p, g = course_params(dtype), course_grads(dtype)
    v = fo.initialize_velocity(p)
    assert set(v) == {"dW1", "db1"} and v["dW1"].dtype == dtype
    out_p, out_v = fo.update_parameters_with_momentum(p, g, v, beta=0.5, learning_rate=0.5)
    assert out_p is p and out_v is v
    # v = 0.5 * 0 + 0.5 * g;  p = p - 0.5 * v
    assert_bitwise(v["dW1"], np.array([[0.25, 0.5], [-1.0, 0.125]], dtype=dtype))
    assert_bitwise(p["W1"], np.array([[0.875, -2.25], [1.0, 3.9375]], dtype=dtype))
    fo.update_parameters_with_momentum(p, g, v, beta=0.5, learning_rate=0.5)
    # v = 0.5 * v + 0.5 * g = 0.75 g
    assert_bitwise(v["db1"], np.array([[3.0], [-0.75]], dtype=dtype))
    assert_bitwise(p["b1"], np.array([[-1.0 - 1.5], [1.25 + 0.375]], dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_divides_by_root(backend, dtype):
    p = {"w": np.array([1.0, 2.0, -1.0], dtype=dtype)}
    g = {"dw": np.array([2.0, -4.0, 0.0], dtype=dtype)}
    s = fo.initialize_rmsprop(p)
    with np.errstate(invalid="ignore"):
        fo.update_parameters_with_rmsprop(p, g, s, beta=0.75, learning_rate=0.5, epsilon=0.0)
    # s = 0.25 g^2 = [1, 4, 0];  p = p - 0.5 g / sqrt(s) = p - 0.5 * sign(g) ... 0/0
    assert_bitwise(s["dw"], np.array([1.0, 4.0, 0.0], dtype=dtype))
    assert p["w"][0] == 0.0 and p["w"][1] == 3.0
    assert math.isnan(p["w"][2])  # 0 / sqrt(0 + 0): the user asked for epsilon=0


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_epsilon_inside_root(backend, dtype):
    p = {"w": np.array([0.0], dtype=dtype)}
    g = {"dw": np.array([0.0], dtype=dtype)}
    s = {"dw": np.array([0.0], dtype=dtype)}
    g["dw"][0] = 1.0
    fo.update_parameters_with_rmsprop(p, g, s, beta=0.0, learning_rate=1.0, epsilon=3.0)
    # s = g^2 = 1;  p = 0 - 1 * 1 / sqrt(1 + 3) = -0.5
    assert p["w"][0] == -0.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_hand_values(backend, dtype):
    p = {"W": np.array([1.0, -1.0], dtype=dtype)}
    g = {"dW": np.array([2.0, -0.5], dtype=dtype)}
    v, s = fo.initialize_adam(p)
    out = fo.update_parameters_with_adam(p, g, v, s, t=1, learning_rate=0.25,
                                         beta1=0.5, beta2=0.75, epsilon=0.0)
    assert out[0] is p and out[1] is v and out[2] is s
    # v = 0.5 g, v_hat = g;  s = 0.25 g^2, s_hat = g^2;  p -= 0.25 * g / |g|
    assert_bitwise(v["dW"], np.array([1.0, -0.25], dtype=dtype))
    assert_bitwise(s["dW"], np.array([1.0, 0.0625], dtype=dtype))
    assert_bitwise(p["W"], np.array([0.75, -0.75], dtype=dtype))
    v_corr, s_corr = out[3], out[4]
    assert_bitwise(v_corr["dW"], g["dW"])
    assert_bitwise(s_corr["dW"], g["dW"] * g["dW"])
    assert set(v_corr) == {"dW"} and len(s_corr) == 1
    with pytest.raises(TypeError):
        v_corr["dW"] = 0  # read-only mapping


def test_adam_matches_notes_formula_float64(backend):
    """Several steps against the notes' code, written out with NumPy."""
    rng = np.random.default_rng(0)
    p = {"W1": rng.standard_normal((5, 2)), "b1": rng.standard_normal((5, 1)),
         "W2": rng.standard_normal((1, 5)), "b2": rng.standard_normal((1, 1))}
    ref = {k: a.copy() for k, a in p.items()}
    v, s = fo.initialize_adam(p)
    rv, rs = fo.initialize_adam(ref)
    for t in range(1, 6):
        g = {"d" + k: rng.standard_normal(a.shape) for k, a in p.items()}
        fo.update_parameters_with_adam(p, g, v, s, t, learning_rate=0.01)
        for k in ref:
            dk = "d" + k
            rv[dk] = 0.9 * rv[dk] + (1 - 0.9) * g[dk]
            vc = rv[dk] / (1 - 0.9 ** t)
            rs[dk] = 0.999 * rs[dk] + (1 - 0.999) * g[dk] ** 2
            sc = rs[dk] / (1 - 0.999 ** t)
            ref[k] -= (0.01 * vc) / (np.sqrt(sc) + 1e-8)
    for k in p:
        assert_bitwise(p[k], ref[k])


def test_float32_scalars_follow_numpy2(backend):
    """Arithmetic stays float32, each Python float rounded once (NEP 50)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal(37).astype(np.float32)
    dw = rng.standard_normal(37).astype(np.float32)
    p, g = {"w": w.copy()}, {"dw": dw}
    v = fo.initialize_velocity(p)
    fo.update_parameters_with_momentum(p, g, v, beta=0.9, learning_rate=0.1)
    ev = 0.9 * np.zeros(37, np.float32) + (1 - 0.9) * dw
    assert ev.dtype == np.float32
    assert_bitwise(v["dw"], ev)
    assert_bitwise(p["w"], w - 0.1 * ev)


def test_any_names_shapes_and_in_place(backend):
    arrays = {
        "embedding": np.arange(12.0).reshape(3, 4),
        "scalar": np.array(2.0),
        "empty": np.zeros((0, 3)),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "cube": np.ones((2, 2, 2), dtype=np.float64),
    }
    p = dict(arrays)
    ids = {k: id(a) for k, a in p.items()}
    g = {"d" + k: np.full_like(a, 2.0) for k, a in p.items()}
    fo.update_parameters_with_gd(p, g, 0.25)
    assert {k: id(a) for k, a in p.items()} == ids
    assert p["scalar"] == 1.5
    assert_bitwise(p["embedding"], np.arange(12.0).reshape(3, 4) - 0.5)
    assert p["empty"].shape == (0, 3)
    assert p["fortran"].flags.f_contiguous
    assert_bitwise(p["fortran"], np.arange(6.0).reshape(2, 3) - 0.5)


def test_gradient_layout_is_free(backend):
    """A transposed or strided gradient is read correctly."""
    p = {"W": np.zeros((3, 4))}
    big = np.arange(24.0).reshape(4, 6)
    g = {"dW": big[:, ::2].T}  # (3, 4), neither C nor F contiguous
    fo.update_parameters_with_gd(p, g, 1.0)
    assert_bitwise(p["W"], np.zeros((3, 4)) - np.ascontiguousarray(big[:, ::2].T))


def test_state_dicts_are_updated_in_place(backend):
    p = {"W1": np.ones((2, 2), np.float32)}
    g = {"dW1": np.ones((2, 2), np.float32)}
    v, s = fo.initialize_adam(p)
    v_arr, s_arr = v["dW1"], s["dW1"]
    for t in (1, 2, 3):
        fo.update_parameters_with_adam(p, g, v, s, t)
    assert v["dW1"] is v_arr and s["dW1"] is s_arr
    assert np.all(v_arr != 0) and np.all(s_arr != 0)


def test_empty_model_is_a_no_op(backend):
    assert fo.update_parameters_with_gd({}, {}, 0.1) == {}
    p, v, s, vc, sc = fo.update_parameters_with_adam({}, {}, {}, {}, 1)
    assert p == {} and dict(vc) == {}


def test_update_lr_and_schedule():
    assert fo.update_lr(0.5, 2, 1.5) == 0.5 / (1 + 1.5 * 2)
    assert fo.update_lr(1.0, 0, 3.0) == 1.0
    assert fo.schedule_lr_decay(0.5, 999, 1.0, time_interval=1000) == 0.5
    assert fo.schedule_lr_decay(0.5, 1000, 1.0, time_interval=1000) == 0.25
    assert fo.schedule_lr_decay(0.5, 2999, 1.0) == 0.5 / 3
    assert fo.schedule_lr_decay(0.3, 10, 0.3, time_interval=4) == 0.3 / (1 + 0.3 * 2)
    for bad in (dict(learning_rate0=-1.0), dict(decay_rate=float("nan")),
                dict(epoch_num=-1)):
        kw = dict(learning_rate0=0.1, epoch_num=1, decay_rate=0.1) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            fo.update_lr(**kw)
    with pytest.raises(ValueError, match="time_interval"):
        fo.schedule_lr_decay(0.1, 1, 0.1, time_interval=0)
