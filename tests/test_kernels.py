"""The multi-tensor kernels of every backend against the NumPy reference, bit
for bit, beyond the generated cases of ``test_parity.py`` (which covers every
family and flag combination): course and named keys, multi-million element
tensors, thread counts, mixed dtypes, NaN and infinity, every kind of float32
in Adam's bias correction; plus the step's memory footprint.  The compiled
gather's errors against the Python gather's: ``test_kernels_gather.py``."""

import os
import shutil
import subprocess
import sysconfig
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fusedoptim
from fusedoptim import _reference as R
from fusedoptim import _validate as V
from fusedoptim.backend import active, BackendUnavailable, _load
from fusedoptim.families import FAMILIES
from helpers import assert_bitwise, assert_same_or_both_nan, keywords


try:
    K = _load("cython")
except BackendUnavailable:  # pragma: no cover - no compiler where the tests run
    K = None

needs_cython = pytest.mark.skipif(K is None, reason="compiled extension not built")

DTYPES = [np.float32, np.float64]

# name -> (shape, order); odd sizes leave SIMD tails, 0-d and empty tensors sit
# between others so the concatenated index space has zero-length pieces.
SHAPES = {
    "a": ((), "C"),
    "b": ((0,), "C"),
    "c": ((1,), "C"),
    "d": ((7,), "C"),
    "e": ((3, 0), "C"),
    "f": ((33, 5), "F"),
    "g": ((4099,), "C"),
    "h": ((61, 67), "F"),
    "i": ((1000, 17), "C"),
    "j": ((5, 1), "C"),
}


def make_model(dtype, nstates, seed=0, shapes=SHAPES, grad_layout="same", positive=()):
    """``params, grads, [state dicts]`` with named keys (NAMED mode).  State
    ``k`` in ``positive`` is non-negative (second moments)."""
    rng = np.random.default_rng(seed)
    params, grads = {}, {}
    states = [{} for _ in range(nstates)]
    for name, (shape, order) in shapes.items():
        params[name] = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
        g = rng.standard_normal(shape).astype(dtype)
        if grad_layout == "same":
            g = np.asarray(g, order=order)
        elif grad_layout == "other":
            g = np.asarray(g, order="F" if order == "C" else "C")
        grads[name] = g
        for k, st in enumerate(states):
            x = rng.standard_normal(shape)
            st[name] = np.asarray(np.abs(x) if k in positive else x, dtype=dtype,
                                  order=order)
    return params, grads, states


def copy_dicts(*dicts):
    return [{k: a.copy(order="K") for k, a in d.items()} for d in dicts]


def run_both(family, kwargs, dtype, nstates, used, positive=(), mode=V.NAMED,
             seed=0, shapes=SHAPES, grad_layout="same"):
    """Run ``family`` on the active backend and on the reference, from the
    same start; assert every parameter and state is bitwise equal."""
    params, grads, states = make_model(dtype, nstates, seed, shapes, grad_layout, positive)
    if mode == V.COURSE:
        grads = {"d" + k: g for k, g in grads.items()}
        states = [{"d" + k: a for k, a in st.items()} for st in states]
    ref_p, *ref_s = copy_dicts(params, *states)
    grads_before = copy_dicts(grads)[0]

    def pack(sts):
        return tuple((f"s{k}", sts[k]) if used[k] else V.ABSENT for k in range(nstates))

    getattr(active(), family)(params, grads, pack(states), mode, **kwargs)
    with fusedoptim.use_backend("numpy"):
        getattr(R, family)(ref_p, grads, pack(ref_s), mode, **kwargs)
    for k in params:
        assert_bitwise(params[k], ref_p[k])
    for st, rst in zip(states, ref_s):
        for k in st:
            assert_bitwise(st[k], rst[k])
    for k in grads:
        assert_bitwise(grads[k], grads_before[k])  # gradients are only read
    return params, states


ADAM_KW = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, bc1=0.271, bc2=0.002997,
               weight_decay=0.0, decoupled=False, maximize=False, amsgrad=False,
               torch_order=False, gscale=1.0)


