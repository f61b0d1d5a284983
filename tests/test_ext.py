"""The compiled backend's every loop against the reference, bit for bit:
each family, every flag combination with and without the gradient prelude,
float32/float64, C/Fortran parameters (and a gradient to relayout), on 1 and
2 threads (parallel path forced) and with the AVX2 loops on and off."""

import itertools

import numpy as np
import pytest

import fusedoptim

from fusedoptim import _reference
from fusedoptim._validate import NAMED
from fusedoptim.families import FAMILIES
from helpers import GENERIC

ext = pytest.importorskip("fusedoptim._ext")

SCALARS = dict(lr=0.01, momentum=0.9, dampening=0.1, alpha=0.9, eps=1e-3, beta1=0.9,
               beta2=0.999, bc1=1.0 - 0.9 ** 3, bc2=1.0 - 0.999 ** 3,
               rho=0.9, lr_g=0.0011, lr_m=0.0093, bc2_sqrt=(1.0 - 0.999 ** 3) ** 0.5,
               rect=0.37)
SHAPES = [(37, 29), (5,), (64, 3), (1, 1), (0,), (40, 41)]


def _model(family, dtype, order, rng):
    params, grads, states = {}, {}, {s: {} for s in family.slots}
    for k, shape in enumerate(SHAPES):
        name = f"w{k}"
        params[name] = np.asarray(rng.standard_normal(shape), dtype, order=order)
        g = rng.standard_normal(shape).astype(dtype)
        # Every other gradient in the other layout: the compiled relayout.
        grads[name] = np.asfortranarray(g) if k % 2 else np.ascontiguousarray(g)
        for slot in family.slots:
            x = rng.standard_normal(shape)
            x = 0.01 * x if slot == "gavg" else np.abs(x) + 0.1
            states[slot][name] = np.asarray(x, dtype, order=order)
    return params, grads, states


def _copy(model):
    params, grads, states = model
    return ({k: a.copy(order="K") for k, a in params.items()}, grads,
            {s: {k: a.copy(order="K") for k, a in d.items()} for s, d in states.items()})


def _call(backend, family, model, kw):
    params, grads, states = model
    on = family.active_slots(kw)
    pairs = tuple((s, states[s]) if use else ("", None) for s, use in zip(family.slots, on))
    getattr(backend, family.name)(params, grads, pairs, NAMED, **kw)


def _bits(model):
    params, _, states = model
    arrays = list(params.values()) + [a for d in states.values() for a in d.values()]
    return [a.view(np.uint32 if a.dtype == np.float32 else np.uint64) for a in arrays]


def _keywords(family):
    for flags in itertools.product((False, True), repeat=len(family.flags)):
        for wd, gscale in ((0.0, 1.0), (0.01, 1.0), (0.0, 0.5)):
            # a family's scalar not named here (a new family's) takes the
            # parity tests' generic value
            kw = {k: SCALARS.get(k, GENERIC) for k in family.scalars if k != "weight_decay"}
            kw.update(dict(zip(family.flags, flags)), weight_decay=wd, gscale=gscale)
            yield kw


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_path_matches_reference(name, dtype, order):
    family = FAMILIES[name]
    rng = np.random.default_rng(0)
    base = _model(family, dtype, order, rng)
    old = (ext.get_num_threads(), ext._set_parallel_min(0), ext._set_simd(True))
    try:
        for kw in _keywords(family):
            want = _copy(base)
            _call(_reference, family, want, kw)
            for threads, simd in itertools.product((1, 2), (True, False)):
                ext.set_num_threads(threads)
                ext._set_simd(simd)
                got = _copy(base)
                _call(ext, family, got, kw)
                for a, b in zip(_bits(got), _bits(want)):
                    assert np.array_equal(a, b), (kw, threads, simd)
    finally:
        ext.set_num_threads(old[0])
        ext._set_parallel_min(old[1])
        ext._set_simd(old[2])


def test_split_is_tunings():
    from fusedoptim._ext._step import _split_start
    from fusedoptim._tuning import split_start
    for total in (0, 1, 15, 16, 17, 100, 4097, 1 << 20, (1 << 20) + 5):
        for parts in (1, 2, 3, 7):
            for k in range(parts + 1):
                assert _split_start(total, parts, k) == split_start(total, parts, k)


def test_block_is_tunings():
    from fusedoptim._ext._step import _block_elements
    from fusedoptim._tuning import BLOCK_ELEMENTS, BLOCK_MAX_ELEMENTS, block_elements
    seen = set()
    for total in (0, 1 << 15, 3_290_000, 1 << 22, (1 << 24) - 1, 1 << 24, 124_439_808, 1 << 40):
        for threads in (1, 2, 3, 8):
            b = _block_elements(total, threads)
            assert b == block_elements(total, threads)
            seen.add(b)
    assert min(seen) == BLOCK_ELEMENTS and max(seen) == BLOCK_MAX_ELEMENTS


def test_block_size_keeps_bits():
    """Steps cut into the smallest and the largest blocks (Adam, and LAMB,
    whose per-tensor norms are summed in 4096-element pieces in a fixed
    order whatever the blocks), and the copy yardstick with every start in
    a cache line: the same bits."""
    from fusedoptim._ext import _step
    from fusedoptim._ext._yardstick import copy_like
    rng = np.random.default_rng(3)
    shapes = [(3, 1001), (40_000,), (17,), (270_001,)]
    base = {f"w{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    grads = {f"dw{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    old = (ext.get_num_threads(), ext._set_parallel_min(0))
    got = []
    try:
        ext.set_num_threads(2)
        for blocks in ((16, 16), (16, 1 << 16), (1 << 14, 1 << 18)):
            prev = _step._set_block_elements(*blocks)
            try:
                params = {k: v.copy() for k, v in base.items()}
                lamb = {k: v.copy() for k, v in base.items()}
                with fusedoptim.use_backend("cython"):
                    fusedoptim.Adam(params, lr=1e-3).step(grads)
                    fusedoptim.LAMB(lamb, lr=1e-2, weight_decay=0.1).step(grads)
                got.append({**params, **{"lamb_" + k: v for k, v in lamb.items()}})
            finally:
                _step._set_block_elements(*prev)
        for other in got[1:]:
            for k in got[0]:
                assert np.array_equal(got[0][k].view(np.uint32), other[k].view(np.uint32))
        # The copy's aligned and unaligned starts: every offset in a line.
        for off in range(0, 64, 4):
            buf = np.zeros(100_000 + 32, np.float32)
            x = buf[off // 4:off // 4 + 100_000]
            g = np.arange(100_000, dtype=np.float32)
            copy_like([x], [g])
            assert np.array_equal(x, g)
    finally:
        ext.set_num_threads(old[0])
        ext._set_parallel_min(old[1])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_slot_errors_match_reference(name):
    """A slot present while its flag is off, absent while needed, or a wrong
    number of slots: the compiled step raises the Python backends' error."""
    family = FAMILIES[name]
    params, grads, states = _model(family, np.float64, "C", np.random.default_rng(1))
    kw = next(_keywords(family))
    on = family.active_slots(kw)
    cases = [tuple((s, states[s]) for s in family.slots)[:-1]]
    for k in range(len(family.slots)):
        cases.append(tuple(((s, None) if (j == k) == use else (s, states[s]))
                           for j, (s, use) in enumerate(zip(family.slots, on))))
    for pairs in cases:
        errors = []
        for backend in (ext, _reference):
            with pytest.raises(ValueError) as info:
                getattr(backend, name)(params, grads, pairs, NAMED, **kw)
            errors.append(str(info.value))
        assert errors[0] == errors[1]
