"""The step machinery every Numba family shares: typed memory, the work list,
the thread split, and the drivers that run a family's element span.

How a step runs
---------------
``_validate.gather`` checks the whole step first (same errors, same messages,
nothing written on failure).  The checked arrays are then handed to one
jitted call per dtype as a flat work list: an ``intp`` matrix of data
addresses (one row per tensor: parameter, gradient, states) and a vector of
element counts; the span views each address with ``numba.carray``.  A step
over a dict is therefore one jitted call, not one per tensor, and the driver
compiles once per family and dtype whatever the number or shapes of the
tensors (a typed list or tuple of arrays would either cost a jitted call per
element to build or recompile for every new model).  Per step, the Python
side costs ``gather`` plus one tiny jitted call per array to read its
address.  ``gather`` gives every state and gradient the memory layout of its
parameter, so element ``i`` of every flat view belongs to the same parameter
entry.

A family's span is ``span(row, lo, hi, s, f, z)``: it updates elements
``[lo, hi)`` of the tensor whose arrays start at the addresses in ``row``;
``s`` is a namedtuple of float64 scalars, ``f`` one of bools (fields read by
name), ``z`` a zero of the dtype.  The two drivers here (serial: tensor by
tensor; parallel: the split below) take the span as their first argument,
and each family instantiates them in two one-line wrappers (see the comment
above ``drive_serial_groups`` for why).

Exactness
---------
No ``fastmath`` (so no FMA contraction or reassociation), and
``error_model="numpy"`` so that a division by zero gives IEEE inf/NaN like
NumPy instead of raising.  Every scalar arrives as a float64 and is rounded
once to the arrays' dtype (``_as(x, z)``) before the loop, so float32
arithmetic stays float32 (Numba would otherwise promote ``float32 * float64``
to float64), and ``np.sqrt`` of a float32 is the float32 square root.

Threads
-------
A step whose parameters hold at least ``_tuning.PARALLEL_MIN_ELEMENTS``
elements in all (read at each call) runs on ``set_num_threads(n)`` threads:
the total element range is cut by ``_tuning.split_start`` (the compiled
backend's rule: near-equal parts starting on multiples of ``SPLIT_ALIGN``),
and the parts may straddle tensors.  Smaller steps run the serial driver
(compiled without ``parallel=True``), which never starts Numba's thread
pool.  The elementwise updates do not depend on the split.

Numba's own thread count is thread-local (each Python thread starts at
``NUMBA_NUM_THREADS``), so each parallel step sets it in the calling thread
from the count given here and restores the caller's value afterwards: the
count applies from any Python thread and does not leak into the user's own
Numba code.
Parallel steps are serialized by a lock: each already uses every thread, and
Numba's ``workqueue`` threading layer aborts the process when two threads
enter parallel code at once.

Fork: a child process forked after this backend ran a parallel step (e.g.
``multiprocessing`` with the ``fork`` start method) runs every step with the
serial driver, since the parent's Numba thread pool does not exist in it
(the GNU OpenMP layer would terminate such a child, others may hang); the
lock is re-created in the child.  A fork waits for a compilation running in
another thread to end (Numba's compiler lock: a child forked during one
hung on its first step).  This package never changes Numba's global
configuration itself, since that would also change the user's own Numba code.

Floating-point mode: Numba's worker threads keep their own MXCSR, not the
caller's.  When the calling thread's MXCSR has flush-to-zero, denormals-are-
zero or a non-default rounding mode (what a library built with ``-ffast-math``
sets when it loads), the step runs on the calling thread with the serial
driver, so that its bits are those of one thread in the caller's mode.  Else
each parallel task runs in that default mode whatever the worker's own
(``_fpmode``).  (x86 only; elsewhere the parallel path always runs.)

Compilation and caching
-----------------------
Drivers compile lazily, on the first step of each family and dtype (serial
and parallel separately: the dtype comes from the type of ``z``), so
importing the backend costs only the Numba import.  Every jitted function is
a module-level function, not a closure, so that it can be cached.  The first
step of a dtype therefore pays the compilation, a few seconds per family and
driver (the parallel one is the slowest).

Numba's on-disk cache (``cache=True``) is off by default: cached functions
loaded by several processes at once have known segfault reports under
``multiprocessing`` (Numba issue 4807, which is why numbagg keeps its cache
opt-in too), and Numba invalidates a cache only when the function's own file
changes, not when a constant imported from another module (``SPLIT_ALIGN``,
``SUMSQ_BLOCK``) or a driver inlined from this module into a family's
wrappers does: clear the cache after editing them.  Set
``FUSEDOPTIM_NUMBA_CACHE=1`` before importing fusedoptim to opt in: a later
process then loads the kernels instead of compiling them (measured: the
first Adam and SGD steps, serial and parallel, float32, 9 s in a fresh
process, 0.6 to 1 s with the cache, mostly the Numba import).  The cache
lives where Numba puts it (``NUMBA_CACHE_DIR`` to move it).
"""