@pytest.mark.parametrize("mode", [V.COURSE, V.NAMED])
@pytest.mark.parametrize("grad_layout", ["same", "other"])
def test_modes_and_gradient_relayout(backend, threads, low_threshold, mode, grad_layout):
    """Gradients in the other memory order are copied into the parameter's
    layout; course keys and named keys give the same step."""
    run_both("adam", ADAM_KW, np.float64, 3, [True, True, False], positive=(1,),
             mode=mode, grad_layout=grad_layout)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2_000_003])
def test_multi_million_elements(backend, threads, dtype, n):
    """Large tensors go through the default threshold and the real parallel
    split (odd total: the last thread gets a tail)."""
    shapes = {"w": ((n,), "C"), "small": ((5, 3), "F"), "m": ((257, 129), "F")}
    run_both("adam", dict(ADAM_KW, weight_decay=0.1, decoupled=True, amsgrad=True), dtype, 3,
             [True, True, True], positive=(1, 2), shapes=shapes)
    run_both("rmsprop", dict(lr=0.01, alpha=0.9, eps=1e-8, eps_inside=True, momentum=0.0,
                             weight_decay=0.0, maximize=False, centered=False, has_buf=False,
                             gscale=1.0),
             dtype, 3, [True, False, False], positive=(0,), shapes=shapes)
    run_both("sgd", dict(lr=0.01, momentum=0.9, dampening=0.9, nesterov=False, first=False,
                         weight_decay=0.0, maximize=False, has_buf=True, gscale=1.0),
             dtype, 1, [True], shapes=shapes)
    run_both("adagrad", dict(lr=0.01, eps=1e-10, weight_decay=0.0, maximize=False, gscale=1.0),
             dtype, 1, [True], positive=(0,), shapes=shapes)


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_does_not_change_results(backend, dtype):
    shapes = {"w": ((1_000_001,), "C"), "v": ((3, 333_333), "F")}
    results = []
    for n in (1, 2, 3):
        fusedoptim.set_num_threads(n)
        try:
            p, sts = run_both("adam", dict(ADAM_KW, amsgrad=True), dtype, 3,
                              [True, True, True], positive=(1, 2), shapes=shapes, seed=5)
        finally:
            fusedoptim.set_num_threads(2)
        results.append(b"".join(a.tobytes() for d in [p, *sts] for a in d.values()))
    assert results[0] == results[1] == results[2]


def test_multi_tensor_step_equals_per_tensor_steps(backend, threads, low_threshold):
    for dtype in DTYPES:
        params, grads, (m, v, vmax) = make_model(dtype, 3, seed=2, positive=(1, 2))
        one_p, one_m, one_v, one_x = copy_dicts(params, m, v, vmax)
        kw = dict(ADAM_KW, gscale=0.5, weight_decay=0.01, amsgrad=True)
        active().adam(params, grads, (("m", m), ("v", v), ("vmax", vmax)), V.NAMED, **kw)
        for k in one_p:
            active().adam({k: one_p[k]}, {k: grads[k]},
                          (("m", {k: one_m[k]}), ("v", {k: one_v[k]}),
                           ("vmax", {k: one_x[k]})), V.NAMED, **kw)
        for a, b in [(params, one_p), (m, one_m), (v, one_v), (vmax, one_x)]:
            for k in a:
                assert_bitwise(a[k], b[k])


def test_mixed_dtypes_in_one_step(backend, threads, low_threshold):
    params, grads, (m, v) = make_model(np.float64, 2, seed=3, positive=(1,))
    for name in ("c", "g", "i"):
        params[name] = params[name].astype(np.float32)
        grads[name] = grads[name].astype(np.float32)
        m[name] = m[name].astype(np.float32)
        v[name] = v[name].astype(np.float32)
    ref = copy_dicts(params, m, v)
    states = (("m", m), ("v", v), V.ABSENT)
    active().adam(params, grads, states, V.NAMED, **ADAM_KW)
    R.adam(ref[0], grads, (("m", ref[1]), ("v", ref[2]), V.ABSENT), V.NAMED, **ADAM_KW)
    for a, b in zip([params, m, v], ref):
        for k in a:
            assert_bitwise(a[k], b[k])


