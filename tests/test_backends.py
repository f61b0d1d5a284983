"""Backend selection, the fallback chain, and cross-backend bit-for-bit
equality with the NumPy reference.

The fallback chain runs in subprocesses: a ``sys.meta_path`` finder installed
before ``import fusedoptim`` hides the compiled extension and/or Numba.
"""

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import _reference, _tuning, _validate
from fusedoptim.backend import BACKENDS, BackendUnavailable, _load
from conftest import AVAILABLE

SRC = os.path.dirname(os.path.dirname(os.path.abspath(fo.__file__)))


def _loads(name):
    try:
        _load(name)
    except BackendUnavailable:
        return False
    return True


HAS_CYTHON = _loads("cython")
HAS_NUMBA = _loads("numba")
needs_cython = pytest.mark.skipif(not HAS_CYTHON, reason="compiled extension not built")
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")

_PROBE = """
import importlib.abc, json, sys, warnings

HIDE = {hide!r}

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == h or name.startswith(h + ".") for h in HIDE):
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)",
                                      name=name)

sys.meta_path.insert(0, Hide())
out = {{}}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        import fusedoptim
    except Exception as exc:
        out["error"] = [type(exc).__name__, str(exc), isinstance(exc, ImportError)]
    else:
        out["backend"] = fusedoptim.get_backend()
{extra}
out["warnings"] = [[w.category.__name__, str(w.message), w.filename] for w in caught]
out["numba_imported"] = "numba" in sys.modules
print(json.dumps(out))
"""


