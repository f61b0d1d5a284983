"""Reduced-precision state for the one-state families, Numba
(``fusedoptim.families.lowp_onestate``, bit for bit).

As ``_numba/adam_lowp.py``: work is a list of tasks ``(tensor, lo, hi)``,
each tensor cut into pieces of ``_tuning.BLOCK_ELEMENTS`` elements from its
element 0 (a multiple of ``QBLOCK``: a quantization block is never split),
run by a ``prange`` on the parallel path; bit patterns go through a float32
buffer and its uint32 view; integer arithmetic in uint64 with explicit
32-bit masks.  The family is a run-time argument (``LowpDecl.index``)
chosen per element by :func:`_elem` (one compiled kernel for all families,
cacheable: no closures).  The pointer view ``_view`` and the lowbias32 hash
``_mix`` are ``_numba/adam_lowp.py``'s.
"""

import numpy as np
from numba import njit, prange

from .. import _tuning
from .._validate import gather
from ..families.adam_lowp import QBLOCK
from ..families.lowp_onestate import LowpDecl
from ._fpmode import fp_enter, fp_leave
from ._step import JIT, in_parallel, parallel_threads, _addr
from .adam_lowp import _mix, _view

__all__ = ["onestate_step"]

_M32 = np.uint64(0xFFFFFFFF)
_S16, _S13, _S12, _S7, _S31 = (np.uint64(k) for k in (16, 13, 12, 7, 31))
_GOLD = np.uint64(0x9E3779B1)
_Q8V = np.uint64(0x85EBCA6B)
_ONE = np.uint64(1)
# The 8-bit codes' fields (lowp_codec.h's FO_Q8M_* and FO_Q8V_*, which say
# what they are): shift, lowest and highest field.
_Q8M_SHIFT, _Q8M_LO, _Q8M_HI = np.uint64(20), np.uint64(889), np.uint64(1016)
_Q8V_SHIFT, _Q8V_LO, _Q8V_HI = np.uint64(19), np.uint64(1777), np.uint64(2032)
KIND_BF16, KIND_Q8, KIND_F32 = 0, 1, 2
_F1, _F0 = np.float32(1), np.float32(0)


@njit(inline="always", **JIT)
def _q8_code(b, r, shift, lo, hi):
    """lowp_codec.h's fo_q8_code: bit pattern b plus rounding bits r, its
    field at shift clamped to [lo, hi] and rebased."""
    return min(max(((b + r) & _M32) >> shift, lo), hi) - lo


@njit(inline="always", **JIT)
def _q8m_bits(key, ctr):
    """families.adam_lowp.q8_rounding_bits of m for element ctr."""
    return ((((ctr + key) & _M32) * _GOLD) & _M32) >> _S12


@njit(inline="always", **JIT)
def _q8v_bits(key, ctr):
    """families.adam_lowp.q8_rounding_bits of v for element ctr."""
    return ((((((ctr + key) & _M32) * _GOLD) & _M32) * _Q8V) & _M32) >> _S13


@njit(inline="always", **JIT)
def _q8_nearest(b, shift):
    """fo_q8_nearest: nearest-even rounding bits of b for a field at shift."""
    return ((_ONE << (shift - _ONE)) - _ONE) + ((b >> shift) & _ONE)


@njit(inline="always", **JIT)
def _prelude(p, g, s, f):
    """families._spec.prelude: s[8] = gscale, s[9] = L2 decay; f[4..6]."""
    if f[4]:
        g = g * s[8]
    if f[5]:
        g = -g
    if f[6]:
        g = g + s[9] * p
    return g


@njit(inline="always", **JIT)
def _elem(fam, s, f, p, g, x0):
    """The family's float32 update of one element (lowp_onestate.h's
    fo1_<family>_elem): the new parameter and state."""
    if fam == 0:  # sgd: s = (lr, momentum, 1 - dampening), f = (nesterov, first)
        b = g if f[1] else s[1] * x0 + s[2] * g
        d = g + s[1] * b if f[0] else b
        return p - s[0] * d, b
    if fam == 1:  # rmsprop: s = (lr, alpha, 1 - alpha, eps), f = (eps_inside,)
        if f[0]:
            x1 = s[1] * x0 + s[2] * (g * g)
            r = np.sqrt(x1 + s[3])
        else:
            x1 = s[1] * x0 + (s[2] * g) * g
            r = np.sqrt(x1) + s[3]
        return p - (s[0] * g) / r, x1
    if fam == 2:  # adagrad: s = (lr, eps)
        x1 = x0 + g * g
        return p - s[0] * (g / (np.sqrt(x1) + s[1])), x1
    # lion: s = (lr, b1, 1 - b1, b2, 1 - b2, wd), f = (wd != 0,)
    c = s[1] * x0 + s[2] * g
    u = _F1 if c > 0 else (-_F1 if c < 0 else (_F0 if c == c else c))
    if f[0]:
        u = u + s[5] * p
    return p - s[0] * u, s[3] * x0 + s[4] * g


