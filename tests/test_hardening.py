"""Issue #18: the adversarial reproducers, and the class of input each stands
for, on every backend: a failing call raises a short error naming the
argument or key and changes nothing (the user's dicts included); what one
backend accepts, every backend accepts with the same bits (NaN payload and
sign excepted: a NaN is a NaN at the same position).  Here: mappings that lie
and array subclasses; the rest in ``test_hardening_bits.py``."""

from collections import defaultdict
import warnings

import numpy as np
import numpy.ma  # noqa: F401 - registers the subclasses NumPy ships
import numpy.rec  # noqa: F401
import numpy.char  # noqa: F401
import pytest

import fusedoptim as fo
from fusedoptim import _validate as V
from fusedoptim.backend import use_backend
from conftest import AVAILABLE
from helpers import assert_unchanged, snapshot
from hardening_common import same_everywhere


pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix

needs_cython = pytest.mark.skipif(
    "cython" not in AVAILABLE,
    reason="the cython backend is not under test (not built, or not in FUSEDOPTIM_TEST_BACKENDS)")


# --- 1. Mappings that lie -----------------------------------------------------------


class HugeLen(dict):
    def __len__(self):
        return 2 ** 61


class ZeroLen(dict):
    def __len__(self):
        return 0


class HidesKey(dict):
    """Iteration hides ``'b'`` and ``'db'``."""

    def __iter__(self):
        return iter([k for k in dict.__iter__(self) if k not in ("b", "db")])


class ExtraKey(dict):
    """Iteration yields a key the dict does not hold."""

    def __iter__(self):
        return iter(list(dict.__iter__(self)) + ["ghost"])


class RepeatsKey(dict):
    """Iteration yields every key twice."""

    def __iter__(self):
        return iter([k for k in dict.__iter__(self) for _ in range(2)])


class OtherIterEachTime(dict):
    """Each iteration gives a different order (a second pass would differ)."""

    calls = 0

    def __iter__(self):
        OtherIterEachTime.calls += 1
        keys = list(dict.__iter__(self))
        return iter(keys if OtherIterEachTime.calls % 2 else keys[::-1])


LIARS = [HugeLen, ZeroLen, HidesKey, ExtraKey, RepeatsKey, OtherIterEachTime, defaultdict]


def _liar(cls, items):
    if cls is defaultdict:
        d = defaultdict(lambda: np.zeros(3))
        d.update(items)
        return d
    return cls(items)


def _momentum_case(cls, where):
    """Momentum over W, b with the mapping of type ``cls`` in ``where``."""
    def make():
        OtherIterEachTime.calls = 0
        p = {"W": np.arange(3.0), "b": np.ones(2)}
        g = {"dW": np.full(3, 0.5), "db": np.full(2, 2.0)}
        v = {"dW": np.full(3, 0.25), "db": np.zeros(2)}
        p, g, v = [_liar(cls, d) if name == where else d
                   for name, d in (("p", p), ("g", g), ("v", v))]
        return (lambda: fo.update_parameters_with_momentum(p, g, v, 0.9, 0.1)), (p, g, v)
    return make


@pytest.mark.parametrize("where", ["p", "g", "v"])
@pytest.mark.parametrize("cls", LIARS, ids=[c.__name__ for c in LIARS])
def test_lying_mappings_same_on_every_backend(backend, cls, where):
    same_everywhere(_momentum_case(cls, where), backend)


def test_lying_len_reproducer(backend):
    """The segfault of the issue: buffers sized from a ``__len__`` that lies."""
    p = HugeLen(W=np.ones(4))
    fo.update_parameters_with_gd(p, {"dW": np.ones(4)}, 0.1)
    assert p["W"].tolist() == [0.9] * 4


def test_hidden_key_reproducer(backend):
    """Iteration hides a key: every backend steps the keys it iterates."""
    p = HidesKey(W=np.ones(4), b=np.ones(2))
    fo.update_parameters_with_gd(p, {"dW": np.ones(4)}, 0.1)
    assert p["W"].tolist() == [0.9] * 4 and p["b"].tolist() == [1.0, 1.0]


def test_extra_key_names_the_key(backend):
    p = ExtraKey(W=np.ones(4))
    with pytest.raises(KeyError, match="parameters has no 'ghost'"):
        fo.update_parameters_with_gd(p, {"dW": np.ones(4)}, 0.1)
    assert p["W"].tolist() == [1.0] * 4


@needs_cython
@pytest.mark.parametrize("cls", LIARS, ids=[c.__name__ for c in LIARS])
def test_compiled_gather_matches_python_gather_on_liars(cls):
    from fusedoptim import _ext

    def _outcome(fn, *args):
        try:
            out = fn(*args)
        except Exception as exc:  # noqa: BLE001 - comparing whatever each raises
            return ("raise", type(exc), exc.args)
        return ("ok", [[a.tobytes() for a in group] for group in out])
    for where in ("p", "g", "v"):
        for mode in (V.COURSE, V.NAMED):
            _call, (p, g, v) = _momentum_case(cls, where)()
            if mode == V.NAMED:
                g = type(g)({k[1:]: a for k, a in g.items()}) if cls is not defaultdict else g
                v = type(v)({k[1:]: a for k, a in v.items()}) if cls is not defaultdict else v
            states = (("v", v),)
            OtherIterEachTime.calls = 0
            got = _outcome(_ext.gather, p, g, states, mode)
            OtherIterEachTime.calls = 0
            assert got == _outcome(V.gather, p, g, states, mode)