# Hand-picked steps with every state slot on; every other registered family
# runs with all its flags on (generated keyword values, see helpers.keywords).
SPECIAL_KW = {
    "sgd": dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True,
                first=False, maximize=True, has_buf=True, gscale=0.5),
    "rmsprop": dict(lr=0.1, alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.0,
                    eps_inside=False, maximize=False, centered=True, has_buf=True, gscale=1.0),
    "adam": dict(ADAM_KW, weight_decay=0.01, decoupled=True, amsgrad=True, torch_order=True),
}


def special_kw(name):
    if name in SPECIAL_KW:
        return SPECIAL_KW[name]
    fam = FAMILIES[name]
    return keywords(fam, {f: True for f in fam.flags}, dict(gscale=0.5, weight_decay=0.01), 2)


def packed(name, kw, states):
    """``states`` (one dict per slot) as the step's ``(label, dict)`` pairs,
    absent where the flags in ``kw`` switch a slot off."""
    fam = FAMILIES[name]
    return tuple((slot, st) if on else V.ABSENT
                 for slot, on, st in zip(fam.slots, fam.active_slots(kw), states))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_nan_and_inf_propagate_identically(backend, threads, low_threshold, dtype, family):
    shapes = {"x": ((9, 11), "C"), "y": ((4103,), "C")}
    nslots = len(FAMILIES[family].slots)
    params, grads, states = make_model(dtype, 3, seed=4, shapes=shapes, positive=(1, 2))
    states = states[:nslots]
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, -np.nan], dtype=dtype)
    for k, d in enumerate([params, grads, *states]):
        for a in d.values():
            flat = a.reshape(-1)
            flat[(np.arange(6) * 7 + k) % flat.size] = np.roll(specials, k)
    ref_p, *ref_s = copy_dicts(params, *states)
    kw = special_kw(family)
    st, rst = packed(family, kw, states), packed(family, kw, ref_s)
    with np.errstate(all="ignore"):
        getattr(active(), family)(params, grads, st, V.NAMED, **kw)
        getattr(R, family)(ref_p, grads, rst, V.NAMED, **kw)
    for a, b in zip([params, *[s for _, s in st if s is not None]],
                    [ref_p, *[s for _, s in rst if s is not None]]):
        for k in a:
            assert_same_or_both_nan(a[k], b[k])


@pytest.mark.parametrize("bc1", [1.0 - 0.9, 1.0 - 0.9 ** 7, 1.0 - 0.999, 2.0 ** -29, 1.0])
def test_adam_bias_correction_over_every_kind_of_float32(backend, threads, low_threshold, bc1):
    """m / c1 is computed without a division for float32 (the compiled loops);
    check it on moments drawn from random bit patterns (subnormals, huge,
    zeros of both signs, infinities, NaN payloads).  With p = 0, lr = 1 and
    v = 0 the update is -m_hat / (sqrt(v_hat) + eps), so a wrong m_hat bit
    shows in p."""
    n = 1 << 16
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2 ** 32, size=(2, n), dtype=np.uint64).astype(np.uint32)
    m0, g = bits.view(np.float32)
    kw = dict(ADAM_KW, lr=1.0, beta1=0.5, beta2=0.999, bc1=bc1, bc2=0.25)
    got = [{"w": np.zeros(n, np.float32)}, {"w": m0.copy()}, {"w": np.zeros(n, np.float32)}]
    want = copy_dicts(*got)
    grads = {"w": g}
    with np.errstate(all="ignore"):
        active().adam(got[0], grads, (("m", got[1]), ("v", got[2]), V.ABSENT), V.NAMED, **kw)
        R.adam(want[0], grads, (("m", want[1]), ("v", want[2]), V.ABSENT), V.NAMED, **kw)
    for a, b in zip(got, want):
        assert_same_or_both_nan(a["w"], b["w"])


