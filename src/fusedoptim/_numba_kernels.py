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
``gather`` plus one tiny jitted call per array to read its address.
``gather`` gives every state and gradient the memory layout of its
parameter, so element ``i`` of every flat view belongs to the same
parameter entry.

Exactness
---------
No ``fastmath`` (so no FMA contraction or reassociation), and
``error_model="numpy"`` so that a division by zero gives IEEE inf/NaN like
NumPy instead of raising.  Every scalar arrives as a float64 and is rounded
once to the arrays' dtype (``_as(x, z)``, ``z`` a zero of that dtype) before
the loop, so float32 arithmetic stays float32 (Numba would otherwise promote
``float32 * float64`` to float64), and ``np.sqrt`` of a float32 is the
float32 square root.

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
``NUMBA_NUM_THREADS``), so each parallel step sets it in the calling thread
from the count given here and restores the caller's value afterwards: the
count applies from any Python thread and does not leak into the user's own
Numba code.
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
variants separately: the dtype comes from the type of the ``z`` argument),
so importing this module costs only the Numba import.  Every kernel is a
module-level function, not a closure, so that it can be cached.
The first step of a dtype therefore pays the compilation, a few seconds per
family and variant (the parallel one is the slowest).

Numba's on-disk cache (``cache=True``) is off by default: cached functions
loaded by several processes at once have known segfault reports under
``multiprocessing`` (Numba issue 4807, which is why numbagg keeps its cache
opt-in too), and Numba invalidates a cache only when this file changes, not
when a constant imported from another module (``SUMSQ_BLOCK``) does.  Set
``FUSEDOPTIM_NUMBA_CACHE=1`` before importing fusedoptim to opt in: a later
process then loads the kernels instead of compiling them (measured: 20 s of
first-step compilation down to about 2 s, mostly the Numba import).  The
cache lives where Numba puts it (``NUMBA_CACHE_DIR`` to move it).
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

# A zero of each dtype: passed to the kernels, its type selects (and on
# first use compiles) the dtype's specialization.
_ZERO = {np.dtype(np.float32): np.float32(0), np.dtype(np.float64): np.float64(0)}

# Threads for parallel steps: set by fusedoptim.set_num_threads, never more
# than Numba's pool (numba.set_num_threads refuses that).
_threads = 1
_parallel_lock = threading.Lock()
# Numba's thread count during the last parallel step (for the tests).
_last_parallel_threads = 0


def set_num_threads(n):
    """Use ``n`` threads for parallel steps, at most ``NUMBA_NUM_THREADS``."""
    global _threads
    _threads = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


# --- typed-memory helpers -----------------------------------------------------


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


@intrinsic
def _as(typingctx, x, like):
    """``x`` rounded once (to nearest) to the float type of ``like``: what
    NumPy does with a Python float next to an array of that dtype."""
    if not isinstance(x, types.Float) or not isinstance(like, types.Float):
        return None
    sig = like(x, like)

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], signature.args[0], signature.return_type)

    return sig, codegen


@njit(inline="always", **_JIT)
def _view(addr, lo, m, like):
    """Elements [lo, lo + m) of the array at ``addr``, as a 1-D array.

    Kernels loop ``for i in range(m)`` over such views: an index LLVM knows
    to be non-negative needs no wraparound check, and the loop vectorizes.
    """
    return numba.carray(_ptr(addr + lo * _itemsize(like), like), m)


@njit(**_JIT)
def _addr(a):
    """Data address of ``a``.  A jitted call unboxes the array in C: several
    times faster than ``a.ctypes.data`` or ``a.__array_interface__`` (it
    compiles once per array type: dtype, ndim, layout)."""
    return a.ctypes.data


@njit(**_JIT)
def _total(sizes):
    total = 0
    for k in range(sizes.size):
        total += sizes[k]
    return total


@njit(**_JIT)
def _pieces(sizes, total, t, nthreads):
    """Thread ``t``'s share of the total element range, as ``(tensor, lo,
    hi)`` rows: one equal piece per thread, which may start inside one
    tensor and end inside another."""
    lo = total * t // nthreads
    hi = total * (t + 1) // nthreads
    out = np.empty((sizes.size, 3), np.int64)
    j = 0
    off = 0  # first element of tensor k in the total range
    k = 0
    while lo < hi:
        n = sizes[k]
        if off + n > lo:
            end = min(hi, off + n)
            out[j, 0] = k
            out[j, 1] = lo - off
            out[j, 2] = end - off
            j += 1
            lo = end
        off += n
        k += 1
    return out[:j]


