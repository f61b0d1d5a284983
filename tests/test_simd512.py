"""The compiled loops' SIMD builds (issue 13): every instruction set the CPU
has (AVX-512, AVX2, the baseline loops) gives the reference's bits for every
optimizer class, on tensors whose sizes straddle the loops' vector widths,
LAMB's 64-element chunks and its 4096-element norm blocks, at 1 and 2
threads; and the switch that chooses the build."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.cli.bench.workloads import hyperparameters
from fusedoptim.families import OPTIMIZERS
from helpers import assert_bitwise, placed

ext = pytest.importorskip("fusedoptim._ext")

#: Every build this machine runs, the widest first.
ISAS = {"avx512": ["avx512", "avx2", "baseline"], "avx2": ["avx2", "baseline"],
        "baseline": ["baseline"]}[ext.simd()]

# 1 and 7: shorter than a vector; 63/64/65: around a LAMB chunk; 4095/4097:
# around a norm block; the last: several blocks ending in a partial chunk.
SHAPES = {"a": (1,), "b": (7,), "c": (63,), "d": (64,), "e": (65,), "f": (4095,),
          "g": (4097,), "h": (2 * 4096 + 100,), "w": (37, 29)}
STEPS = 3


def _model(dtype):
    rng = np.random.default_rng(7)
    params = {k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
    grads = [{k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
             for _ in range(STEPS)]
    return params, grads


def _run(cls, hp, dtype, backend):
    params, grads = _model(dtype)
    with fo.use_backend(backend):
        opt = cls(params, **hp)
        for g in grads:
            opt.step(g)
    return params, opt.state_dict()


@pytest.fixture
def isa(request):
    before = ext._set_simd_isa(request.param)
    try:
        yield request.param
    finally:
        ext._set_simd_isa(before)


@pytest.mark.parametrize("isa", ISAS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("decay", [False, True])
def test_every_build_matches_reference(isa, threads, low_threshold, dtype, name, decay):
    cls = OPTIMIZERS[name]
    hp = hyperparameters(cls)
    hp["lr"] = 1e-2
    if decay:
        if "weight_decay" not in hp:
            pytest.skip(f"{name} has no weight decay")
        hp["weight_decay"] = 0.1
    assert ext.simd() == isa
    ref_p, ref_s = _run(cls, hp, dtype, "numpy")
    got_p, got_s = _run(cls, hp, dtype, "cython")
    for k in SHAPES:
        assert_bitwise(got_p[k], ref_p[k])
    states = [k for k in ref_s if k.startswith("state/")]
    assert sorted(states) == sorted(k for k in got_s if k.startswith("state/"))
    assert len(states) >= (len(SHAPES) if name != "GD" else 0)
    for k in states:
        assert_bitwise(got_s[k], ref_s[k])


def test_set_simd_isa():
    """``_set_simd_isa`` runs a build the CPU has and names the previous one;
    it refuses an unknown name or a build the CPU lacks and changes
    nothing then; ``_set_simd(True)`` returns to the widest."""
    best = ext.simd()
    try:
        for name in ISAS:
            ext._set_simd_isa(name)
            assert ext.simd() == name
        assert ext._set_simd_isa(best) == ISAS[-1]
        with pytest.raises(ValueError, match="name"):
            ext._set_simd_isa("sse9")
        assert ext.simd() == best
        if best != "avx512":
            with pytest.raises(ValueError, match="not available"):
                ext._set_simd_isa("avx512")
            assert ext.simd() == best
        assert ext._set_simd(False) is (best != "baseline")
        assert ext.simd() == "baseline"
        ext._set_simd(True)
        assert ext.simd() == best
    finally:
        ext._set_simd_isa(best)


def _offset_model(dtype, offset):
    """Parameters and gradients starting ``offset`` elements past a 64-byte
    boundary (``helpers.placed``), sizes around one vector."""
    rng = np.random.default_rng(11 + offset)
    sizes = {"a": 1, "b": 5, "c": 17, "d": 100, "e": 1000}
    params = {k: placed(rng, n, dtype, offset) for k, n in sizes.items()}
    grads = [{k: placed(rng, n, dtype, offset) for k, n in sizes.items()}
             for _ in range(STEPS)]
    return params, grads


@pytest.mark.parametrize("isa", ISAS[:1], indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_start_in_a_cache_line_matches_reference(isa, dtype, name):
    """Each class's widest build, parameters starting at every element
    offset within a cache line: the reference's bits."""
    cls = OPTIMIZERS[name]
    hp = hyperparameters(cls)
    hp["lr"] = 1e-2
    if "weight_decay" in hp:
        hp["weight_decay"] = 0.1
    for offset in range(64 // np.dtype(dtype).itemsize):
        got, want = {}, {}
        for backend, out in (("cython", got), ("numpy", want)):
            params, grads = _offset_model(dtype, offset)
            with fo.use_backend(backend):
                opt = cls(params, **hp)
                for g in grads:
                    opt.step(g)
            out.update(params)
            out.update(opt.state_dict())
        for k, a in want.items():
            if isinstance(a, np.ndarray):
                assert_bitwise(got[k], a)