def test_defaultdict_state_gains_no_key(backend):
    p = {"W": np.ones(3)}
    g = {"dW": np.ones(3)}
    v = defaultdict(float)
    with pytest.raises(KeyError, match="v has no 'dW'"):
        fo.update_parameters_with_momentum(p, g, v, 0.9, 0.1)
    assert dict(v) == {} and p["W"].tolist() == [1.0] * 3
    grads = defaultdict(float)
    with pytest.raises(KeyError, match="grads has no 'dW'"):
        fo.update_parameters_with_gd(p, grads, 0.1)
    assert dict(grads) == {}


def test_defaultdict_grads_gain_no_key_in_named_mode(backend):
    opt = fo.SGD({"W": np.ones(3)}, lr=0.1)
    grads = defaultdict(float)
    with pytest.raises(KeyError, match="grads has no 'W' or 'dW'"):
        opt.step(grads)
    assert dict(grads) == {} and opt.t == 0


# --- 2. array subclasses ------------------------------------------------------------


def _memmap(a, tmp_path):
    m = np.memmap(tmp_path / f"mm{np.random.default_rng().integers(1 << 30)}.bin",
                  dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    return m


def _mvoid(a):
    return np.ma.masked_array(np.zeros(1, dtype=[("x", a.dtype)]))[0]


# Every ndarray subclass NumPy ships -> (accepted?, constructor from a plain array).
SUBCLASSES = {
    "numpy.matrix": (False, lambda a, tmp: np.asmatrix(a)),
    "numpy.ma.MaskedArray": (False, lambda a, tmp: np.ma.masked_array(a, mask=a > 0.5)),
    "numpy.ma.core.MaskedConstant": (False, lambda a, tmp: np.ma.masked),
    "numpy.ma.core.mvoid": (False, lambda a, tmp: _mvoid(a)),
    "numpy.char.chararray": (False, lambda a, tmp: np.char.chararray(a.shape)),
    "numpy.memmap": (True, _memmap),
    "numpy.rec.recarray": (True, lambda a, tmp: a.copy().view(np.recarray)),
    "user": (False, lambda a, tmp: a.copy().view(type("Mine", (np.ndarray,), {}))),
}


def test_every_numpy_subclass_has_a_decision():
    found, stack = set(), [np.ndarray]
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.split(".")[0] == "numpy":
                found.add(f"{sub.__module__}.{sub.__qualname__}")
    assert found <= set(SUBCLASSES), found - set(SUBCLASSES)


def _rmsprop_model():
    rng = np.random.default_rng(1)
    p = {"W": rng.standard_normal((2, 3))}
    g = {"dW": rng.standard_normal((2, 3))}
    s = {"dW": rng.random((2, 3))}
    return p, g, s


@pytest.mark.parametrize("role", ["p", "g", "s"])
@pytest.mark.parametrize("kind", list(SUBCLASSES))
def test_array_subclasses_refused_or_plain(backend, kind, role, tmp_path):
    accepted, make = SUBCLASSES[kind]
    p, g, s = _rmsprop_model()
    want_p, want_g, want_s = _rmsprop_model()
    with use_backend("numpy"):
        fo.update_parameters_with_rmsprop(want_p, want_g, want_s)
    d = {"p": p, "g": g, "s": s}[role]
    d[list(d)[0]] = make(d[list(d)[0]], tmp_path)
    before = snapshot(p, s)
    if not accepted:
        with pytest.raises(TypeError, match=r"is a numpy\.|is a .*Mine, not a plain"):
            fo.update_parameters_with_rmsprop(p, g, s)
        assert_unchanged(before, p, s)
        return
    fo.update_parameters_with_rmsprop(p, g, s)
    assert np.asarray(p["W"]).tobytes() == want_p["W"].tobytes()
    assert np.asarray(s["dW"]).tobytes() == want_s["dW"].tobytes()


def test_matrix_reproducers(backend):
    """RMSProp over a matrix (the numpy backend's ``g * g`` was a matrix
    product) and non-square Adam (written ``v`` before failing)."""
    p = {"W": np.asmatrix(np.ones((1, 3)))}
    s = {"dW": np.zeros((1, 3))}
    with pytest.raises(TypeError, match=r"parameters\['W'\] is a numpy.matrix"):
        fo.update_parameters_with_rmsprop(p, {"dW": np.array([[0.0, 1.0, 2.0]])}, s)
    p = {"W": np.ones((2, 3))}
    v, s = fo.initialize_adam(p)
    g = {"dW": np.asmatrix(np.ones((2, 3)))}
    before = snapshot(p, v, s)
    with pytest.raises(TypeError, match=r"grads\['dW'\] is a numpy.matrix"):
        fo.update_parameters_with_adam(p, g, v, s, 1)
    assert_unchanged(before, p, v, s)


def _nonfinite_cases():
    for name, cls in fo.OPTIMIZERS.items():
        yield pytest.param(cls, None, id=name)
    for name in ("Adam", "SGD", "Lion"):  # the two reduced-precision kernels
        for state in ("bfloat16", "int8"):
            yield pytest.param(fo.OPTIMIZERS[name], state, id=f"{name}-{state}")


@pytest.mark.parametrize("cls, state", list(_nonfinite_cases()))
def test_nonfinite_steps_are_silent_on_every_backend(backend, cls, state):
    """NaN and infinity are computed silently by every backend, as by the
    compiled ones: under warnings-as-errors (pytest -W error) a
    RuntimeWarning of the NumPy reference would make it alone refuse a step
    the others take."""
    dtype = np.float32 if state else np.float64
    edge = np.array([np.inf, -np.inf, np.nan, np.finfo(dtype).max, 0.0], dtype)
    params = {"w": np.ones(5000, dtype)}
    kw = {"state_dtype": state} if state else {}
    if cls is fo.SGD:
        kw["momentum"] = 0.9
    opt = cls(params, lr=0.1, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            opt.step({"w": np.tile(edge, 1000)})
    assert opt.t == 2
