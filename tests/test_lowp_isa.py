"""Each instruction-set build of the reduced-precision Adam loops
(``_ext/adam_lowp.h``: baseline, AVX2, AVX-512 with runtime dispatch) gives
the NumPy reference's bits: the AVX2 build is run here even on an AVX-512
CPU, which the dispatch would never choose."""

import contextlib

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import adam_lowp as L
from helpers import placed

lowp = pytest.importorskip("fusedoptim._ext.adam_lowp")
LEVELS = ("baseline", "avx2", "avx512", "avx512bf16")


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


@contextlib.contextmanager
def _isa(isa):
    """The compiled loops forced to build ``isa`` (None: the dispatch's)."""
    before = lowp._set_isa(isa) if isa else None
    try:
        yield
    finally:
        if before:
            lowp._set_isa(before)


def _bits(backend, isa, p0, steps):
    """Parameter and state bytes after ``steps(params)`` (which builds the
    optimizer, steps it and returns it) on one backend and build."""
    params = {"w": p0.copy()}
    with _isa(isa), fo.use_backend(backend):
        opt = steps(params)
    return params["w"].tobytes(), {k: v["w"].tobytes() for k, v in opt.state.items()}


def _run(backend, fmt, rounding, isa=None, steps=3):
    rng = np.random.default_rng(5)
    # whole blocks, a partial last block, a float32-state tensor, and element
    # counts that start tensors off a 256-element boundary in the step
    shapes = [(3 * L.QBLOCK + 100,), (L.QMIN_ELEMENTS + 5,), (17,), (2 * L.QBLOCK,)]
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = [{k: (rng.standard_normal(v.shape) * 10.0 ** rng.uniform(-4, 1, v.shape))
              .astype(np.float32) for k, v in params.items()} for _ in range(steps)]
    with _isa(isa), fo.use_backend(backend):
        opt = fo.AdamW(params, lr=1e-2, weight_decay=0.05, state_dtype=fmt,
                       state_rounding=rounding, state_seed=3)
        for g in grads:
            opt.step(g)
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