@needs_cython
def test_div_c1_exhaustive(tmp_path):
    """Every float32 bit pattern, three divisors: the double-reciprocal
    product is the float32 quotient (tests/exhaustive/divc1.c)."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip("no C compiler")
    src = Path(__file__).parent / "exhaustive" / "divc1.c"
    exe = tmp_path / "divc1"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # CI's ASan step
    flags = ["-O2", "-fno-math-errno", "-ffp-contract=off", "-fno-trapping-math"]
    try:
        subprocess.run([cc, *flags, "-fopenmp", str(src), "-o", str(exe)], check=True,
                       capture_output=True, env=env)
    except subprocess.CalledProcessError:
        subprocess.run([cc, *flags, str(src), "-o", str(exe)], check=True, env=env)
    divisors = [repr(float(np.float32(1 - 0.9))), repr(float(np.float32(1 - 0.999 ** 3))),
                "0x1.fffffep-9"]
    out = subprocess.run([str(exe), *divisors], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" 0 of 2^32 patterns differ") == 3, out.stdout


@needs_cython
def test_simd_switch():
    """The SIMD loops can be turned off and back on; "baseline" where the
    CPU or the build has none."""
    name = K.simd()
    assert name in ("avx512", "avx2", "baseline")
    before = K._set_simd(False)
    try:
        assert K.simd() == "baseline"
        K._set_simd(True)
        assert K.simd() == name
    finally:
        K._set_simd(before)


@pytest.mark.parametrize("mode", [V.COURSE, V.NAMED])
@pytest.mark.parametrize("big", [False, True])
def test_grad_sumsq_bitwise(backend, threads, mode, big):
    shapes = dict(SHAPES)
    if big:
        shapes["z"] = ((3_000_017,), "C")
    params, grads, _ = make_model(np.float64, 0, seed=6, shapes=shapes, grad_layout="other")
    for name in ("d", "h", "z"):
        if name in params:
            params[name] = params[name].astype(np.float32)
            grads[name] = (grads[name] * 1e3).astype(np.float32)
    if mode == V.COURSE:
        grads = {"d" + k: g for k, g in grads.items()}
    got = active().grad_sumsq(params, grads, mode)
    want = R.grad_sumsq(params, grads, mode)
    assert type(got) is float
    assert np.float64(got).tobytes() == np.float64(want).tobytes()


def test_grad_sumsq_empty_and_nan(backend):
    assert active().grad_sumsq({}, {}, V.COURSE) == 0.0
    p = {"w": np.zeros(10)}
    g = {"dw": np.full(10, np.nan)}
    assert np.isnan(active().grad_sumsq(p, g, V.COURSE))


# --- memory -------------------------------------------------------------------------

# Steps with every state slot on and no prelude; other families: all flags on.
PLAIN_KW = {
    "sgd": dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                first=False, maximize=False, has_buf=True, gscale=1.0),
    "rmsprop": dict(lr=0.1, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=0.0,
                    eps_inside=True, maximize=False, centered=True, has_buf=True, gscale=1.0),
    "adam": dict(ADAM_KW, amsgrad=True),
}


def plain_kw(name):
    if name in PLAIN_KW:
        return PLAIN_KW[name]
    fam = FAMILIES[name]
    return keywords(fam, {f: True for f in fam.flags}, {}, 2)


@pytest.mark.parametrize("kind", ["plain", "special"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_step_allocates_no_array_sized_temporary(backend, threads, family, kind):
    if backend == "numpy":
        pytest.skip("the NumPy reference allocates temporaries by design")
    n = 1 << 20
    nslots = len(FAMILIES[family].slots)
    params, grads, states = make_model(np.float32, nslots, shapes={"w": ((n,), "C"),
                                                                   "b": ((1000,), "C")},
                                       positive=tuple(range(nslots)))
    kw = plain_kw(family) if kind == "plain" else special_kw(family)
    st = packed(family, kw, states)
    fn = getattr(active(), family)
    with np.errstate(all="ignore"):
        fn(params, grads, st, V.NAMED, **kw)  # warm up (JIT, caches)
        tracemalloc.start()
        try:
            fn(params, grads, st, V.NAMED, **kw)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < n * 4 // 16, peak