# --- per-family element loops -------------------------------------------------
#
# ``span(row, n, lo, hi, s, f, z)`` updates elements [lo, hi) of the tensor
# whose n-element arrays start at the addresses in ``row``; ``s`` holds the
# float64 scalars, ``f`` the flags, ``z`` a zero of the dtype.  Each family
# has a serial driver (tensor by tensor) and a parallel one (pieces of the
# total range, one per thread).  They are written out per family, not made
# by a factory: Numba cannot cache a closure over another jitted function.


@njit(**_JIT)
def _sgd_span(row, n, lo, hi, s, f, z):
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    B = _view(row[2], lo, m, z)
    lr, mu, omd, wd, gs = _as(s[0], z), _as(s[1], z), _as(s[2], z), _as(s[3], z), _as(s[4], z)
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


@njit(**_JIT)
def _sgd_serial(ptrs, sizes, s, f, z):
    for k in range(sizes.size):
        _sgd_span(ptrs[k], sizes[k], 0, sizes[k], s, f, z)


@njit(parallel=True, **_JIT)
def _sgd_parallel(ptrs, sizes, nthreads, s, f, z):
    total = _total(sizes)
    for t in prange(nthreads):
        pieces = _pieces(sizes, total, t, nthreads)
        for j in range(pieces.shape[0]):
            k = pieces[j, 0]
            _sgd_span(ptrs[k], sizes[k], pieces[j, 1], pieces[j, 2], s, f, z)


@njit(**_JIT)
def _rmsprop_span(row, n, lo, hi, s, f, z):
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    S = _view(row[2], lo, m, z)
    A = _view(row[3], lo, m, z)
    B = _view(row[4], lo, m, z)
    lr, a, oma, eps = _as(s[0], z), _as(s[1], z), _as(s[2], z), _as(s[3], z)
    mu, wd, gs = _as(s[4], z), _as(s[5], z), _as(s[6], z)
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


@njit(**_JIT)
def _rmsprop_serial(ptrs, sizes, s, f, z):
    for k in range(sizes.size):
        _rmsprop_span(ptrs[k], sizes[k], 0, sizes[k], s, f, z)


@njit(parallel=True, **_JIT)
def _rmsprop_parallel(ptrs, sizes, nthreads, s, f, z):
    total = _total(sizes)
    for t in prange(nthreads):
        pieces = _pieces(sizes, total, t, nthreads)
        for j in range(pieces.shape[0]):
            k = pieces[j, 0]
            _rmsprop_span(ptrs[k], sizes[k], pieces[j, 1], pieces[j, 2], s, f, z)


@njit(**_JIT)
def _adam_span(row, n, lo, hi, s, f, z):
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    M = _view(row[2], lo, m, z)
    V = _view(row[3], lo, m, z)
    VM = _view(row[4], lo, m, z)
    lr, b1, omb1, b2, omb2 = _as(s[0], z), _as(s[1], z), _as(s[2], z), _as(s[3], z), _as(s[4], z)
    eps, c1, c2, wd, shrink, gs = (_as(s[5], z), _as(s[6], z), _as(s[7], z), _as(s[8], z),
                                   _as(s[9], z), _as(s[10], z))
    scale, maximize, l2, decoupled, amsgrad = f
    if not (scale or maximize or l2 or decoupled or amsgrad):
        # The common case gets a branch-free loop that LLVM vectorizes.
        for i in range(m):
            g = G[i]
            mi = b1 * M[i] + omb1 * g
            M[i] = mi
            vi = b2 * V[i] + omb2 * (g * g)
            V[i] = vi
            P[i] = P[i] - (lr * (mi / c1)) / (np.sqrt(vi / c2) + eps)
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
        mi = b1 * M[i] + omb1 * g
        M[i] = mi
        vi = b2 * V[i] + omb2 * (g * g)
        V[i] = vi
        if amsgrad:
            vv = VM[i]
            # np.maximum: a NaN in either operand propagates.
            if not (vv >= vi or vv != vv):
                vv = vi
            VM[i] = vv
            vi = vv
        P[i] = p - (lr * (mi / c1)) / (np.sqrt(vi / c2) + eps)


@njit(**_JIT)
def _adam_serial(ptrs, sizes, s, f, z):
    for k in range(sizes.size):
        _adam_span(ptrs[k], sizes[k], 0, sizes[k], s, f, z)


