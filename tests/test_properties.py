"""Property-based tests: random models, random valid hyperparameters, every
kernel family and flag, every backend, 1 and 2 threads -> bitwise equal to
the NumPy reference; random invalid inputs -> the same exception on every
backend and nothing changed."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fusedoptim as fo
from fusedoptim import _reference as ref
from fusedoptim import _validate as V
from fusedoptim.backend import _load
from fusedoptim.families import FAMILIES
from conftest import AVAILABLE, BACKEND_PARAMS, backend_variant
from helpers import assert_bitwise, assert_unchanged, snapshot

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

shapes = st.one_of(
    st.just(()),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=7),
    st.tuples(st.integers(0, 3000)),  # 1-D, odd sizes: SIMD tails
)
unit = st.floats(0.0, 0.999, allow_nan=False)
small = st.floats(0.0, 0.5, allow_nan=False)


@st.composite
def models(draw, max_tensors=5):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, max_tensors))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    params, grads = {}, {}
    for i in range(n):
        shape = draw(shapes)
        order = draw(st.sampled_from("CF"))
        p = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
        params[f"p{i}"] = p
        g = rng.standard_normal(shape).astype(dtype)
        if draw(st.booleans()) and g.ndim >= 2:
            g = np.asfortranarray(g)
        grads[f"dp{i}"] = g
    return params, grads


# Keyword name -> strategy for a scalar keyword of any registered family (a
# keyword not listed draws from ``unit``).  Adam's bias corrections are
# derived from a drawn step count and the drawn betas.
SCALAR_DRAWS = {
    "lr": st.floats(0.0, 1.0),
    "eps": st.sampled_from([1e-8, 1e-3, 0.1]),
    "weight_decay": st.sampled_from([0.0, 0.01, 0.3]),
    "gscale": st.sampled_from([1.0, 0.5, 0.123456789]),
}
DERIVED = {"bc1": "beta1", "bc2": "beta2"}
NONNEG_SLOTS = {"sq", "v", "vmax", "sum", "u", "acc"}


@st.composite
def family_calls(draw):
    """(family name, hyperparameters) for one backend call: any registered
    family, every flag drawn, every scalar drawn by its keyword name."""
    family = FAMILIES[draw(st.sampled_from(sorted(FAMILIES)))]
    kw = {}
    for k in family.scalars + ("gscale",):
        if k not in DERIVED:
            kw[k] = draw(SCALAR_DRAWS.get(k, unit))
    t = draw(st.integers(1, 50))
    for k, beta_name in DERIVED.items():
        if k in family.scalars:
            kw[k] = 1.0 - kw[beta_name] ** t
    for k in family.flags:
        kw[k] = draw(st.booleans())
    return family.name, {k: kw[k] for k in family.keywords}


def _states(family, kw, params, rng):
    """State dicts in COURSE layout, random but valid (second moments >= 0),
    present exactly where the flags switch them on."""
    fam = FAMILIES[family]
    out = []
    for label, used in zip(fam.slots, fam.active_slots(kw)):
        if not used:
            out.append(V.ABSENT)
            continue
        d = {}
        for name, p in params.items():
            a = np.zeros_like(p)
            a[...] = np.abs(rng.standard_normal(p.shape)) if label in NONNEG_SLOTS \
                else rng.standard_normal(p.shape)
            d["d" + name] = a
        out.append((label, d))
    return tuple(out)


def _copy_states(states):
    return tuple((label, None if d is None else {k: a.copy() for k, a in d.items()})
                 for label, d in states)


@SETTINGS
@given(model=models(), call=family_calls(), seed=st.integers(0, 2**16),
       threads=st.sampled_from([1, 2]))
def test_every_backend_equals_reference(model, call, seed, threads):
    params, grads = model
    family, kw = call
    states = _states(family, kw, params, np.random.default_rng(seed))
    want_p = {k: a.copy() for k, a in params.items()}
    want_s = _copy_states(states)
    with np.errstate(all="ignore"):
        getattr(ref, family)(want_p, grads, want_s, V.COURSE, **kw)
    before = fo.get_num_threads()
    fo.set_num_threads(threads)
    try:
        for name in BACKEND_PARAMS:
            got_p = {k: a.copy() for k, a in params.items()}
            got_s = _copy_states(states)
            grads_before = snapshot(grads)
            with np.errstate(all="ignore"), backend_variant(name) as module:
                getattr(module, family)(got_p, grads, got_s, V.COURSE, **kw)
            assert_unchanged(grads_before, grads)  # gradients are never written
            for k in params:
                assert_bitwise(got_p[k], want_p[k])
            for (_, gd), (_, wd) in zip(got_s, want_s):
                if gd is not None:
                    for k in gd:
                        assert_bitwise(gd[k], wd[k])
    finally:
        fo.set_num_threads(before)


@SETTINGS
@given(model=models(max_tensors=4), threads=st.sampled_from([1, 2]))
def test_grad_sumsq_equals_reference(model, threads):
    params, grads = model
    want = ref.grad_sumsq(params, grads, V.COURSE)
    before = fo.get_num_threads()
    fo.set_num_threads(threads)
    try:
        for name in AVAILABLE:
            got = _load(name).grad_sumsq(params, grads, V.COURSE)
            assert np.float64(got).tobytes() == np.float64(want).tobytes(), name
    finally:
        fo.set_num_threads(before)


# --- invalid inputs ----------------------------------------------------------

def _break_dtype(p, g, v, s, name, rng):
    a = g["d" + name]
    other_float = np.float64 if a.dtype == np.float32 else np.float32
    bad = [np.int32, np.complex128, np.bool_, np.float16, object, a.dtype.newbyteorder(),
           other_float]
    g["d" + name] = a.astype(bad[rng.integers(len(bad))])


def _break_shape(p, g, v, s, name, rng):
    a = g["d" + name]
    g["d" + name] = np.zeros(a.shape + (2,), a.dtype)


def _break_missing(p, g, v, s, name, rng):
    del [g, v, s][rng.integers(3)]["d" + name]


def _break_alias(p, g, v, s, name, rng):
    target = [v, s, g][rng.integers(3)]
    target["d" + name] = p[name]


def _break_readonly(p, g, v, s, name, rng):
    [p[name], v["d" + name], s["d" + name]][rng.integers(3)].setflags(write=False)


def _break_strided(p, g, v, s, name, rng):
    a = p[name]
    big = np.zeros(a.shape + (2,), a.dtype)
    p[name] = big[..., 0]  # every other element: not contiguous when size > 1


BREAKERS = [_break_dtype, _break_shape, _break_missing, _break_alias, _break_readonly,
            _break_strided]


@SETTINGS
@given(model=models(max_tensors=4), breaker=st.sampled_from(BREAKERS),
       which=st.integers(0, 100), seed=st.integers(0, 2**16))
def test_invalid_input_same_error_everywhere_nothing_changed(model, breaker, which, seed):
    params, grads = model
    names = [k for k, a in params.items() if a.size > 1]
    if not names:
        return
    outcomes = {}
    for backend in AVAILABLE:
        p = {k: a.copy(order="K") for k, a in params.items()}
        g = {k: a.copy() for k, a in grads.items()}
        v, s = fo.initialize_adam(p)
        breaker(p, g, v, s, names[which % len(names)], np.random.default_rng(seed))
        before = snapshot(p, v, s)
        with fo.use_backend(backend):
            try:
                fo.update_parameters_with_adam(p, g, v, s, 2)
                outcomes[backend] = None
            except (TypeError, ValueError, KeyError) as exc:
                outcomes[backend] = (type(exc), str(exc))
        assert_unchanged(before, p, v, s)
    assert len(set(outcomes.values())) == 1, outcomes
    assert None not in outcomes.values(), outcomes