import os
import threading

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.core.compiler_lock import global_compiler_lock
from numba.np.ufunc import parallel as _numba_parallel
from numba.extending import intrinsic

from .. import _tuning
from .._norm import SUMSQ_BLOCK
from .._tuning import SPLIT_ALIGN
from ._fpmode import MXCSR_MODE, X86, fp_enter, fp_leave, stmxcsr

__all__ = ["JIT", "ZERO", "set_num_threads", "run_groups", "run_reduce", "work",
           "group_of", "parallel_threads", "in_parallel", "drive_serial_groups",
           "drive_parallel_groups", "drive_reduce_serial_groups",
           "drive_reduce_parallel_groups", "_as", "_view", "_addr"]

_CACHE = os.environ.get("FUSEDOPTIM_NUMBA_CACHE", "").strip().lower() in ("1", "true", "yes")

#: Options of every jitted function of the backend.
JIT = dict(nogil=True, error_model="numpy", cache=_CACHE)

#: A zero of each dtype: passed to the kernels, its type selects (and on
#: first use compiles) the dtype's specialization.
ZERO = {np.dtype(np.float32): np.float32(0), np.dtype(np.float64): np.float64(0)}

# Threads for parallel steps: set by fusedoptim.set_num_threads, never more
# than Numba's pool (numba.set_num_threads refuses that).
_threads = 1
_parallel_lock = threading.Lock()
# Numba's thread count during the last parallel step (for the tests).
_last_parallel_threads = 0
# Whether this process ran a parallel step, and whether it is a child forked
# after its parent did (then every step is serial).
_parallel_ran = False
_forked_child = False


def _after_fork_in_child():
    # Serial from now on if Numba's pool ran here, by our steps or any other
    # parallel Numba code (GNU OpenMP kills a forked child that goes
    # parallel).  Numba's flag is private: True (serial) if it is renamed.
    global _parallel_lock, _forked_child
    global_compiler_lock.release()
    _parallel_lock = threading.Lock()
    if _parallel_ran or getattr(_numba_parallel, "_is_initialized", True):
        _forked_child = True


# A fork waits until no thread compiles: a thread compiling a kernel (the
# first step of a family and dtype) holds Numba's compiler lock, and a child
# forked meanwhile inherited it held by a thread that does not exist there,
# so its first compilation (of any step) waited forever.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=global_compiler_lock.acquire,
                        after_in_parent=global_compiler_lock.release,
                        after_in_child=_after_fork_in_child)


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


@njit(inline="always", **JIT)
def _view(addr, lo, m, like):
    """Elements [lo, lo + m) of the array at ``addr``, as a 1-D array.

    Spans loop ``for i in range(m)`` over such views: an index LLVM knows
    to be non-negative needs no wraparound check, and the loop vectorizes.
    """
    return numba.carray(_ptr(addr + lo * _itemsize(like), like), m)


@njit(**JIT)
def _addr(a):
    """Data address of ``a``.  A jitted call unboxes the array in C: several
    times faster than ``a.ctypes.data`` or ``a.__array_interface__`` (it
    compiles once per array type: dtype, ndim, layout)."""
    return a.ctypes.data


@njit(**JIT)
def _mxcsr():
    return stmxcsr()


def _default_fp_mode():
    """Whether the calling thread computes in the default floating-point
    mode, the one a parallel step's tasks run in (``_fpmode``)."""
    return not X86 or (_mxcsr() & MXCSR_MODE) == 0


# --- the drivers --------------------------------------------------------------


@njit(**JIT)
def _split_start(total, parts, k):
    """``fusedoptim._tuning.split_start``, the one split rule, jitted.

    Everything is made ``intp`` first: a ``prange`` index is unsigned, and
    Numba computes an unsigned with a signed integer in float64.
    """
    n = np.intp(total)
    m = np.intp(parts)
    j = np.intp(k)
    if j >= m:
        return n
    q = n // m
    r = n - q * m
    s = q * j + min(j, r)
    return s - s % SPLIT_ALIGN


