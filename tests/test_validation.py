"""Bad input: a clear exception naming the key or argument, nothing changed,
and the same exception with the same message on every backend."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.backend import use_backend
from conftest import AVAILABLE
from helpers import assert_unchanged, snapshot


def model(dtype=np.float64):
    rng = np.random.default_rng(0)
    p = {"W1": rng.standard_normal((3, 2)).astype(dtype),
         "b1": rng.standard_normal((3, 1)).astype(dtype),
         "W2": rng.standard_normal((1, 3)).astype(dtype),
         "b2": rng.standard_normal((1, 1)).astype(dtype)}
    g = {"d" + k: rng.standard_normal(a.shape).astype(dtype) for k, a in p.items()}
    v, s = fo.initialize_adam(p)
    v["dW1"] += 1.0
    s["db2"] += 2.0
    return p, g, v, s


def adam(p, g, v, s, t=3, **kw):
    return fo.update_parameters_with_adam(p, g, v, s, t, **kw)


def _drop(d, key):
    del d[key]


def _put(d, key, value):
    d[key] = value


# (id, mutate(p, g, v, s) -> kwargs for the call, exception, message fragment)
BAD = [
    ("missing-grad", lambda p, g, v, s: _drop(g, "dW2"), KeyError,
     "grads has no 'dW2' (gradient of parameter 'W2')"),
    ("missing-v", lambda p, g, v, s: _drop(v, "db2"), KeyError,
     "v has no 'db2' (state of parameter 'b2')"),
    ("grad-shape", lambda p, g, v, s: _put(g, "dW2", np.ones((3, 1))), ValueError,
     "grads['dW2'] has shape (3, 1) but parameters['W2'] has shape (1, 3)"),
    ("state-shape", lambda p, g, v, s: _put(s, "dW1", np.zeros((2, 3))), ValueError,
     "s['dW1'] has shape (2, 3)"),
    ("grad-dtype", lambda p, g, v, s: _put(g, "db1", g["db1"].astype(np.float32)), TypeError,
     "grads['db1'] has dtype float32 but parameters['b1'] has float64"),
    ("param-int", lambda p, g, v, s: _put(p, "b2", np.ones((1, 1), dtype=np.int64)), TypeError,
     "parameters['b2'] has dtype int64"),
    ("param-float16", lambda p, g, v, s: _put(p, "b2", np.ones((1, 1), dtype=np.float16)),
     TypeError, "float16"),
    ("param-scalar", lambda p, g, v, s: _put(p, "b2", 1.0), TypeError,
     "parameters['b2'] must be a numpy.ndarray, got float"),
    ("grad-list", lambda p, g, v, s: _put(g, "db2", [[1.0]]), TypeError,
     "grads['db2'] must be a numpy.ndarray, got list"),
    ("grad-numpy-scalar", lambda p, g, v, s: _put(g, "db2", np.float64(1.0)), TypeError,
     "grads['db2'] must be a numpy.ndarray, got a numpy.float64 scalar (np.asarray makes it "
     "a 0-d array)"),
    ("param-readonly", lambda p, g, v, s: p["W2"].setflags(write=False), ValueError,
     "parameters['W2'] is read-only"),
    ("state-readonly", lambda p, g, v, s: s["b2" and "db2"].setflags(write=False), ValueError,
     "s['db2'] is read-only"),
    ("param-byteorder", lambda p, g, v, s: _put(p, "W2", p["W2"].astype(">f8")), TypeError,
     "native byte order"),
    ("param-strided", lambda p, g, v, s: _put(p, "W1", np.ones((3, 4))[:, ::2]), ValueError,
     "parameters['W1'] is not contiguous"),
    ("state-is-param", lambda p, g, v, s: _put(v, "dW2", p["W2"]), ValueError,
     "v['dW2'] shares memory with parameters['W2']"),
    ("grad-is-param", lambda p, g, v, s: _put(g, "dW1", p["W1"]), ValueError,
     "grads['dW1'] shares memory with parameters['W1']"),
    ("v-is-s", lambda p, g, v, s: _put(s, "db1", v["db1"]), ValueError,
     "s['db1'] shares memory with v['db1']"),
    ("params-not-dict", lambda p, g, v, s: {"parameters": list(p.values())}, TypeError,
     "parameters must be a dict"),
    ("grads-not-dict", lambda p, g, v, s: {"grads": list(g.items())}, TypeError,
     "grads must be a dict"),
    ("t-zero", lambda p, g, v, s: {"t": 0}, ValueError, "t must be an integer >= 1"),
    ("t-bool", lambda p, g, v, s: {"t": True}, TypeError, "t must be an integer"),
    ("t-float", lambda p, g, v, s: {"t": 2.0}, TypeError, "t must be an integer"),
    ("lr-negative", lambda p, g, v, s: {"learning_rate": -0.1}, ValueError, "learning_rate"),
    ("lr-nan", lambda p, g, v, s: {"learning_rate": float("nan")}, ValueError, "learning_rate"),
    ("beta1-one", lambda p, g, v, s: {"beta1": 1.0}, ValueError, "beta1 must be in [0, 1)"),
    ("beta2-negative", lambda p, g, v, s: {"beta2": -0.5}, ValueError, "beta2"),
    ("eps-inf", lambda p, g, v, s: {"epsilon": float("inf")}, ValueError, "epsilon"),
    ("eps-str", lambda p, g, v, s: {"epsilon": "1e-8"}, TypeError, "epsilon"),
]


def _run(mutate, backend):
    p, g, v, s = model()
    kwargs = mutate(p, g, v, s) or {}
    args = dict(p=p, g=g, v=v, s=s)
    for name, key in (("parameters", "p"), ("grads", "g")):
        if name in kwargs:
            args[key] = kwargs.pop(name)
    before = snapshot(p, v, s)
    with use_backend(backend):
        with pytest.raises(Exception) as info:
            adam(args["p"], args["g"], args["v"], args["s"], **kwargs)
    assert_unchanged(before, p, v, s)
    return info


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_adam_input_raises_and_changes_nothing(case):
    _id, mutate, exc, fragment = case
    messages = {}
    for backend in AVAILABLE:
        info = _run(mutate, backend)
        assert info.type is exc, (backend, info.value)
        text = info.value.args[0]
        assert fragment in text, (backend, text)
        messages[backend] = text
    assert len(set(messages.values())) == 1, messages


def test_error_comes_before_any_write_late_key(backend):
    """The failing key is the last parameter: the earlier ones stay as they were."""
    p, g, v, s = model()
    del g["db2"]
    before = snapshot(p, v, s)
    with pytest.raises(KeyError):
        adam(p, g, v, s)
    assert_unchanged(before, p, v, s)


@pytest.mark.parametrize("call", ["gd", "momentum", "rmsprop"])
def test_other_updates_validate_too(backend, call):
    p, g, v, s = model()
    g["dW1"] = g["dW1"].T.copy()
    before = snapshot(p, v, s)
    with pytest.raises(ValueError, match=r"grads\['dW1'\] has shape \(2, 3\)"):
        if call == "gd":
            fo.update_parameters_with_gd(p, g, 0.1)
        elif call == "momentum":
            fo.update_parameters_with_momentum(p, g, v, 0.9, 0.1)
        else:
            fo.update_parameters_with_rmsprop(p, g, s)
    assert_unchanged(before, p, v, s)


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan"), None])
def test_momentum_beta_range(backend, beta):
    p, g, v, _ = model()
    with pytest.raises((ValueError, TypeError), match="beta"):
        fo.update_parameters_with_momentum(p, g, v, beta, 0.1)


def test_numpy_integer_step_accepted(backend):
    p, g, v, s = model()
    adam(p, g, v, s, t=np.int64(4))


def test_a_misspelled_gradient_key_is_named(backend):
    """The missing gradient's message names the keys that match no
    parameter (a typo), and nothing changes."""
    p = {"head": np.ones(2), "W": np.ones(3)}
    opt = fo.Adam(p, lr=0.1)
    with pytest.raises(KeyError, match=r"grads has no 'head' or 'dhead' \(gradient of parameter "
                                       r"'head'\); grads has 'haed', which names no parameter"):
        opt.step({"haed": np.ones(2), "dW": np.ones(3)})
    with pytest.raises(KeyError, match=r"; grads has 'haed', 'dA0', 'dA1', which name no"):
        opt.step({"dA0": np.ones(2), "dA1": np.ones(2), "haed": np.ones(2), "dW": np.ones(3)})
    with pytest.raises(KeyError, match=r"'head'\)\Z|'head'\)\"\Z"):
        opt.step({"W": np.ones(3)})
    assert opt.t == 0 and (p["head"] == 1).all()
