"""Adam with bfloat16 or 8-bit blockwise moments, Numba
(``fusedoptim.families.adam_lowp``, bit for bit).

Work is a list of tasks ``(tensor, lo, hi)``: each tensor cut into pieces of
``_tuning.BLOCK_ELEMENTS`` elements from its element 0 (a multiple of
``QBLOCK``, so a quantization block is never split), run by a ``prange``
over the tasks on the parallel path.  Bit patterns are read and written
through a float32 buffer and its uint32 view (Numba has no scalar bit cast);
integer arithmetic is done in uint64 with explicit 32-bit masks (Numba
widens uint32 operations), which gives the uint32 results of the reference.
"""

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from .. import _tuning
from .._validate import gather
from ..families.adam_lowp import QBLOCK
from ._fpmode import fp_enter, fp_leave
from ._step import JIT, in_parallel, parallel_threads, _addr

__all__ = ["adam_bf16", "adam_q8"]

_M32 = np.uint64(0xFFFFFFFF)
_S16, _S15, _S19, _S20, _S13, _S12, _S7, _S31 = (np.uint64(k) for k in
                                                  (16, 15, 19, 20, 13, 12, 7, 31))
_H1, _H2, _GOLD = np.uint64(0x7FEB352D), np.uint64(0x846CA68B), np.uint64(0x9E3779B1)
_Q8V = np.uint64(0x85EBCA6B)
_ONE = np.uint64(1)
# float32 bit patterns: +inf (above it: a NaN) and the positive quiet NaN
_FINF, _QNAN = np.uint64(0x7F800000), np.uint64(0x7FC00000)
KIND_BF16, KIND_Q8, KIND_F32 = 0, 1, 2


@intrinsic
def _ptr(typingctx, addr, like):
    """``addr`` as a pointer to the scalar type of ``like`` (any number)."""
    if not isinstance(addr, types.Integer) or not isinstance(like, types.Number):
        return None
    sig = types.CPointer(like)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@njit(inline="always", **JIT)
def _view(addr, lo, m, like, itemsize):
    return numba.carray(_ptr(addr + lo * itemsize, like), m)


@njit(inline="always", **JIT)
def _mix(x):
    """lowbias32 of ``x`` (< 2^32, held in a uint64)."""
    x = x ^ (x >> _S16)
    x = (x * _H1) & _M32
    x = x ^ (x >> _S15)
    x = (x * _H2) & _M32
    return x ^ (x >> _S16)


@njit(inline="always", **JIT)
def _prelude(p, g, s, f):
    if f[0]:
        g = g * s[9]
    if f[1]:
        g = -g
    if f[2]:
        g = g + s[10] * p
    if f[3]:
        p = p * s[11]
    return p, g


@njit(**JIT)
def _bf16_span(row, lo, hi, idx0, s, f, key):
    n = hi - lo
    P = _view(row[0], lo, n, np.float32(0), 4)
    G = _view(row[1], lo, n, np.float32(0), 4)
    M = _view(row[2], lo, n, np.uint16(0), 2)
    V = _view(row[3], lo, n, np.uint16(0), 2)
    b1, omb1, b2, omb2, es, alr = s[1], s[2], s[3], s[4], s[8], s[12]
    FM = np.empty(QBLOCK, np.float32)
    FV = np.empty(QBLOCK, np.float32)
    UM = FM.view(np.uint32)
    UV = FV.view(np.uint32)
    for a in range(0, n, QBLOCK):
        k = min(QBLOCK, n - a)
        for i in range(k):
            UM[i] = np.uint64(M[a + i]) << _S16
            UV[i] = np.uint64(V[a + i]) << _S16
        for i in range(k):
            p, g = _prelude(P[a + i], G[a + i], s, f)
            mi = b1 * FM[i] + omb1 * g
            vi = b2 * FV[i] + omb2 * (g * g)
            P[a + i] = p - (alr * mi) / (np.sqrt(vi) + es)
            FM[i] = mi
            FV[i] = vi
        for i in range(k):
            bm = np.uint64(UM[i])
            bv = np.uint64(UV[i])
            if f[4]:
                h = _mix((np.uint64(idx0 + a + i) & _M32) ^ key)
                rm = h & np.uint64(0xFFFF)
                rv = h >> _S16
            else:
                rm = np.uint64(0x7FFF) + ((bm >> _S16) & _ONE)
                rv = np.uint64(0x7FFF) + ((bv >> _S16) & _ONE)
            wm = ((bm + rm) & _M32) >> _S16
            wv = ((bv + rv) & _M32) >> _S16
            if FM[i] != FM[i]:  # the positive quiet NaN (adam_lowp.bf16_encode)
                wm = np.uint64(0x7FC0)
            if FV[i] != FV[i]:
                wv = np.uint64(0x7FC0)
            M[a + i] = wm
            V[a + i] = wv