def probe(hide=(), env=None, extra="pass"):
    """Import fusedoptim in a fresh interpreter with modules hidden; return
    what it saw (backend or error, warnings, whether numba was imported)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FUSEDOPTIM_")}
    environ["PYTHONPATH"] = SRC + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    code = _PROBE.format(hide=sorted(hide),
                         extra=textwrap.indent(textwrap.dedent(extra).strip(), " " * 8))
    res = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def fused_warnings(out):
    return [w for w in out["warnings"] if w[0] == "FusedOptimWarning"]


# --- the default chain ---------------------------------------------------------


@needs_cython
def test_default_is_cython_without_numba_or_warning():
    out = probe()
    assert out["backend"] == "cython"
    assert fused_warnings(out) == []
    assert not out["numba_imported"]


@needs_numba
def test_without_extension_default_is_numba_with_one_warning():
    out = probe(hide={"fusedoptim._ext"})
    assert out["backend"] == "numba"
    (w,) = fused_warnings(out)
    assert "numba backend" in w[1] and "fusedoptim._ext" in w[1]
    assert "FUSEDOPTIM_BACKEND=numba" in w[1]
    assert w[2] == "<string>"  # points at the user's import, not at fusedoptim


def test_without_extension_or_numba_default_is_numpy_with_one_warning():
    out = probe(hide={"fusedoptim._ext", "numba"})
    assert out["backend"] == "numpy"
    (w,) = fused_warnings(out)
    assert "numpy backend" in w[1]
    assert "fusedoptim._ext" in w[1] and "numba did not import" in w[1]
    assert not out["numba_imported"]


# --- FUSEDOPTIM_BACKEND ----------------------------------------------------------


def test_env_selects_numpy_without_importing_numba():
    out = probe(env={"FUSEDOPTIM_BACKEND": " NumPy "})
    assert out["backend"] == "numpy"
    assert fused_warnings(out) == []
    assert not out["numba_imported"]


@needs_numba
def test_env_selects_numba():
    out = probe(env={"FUSEDOPTIM_BACKEND": "numba"})
    assert out["backend"] == "numba" and out["numba_imported"]
    assert fused_warnings(out) == []


def test_env_unknown_name_lists_valid_names():
    out = probe(env={"FUSEDOPTIM_BACKEND": "jax"})
    kind, msg, _ = out["error"]
    assert kind == "ValueError"
    assert "FUSEDOPTIM_BACKEND='jax'" in msg and "cython, numba, numpy" in msg


def test_env_unavailable_backend_names_what_is_missing():
    out = probe(hide={"numba"}, env={"FUSEDOPTIM_BACKEND": "numba"})
    kind, msg, is_import_error = out["error"]
    assert kind == "BackendUnavailable" and is_import_error
    assert "numba did not import" in msg


@pytest.mark.parametrize("error,advice", [
    (ModuleNotFoundError("No module named 'numba'", name="numba"),
     "optional: pip install 'fusedoptim[numba]'"),
    (ImportError("Numba needs NumPy 2.3 or less. Got NumPy 2.4."),
     "numba is installed but did not import (ImportError: Numba needs NumPy 2.3"),
])
def test_numba_missing_or_broken_gets_the_right_advice(monkeypatch, error, advice):
    # pip install would say "already satisfied" to a broken install.
    from fusedoptim import backend

    def fail(name, *a, **k):
        raise error
    monkeypatch.delitem(backend._loaded, "numba", raising=False)
    monkeypatch.delitem(backend._errors, "numba", raising=False)
    monkeypatch.setattr(backend.importlib, "import_module", fail)
    with pytest.raises(BackendUnavailable, match=re.escape(advice)):
        _load("numba")
    monkeypatch.delitem(backend._errors, "numba")


def test_explicit_choice_of_a_missing_backend_raises_and_keeps_the_active_one():
    extra = """
        try:
            fusedoptim.set_backend("numba")
        except ImportError as exc:
            out["set_error"] = [type(exc).__name__, str(exc)]
        out["after"] = fusedoptim.get_backend()
    """
    out = probe(hide={"numba"}, env={"FUSEDOPTIM_BACKEND": "numpy"}, extra=extra)
    assert out["set_error"][0] == "BackendUnavailable"
    assert "numba" in out["set_error"][1]
    assert out["after"] == "numpy"


# --- in-process selection --------------------------------------------------------


def test_unknown_name_is_value_error_and_changes_nothing():
    before = fo.get_backend()
    with pytest.raises(ValueError, match="choose one of cython, numba, numpy"):
        fo.set_backend("fortran")
    with pytest.raises(ValueError, match="unknown backend"):
        with fo.use_backend("CYTHON"):
            pass
    assert fo.get_backend() == before


def test_use_backend_nests_and_restores_on_error():
    before = fo.get_backend()
    first, last = AVAILABLE[0], AVAILABLE[-1]
    with fo.use_backend(first):
        assert fo.get_backend() == first
        with pytest.raises(RuntimeError):
            with fo.use_backend(last):
                assert fo.get_backend() == last
                raise RuntimeError("boom")
        assert fo.get_backend() == first
    assert fo.get_backend() == before


def test_available_backends_are_known_and_include_numpy():
    names = fo.available_backends()
    assert set(names) <= set(BACKENDS) and "numpy" in names
    assert list(names) == [b for b in BACKENDS if b in names]


# --- cross-backend bit-for-bit equality -----------------------------------------
#
# Every family and flag combination against _reference: tests/test_parity.py
# (generated from the registry).  Here: what it does not cover.

COMPILED = [b for b in AVAILABLE if b != "numpy"]


def shapes_for(size):
    """Parameter shapes whose total is below (``small``) or at least
    (``large``) the parallel threshold; ``large`` has odd sizes so that the
    per-thread pieces straddle tensors."""
    n = _tuning.PARALLEL_MIN_ELEMENTS
    if size == "small":
        return [(5, 3), (7,), (2, 3, 4), (1,), (0, 3), (max(1, n // 4 - 100),)]
    return [(n // 3 + 7,), (3, 5), (n // 3 + 1,), (0,), (n // 6 + 3, 2), (1,)]


def make_step(rng, dtype, shapes, slots, mode=_validate.COURSE, fortran=False):
    """Random parameters, gradients and states for ``slots`` (state labels,
    ``None`` for an unused slot).  Second-moment states are positive, and
    the centered running mean is small, so every square root is real."""
    params, grads = {}, {}
    for i, shape in enumerate(shapes):
        name = f"W{i}"
        order = "F" if fortran and i % 2 == 0 and len(shape) > 1 else "C"
        params[name] = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
        # C-order gradients: an F-order parameter's gradient gets re-laid out.
        grads["d" + name] = rng.standard_normal(shape).astype(dtype)
    key = (lambda k: "d" + k) if mode == _validate.COURSE else (lambda k: k)
    states = []
    for label in slots:
        if label is None:
            states.append(_validate.ABSENT)
            continue
        st = {}
        for k, p in params.items():
            a = np.empty_like(p)
            x = rng.standard_normal(p.shape)
            if label in ("sq", "v", "vmax"):
                x = np.abs(x) + 1.0
            elif label == "gavg":
                x = 0.1 * x
            a[...] = x
            st[key(k)] = a
        states.append((label, st))
    return params, grads, tuple(states)


def copy_step(params, grads, states):
    cp = lambda d: {k: a.copy(order="K") for k, a in d.items()}
    return cp(params), cp(grads), tuple((lab, None if st is None else cp(st))
                                        for lab, st in states)


def assert_same_step(a, b, what):
    (pa, ga, sa), (pb, gb, sb) = a, b
    for k in pa:
        assert pa[k].tobytes() == pb[k].tobytes(), f"{what}: parameter {k}"
        assert ga["d" + k if "d" + k in ga else k].tobytes() == \
            gb["d" + k if "d" + k in gb else k].tobytes(), f"{what}: gradient {k} written"
    for (lab, x), (_, y) in zip(sa, sb):
        if x is not None:
            for k in x:
                assert x[k].tobytes() == y[k].tobytes(), f"{what}: {lab}[{k}]"


@pytest.mark.parametrize("name", COMPILED)
def test_mixed_dtypes_named_mode_and_repeated_steps(name, threads):
    """float32 and float64 tensors in one dict, NAMED keys, several steps."""
    mod = _load(name)
    rng = np.random.default_rng(7)
    n = _tuning.PARALLEL_MIN_ELEMENTS
    params, grads, states = make_step(rng, np.float64, [(n // 2 + 5,), (3, 4)],
                                      ("m", "v", "vmax"), mode=_validate.NAMED)
    grads = {k[1:]: g for k, g in grads.items()}  # NAMED: grads[name]
    for k in ("W1",):
        params[k] = params[k].astype(np.float32)
        grads[k] = grads[k].astype(np.float32)
        for _lab, st in states:
            st[k] = st[k].astype(np.float32)
    params["W2"] = rng.standard_normal(n // 2 + 9).astype(np.float32)
    grads["W2"] = rng.standard_normal(n // 2 + 9).astype(np.float32)
    for _lab, st in states:
        st["W2"] = np.abs(rng.standard_normal(n // 2 + 9)).astype(np.float32) + 1
    ref = copy_step(params, grads, states)
    for t in range(1, 4):
        kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, bc1=1 - 0.9 ** t,
                  bc2=1 - 0.999 ** t, weight_decay=0.01, decoupled=True, maximize=False,
                  amsgrad=True, torch_order=True, gscale=1.0)
        mod.adam(params, grads, states, _validate.NAMED, **kw)
        _reference.adam(*ref, _validate.NAMED, **kw)
    assert_same_step((params, grads, states), ref, "mixed dtypes")


def _bits(x):
    return struct.pack("<d", x)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_sumsq_matches_reference_order(name, dtype, threads):
    mod = _load(name)
    rng = np.random.default_rng(11)
    n = _tuning.PARALLEL_MIN_ELEMENTS
    b = _reference.SUMSQ_BLOCK
    # Many one-block steps too: in a long sum, a misordered block sum is
    # often rounded away.
    for sizes in ([7], [b - 1, b, b + 1, 0, 3], [n + 13, 2 * b + 5], [n // 2, n // 2 + 1],
                  *[[b - 3]] * 40):
        params = {f"w{i}": np.zeros(s, dtype=dtype) for i, s in enumerate(sizes)}
        # A wide range of magnitudes makes the sum order-sensitive.
        grads = {f"dw{i}": (rng.standard_normal(s) * 10.0 ** rng.integers(-6, 6, s))
                 .astype(dtype) for i, s in enumerate(sizes)}
        got = mod.grad_sumsq(params, grads, _validate.COURSE)
        want = _reference.grad_sumsq(params, grads, _validate.COURSE)
        assert isinstance(got, float)
        assert _bits(got) == _bits(want), (sizes, got, want)


@pytest.mark.parametrize("name", COMPILED)
def test_grad_sumsq_mixed_dtypes_keeps_dict_order(name, threads):
    mod = _load(name)
    rng = np.random.default_rng(5)
    n = _tuning.PARALLEL_MIN_ELEMENTS
    params, grads = {}, {}
    for i, (s, dt) in enumerate([(n // 2 + 3, np.float32), (4097, np.float64),
                                 (n // 2, np.float32), (5, np.float64)]):
        params[f"w{i}"] = np.zeros(s, dtype=dt)
        grads[f"dw{i}"] = (rng.standard_normal(s) * 10.0 ** rng.integers(-8, 8, s)).astype(dt)
    got = mod.grad_sumsq(params, grads, _validate.COURSE)
    want = _reference.grad_sumsq(params, grads, _validate.COURSE)
    assert _bits(got) == _bits(want)


# --- numba specifics --------------------------------------------------------------


def _big_adam(rng, n, dtype=np.float32):
    p = {"w": rng.standard_normal(n).astype(dtype)}
    g = {"dw": rng.standard_normal(n).astype(dtype)}
    m = {"dw": np.zeros(n, dtype)}
    v = {"dw": np.zeros(n, dtype)}
    return p, g, (("m", m), ("v", v), _validate.ABSENT)


ADAM_KW = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, bc1=0.1, bc2=1 - 0.999,
               weight_decay=0.0, decoupled=False, maximize=False, amsgrad=False,
               torch_order=False, gscale=1.0)


@needs_numba
def test_numba_thread_count_applies_from_any_python_thread():
    import numba
    from fusedoptim import _numba as nk
    from fusedoptim._numba import _step as nks

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba's pool has one thread")
    before = fo.get_num_threads()
    fo.set_num_threads(2)
    seen = {}

    def worker():
        numba.set_num_threads(1)  # the user's own numba setting in this thread
        rng = np.random.default_rng(0)
        step = _big_adam(rng, _tuning.PARALLEL_MIN_ELEMENTS + 1)
        nks._last_parallel_threads = 0
        nk.adam(*step, _validate.COURSE, **ADAM_KW)
        seen["used"] = nks._last_parallel_threads
        seen["after"] = numba.get_num_threads()

    try:
        th = threading.Thread(target=worker)
        th.start()
        th.join()
    finally:
        fo.set_num_threads(before)
    assert seen == {"used": 2, "after": 1}


@needs_numba
def test_numba_concurrent_steps_from_python_threads_match_reference():
    from fusedoptim import _numba as nk

    before = fo.get_num_threads()
    fo.set_num_threads(2)
    n = _tuning.PARALLEL_MIN_ELEMENTS + 17
    steps = [_big_adam(np.random.default_rng(i), n) for i in range(4)]
    refs = [copy_step(*s) for s in steps]
    errors = []

    def worker(step):
        try:
            for _ in range(3):
                nk.adam(*step, _validate.COURSE, **ADAM_KW)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        ths = [threading.Thread(target=worker, args=(s,)) for s in steps]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
    finally:
        fo.set_num_threads(before)
    assert errors == []
    for step, ref in zip(steps, refs):
        for _ in range(3):
            _reference.adam(*ref, _validate.COURSE, **ADAM_KW)
        assert_same_step(step, ref, "threaded")


@needs_numba
def test_numba_thread_count_above_pool_is_clamped():
    import numba
    from fusedoptim import _numba as nk
    from fusedoptim._numba import _step as nks

    before = fo.get_num_threads()
    try:
        fo.set_num_threads(numba.config.NUMBA_NUM_THREADS + 3)
        assert nks._threads == numba.config.NUMBA_NUM_THREADS
        step = _big_adam(np.random.default_rng(1), _tuning.PARALLEL_MIN_ELEMENTS)
        ref = copy_step(*step)
        nk.adam(*step, _validate.COURSE, **ADAM_KW)
        _reference.adam(*ref, _validate.COURSE, **ADAM_KW)
        assert_same_step(step, ref, "clamped")
    finally:
        fo.set_num_threads(before)


_LAZY = """
import sys
import numpy as np
from fusedoptim import _numba as nk