@njit(parallel=True, **_JIT)
def _adam_parallel(ptrs, sizes, nthreads, s, f, z):
    total = _total(sizes)
    for t in prange(nthreads):
        pieces = _pieces(sizes, total, t, nthreads)
        for j in range(pieces.shape[0]):
            k = pieces[j, 0]
            _adam_span(ptrs[k], sizes[k], pieces[j, 1], pieces[j, 2], s, f, z)


# --- sum of squares -----------------------------------------------------------


@njit(**_JIT)
def _sumsq_block(addr, start, stop, z):
    """Float64 sum of squares of elements [start, stop) of the gradient at
    ``addr``: ``SUMSQ_LANES`` interleaved lanes, then a pairwise
    combination, exactly as ``_reference.sumsq_blocks``."""
    X = _view(addr, start, stop - start, z)
    m = stop - start
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = 0.0
    full = m // 8 * 8
    for j in range(0, full, 8):
        x0, x1, x2, x3 = np.float64(X[j]), np.float64(X[j + 1]), np.float64(X[j + 2]), \
            np.float64(X[j + 3])
        x4, x5, x6, x7 = np.float64(X[j + 4]), np.float64(X[j + 5]), np.float64(X[j + 6]), \
            np.float64(X[j + 7])
        l0 += x0 * x0
        l1 += x1 * x1
        l2 += x2 * x2
        l3 += x3 * x3
        l4 += x4 * x4
        l5 += x5 * x5
        l6 += x6 * x6
        l7 += x7 * x7
    # The last block may be short: its missing elements add exact zeros.
    for r in range(m - full):
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


@njit(**_JIT)
def _in_order(out):
    total = 0.0
    for b in range(out.size):
        total += out[b]
    return total


@njit(**_JIT)
def _sumsq_serial(ptrs, sizes, bofs, out, z):
    for k in range(sizes.size):
        n = sizes[k]
        j = bofs[k]
        for start in range(0, n, SUMSQ_BLOCK):
            out[j] = _sumsq_block(ptrs[k, 0], start, min(n, start + SUMSQ_BLOCK), z)
            j += 1
    return _in_order(out)


@njit(parallel=True, **_JIT)
def _sumsq_parallel(ptrs, sizes, bofs, out, z):
    # Block -> (tensor, first element) tables, then one task per block.
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
    for b in prange(nb):
        k = bt[b]
        start = bs[b]
        out[bofs[k] + start // SUMSQ_BLOCK] = _sumsq_block(
            ptrs[k, 0], start, min(sizes[k], start + SUMSQ_BLOCK), z)
    return _in_order(out)


# --- Python side: the work list ---------------------------------------------------

_KERNELS = {
    "sgd": (_sgd_serial, _sgd_parallel),
    "rmsprop": (_rmsprop_serial, _rmsprop_parallel),
    "adam": (_adam_serial, _adam_parallel),
}


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


def _in_parallel(nthreads, kernel, *args):
    """Run a parallel kernel on ``nthreads`` threads, from any Python thread.

    Numba's thread count is per Python thread, so it is set here, in the
    calling thread, and the caller's own value is restored afterwards.
    (Setting it inside the kernel would work too, but makes the kernel
    uncacheable: Numba treats the threading layer's entry points as dynamic
    globals.)
    """
    global _last_parallel_threads
    with _parallel_lock:
        before = numba.get_num_threads()
        numba.set_num_threads(nthreads)
        try:
            _last_parallel_threads = numba.get_num_threads()
            return kernel(*args)
        finally:
            numba.set_num_threads(before)


def _run(family, groups, s, f):
    by_dtype, total = _work(groups)
    nthreads = _threads
    par = nthreads > 1 and total >= _tuning.PARALLEL_MIN_ELEMENTS
    serial, parallel = _KERNELS[family]
    for dtype, (rows, sizes) in by_dtype.items():
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        if par:
            _in_parallel(nthreads, parallel, ptrs, sizes, nthreads, s, f, _ZERO[dtype])
        else:
            serial(ptrs, sizes, s, f, _ZERO[dtype])


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
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        bofs = np.array(k0[dtype], dtype=np.intp)
        # The last call sees every block filled, so its in-order total is
        # the answer.
        if par:
            result = _in_parallel(nthreads, _sumsq_parallel, ptrs, sizes, bofs, out,
                                  _ZERO[dtype])
        else:
            result = _sumsq_serial(ptrs, sizes, bofs, out, _ZERO[dtype])
    return result