# The generic drivers take the family's span as an argument, and each family
# instantiates them in two one-line jitted wrappers (``serial`` and
# ``parallel`` in its module) rather than passing its span from Python.  Why:
# Numba types a jitted function passed as an argument by its dispatcher
# object, whose pickled identity differs in every process, so a driver
# called from Python with the span in its signature never loads from the
# cache (and its cache index grows by one entry per process).  The drivers
# are inlined into the wrappers at the IR level (``inline="always"``), where
# the span is the wrapper's global: a direct call, and no dispatcher object
# baked into the code (a compiled call passing it would make the wrapper
# uncacheable, "dynamic globals").  The wrappers' signatures hold only
# arrays, tuples and the dtype, so they cache.  They take the scalars and
# flags as plain tuples and rebuild the family's namedtuples inside: Numba's
# dispatcher types a plain tuple argument in C but a namedtuple through
# Python, which measured 1.5 to 4 us more per call.
#
# Parameter groups (every family runs through these): ``s`` and ``f`` are a
# float64 and a bool matrix, one row per group, ``grp[k]`` is tensor ``k``'s group, and the family's
# ``unpack(s_row, f_row)`` (jitted, passed like the span) rebuilds its
# namedtuples for each tensor (``to_fixed_tuple``).  Matrices rather than
# tuples of tuples: a parallel region does not take nested tuples, and a
# matrix's type does not depend on the number of groups (one compilation).
_DRIVER = dict(JIT, inline="always")


# The first pass of a two-pass family (a per-tensor reduction, LAMB's norms):
# ``block(row, lo, hi, out, s, f, z)`` updates elements [lo, hi) of a tensor,
# one block of the global norm's ``SUMSQ_BLOCK`` elements from the tensor's
# start, and writes its float64 results to the row ``out``.  Each block has
# its own row, so the results do not depend on which thread computed it.

@njit(**_DRIVER)
def drive_reduce_serial_groups(block, unpack, ptrs, sizes, grp, out, s, f, z):
    """``block`` over every block of every tensor, in order; tensor ``k``
    with its group's scalars and flags."""
    j = 0
    for k in range(sizes.size):
        n = sizes[k]
        sk, fk = unpack(s[grp[k]], f[grp[k]])
        for lo in range(0, n, SUMSQ_BLOCK):
            block(ptrs[k], lo, min(n, lo + SUMSQ_BLOCK), out[j], sk, fk, z)
            j += 1


@njit(parallel=True, **_DRIVER)
def drive_reduce_parallel_groups(block, unpack, ptrs, sizes, grp, out, s, f, z):
    """``block`` over every block of every tensor, one task per block."""
    nb = out.shape[0]
    bt = np.empty(nb, np.intp)
    bs = np.empty(nb, np.intp)
    j = 0
    for k in range(sizes.size):
        for lo in range(0, sizes[k], SUMSQ_BLOCK):
            bt[j] = k
            bs[j] = lo
            j += 1
    for b in prange(nb):
        mode = fp_enter()  # the caller's floating-point mode (_fpmode)
        k = bt[b]
        lo = bs[b]
        sk, fk = unpack(s[grp[k]], f[grp[k]])
        block(ptrs[k], lo, min(sizes[k], lo + SUMSQ_BLOCK), out[b], sk, fk, z)
        fp_leave(mode)


@njit(**JIT)
def _tensor_totals(out, sizes, sums):
    """``sums[k]``: tensor k's block rows of ``out`` added in order to a
    running total from 0.0."""
    j = 0
    for k in range(sizes.size):
        for r in range(out.shape[1]):
            sums[k, r] = 0.0
        for _lo in range(0, sizes[k], SUMSQ_BLOCK):
            for r in range(out.shape[1]):
                sums[k, r] += out[j, r]
            j += 1


@njit(**_DRIVER)
def _run_range_groups(span, unpack, ptrs, sizes, grp, lo, hi, s, f, z):
    """``span`` over elements [lo, hi) of the concatenated tensors, cut at
    tensor boundaries; tensor ``k`` with its group's scalars and flags."""
    off = 0
    for k in range(sizes.size):
        n = sizes[k]
        a = max(lo, off)
        b = min(hi, off + n)
        if a < b:
            sk, fk = unpack(s[grp[k]], f[grp[k]])
            span(ptrs[k], a - off, b - off, sk, fk, z)
        off += n


@njit(**_DRIVER)
def drive_serial_groups(span, unpack, ptrs, sizes, grp, s, f, z):
    """``span`` over every tensor, tensor by tensor, on the calling thread."""
    for k in range(sizes.size):
        sk, fk = unpack(s[grp[k]], f[grp[k]])
        span(ptrs[k], 0, sizes[k], sk, fk, z)


@njit(parallel=True, **_DRIVER)
def drive_parallel_groups(span, unpack, ptrs, sizes, grp, nthreads, s, f, z):
    """``span`` over the concatenated tensors, split ``nthreads`` ways by
    ``_split_start``."""
    total = 0
    for k in range(sizes.size):
        total += sizes[k]
    for t in prange(nthreads):
        mode = fp_enter()  # the caller's floating-point mode (_fpmode)
        _run_range_groups(span, unpack, ptrs, sizes, grp, _split_start(total, nthreads, t),
                   _split_start(total, nthreads, t + 1), s, f, z)
        fp_leave(mode)


# --- Python side: the work list -------------------------------------------------