def _extreme_grads(n, steps, rng):
    """Blocks of gradients whose moments' scales fall outside [2^-126, 2^126]
    (the loops' slow path: subnormal scales, reciprocals that overflow),
    all-zero blocks, huge but finite ones, and mixed blocks."""
    out = []
    for _ in range(steps):
        g = rng.standard_normal(n).astype(np.float32)
        blocks = g[: n // L.QBLOCK * L.QBLOCK].reshape(-1, L.QBLOCK)
        kind = np.arange(blocks.shape[0]) % 5
        blocks[kind == 0] *= np.float32(1e-41)   # subnormal gradients and scales
        blocks[kind == 1] = 0.0                  # zero moments: scale 0
        blocks[kind == 2] *= np.float32(1e18)    # g*g near the float32 top
        blocks[kind == 3, ::7] *= np.float32(1e-30)  # tiny next to normal
        out.append({"w": g})
    return out


@pytest.mark.parametrize("isa", _levels())
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_extreme_blocks_give_the_reference_bits(isa, rounding):
    rng = np.random.default_rng(9)
    n = 40 * L.QBLOCK + 33
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = _extreme_grads(n, 4, rng)

    def steps(params):
        opt = fo.Adam(params, lr=1e-3, state_dtype="int8", state_rounding=rounding,
                      state_seed=4)
        for g in grads:
            opt.step(g)
        return opt

    assert _bits("numpy", None, p0, steps) == _bits("cython", isa, p0, steps)


@pytest.mark.parametrize("isa", _levels())
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
def test_non_finite_old_scales_give_the_reference_bits(isa, rounding):
    """Blocks whose stored m scale is NaN or infinite beside a finite v scale
    (no step stores that pair, a loaded state can hold it): every m of such
    a block is NaN or infinite while every s is finite, which the AVX-512
    maximum of |m| (VRANGEPS passes over NaNs) must send off the fast path;
    and blocks with a non-finite v scale."""
    rng = np.random.default_rng(11)
    n = 20 * L.QBLOCK  # above QMIN_ELEMENTS: 8-bit moments
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [{"w": rng.standard_normal(n).astype(np.float32)} for _ in range(3)]

    def steps(params):
        opt = fo.Adam(params, lr=1e-3, state_dtype="int8", state_rounding=rounding,
                      state_seed=6)
        opt.step(grads[0])
        ms = opt.state["exp_avg_scale"]["w"].view(np.uint32)
        vs = opt.state["exp_avg_sq_scale"]["w"].view(np.uint32)
        ms[1], ms[2], ms[3] = 0x7FC00000, 0x7F800000, 0xFFC00000  # NaN, inf, -NaN
        vs[5], vs[6] = 0x7F800000, 0x7FC00000
        for g in grads[1:]:
            opt.step(g)
        return opt

    assert _bits("numpy", None, p0, steps) == _bits("cython", isa, p0, steps)


def test_set_isa_refuses_unknown_names():
    with pytest.raises(ValueError, match="isa"):
        lowp._set_isa("sse9")


@pytest.mark.parametrize("isa", _levels())
@pytest.mark.parametrize("cls,kw", [(fo.Adam, {}), (fo.Adam, {"maximize": True}),
                                    (fo.AdamW, {"weight_decay": 0.01})])
def test_bf16_subnormal_moments_give_the_reference_bits(isa, cls, kw):
    """bfloat16 moments that are or become subnormal: the AVX512_BF16 loop's
    conversion flushes them, so a vector holding one takes the integer
    encoding (adam_lowp_bf16.h).  Groups of 32 elements all normal, with one
    subnormal lane, all subnormal, zero gradients (m decays through the
    subnormals to zero), and a length that leaves a tail."""
    rng = np.random.default_rng(13)
    n = 64 * 32 + 19
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = []
    for t in range(12):
        g = rng.standard_normal(n).astype(np.float32)
        groups = g[: n // 32 * 32].reshape(-1, 32)
        kind = np.arange(groups.shape[0]) % 5
        groups[kind == 1, t % 32] *= np.float32(1e-39)  # one subnormal lane
        groups[kind == 2] *= np.float32(1e-40)          # all subnormal
        groups[kind == 3] *= np.float32(1e-36) if t < 2 else 0.0  # m decays into them
        groups[kind == 4] *= np.float32(1e-20)          # v subnormal, m normal
        grads.append({"w": g})

    def steps(params):
        opt = cls(params, lr=1e-3, betas=(0.5, 0.999), state_dtype="bfloat16",
                      state_rounding="nearest", **kw)
        for g in grads:
            opt.step(g)
        return opt

    ref = _bits("numpy", None, p0, steps)
    words = np.frombuffer(ref[1]["exp_avg"] + ref[1]["exp_avg_sq"], np.uint16)
    assert np.any((words & 0x7F80 == 0) & (words & 0x7F != 0))  # subnormals stored
    assert ref == _bits("cython", isa, p0, steps)


@pytest.mark.parametrize("isa", _levels())
@pytest.mark.parametrize("fmt,rounding", [("bfloat16", "nearest"), ("bfloat16", "stochastic"),
                                          ("int8", "stochastic")])
@pytest.mark.parametrize("cls", [fo.Adam, fo.Lion])
def test_every_start_in_a_cache_line_gives_the_reference_bits(isa, fmt, rounding, cls):
    """The bfloat16 loops run the elements before the parameter's first
    64-byte boundary apart: every start in a cache line, sizes around that
    split and the vector widths (and one int8 tensor), the reference's bits."""
    sizes = (1, 9, 40, 1000, L.QMIN_ELEMENTS + 3)
    for offset in range(16):
        got = []
        for backend in ("numpy", "cython"):
            rng = np.random.default_rng(offset)
            params = {f"p{n}": placed(rng, n, np.float32, offset) for n in sizes}
            grads = [{k: placed(rng, a.size, np.float32, offset) for k, a in params.items()}
                     for _ in range(3)]
            with _isa(isa if backend == "cython" else None), fo.use_backend(backend):
                opt = cls(params, lr=1e-2, state_dtype=fmt, state_rounding=rounding,
                          state_seed=2)
                for g in grads:
                    opt.step(g)
            got.append([a.tobytes() for a in params.values()]
                       + [a.tobytes() for d in opt.state.values() for a in d.values()])
        assert got[0] == got[1], (offset, isa)
