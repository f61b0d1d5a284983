"""The compiled gather (``_ext._gather``) against the Python gather: the same
result and the same errors, on awkward dicts, layouts and overlaps."""

import numpy as np
import pytest

from fusedoptim import _validate as V
from fusedoptim.backend import BackendUnavailable, _load


try:
    K = _load("cython")
except BackendUnavailable:  # pragma: no cover - no compiler where the tests run
    K = None

needs_cython = pytest.mark.skipif(K is None, reason="compiled extension not built")


# --- the compiled gather: same result, same errors ------------------------------

def _good():
    rng = np.random.default_rng(7)
    p = {"W1": rng.standard_normal((3, 2)), "b1": np.zeros((3, 1)),
         "W2": np.asfortranarray(rng.standard_normal((2, 3))), "e": np.zeros((0, 2)),
         "s": np.array(1.5)}
    g = {"d" + k: np.array(a + 1.0, order="C") for k, a in p.items()}
    v = {"d" + k: np.zeros_like(a) for k, a in p.items()}
    s = {"d" + k: np.zeros_like(a) for k, a in p.items()}
    return p, g, v, s


def _named(p, g, v, s):
    """The same step with NAMED keys (``dW2`` keeps its "d": both spellings
    of a gradient key are accepted)."""
    def strip(d, keep=()):
        if not isinstance(d, dict):
            return d
        return type(d)((k if k in keep else k[1:], a) for k, a in d.items())
    return p, strip(g, keep=("dW2",)), strip(v), strip(s)


def _set(d, k, x):
    d[k] = x


def _shared_state(p, g, v, s):
    s["db1"] = v["dW1"].reshape(-1)[:3].reshape(3, 1)


def _overlap_later(p, g, v, s):
    # Two overlaps: the first pair in step order must be named.
    big = np.zeros(40)
    s["dW2"] = np.asfortranarray(big[:6].reshape(3, 2).T)
    v["db1"] = big[4:7].reshape(3, 1)


def _state_views_grad(p, g, v, s):
    v["dW1"] = g["dW1"]


def _grads_share(p, g, v, s):
    g["db1"] = g["dW1"].reshape(-1)[:3].reshape(3, 1)  # allowed: grads are read only


def _subclass_dicts(p, g, v, s):
    from collections import OrderedDict
    return OrderedDict(reversed(list(p.items()))), g, v, s


def _strided_state(p, g, v, s):
    v["dW1"] = np.zeros((3, 4))[:, ::2]


def _wrong_layout_state(p, g, v, s):
    s["dW1"] = np.asfortranarray(s["dW1"])


CASES = [
    ("ok", lambda p, g, v, s: None),
    ("grads-share", _grads_share),
    ("ordered-dict", _subclass_dicts),
    ("missing-grad", lambda p, g, v, s: g.pop("dW2")),
    ("missing-state", lambda p, g, v, s: s.pop("ds")),
    ("state-not-dict", lambda p, g, v, s: (p, g, list(v.values()), s)),
    ("grads-not-dict", lambda p, g, v, s: (p, None, v, s)),
    ("params-not-dict", lambda p, g, v, s: ((1, 2), g, v, s)),
    ("name-not-str", lambda p, g, v, s: _set(p, 3, np.zeros(1))),
    ("param-int", lambda p, g, v, s: _set(p, "W1", np.zeros((3, 2), dtype=int))),
    ("param-byteswap", lambda p, g, v, s: _set(p, "W1", np.zeros((3, 2), dtype=">f8"))),
    ("param-list", lambda p, g, v, s: _set(p, "b1", [[0.0]] * 3)),
    ("param-readonly", lambda p, g, v, s: p["W2"].setflags(write=False)),
    ("param-strided", lambda p, g, v, s: _set(p, "W1", np.zeros((3, 4))[:, ::2])),
    ("grad-float32", lambda p, g, v, s: _set(g, "dW1", g["dW1"].astype(np.float32))),
    ("grad-shape", lambda p, g, v, s: _set(g, "dW1", g["dW1"].T)),
    ("grad-not-array", lambda p, g, v, s: _set(g, "ds", 1.0)),
    ("grad-strided", lambda p, g, v, s: _set(g, "dW1", np.ones((3, 4))[:, ::2])),
    ("state-readonly", lambda p, g, v, s: s["db1"].setflags(write=False)),
    ("state-strided", _strided_state),
    ("state-layout", _wrong_layout_state),
    ("state-dtype", lambda p, g, v, s: _set(v, "dW1", v["dW1"].astype(np.float32))),
    ("state-shape", lambda p, g, v, s: _set(v, "dW1", np.zeros((2, 3)))),
    ("state-is-param", lambda p, g, v, s: _set(v, "db1", p["b1"])),
    ("state-shares-state", _shared_state),
    ("state-is-grad", _state_views_grad),
    ("first-pair-named", _overlap_later),
    ("v-is-s", lambda p, g, v, s: _set(s, "dW2", v["dW2"])),
    ("grad-is-param", lambda p, g, v, s: _set(g, "db1", p["b1"])),
]


def _outcome(fn, *args):
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001 - comparing whatever each raises
        return ("raise", type(exc), exc.args)
    return ("ok", [tuple(None if a is None else (a.dtype, a.shape, a.tobytes(order="K"))
                         for a in group) for group in out])


@needs_cython
@pytest.mark.parametrize("named", [False, True], ids=["course", "named"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compiled_gather_matches_python_gather(case, named):
    p, g, v, s = _good()
    out = case[1](p, g, v, s)
    if isinstance(out, tuple):
        p, g, v, s = out
    if named:
        p, g, v, s = _named(p, g, v, s)
    mode = V.NAMED if named else V.COURSE
    states = (("v", v), ("s", s), V.ABSENT)
    want = _outcome(V.gather, p, g, states, mode)
    got = _outcome(K.gather, p, g, states, mode)
    assert want[0] == ("ok" if case[0] in VALID else "raise"), want
    assert got == want


VALID = {"ok", "grads-share", "ordered-dict", "grad-strided"}


@needs_cython
def test_named_mode_grad_key_errors():
    p = {"w": np.zeros(3)}
    for g in ({"w": np.zeros(3), "dw": np.zeros(3)}, {}, {"x": np.zeros(3)}):
        want = _outcome(V.gather, p, g, (("m", {"w": np.zeros(3)}),), V.NAMED)
        got = _outcome(K.gather, p, g, (("m", {"w": np.zeros(3)}),), V.NAMED)
        assert want[0] == "raise" and got == want


@needs_cython
def test_overlap_found_among_many_tensors():
    """Beyond the insertion-sort size the overlap search takes the qsort path."""
    rng = np.random.default_rng(0)
    p = {f"w{i}": rng.standard_normal(4) for i in range(40)}
    g = {"d" + k: a.copy() for k, a in p.items()}
    m = {"d" + k: np.zeros(4) for k in p}
    assert _outcome(K.gather, p, g, (("m", m),), V.COURSE)[0] == "ok"
    m["dw31"] = p["w7"]
    m["dw35"] = g["dw2"]
    want = _outcome(V.gather, p, g, (("m", m),), V.COURSE)
    assert want[0] == "raise" and _outcome(K.gather, p, g, (("m", m),), V.COURSE) == want