def kernels():
    # Every step kernel (a dispatcher named *serial* or *parallel*) in the
    # backend's package, by its defining module and name.
    found = {}
    for modname, mod in list(sys.modules.items()):
        if modname == "fusedoptim._numba" or modname.startswith("fusedoptim._numba."):
            for obj in list(vars(mod).values()):
                fn = getattr(obj, "py_func", None)
                if fn is not None and hasattr(obj, "signatures") and \\
                        ("serial" in fn.__name__ or "parallel" in fn.__name__):
                    found[f"{fn.__module__}.{fn.__qualname__}"] = obj
    return found

out["compiled_at_import"] = sum(len(k.signatures) for k in kernels().values())
p = {"w": np.ones(3, np.float32)}
g = {"dw": np.ones(3, np.float32)}
fusedoptim.update_parameters_with_gd(p, g, 0.5)
out["compiled"] = {name: [str(sig[-1]) for sig in k.signatures]
                   for name, k in kernels().items() if k.signatures}
out["cache"] = nk._CACHE
"""


@needs_numba
@pytest.mark.parametrize("cache", [False, True])
def test_numba_compiles_lazily_per_dtype_and_caches_only_on_request(tmp_path, cache):
    from fusedoptim.families import FAMILIES

    env = {"FUSEDOPTIM_BACKEND": "numba", "NUMBA_CACHE_DIR": str(tmp_path)}
    if cache:
        env["FUSEDOPTIM_NUMBA_CACHE"] = "1"
    out = probe(env=env, extra=_LAZY)
    assert out["compiled_at_import"] == 0
    # Only what the step needed: the serial SGD kernel, for float32 (the
    # kernels' last argument is the dtype's zero).
    assert out["compiled"], out
    for name, sigs in out["compiled"].items():
        assert sigs == ["float32"], (name, sigs)
        assert "parallel" not in name and "sumsq" not in name and "norm" not in name, name
        assert not any(f in name for f in FAMILIES if f != "sgd"), name
    assert out["cache"] is cache
    cached = [f for _, _, files in os.walk(tmp_path) for f in files if f.endswith(".nbi")]
    assert bool(cached) is cache