@njit(**JIT)
def _bf16_span(fam, sq, row, lo, hi, idx0, s, f, key):
    n = hi - lo
    P = _view(row[0], lo, n, np.float32(0), 4)
    G = _view(row[1], lo, n, np.float32(0), 4)
    W = _view(row[2], lo, n, np.uint16(0), 2)
    FX = np.empty(QBLOCK, np.float32)
    UX = FX.view(np.uint32)
    for a in range(0, n, QBLOCK):
        k = min(QBLOCK, n - a)
        for i in range(k):
            UX[i] = np.uint64(W[a + i]) << _S16
        for i in range(k):
            p = P[a + i]
            g = _prelude(p, G[a + i], s, f)
            P[a + i], FX[i] = _elem(fam, s, f, p, g, FX[i])
        for i in range(k):
            b = np.uint64(UX[i])
            if f[7]:
                h = _mix((np.uint64(idx0 + a + i) & _M32) ^ key)
                r = h >> _S16 if sq else h & np.uint64(0xFFFF)
            else:
                r = np.uint64(0x7FFF) + ((b >> _S16) & _ONE)
            w = ((b + r) & _M32) >> _S16
            if FX[i] != FX[i]:  # the positive quiet NaN (lowp_onestate.encode)
                w = np.uint64(0x7FC0)
            W[a + i] = w


@njit(**JIT)
def _f32_span(fam, row, lo, hi, s, f):
    n = hi - lo
    P = _view(row[0], lo, n, np.float32(0), 4)
    G = _view(row[1], lo, n, np.float32(0), 4)
    X = _view(row[2], lo, n, np.float32(0), 4)
    for i in range(n):
        p = P[i]
        g = _prelude(p, G[i], s, f)
        P[i], X[i] = _elem(fam, s, f, p, g, X[i])


