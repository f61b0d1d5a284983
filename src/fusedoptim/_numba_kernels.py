"""Numba kernels: the ``numba`` backend.

The JIT fallback for installations without the compiled extension.  Same
interface as ``fusedoptim._reference`` (read it for the formulas and the
exact operation order) and bit-for-bit the same results, for float32 and
float64, at every thread count.

How a step runs
---------------
``_validate.gather`` checks the whole step first (same errors, same messages,
nothing written on failure).  The checked arrays are then handed to one
jitted call per dtype as a flat work list: an ``intp`` matrix of data
addresses (one row per tensor: parameter, gradient, states) and a vector of
element counts; the kernel views each address with ``numba.carray``.  A step
over a dict is therefore one jitted call, not one per tensor, and the kernel
compiles once per dtype whatever the number or shapes of the tensors (a typed
list or tuple of arrays would either cost a jitted call per element to build
or recompile for every new model).  Per step, the Python side costs
``gather`` plus one tiny jitted call per array to read its address.  ``gather`` gives every state and gradient
the memory layout of its parameter, so element ``i`` of every flat view
belongs to the same parameter entry.

Exactness
---------
No ``fastmath`` (so no FMA contraction or reassociation), and
``error_model="numpy"`` so that a division by zero gives IEEE inf/NaN like
NumPy instead of raising.  Every scalar is rounded once to the arrays' dtype
(``dt(x)``) before the loop, so float32 arithmetic stays float32 (Numba would
otherwise promote ``float32 * float64`` to float64), and ``np.sqrt`` of a
float32 is the float32 square root.

Threads
-------
A step whose parameters hold at least ``_tuning.PARALLEL_MIN_ELEMENTS``
elements in all (read at each call) runs on ``set_num_threads(n)`` threads:
the total element range is cut into ``n`` equal pieces that may straddle
tensors.  Smaller steps run a separate serial kernel (compiled without
``parallel=True``), which never starts Numba's thread pool.  The elementwise
updates do not depend on the split; ``grad_sumsq`` sums fixed blocks (see
``_reference.sumsq_blocks``) in parallel and adds the block sums in order.

Numba's own thread count is thread-local (each Python thread starts at
``NUMBA_NUM_THREADS``), so the parallel kernel sets it on entry from the
count given here and restores the caller's value on exit: the count applies
from any Python thread and does not leak into the user's own Numba code.
Parallel steps are serialized by a lock: each already uses every thread, and
Numba's ``workqueue`` threading layer aborts the process when two threads
enter parallel code at once.  That lock makes ``NUMBA_THREADING_LAYER=
forksafe`` a safe choice for programs that fork after a parallel step (e.g.
``multiprocessing`` with the ``fork`` start method): under the default GNU
OpenMP layer Numba terminates such a child.  This module never changes
Numba's global configuration itself, since that would also change the
user's own Numba code.

Compilation and caching
-----------------------
Kernels compile lazily, on the first step of each dtype (serial and parallel
variants separately), so importing this module costs only the Numba import.
Numba's on-disk cache (``cache=True``) is off by default: there are crash
and corruption reports for cached ``parallel=True`` functions loaded by
several processes at once (multiprocessing workers racing on the index
files), and a stale cache is hard for users to diagnose.  Set
``FUSEDOPTIM_NUMBA_CACHE=1`` before importing fusedoptim to opt in (the same
choice as numbagg and sgkit); the cache then lives where Numba puts it
(``NUMBA_CACHE_DIR``).
"""

import os
import threading

try:
    import numba
    from numba import njit, prange
    from numba.core import types
    from numba.extending import intrinsic
except ImportError:
    raise
except Exception as exc:  # e.g. an OSError from a broken llvmlite
    raise ImportError(f"{type(exc).__name__}: {exc}") from exc

import numpy as np

from . import _tuning
from ._reference import SUMSQ_BLOCK, SUMSQ_LANES
from ._validate import gather

__all__ = ["sgd", "rmsprop", "adam", "grad_sumsq", "set_num_threads"]