def work(groups, group_of=None):
    """Per dtype, the ``(addresses, sizes, group indices)`` work list of the
    gathered tensors (an absent state gets the parameter's address: never
    touched), and the total element count.  ``group_of[i]`` is tensor
    ``i``'s parameter group (all 0 when None)."""
    by_dtype = {}
    total = 0
    for i, grp in enumerate(groups):
        p = grp[0]
        pa = _addr(p)
        row = [pa]
        for a in grp[1:]:
            row.append(pa if a is None else _addr(a))
        n = p.size
        total += n
        entry = by_dtype.get(p.dtype)
        if entry is None:
            by_dtype[p.dtype] = entry = ([], [], [])
        entry[0].append(row)
        entry[1].append(n)
        entry[2].append(0 if group_of is None else group_of[i])
    return by_dtype, total


def parallel_threads(total):
    """Threads for a step of ``total`` elements: 1 means the serial driver
    (also in a forked child of a parallel parent, and when the caller's
    floating-point mode is not the workers')."""
    nthreads = _threads
    if (nthreads > 1 and total >= _tuning.PARALLEL_MIN_ELEMENTS and not _forked_child
            and _default_fp_mode()):
        return nthreads
    return 1


def in_parallel(nthreads, kernel, *args):
    """Run a parallel kernel on ``nthreads`` threads, from any Python thread.

    Numba's thread count is per Python thread, so it is set here, in the
    calling thread, and the caller's own value is restored afterwards.
    (Setting it inside the kernel would work too, but makes the kernel
    uncacheable: Numba treats the threading layer's entry points as dynamic
    globals.)
    """
    global _last_parallel_threads, _parallel_ran
    _parallel_ran = True
    with _parallel_lock:
        before = numba.get_num_threads()
        numba.set_num_threads(nthreads)
        try:
            _last_parallel_threads = numba.get_num_threads()
            return kernel(*args)
        finally:
            numba.set_num_threads(before)


def _matrices(s, f, group_of):
    """The scalar and flag matrices of ``run_groups`` and ``run_reduce``."""
    if group_of is None:
        s, f = (s,), (f,)
    return np.array(s, dtype=np.float64), np.array(f, dtype=np.bool_)


def run_reduce(drivers: tuple, groups: list, s, f, nout: int,
               group_of: list | None = None) -> np.ndarray:
    """Run a family's ``(serial, parallel)`` reduction drivers (wrappers of
    ``drive_reduce_*_groups``, called as ``driver(ptrs, sizes, grp, out, s,
    f, z)``) over every gathered tensor, ``s``, ``f`` and ``group_of`` as in
    ``run_groups``; returns the float64 ``(len(groups), nout)`` array of
    each tensor's results, its blocks' added in order."""
    serial, parallel = drivers
    s, f = _matrices(s, f, group_of)
    by_dtype, total = work(groups, group_of)
    nthreads = parallel_threads(total)
    sums = np.zeros((len(groups), nout))
    for dtype, (rows, sizes, grp) in by_dtype.items():
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        grp = np.array(grp, dtype=np.intp)
        out = np.empty((int(np.sum(-(-sizes // SUMSQ_BLOCK))), nout))
        if nthreads > 1:
            in_parallel(nthreads, parallel, ptrs, sizes, grp, out, s, f, ZERO[dtype])
        else:
            serial(ptrs, sizes, grp, out, s, f, ZERO[dtype])
        part = np.empty((sizes.size, nout))
        _tensor_totals(out, sizes, part)
        sums[[i for i, grp in enumerate(groups) if grp[0].dtype == dtype]] = part
    return sums


def run_groups(drivers, groups, s, f, group_of=None):
    """Run a family's ``(serial, parallel)`` group drivers
    (``drive_serial_groups``, ``drive_parallel_groups``) over every gathered
    tensor, with scalars ``s`` and flags ``f`` (its namedtuples; with
    ``group_of``, tensor ``i``'s group index, lists of them, one per
    group): one call per dtype."""
    serial, parallel = drivers
    s, f = _matrices(s, f, group_of)
    by_dtype, total = work(groups, group_of)
    nthreads = parallel_threads(total)
    for dtype, (rows, sizes, grp) in by_dtype.items():
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        grp = np.array(grp, dtype=np.intp)
        if nthreads > 1:
            in_parallel(nthreads, parallel, ptrs, sizes, grp, nthreads, s, f, ZERO[dtype])
        else:
            serial(ptrs, sizes, grp, s, f, ZERO[dtype])


def group_of(sizes, count):
    """The group index of each of ``count`` tensors (``sizes[k]`` tensors
    per group, in order)."""
    out = [k for k, m in enumerate(sizes) for _ in range(m)]
    if len(out) != count:
        raise ValueError(f"sizes must add up to the {count} parameters, got {len(out)}")
    return out
