"""Each instruction-set build of the reduced-precision Adam loops
(``_ext/adam_lowp.h``: baseline, AVX2, AVX-512 with runtime dispatch) gives
the NumPy reference's bits: the AVX2 build is run here even on an AVX-512
CPU, which the dispatch would never choose."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import adam_lowp as L

lowp = pytest.importorskip("fusedoptim._ext.adam_lowp")
LEVELS = ("baseline", "avx2", "avx512")


def _levels():
    """The builds this CPU can run."""
    out = []
    for lv in LEVELS:
        try:
            before = lowp._set_isa(lv)
        except ValueError:
            continue
        lowp._set_isa(before)
        out.append(lv)
    return out


def _run(backend, fmt, rounding, isa=None, steps=3):
    rng = np.random.default_rng(5)
    # whole blocks, a partial last block, a float32-state tensor, and element
    # counts that start tensors off a 256-element boundary in the step
    shapes = [(3 * L.QBLOCK + 100,), (L.QMIN_ELEMENTS + 5,), (17,), (2 * L.QBLOCK,)]
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = [{k: (rng.standard_normal(v.shape) * 10.0 ** rng.uniform(-4, 1, v.shape))
              .astype(np.float32) for k, v in params.items()} for _ in range(steps)]
    before = lowp._set_isa(isa) if isa else None
    try:
        with fo.use_backend(backend):
            opt = fo.AdamW(params, lr=1e-2, weight_decay=0.05, state_dtype=fmt,
                           state_rounding=rounding, state_seed=3)
            for g in grads:
                opt.step(g)
    finally:
        if before:
            lowp._set_isa(before)
    return params, opt.state


@pytest.mark.parametrize("isa", _levels())
@pytest.mark.parametrize("fmt,rounding", [("int8", "stochastic"), ("int8", "nearest"),
                                          ("bfloat16", "nearest"),
                                          ("bfloat16", "stochastic")])
def test_every_isa_build_gives_the_reference_bits(isa, fmt, rounding):
    ref_p, ref_s = _run("numpy", fmt, rounding)
    p, s = _run("cython", fmt, rounding, isa)
    for k in ref_p:
        assert ref_p[k].tobytes() == p[k].tobytes(), (isa, k)
    assert ref_s.keys() == s.keys()
    for label in ref_s:
        for k in ref_s[label]:
            assert ref_s[label][k].tobytes() == s[label][k].tobytes(), (isa, label, k)


def test_set_isa_refuses_unknown_names():
    with pytest.raises(ValueError, match="isa"):
        lowp._set_isa("sse9")
