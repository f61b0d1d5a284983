"""Each instruction-set build of the one-state reduced-precision loops
(``_ext/lowp_onestate.h``: baseline, AVX2, AVX-512, chosen like the family
loops by ``_step``'s ISA) gives the NumPy reference's bits, for finite and
for non-finite gradients: the AVX2 build is run here even on an AVX-512
CPU, which the dispatch would never choose."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import adam_lowp as L
from helpers import assert_unchanged

step = pytest.importorskip("fusedoptim._ext._step")
onestate = pytest.importorskip("fusedoptim._ext.lowp_onestate")
LEVELS = ("baseline", "avx2", "avx512")

SETTINGS = {
    "momentum": (fo.Momentum, {"lr": 0.01}),
    "sgd-nesterov-l2-max": (fo.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True,
                                     "weight_decay": 0.01, "maximize": True}),
    "rmsprop": (fo.RMSProp, {"lr": 0.01}),
    "rmsprop-l2-clip": (fo.RMSProp, {"lr": 0.01, "weight_decay": 0.01,
                                     "max_grad_norm": 1.0}),
    "rmsprop-torch-max": (fo.RMSProp, {"lr": 0.01, "eps_inside_sqrt": False,
                                       "maximize": True}),
    "adagrad": (fo.Adagrad, {"lr": 0.05}),
    "lion-wd-max": (fo.Lion, {"lr": 1e-3, "weight_decay": 0.1, "maximize": True}),
}
FORMATS = [("int8", "stochastic"), ("int8", "nearest"), ("bfloat16", "nearest"),
           ("bfloat16", "stochastic")]


def _levels():
    """The builds this CPU (and this build) can run: up to the one that
    ``_step._set_simd(True)`` picks."""
    before = step._set_simd(True)
    best = step.simd()
    step._set_simd(before)
    return LEVELS[:LEVELS.index(best) + 1]


def _grads(rng, params, nonfinite):
    g = {k: (rng.standard_normal(v.shape) * 10.0 ** rng.uniform(-4, 1, v.shape))
         .astype(np.float32) for k, v in params.items()}
    if nonfinite:
        w = g["p0"]
        # NaN, infinities, the largest float, -0.0, an all-zero block
        w[[5, 300, 700, 10, 600]] = [np.nan, np.inf, -np.inf, 3e38, -0.0]
        w[256:512] = 0
    return g


def _run(backend, setting, fmt, rounding, nonfinite, isa=None, steps=3):
    cls, kw = SETTINGS[setting]
    rng = np.random.default_rng(5)
    # whole blocks, a partial last block, a float32-state tensor, and element
    # counts that start tensors off a 256-element boundary in the step
    shapes = [(3 * L.QBLOCK + 100,), (L.QMIN_ELEMENTS + 5,), (17,), (2 * L.QBLOCK,)]
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = [_grads(rng, params, nonfinite) for _ in range(steps)]
    before = step._set_simd_isa(isa) if isa else None
    try:
        with fo.use_backend(backend):
            opt = cls(params, state_dtype=fmt, state_rounding=rounding, state_seed=3, **kw)
            for g in grads:
                opt.step(g)
            if isa:
                assert onestate.isa() == isa
    finally:
        if before:
            step._set_simd_isa(before)
    return params, opt.state


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nonfinite"])
@pytest.mark.parametrize("isa", _levels())
@pytest.mark.parametrize("fmt,rounding", FORMATS)
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_every_isa_build_gives_the_reference_bits(setting, fmt, rounding, isa, nonfinite):
    ref_p, ref_s = _run("numpy", setting, fmt, rounding, nonfinite)
    p, s = _run("cython", setting, fmt, rounding, nonfinite, isa)
    assert ref_s.keys() == s.keys()
    # the parameters and every state array, byte for byte
    assert_unchanged([ref_p, *ref_s.values()], p, *s.values())


def test_isa_follows_the_family_loops():
    # the one-state loops take _step's choice, as the float32 family loops do
    before = step._set_simd(False)
    try:
        assert onestate.isa() == "baseline"
    finally:
        step._set_simd(before)
    assert onestate.isa() == step.simd()