# The sum-of-squares block below is written out for eight lanes.
assert SUMSQ_LANES == 8

_CACHE = os.environ.get("FUSEDOPTIM_NUMBA_CACHE", "").strip().lower() in ("1", "true", "yes")

_JIT = dict(nogil=True, error_model="numpy", cache=_CACHE)

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Threads for parallel steps: set by fusedoptim.set_num_threads, never more
# than Numba's pool (numba.set_num_threads refuses that).
_threads = 1
_parallel_lock = threading.Lock()
# Threads the last parallel step ran on (a diagnostic for the tests).
_last_parallel_threads = 0


def set_num_threads(n):
    """Use ``n`` threads for parallel steps, at most ``NUMBA_NUM_THREADS``."""
    global _threads
    _threads = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


@intrinsic
def _ptr(typingctx, addr, like):
    """``addr`` (an integer) as a pointer to the scalar type of ``like``."""
    if not isinstance(addr, types.Integer) or not isinstance(like, types.Float):
        return None
    sig = types.CPointer(like)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@intrinsic
def _itemsize(typingctx, like):
    """Bytes per element of the scalar type of ``like``, a constant."""
    if not isinstance(like, types.Float):
        return None
    sig = types.intp(like)

    def codegen(context, builder, signature, args):
        return context.get_constant(types.intp, like.bitwidth // 8)

    return sig, codegen


@njit(inline="always", **_JIT)
def _view(addr, lo, m, like):
    """Elements [lo, lo + m) of the array at ``addr``, as a 1-D array.

    Kernels loop ``for i in range(m)`` over such views: an index LLVM knows
    to be non-negative needs no wraparound check, and the loop vectorizes.
    """
    return numba.carray(_ptr(addr + lo * _itemsize(like), like), m)


# --- per-family element loops -------------------------------------------------
#
# ``span(row, n, lo, hi, s, f)`` updates elements [lo, hi) of the tensor whose
# n-element arrays start at the addresses in ``row``; ``s`` holds the float64
# scalars, ``f`` the flags.  Each family's factory closes over the dtype.


def _sgd_span(dt):
    @njit(**_JIT)
    def span(row, n, lo, hi, s, f):
        z = dt(0)
        m = hi - lo
        P = _view(row[0], lo, m, z)
        G = _view(row[1], lo, m, z)
        B = _view(row[2], lo, m, z)
        lr, mu, omd, wd, gs = dt(s[0]), dt(s[1]), dt(s[2]), dt(s[3]), dt(s[4])
        scale, maximize, decay, has_buf, first, nesterov = f
        for i in range(m):
            p = P[i]
            g = G[i]
            if scale:
                g = g * gs
            if maximize:
                g = -g
            if decay:
                g = g + wd * p
            if has_buf:
                if first:
                    b = g
                else:
                    b = mu * B[i] + omd * g
                B[i] = b
                if nesterov:
                    g = g + mu * b
                else:
                    g = b
            P[i] = p - lr * g

    return span


def _rmsprop_span(dt):
    @njit(**_JIT)
    def span(row, n, lo, hi, s, f):
        z = dt(0)
        m = hi - lo
        P = _view(row[0], lo, m, z)
        G = _view(row[1], lo, m, z)
        S = _view(row[2], lo, m, z)
        A = _view(row[3], lo, m, z)
        B = _view(row[4], lo, m, z)
        lr, a, oma, eps = dt(s[0]), dt(s[1]), dt(s[2]), dt(s[3])
        mu, wd, gs = dt(s[4]), dt(s[5]), dt(s[6])
        scale, maximize, decay, centered, has_buf, eps_inside = f
        for i in range(m):
            p = P[i]
            g = G[i]
            if scale:
                g = g * gs
            if maximize:
                g = -g
            if decay:
                g = g + wd * p
            sq = a * S[i] + oma * (g * g)
            S[i] = sq
            d = sq
            if centered:
                ga = a * A[i] + oma * g
                A[i] = ga
                d = sq - ga * ga
            if eps_inside:
                r = np.sqrt(d + eps)
            else:
                r = np.sqrt(d) + eps
            if has_buf:
                b = mu * B[i] + g / r
                B[i] = b
                P[i] = p - lr * b
            else:
                P[i] = p - (lr * g) / r

    return span


def _adam_span(dt):
    @njit(**_JIT)
    def span(row, n, lo, hi, s, f):
        z = dt(0)
        m = hi - lo
        P = _view(row[0], lo, m, z)
        G = _view(row[1], lo, m, z)
        M = _view(row[2], lo, m, z)
        V = _view(row[3], lo, m, z)
        VM = _view(row[4], lo, m, z)
        lr, b1, omb1, b2, omb2 = dt(s[0]), dt(s[1]), dt(s[2]), dt(s[3]), dt(s[4])
        eps, c1, c2, wd, shrink, gs = dt(s[5]), dt(s[6]), dt(s[7]), dt(s[8]), dt(s[9]), dt(s[10])
        scale, maximize, l2, decoupled, amsgrad = f
        if not (scale or maximize or l2 or decoupled or amsgrad):
            # The common case gets a branch-free loop that LLVM vectorizes.
            for i in range(m):
                g = G[i]
                m = b1 * M[i] + omb1 * g
                M[i] = m
                v = b2 * V[i] + omb2 * (g * g)
                V[i] = v
                P[i] = P[i] - (lr * (m / c1)) / (np.sqrt(v / c2) + eps)
            return
        for i in range(m):
            p = P[i]
            g = G[i]
            if scale:
                g = g * gs
            if maximize:
                g = -g
            if l2:
                g = g + wd * p
            if decoupled:
                p = p * shrink
            m = b1 * M[i] + omb1 * g
            M[i] = m
            v = b2 * V[i] + omb2 * (g * g)
            V[i] = v
            if amsgrad:
                vv = VM[i]
                # np.maximum: a NaN in either operand propagates.
                if not (vv >= v or vv != vv):
                    vv = v
                VM[i] = vv
                v = vv
            P[i] = p - (lr * (m / c1)) / (np.sqrt(v / c2) + eps)

    return span


def _sumsq_span(dt):
    @njit(**_JIT)
    def block(addr, start, stop):
        """Float64 sum of squares of elements [start, stop) of the gradient
        at ``addr``: ``SUMSQ_LANES`` interleaved lanes, then a pairwise
        combination, exactly as ``_reference.sumsq_blocks``."""
        X = numba.carray(_ptr(addr, dt(0)), stop)
        l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = 0.0
        full = start + (stop - start) // 8 * 8
        for j in range(start, full, 8):
            x0, x1, x2, x3 = np.float64(X[j]), np.float64(X[j + 1]), np.float64(X[j + 2]), np.float64(X[j + 3])
            x4, x5, x6, x7 = np.float64(X[j + 4]), np.float64(X[j + 5]), np.float64(X[j + 6]), np.float64(X[j + 7])
            l0 += x0 * x0
            l1 += x1 * x1
            l2 += x2 * x2
            l3 += x3 * x3
            l4 += x4 * x4
            l5 += x5 * x5
            l6 += x6 * x6
            l7 += x7 * x7
        for r in range(stop - full):
            x = np.float64(X[full + r])
            x = x * x
            if r == 0:
                l0 += x
            elif r == 1:
                l1 += x
            elif r == 2:
                l2 += x
            elif r == 3:
                l3 += x
            elif r == 4:
                l4 += x
            elif r == 5:
                l5 += x
            else:
                l6 += x
        return ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))

    return block


