"""``grad_sumsq`` in Numba: the float64 sum of squares of ``fusedoptim._norm``.

Each block of ``SUMSQ_BLOCK`` elements is summed in ``SUMSQ_LANES`` lanes
exactly as ``_norm.sumsq_blocks``; the parallel kernel computes blocks on any
thread, and the block sums are then added in order, so the result does not
depend on the thread count.
"""

import numpy as np
from numba import njit, prange

from .._norm import SUMSQ_BLOCK, SUMSQ_LANES
from .._validate import gather
from . import _step
from ._fpmode import fp_enter, fp_leave
from ._step import JIT, ZERO, _view

__all__ = ["grad_sumsq"]

# The sum-of-squares block below is written out for eight lanes.
assert SUMSQ_LANES == 8


@njit(**JIT)
def _sumsq_block(addr, start, stop, z):
    """Float64 sum of squares of elements [start, stop) of the gradient at
    ``addr``: ``SUMSQ_LANES`` interleaved lanes, then a pairwise
    combination, exactly as ``_norm.sumsq_blocks``."""
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


@njit(**JIT)
def _in_order(out):
    total = 0.0
    for b in range(out.size):
        total += out[b]
    return total


@njit(**JIT)
def _sumsq_serial(ptrs, sizes, bofs, out, z):
    for k in range(sizes.size):
        n = sizes[k]
        j = bofs[k]
        for start in range(0, n, SUMSQ_BLOCK):
            out[j] = _sumsq_block(ptrs[k, 0], start, min(n, start + SUMSQ_BLOCK), z)
            j += 1
    return _in_order(out)


@njit(parallel=True, **JIT)
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
        mode = fp_enter()  # the caller's floating-point mode (_fpmode)
        k = bt[b]
        start = bs[b]
        out[bofs[k] + start // SUMSQ_BLOCK] = _sumsq_block(
            ptrs[k, 0], start, min(sizes[k], start + SUMSQ_BLOCK), z)
        fp_leave(mode)
    return _in_order(out)


def grad_sumsq(params, grads, mode):
    """Float64 sum of squares of all gradients, in the block and lane order
    of ``fusedoptim._norm.grad_sumsq`` (so independent of the thread count)."""
    groups = gather(params, grads, (), mode)
    by_dtype, total = _step.work((g, g) for _p, g in groups)
    if total == 0:
        return 0.0
    # Block offsets in step order, so that dtype groups fill one table.
    nblocks = [-(-g.size // SUMSQ_BLOCK) for _p, g in groups]
    starts = np.concatenate(([0], np.cumsum(nblocks)))
    out = np.zeros(int(starts[-1]))
    nthreads = _step.parallel_threads(total)
    result = 0.0
    k0 = {dt: [] for dt in by_dtype}
    for idx, (_p, g) in enumerate(groups):
        k0[g.dtype].append(starts[idx])
    for dtype, (rows, sizes, _grp) in by_dtype.items():
        ptrs = np.array(rows, dtype=np.intp)
        sizes = np.array(sizes, dtype=np.intp)
        bofs = np.array(k0[dtype], dtype=np.intp)
        # The last call sees every block filled, so its in-order total is
        # the answer.
        if nthreads > 1:
            result = _step.in_parallel(nthreads, _sumsq_parallel, ptrs, sizes, bofs, out,
                                       ZERO[dtype])
        else:
            result = _sumsq_serial(ptrs, sizes, bofs, out, ZERO[dtype])
    return result
