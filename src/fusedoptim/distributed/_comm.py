"""The collective operations of the distributed optimizers, in a fixed order.

MPI leaves the order in which ``Reduce_scatter`` and ``Allreduce`` add the
ranks' contributions to the implementation (it changes with the algorithm,
the message size and the number of ranks), so their floating-point result is
not reproducible.  Here MPI only moves bytes (``Alltoallv``,
``Allgatherv``, ``allgather``); every sum is computed by NumPy in rank order.
"""

import math

import numpy as np

from .._norm import sumsq_blocks

__all__ = ["mpi", "agree", "ordered_mean_slice", "allgather_flat", "global_sumsq",
           "DistributedError"]

#: Elements per chunk of the ordered sum (64 KiB of float32: the running
#: sum and the next part stay in L2).
_SUM_CHUNK = 16384

_ERROR_TYPES = {"KeyError": KeyError, "TypeError": TypeError, "ValueError": ValueError}


class DistributedError(RuntimeError):
    """A rank failed a collective check (raised on every rank)."""


def mpi():
    """The ``mpi4py.MPI`` module (an ``ImportError`` naming the extra if absent)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("fusedoptim.distributed needs mpi4py and an MPI library: "
                          "pip install 'fusedoptim[mpi]'") from exc
    return MPI


def mpi_type(dtype: np.dtype):
    """The MPI datatype of a NumPy float dtype."""
    MPI = mpi()
    return {4: MPI.FLOAT, 8: MPI.DOUBLE}[np.dtype(dtype).itemsize] \
        if np.dtype(dtype).kind == "f" else MPI.BYTE


def agree(comm, error, extra=None, *, op):
    """Collective check: every rank passes ``error`` (an exception or
    ``None``) and ``extra`` (any small picklable value) from the public
    method ``op``.

    Raises, on EVERY rank, a :class:`DistributedError` naming the methods
    when the ranks are in different ones (each public collective starts
    with this exchange, so a rank in ``step`` and one in ``save`` meet here
    and leave unchanged, instead of reading each other's messages); else
    the first failing rank's error (same type for ``KeyError``,
    ``TypeError`` and ``ValueError``, else :class:`DistributedError`),
    prefixed with that rank's number.  Returns the list of every rank's
    ``extra`` otherwise.  One ``allgather`` of a few bytes: a failing rank
    never leaves the others waiting in a collective that it does not join.
    """
    mine = None if error is None else (type(error).__name__, _message(error))
    got = comm.allgather((op, mine, extra))
    for r, (other, _e, _x) in enumerate(got):
        if other != got[0][0]:
            raise DistributedError(f"rank {r} called {other}() while rank 0 called "
                                   f"{got[0][0]}(): every rank must call the same collective "
                                   f"methods in the same order")
    for r, (_o, err, _x) in enumerate(got):
        if err is not None:
            kind, text = err
            raise _ERROR_TYPES.get(kind, DistributedError)(f"rank {r}: {text}")
    return [x for _o, _e, x in got]


def _message(exc):
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def ordered_mean_slice(comm, group, send, recv, out):
    """Reduce-scatter of the rank-ordered mean: ``out`` (this rank's slice,
    ``group.counts[rank]`` elements) becomes

        ``(((g_0 + g_1) + g_2) + ... + g_{W-1}) / W``

    elementwise in the gradient dtype, ``g_r`` being rank ``r``'s flat
    gradient ``send`` restricted to this rank's slice.  ``recv`` holds
    ``(W - 1) * count`` elements (the other ranks' pieces, in rank order).
    """
    W, me = comm.Get_size(), comm.Get_rank()
    L = group.counts[me]
    mine = send[group.lo:group.hi]
    if W == 1:
        np.divide(mine, out.dtype.type(1), out=out)
        return
    t = mpi_type(group.dtype)
    scounts = [0 if r == me else group.counts[r] for r in range(W)]
    rcounts = [0 if r == me else L for r in range(W)]
    rdispls = [(r if r < me else max(r - 1, 0)) * L for r in range(W)]
    comm.Alltoallv([send, scounts, group.cuts[:-1], t], [recv, rcounts, rdispls, t])
    part = [mine if r == me else recv[rdispls[r]:rdispls[r] + L] for r in range(W)]
    w = out.dtype.type(W)
    # Chunk by chunk, so the running sum stays in cache while the W parts
    # stream through once (each element's order is unchanged).  Silent on
    # inf - inf and overflow, as the single-process step is: the norm
    # (clipping, skip_nonfinite) looks at the result.
    with np.errstate(over="ignore", invalid="ignore"):
        for c in range(0, L, _SUM_CHUNK):
            o = out[c:c + _SUM_CHUNK]
            np.add(part[0][c:c + _SUM_CHUNK], part[1][c:c + _SUM_CHUNK], out=o)
            for r in range(2, W):
                np.add(o, part[r][c:c + _SUM_CHUNK], out=o)
            np.divide(o, w, out=o)


def allgather_flat(comm, group, flat):
    """Every rank's slice of ``flat`` (the group's flat space) to every rank,
    in place: ``flat[c_r:c_{r+1}]`` of rank ``r`` lands at the same place on
    the others."""
    if comm.Get_size() == 1:
        return
    MPI = mpi()
    # MPICH's Allgather is far faster than its Allgatherv on the same bytes
    # (64 MiB float32: 20 ms against 96 ms at 2 equal slices, over 6 s at 3
    # unequal ones), so unequal slices go through a padded Allgather.
    t = mpi_type(group.dtype)
    if len(set(group.counts)) == 1:
        comm.Allgather(MPI.IN_PLACE, [flat, group.counts[0], t])
        return
    W, me, width = comm.Get_size(), comm.Get_rank(), max(group.counts)
    if group.pad is None:
        group.pad = np.empty(W * width, group.dtype)
    pad = group.pad
    pad[me * width:me * width + group.counts[me]] = flat[group.lo:group.hi]
    comm.Allgather(MPI.IN_PLACE, [pad, width, t])
    for r in range(W):
        if r != me:
            flat[group.cuts[r]:group.cuts[r + 1]] = pad[r * width:r * width + group.counts[r]]


def global_sumsq(comm, nparams, pieces, scale=None):
    """The float64 sum of squares of the whole (mean) gradient, bit for bit
    ``fusedoptim._norm.grad_sumsq`` of it on one process.

    ``pieces`` are ``(parameter index, 1-D gradient piece)`` of this rank;
    each starts on a ``SUMSQ_BLOCK`` boundary of its tensor (the cuts make
    sure), so its ``sumsq_blocks`` are the single-process blocks.  The block
    sums of all ranks are gathered and added one after another, parameters
    in dict order and each parameter's blocks in flat order, to a running
    total from 0.0, as on one process.  With ``scale``, the blocks are those
    of ``piece / scale`` (the overflow-safe path).
    """
    local = []
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is looked at later
        for i, g in pieces:
            x = g if scale is None else np.asarray(g, dtype=np.float64) / scale
            local.append((i, sumsq_blocks(x)))
    per = [[] for _ in range(nparams)]
    for rank_blocks in comm.allgather(local):
        for i, b in rank_blocks:
            per[i].append(b)
    total = 0.0
    for blocks in per:
        for b in blocks:
            for s in b.tolist():
                total += s
    return total


def global_amax(comm, pieces):
    """``(all finite, largest magnitude)`` over every rank's pieces."""
    finite, amax = True, 0.0
    for _i, g in pieces:
        if g.size:
            finite = finite and bool(np.isfinite(g).all())
            amax = max(amax, float(np.max(np.abs(g))))
    got = comm.allgather((finite, amax))
    return all(f for f, _a in got), max(a for _f, a in got)


def clip_decision(comm, nparams, pieces, max_norm, eps):
    """``(norm, finite, scale)`` of the global gradient norm, the same on
    every rank, as ``Optimizer._step`` computes them on one process:
    ``scale`` is ``max_norm / (norm + eps)`` (0 or NaN when not finite;
    ``None`` without ``max_norm``)."""
    sumsq = global_sumsq(comm, nparams, pieces)
    if math.isfinite(sumsq):
        norm = math.sqrt(sumsq)
        return norm, True, None if max_norm is None else max_norm / (norm + eps)
    finite, amax = global_amax(comm, pieces)
    if not finite:
        norm = math.sqrt(sumsq)  # clip_grad_norm_'s factor: 0 (inf) or NaN
        return norm, False, None if max_norm is None else max_norm / (norm + eps)
    # Finite float64 gradients whose squares overflow: the norm of g / amax.
    root = math.sqrt(global_sumsq(comm, nparams, pieces, scale=amax))
    norm = amax * root
    if max_norm is None:
        return norm, True, None
    if math.isfinite(norm):
        return norm, True, max_norm / (norm + eps)
    return norm, True, max_norm / amax / root