# --- drivers: the work list, serial or split over threads ---------------------


def _elementwise_kernels(span):
    @njit(**_JIT)
    def serial(ptrs, sizes, nthreads, s, f):
        for k in range(sizes.size):
            span(ptrs[k], sizes[k], 0, sizes[k], s, f)
        return 1

    @njit(parallel=True, **_JIT)
    def parallel(ptrs, sizes, nthreads, s, f):
        before = numba.get_num_threads()
        numba.set_num_threads(nthreads)
        ntens = sizes.size
        offs = np.zeros(ntens + 1, np.int64)
        for k in range(ntens):
            offs[k + 1] = offs[k] + sizes[k]
        total = offs[ntens]
        # One piece of the total element range per thread; a piece may start
        # inside one tensor and end inside another.
        for t in prange(nthreads):
            lo = total * t // nthreads
            hi = total * (t + 1) // nthreads
            k = np.searchsorted(offs, lo, side="right") - 1
            while lo < hi:
                end = min(hi, offs[k + 1])
                span(ptrs[k], sizes[k], lo - offs[k], end - offs[k], s, f)
                lo = end
                k += 1
        used = numba.get_num_threads()
        numba.set_num_threads(before)
        return used

    return serial, parallel


def _sumsq_kernels(block):
    @njit(**_JIT)
    def blocks_of(sizes):
        """Block -> (tensor, first element) tables over all tensors."""
        nb = 0
        for k in range(sizes.size):
            nb += (sizes[k] + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK
        bt = np.empty(nb, np.int64)
        bs = np.empty(nb, np.int64)
        j = 0
        for k in range(sizes.size):
            for start in range(0, sizes[k], SUMSQ_BLOCK):
                bt[j] = k
                bs[j] = start
                j += 1
        return bt, bs

    @njit(**_JIT)
    def in_order(out):
        total = 0.0
        for b in range(out.size):
            total += out[b]
        return total

    @njit(**_JIT)
    def serial(ptrs, sizes, bofs, out, nthreads):
        for k in range(sizes.size):
            n = sizes[k]
            j = bofs[k]
            for start in range(0, n, SUMSQ_BLOCK):
                out[j] = block(ptrs[k, 0], start, min(n, start + SUMSQ_BLOCK))
                j += 1
        return in_order(out)

    @njit(parallel=True, **_JIT)
    def parallel(ptrs, sizes, bofs, out, nthreads):
        before = numba.get_num_threads()
        numba.set_num_threads(nthreads)
        bt, bs = blocks_of(sizes)
        for b in prange(bt.size):
            k = bt[b]
            start = bs[b]
            out[bofs[k] + start // SUMSQ_BLOCK] = block(
                ptrs[k, 0], start, min(sizes[k], start + SUMSQ_BLOCK))
        numba.set_num_threads(before)
        return in_order(out)

    return serial, parallel


_FAMILIES = {"sgd": _sgd_span, "rmsprop": _rmsprop_span, "adam": _adam_span}
_compiled = {}
_compile_lock = threading.Lock()


def _kernels(family, dtype):
    """``(serial, parallel)`` dispatchers of ``family`` for ``dtype``, made on
    first use; each compiles at its first call."""
    key = (family, dtype)
    pair = _compiled.get(key)
    if pair is None:
        with _compile_lock:
            pair = _compiled.get(key)
            if pair is None:
                if family == "sumsq":
                    pair = _sumsq_kernels(_sumsq_span(dtype.type))
                else:
                    pair = _elementwise_kernels(_FAMILIES[family](dtype.type))
                _compiled[key] = pair
    return pair


@njit(**_JIT)
def _addr(a):
    """Data address of ``a``.  A jitted call unboxes the array in C: several
    times faster than ``a.ctypes.data`` or ``a.__array_interface__`` (it
    compiles once per array type: dtype, ndim, layout)."""
    return a.ctypes.data


def _work(groups):
    """Per dtype, the ``(addresses, sizes)`` work list of the gathered groups
    (an absent state gets the parameter's address: never touched), and the
    total element count."""
    by_dtype = {}
    total = 0
    for grp in groups:
        p = grp[0]
        pa = _addr(p)
        row = [pa]
        for a in grp[1:]:
            row.append(pa if a is None else _addr(a))
        n = p.size
        total += n
        entry = by_dtype.get(p.dtype)
        if entry is None:
            by_dtype[p.dtype] = entry = ([], [])
        entry[0].append(row)
        entry[1].append(n)
    return by_dtype, total


def _run(family, groups, s, f):
    global _last_parallel_threads
    by_dtype, total = _work(groups)
    nthreads = _threads
    par = nthreads > 1 and total >= _tuning.PARALLEL_MIN_ELEMENTS
    for dtype, (rows, sizes) in by_dtype.items():
        serial, parallel = _kernels(family, dtype)
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        if par:
            with _parallel_lock:
                _last_parallel_threads = parallel(ptrs, sizes, nthreads, s, f)
        else:
            serial(ptrs, sizes, nthreads, s, f)


# --- the backend interface ---------------------------------------------------


def sgd(params, grads, states, mode, lr, momentum, dampening, nesterov, first,
        weight_decay, maximize, gscale):
    """Multi-tensor SGD step; see ``_reference.sgd_tensor``."""
    groups = gather(params, grads, states, mode)
    if not groups:
        return
    has_buf = states[0][1] is not None
    s = (float(lr), float(momentum), 1.0 - dampening, float(weight_decay), float(gscale))
    f = (gscale != 1.0, bool(maximize), weight_decay != 0.0, has_buf, bool(first),
         bool(nesterov))
    _run("sgd", groups, s, f)


def rmsprop(params, grads, states, mode, lr, alpha, eps, eps_inside, momentum,
            weight_decay, maximize, gscale):
    """Multi-tensor RMSProp step; see ``_reference.rmsprop_tensor``."""
    groups = gather(params, grads, states, mode)
    if not groups:
        return
    centered = states[1][1] is not None
    has_buf = states[2][1] is not None
    s = (float(lr), float(alpha), 1.0 - alpha, float(eps), float(momentum),
         float(weight_decay), float(gscale))
    f = (gscale != 1.0, bool(maximize), weight_decay != 0.0, centered, has_buf,
         bool(eps_inside))
    _run("rmsprop", groups, s, f)


def adam(params, grads, states, mode, lr, beta1, beta2, eps, bc1, bc2,
         weight_decay, decoupled, maximize, gscale):
    """Multi-tensor Adam step; see ``_reference.adam_tensor``."""
    groups = gather(params, grads, states, mode)
    if not groups:
        return
    amsgrad = states[2][1] is not None
    decay = weight_decay != 0.0
    s = (float(lr), float(beta1), 1.0 - beta1, float(beta2), 1.0 - beta2, float(eps),
         float(bc1), float(bc2), float(weight_decay), 1.0 - lr * weight_decay, float(gscale))
    f = (gscale != 1.0, bool(maximize), decay and not decoupled, decay and bool(decoupled),
         amsgrad)
    _run("adam", groups, s, f)


def grad_sumsq(params, grads, mode):
    """Float64 sum of squares of all gradients, in the block and lane order
    of ``_reference.grad_sumsq`` (so independent of the thread count)."""
    groups = gather(params, grads, (), mode)
    by_dtype, total = _work((g, g) for _p, g in groups)
    if total == 0:
        return 0.0
    # Block offsets in step order, so that dtype groups fill one table.
    nblocks = [-(-g.size // SUMSQ_BLOCK) for _p, g in groups]
    starts = np.concatenate(([0], np.cumsum(nblocks)))
    out = np.zeros(int(starts[-1]))
    nthreads = _threads
    par = nthreads > 1 and total >= _tuning.PARALLEL_MIN_ELEMENTS
    result = 0.0
    k0 = {dt: [] for dt in by_dtype}
    for idx, (_p, g) in enumerate(groups):
        k0[g.dtype].append(starts[idx])
    for dtype, (rows, sizes) in by_dtype.items():
        serial, parallel = _kernels("sumsq", dtype)
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        bofs = np.array(k0[dtype], dtype=np.intp)
        # The last call sees every block filled, so its in-order total is
        # the answer.
        if par:
            with _parallel_lock:
                result = parallel(ptrs, sizes, bofs, out, nthreads)
        else:
            result = serial(ptrs, sizes, bofs, out, nthreads)
    return result