@njit(**JIT)
def _f32_span(row, lo, hi, s, f):
    n = hi - lo
    P = _view(row[0], lo, n, np.float32(0), 4)
    G = _view(row[1], lo, n, np.float32(0), 4)
    M = _view(row[2], lo, n, np.float32(0), 4)
    V = _view(row[3], lo, n, np.float32(0), 4)
    lr, b1, omb1, b2, omb2, eps, c1, c2 = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
    for i in range(n):
        p, g = _prelude(P[i], G[i], s, f)
        mi = b1 * M[i] + omb1 * g
        vi = b2 * V[i] + omb2 * (g * g)
        M[i] = mi
        V[i] = vi
        P[i] = p - (lr * (mi / c1)) / (np.sqrt(vi / c2) + eps)


@njit(**JIT)
def _q8_span(row, lo, hi, idx0, s, f, key):
    """Blocks of elements [lo, hi) (lo a multiple of QBLOCK)."""
    n = hi - lo
    P = _view(row[0], lo, n, np.float32(0), 4)
    G = _view(row[1], lo, n, np.float32(0), 4)
    MC = _view(row[2], lo, n, np.uint8(0), 1)
    VC = _view(row[3], lo, n, np.uint8(0), 1)
    nb = (n + QBLOCK - 1) // QBLOCK
    MS = _view(row[4], lo // QBLOCK, nb, np.float32(0), 4)
    VS = _view(row[5], lo // QBLOCK, nb, np.float32(0), 4)
    b1, omb1, b2, omb2, es, alr = s[1], s[2], s[3], s[4], s[8], s[12]
    FM = np.empty(QBLOCK, np.float32)
    FS = np.empty(QBLOCK, np.float32)
    UM = FM.view(np.uint32)
    US = FS.view(np.uint32)
    one = np.empty(2, np.float32)
    uone = one.view(np.uint32)
    for blk in range(nb):
        a = blk * QBLOCK
        k = min(QBLOCK, n - a)
        # the old scales folded into the decay factors (float32, per block)
        b1ms = b1 * MS[blk]
        b2vs = (b2 * VS[blk]) * VS[blk]
        for i in range(k):
            cm = np.uint64(MC[a + i])
            mag = cm & np.uint64(127)
            UM[i] = (np.uint64(0) if mag == 0 else (mag + np.uint64(889)) << _S20) | \
                ((cm >> _S7) << _S31)
            US[i] = (np.uint64(VC[a + i]) + np.uint64(1777)) << _S19
        amax_m = np.uint64(0)
        amax_s = np.uint64(0)
        for i in range(k):
            ds = FS[i]
            p, g = _prelude(P[a + i], G[a + i], s, f)
            mi = FM[i] * b1ms + omb1 * g
            vi = (ds * ds) * b2vs + omb2 * (g * g)
            si = np.sqrt(vi)
            P[a + i] = p - (alr * mi) / (si + es)
            FM[i] = mi
            FS[i] = si
            am = np.uint64(UM[i]) & np.uint64(0x7FFFFFFF)
            asq = np.uint64(US[i]) & np.uint64(0x7FFFFFFF)
            if am > amax_m:
                amax_m = am
            if asq > amax_s:
                amax_s = asq
        if amax_m > _FINF or amax_s > _FINF:
            # a NaN m, s or scale becomes the positive quiet NaN
            # (adam_lowp.adam_q8_tensor), only in a block that has one
            for i in range(k):
                if FM[i] != FM[i]:
                    UM[i] = _QNAN
                if FS[i] != FS[i]:
                    US[i] = _QNAN
            if amax_m > _FINF:
                amax_m = np.uint64(_QNAN)
            if amax_s > _FINF:
                amax_s = np.uint64(_QNAN)
        uone[0] = amax_m
        uone[1] = amax_s
        fm = one[0]
        fs = one[1]
        inv_m = np.float32(0) if fm == 0 else np.float32(1) / fm
        inv_s = np.float32(0) if fs == 0 else np.float32(1) / fs
        for i in range(k):
            sign = np.uint64(UM[i]) >> _S31
            FM[i] = abs(FM[i]) * inv_m
            FS[i] = FS[i] * inv_s
            bm = np.uint64(UM[i])
            bs = np.uint64(US[i])
            if f[4]:  # families.adam_lowp.q8_rounding_bits
                h = ((((np.uint64(idx0 + a + i) + key) & _M32) * _GOLD)) & _M32
                rm = h >> _S12
                rs = ((h * _Q8V) & _M32) >> _S13
            else:
                rm = np.uint64(0x7FFFF) + ((bm >> _S20) & _ONE)
                rs = np.uint64(0x3FFFF) + ((bs >> _S19) & _ONE)
            cm = ((bm + rm) & _M32) >> _S20
            cm = min(max(cm, np.uint64(889)), np.uint64(1016)) - np.uint64(889)
            cs = ((bs + rs) & _M32) >> _S19
            cs = min(max(cs, np.uint64(1777)), np.uint64(2032)) - np.uint64(1777)
            MC[a + i] = cm | (sign << _S7)
            VC[a + i] = cs
        MS[blk] = fm
        VS[blk] = fs


@njit(inline="always", **JIT)
def _task(ptrs, kinds, bases, tasks, j, s, f, key):
    t = tasks[j, 0]
    lo = tasks[j, 1]
    hi = tasks[j, 2]
    kind = kinds[t]
    if kind == KIND_BF16:
        _bf16_span(ptrs[t], lo, hi, bases[t] + lo, s, f, key)
    elif kind == KIND_Q8:
        _q8_span(ptrs[t], lo, hi, bases[t] + lo, s, f, key)
    else:
        _f32_span(ptrs[t], lo, hi, s, f)


@njit(**JIT)
def _serial(ptrs, kinds, bases, tasks, s, f, key):
    for j in range(tasks.shape[0]):
        _task(ptrs, kinds, bases, tasks, j, s, f, key)


@njit(parallel=True, **JIT)
def _parallel(ptrs, kinds, bases, tasks, s, f, key):
    for j in prange(tasks.shape[0]):
        mode = fp_enter()  # the caller's floating-point mode (_fpmode)
        _task(ptrs, kinds, bases, tasks, j, s, f, key)
        fp_leave(mode)


def _run(params, grads, arrays, mode, kw, q8):
    groups = gather(params, grads, (), mode)
    if len(groups) != len(arrays):
        raise ValueError("the states do not match the parameters")
    rows, kinds, bases, tasks = [], [], [], []
    total = 0
    base0 = kw.get("index_base", 0)  # a shard's first element in the whole step
    for t, ((p, g), row) in enumerate(zip(groups, arrays)):
        if p.dtype != np.float32:
            raise TypeError("reduced-precision state needs float32 parameters")
        pa = _addr(p)
        addrs = [pa, _addr(g)] + [pa if a is None else _addr(a) for a in row]
        rows.append(addrs + [pa] * (6 - len(addrs)))
        kinds.append(KIND_BF16 if not q8 else (KIND_Q8 if row[2] is not None else KIND_F32))
        bases.append(base0 + total)
        n = p.size
        for lo in range(0, n, _tuning.BLOCK_ELEMENTS):
            tasks.append((t, lo, min(n, lo + _tuning.BLOCK_ELEMENTS)))
        total += n
    if not tasks:
        return
    f32 = np.float32
    lr, b1, b2, wd = kw["lr"], kw["beta1"], kw["beta2"], kw["weight_decay"]
    rc2 = np.sqrt(np.float64(kw["bc2"]))  # families.adam_lowp._alr_es
    s = tuple(f32(x) for x in (lr, b1, 1.0 - b1, b2, 1.0 - b2, kw["eps"], kw["bc1"],
                                kw["bc2"], kw["eps"] * rc2, kw["gscale"], wd,
                                1.0 - lr * wd, lr * rc2 / kw["bc1"]))
    f = (kw["gscale"] != 1.0, bool(kw["maximize"]), wd != 0.0 and not kw["decoupled"],
         wd != 0.0 and bool(kw["decoupled"]), bool(kw["stochastic"]))
    args = (np.array(rows, np.intp), np.array(kinds, np.intp), np.array(bases, np.intp),
            np.array(tasks, np.intp), s, f, np.uint64(kw["key"]))
    nthreads = parallel_threads(total)
    if nthreads > 1:
        in_parallel(nthreads, _parallel, *args)
    else:
        _serial(*args)


def adam_bf16(params, grads, arrays, mode, kw):
    """Adam with bfloat16 moments (see ``_ext.adam_lowp.adam_bf16``)."""
    _run(params, grads, arrays, mode, kw, False)


def adam_q8(params, grads, arrays, mode, kw):
    """Adam with 8-bit moments (see ``_ext.adam_lowp.adam_q8``)."""
    _run(params, grads, arrays, mode, kw, True)
