"""Reduced-precision Adam with non-finite gradients: a NaN moment is stored
as the positive quiet NaN (bfloat16 word 0x7FC0; int8 code 127 with sign 0
for m, 255 for s, block scale 0x7FC00000), so every build (the NumPy
reference, numba, the compiled baseline, AVX2 and AVX-512 loops) keeps the
reference's state bits although a NaN's sign and payload depend on operand
order (parameters and the float32 moments of small tensors: the same NaNs,
the other elements bit for bit)."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import adam_lowp as L

from conftest import BACKEND_PARAMS, backend_variant

# the NumPy reference warns about its NaNs and infinities
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FORMATS = [("int8", "stochastic"), ("int8", "nearest"),
           ("bfloat16", "nearest"), ("bfloat16", "stochastic")]
SETTINGS = [{}, {"weight_decay": 0.01, "maximize": True}, {"weight_decay": 0.01}]

# NaNs of both signs, and with payloads other than the default's
_ODD_NANS = np.array([0xFFC00000, 0x7FC12345, 0xFFFFFFFF, 0x7FFFFFFF],
                     np.uint32).view(np.float32)


def _grads(shapes, steps, rng):
    out = []
    for _ in range(steps):
        g = {}
        for i, s in enumerate(shapes):
            x = rng.standard_normal(s).astype(np.float32)
            where = rng.choice(x.size, 10, replace=False)
            x[where] = np.concatenate([[np.nan, np.inf, -np.inf, np.float32(3e38),
                                        -0.0, -np.nan], _ODD_NANS])
            g[f"p{i}"] = x
        out.append(g)
    return out


def _run(variant, fmt, rounding, kw, isa=None, steps=3):
    rng = np.random.default_rng(11)
    # whole blocks and a partial last one, whole blocks only, a float32-state
    # tensor (under QMIN_ELEMENTS)
    shapes = [(L.QMIN_ELEMENTS + 3 * L.QBLOCK + 100,), (L.QMIN_ELEMENTS + L.QBLOCK,), (300,)]
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = _grads(shapes, steps, rng)
    lowp = None
    if isa is not None:
        from fusedoptim._ext import adam_lowp as lowp
        before = lowp._set_isa(isa)
    try:
        with backend_variant(variant):
            opt = fo.Adam(params, lr=1e-2, state_dtype=fmt, state_rounding=rounding,
                          state_seed=4, **kw)
            for g in grads:
                opt.step(g)
    finally:
        if lowp is not None:
            lowp._set_isa(before)
    return params, opt.state


def _assert_same_bits(ref, got, what):
    ref_p, ref_s = ref
    p, s = got
    for k in ref_p:
        _assert_same_nans(ref_p[k], p[k], (what, k))
    assert ref_s.keys() == s.keys()
    for label in ref_s:
        for k in ref_s[label]:
            if ref_p[k].size < L.QMIN_ELEMENTS:  # float32 moments: Adam's own
                _assert_same_nans(ref_s[label][k], s[label][k], (what, label, k))
            else:
                assert ref_s[label][k].tobytes() == s[label][k].tobytes(), (what, label, k)


def _assert_same_nans(a, b, what):
    """The same NaNs, the other elements bit for bit: a NaN parameter's or
    float32 moment's sign and payload stay accidents of operand order, as in
    the float32 families (canonicalizing them would cost the finite path)."""
    assert np.array_equal(a != a, b != b), what
    assert a[a == a].tobytes() == b[b == b].tobytes(), what


def _isa_levels():
    try:
        from fusedoptim._ext import adam_lowp as lowp
    except ImportError:
        return []
    out = []
    for lv in ("baseline", "avx2", "avx512", "avx512bf16"):
        try:
            before = lowp._set_isa(lv)
        except ValueError:
            continue
        lowp._set_isa(before)
        out.append(lv)
    return out


@pytest.mark.parametrize("kw", SETTINGS, ids=["plain", "l2-maximize", "l2"])
@pytest.mark.parametrize("fmt,rounding", FORMATS)
@pytest.mark.parametrize("variant", [v for v in BACKEND_PARAMS if v != "numpy"])
def test_backends_keep_the_reference_bits_with_nonfinite_grads(variant, fmt, rounding, kw,
                                                               threads):
    ref = _run("numpy", fmt, rounding, kw)
    _assert_same_bits(ref, _run(variant, fmt, rounding, kw), variant)


@pytest.mark.parametrize("kw", SETTINGS, ids=["plain", "l2-maximize", "l2"])
@pytest.mark.parametrize("fmt,rounding", FORMATS)
@pytest.mark.parametrize("isa", _isa_levels())
def test_every_isa_build_keeps_the_reference_bits_with_nonfinite_grads(isa, fmt, rounding,
                                                                       kw):
    ref = _run("numpy", fmt, rounding, kw)
    _assert_same_bits(ref, _run("cython", fmt, rounding, kw, isa=isa), isa)


@pytest.mark.parametrize("stochastic", [False, True])
def test_a_nan_moment_is_stored_as_the_positive_quiet_nan(stochastic):
    n = 2 * L.QBLOCK
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, bc1=0.1, bc2=0.001,
              weight_decay=0.0, gscale=1.0, decoupled=False, maximize=False,
              stochastic=stochastic, key=7)
    g = np.ones(n, np.float32)
    g[3] = _ODD_NANS[2]  # a negative NaN with the largest payload
    p = np.zeros(n, np.float32)
    mc, vc = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    ms, vs = np.zeros(2, np.float32), np.zeros(2, np.float32)
    L.adam_q8_tensor(p, g, mc, vc, ms, vs, 0, **kw)
    assert ms.view(np.uint32)[0] == 0x7FC00000 and vs.view(np.uint32)[0] == 0x7FC00000
    assert mc[3] == 127 and vc[3] == 255  # sign 0, largest magnitude
    assert np.isfinite(ms[1]) and np.isfinite(vs[1])  # the other block is untouched
    mw, vw = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    L.adam_bf16_tensor(np.zeros(n, np.float32), g, mw, vw, 0, **kw)
    assert mw[3] == 0x7FC0 and vw[3] == 0x7FC0
    assert mw[4] != 0x7FC0


def test_bf16_encode_stores_every_nan_as_0x7fc0():
    x = np.concatenate([_ODD_NANS, [np.nan, -np.nan, 1.0, -np.inf]]).astype(np.float32)
    w = L.bf16_encode(x)
    assert (w[:6] == 0x7FC0).all()
    assert w[6] == 0x3F80 and w[7] == 0xFF80