@njit(**JIT)
def _q8_span(fam, sq, row, lo, hi, idx0, s, f, key):
    """Blocks of elements [lo, hi) (lo a multiple of QBLOCK)."""
    n = hi - lo
    P = _view(row[0], lo, n, np.float32(0), 4)
    G = _view(row[1], lo, n, np.float32(0), 4)
    C = _view(row[2], lo, n, np.uint8(0), 1)
    nb = (n + QBLOCK - 1) // QBLOCK
    SC = _view(row[3], lo // QBLOCK, nb, np.float32(0), 4)
    FX = np.empty(QBLOCK, np.float32)
    UX = FX.view(np.uint32)
    one = np.empty(1, np.float32)
    uone = one.view(np.uint32)
    for blk in range(nb):
        a = blk * QBLOCK
        k = min(QBLOCK, n - a)
        s0 = SC[blk]
        for i in range(k):
            c = np.uint64(C[a + i])
            if sq:
                UX[i] = (c + _Q8V_LO) << _Q8V_SHIFT
            else:
                mag = c & np.uint64(127)
                UX[i] = (np.uint64(0) if mag == 0 else (mag + _Q8M_LO) << _Q8M_SHIFT) | \
                    ((c >> _S7) << _S31)
        amax = np.uint64(0)
        for i in range(k):
            x0 = FX[i] * s0
            if sq:
                x0 = x0 * x0
            p = P[a + i]
            g = _prelude(p, G[a + i], s, f)
            P[a + i], x1 = _elem(fam, s, f, p, g, x0)
            FX[i] = np.sqrt(x1) if sq else x1
            ay = np.uint64(UX[i]) & np.uint64(0x7FFFFFFF)
            if ay > amax:
                amax = ay
        uone[0] = amax
        fs = one[0]
        inv = np.float32(0) if fs == 0 else np.float32(1) / fs
        for i in range(k):
            sign = np.uint64(UX[i]) >> _S31 if FX[i] == FX[i] else np.uint64(0)
            FX[i] = FX[i] * inv if sq else abs(FX[i]) * inv
            b = np.uint64(UX[i])
            ctr = np.uint64(idx0 + a + i)
            if sq:
                r = _q8v_bits(key, ctr) if f[7] else _q8_nearest(b, _Q8V_SHIFT)
                C[a + i] = _q8_code(b, r, _Q8V_SHIFT, _Q8V_LO, _Q8V_HI)
            else:
                r = _q8m_bits(key, ctr) if f[7] else _q8_nearest(b, _Q8M_SHIFT)
                C[a + i] = _q8_code(b, r, _Q8M_SHIFT, _Q8M_LO, _Q8M_HI) | (sign << _S7)
        SC[blk] = fs


@njit(inline="always", **JIT)
def _task(fam, sq, ptrs, kinds, bases, tasks, j, s, f, key):
    t = tasks[j, 0]
    lo = tasks[j, 1]
    hi = tasks[j, 2]
    kind = kinds[t]
    if kind == KIND_BF16:
        _bf16_span(fam, sq, ptrs[t], lo, hi, bases[t] + lo, s, f, key)
    elif kind == KIND_Q8:
        _q8_span(fam, sq, ptrs[t], lo, hi, bases[t] + lo, s, f, key)
    else:
        _f32_span(fam, ptrs[t], lo, hi, s, f)


@njit(**JIT)
def _serial(fam, sq, ptrs, kinds, bases, tasks, s, f, key):
    for j in range(tasks.shape[0]):
        _task(fam, sq, ptrs, kinds, bases, tasks, j, s, f, key)


@njit(parallel=True, **JIT)
def _parallel(fam, sq, ptrs, kinds, bases, tasks, s, f, key):
    for j in prange(tasks.shape[0]):
        mode = fp_enter()  # the caller's floating-point mode (_fpmode)
        _task(fam, sq, ptrs, kinds, bases, tasks, j, s, f, key)
        fp_leave(mode)


def onestate_step(decl: LowpDecl, params: dict, grads: dict, arrays: list, mode: int,
                  kw: dict) -> None:
    """One step of ``decl``'s family with reduced-precision state (see
    ``_ext.lowp_onestate.onestate_step``)."""
    groups = gather(params, grads, (), mode)
    if len(groups) != len(arrays):
        raise ValueError("the states do not match the parameters")
    rows, kinds, bases, tasks = [], [], [], []
    total = 0
    base0 = kw.get("index_base", 0)  # a shard's first element in the whole step
    for t, ((p, g), (state, scale)) in enumerate(zip(groups, arrays)):
        if p.dtype != np.float32:
            raise TypeError("reduced-precision state needs float32 parameters")
        pa = _addr(p)
        rows.append([pa, _addr(g), _addr(state), pa if scale is None else _addr(scale)])
        kinds.append(KIND_BF16 if state.dtype == np.uint16 else
                     (KIND_F32 if scale is None else KIND_Q8))
        bases.append(base0 + total)
        n = p.size
        for lo in range(0, n, _tuning.BLOCK_ELEMENTS):
            tasks.append((t, lo, min(n, lo + _tuning.BLOCK_ELEMENTS)))
        total += n
    if not tasks:
        return
    f32 = np.float32
    sc = decl.scalars(kw)
    fl = decl.flags(kw)
    wd = kw["weight_decay"] if decl.l2 else 0.0
    s = tuple(f32(sc[j]) if j < len(sc) else f32(0) for j in range(8)) + (
        f32(kw["gscale"]), f32(wd))
    f = tuple(bool(fl[j]) if j < len(fl) else False for j in range(4)) + (
        kw["gscale"] != 1.0, bool(kw["maximize"]), wd != 0.0, bool(kw["stochastic"]))
    args = (np.intp(decl.index), decl.codec == "sqrt", np.array(rows, np.intp),
            np.array(kinds, np.intp), np.array(bases, np.intp), np.array(tasks, np.intp),
            s, f, np.uint64(kw["key"]))
    nthreads = parallel_threads(total)
    if nthreads > 1:
        in_parallel(nthreads, _parallel, *args)
    else:
        _serial(*args)
