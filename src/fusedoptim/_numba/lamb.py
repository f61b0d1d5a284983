"""LAMB's Numba passes and step (``fusedoptim.families.lamb``): the first
pass (``_step.run_reduce``) updates the moments and sums the squares of the
parameter and the direction per block; the second (``_step.run``) applies
each tensor's ``lr * trust ratio``, read through a fifth address in the
tensor's row."""

from collections import namedtuple

import numpy as np
from numba import njit

from .._validate import gather
from ..families import check_call, family_of
from ..families.lamb import trust_ratio
from ._norm import _sumsq_block
from ._step import (JIT, _as, _view, drive_parallel, drive_reduce_parallel,
                    drive_reduce_serial, drive_serial, run, run_reduce)

__all__ = ["step"]

FAMILY = family_of("lamb")

# The spans' inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loops' switches.
Scalars = namedtuple("Scalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 eps bc1 bc2 "
                                "weight_decay gscale")
Flags = namedtuple("Flags", "scale maximize decay")


@njit(inline="always", **JIT)
def _dir(mi, vi, p, eps, c1, c2, wd, decay):
    """The direction u of one element (``lamb_tensor``'s order)."""
    u = (mi / c1) / (np.sqrt(vi / c2) + eps)
    if decay:
        u = u + wd * p
    return u


@njit(**JIT)
def block(row, lo, hi, out, s, f, z):
    """First pass over one block: the moments, the direction into a block
    buffer, then the global norm's block sums of squares (``_norm``'s
    ``_sumsq_block``) of p and of the direction."""
    n = hi - lo
    P = _view(row[0], lo, n, z)
    G = _view(row[1], lo, n, z)
    M = _view(row[2], lo, n, z)
    V = _view(row[3], lo, n, z)
    b1, omb1 = _as(s.beta1, z), _as(s.one_minus_beta1, z)
    b2, omb2, eps = _as(s.beta2, z), _as(s.one_minus_beta2, z), _as(s.eps, z)
    c1, c2, wd, gs = _as(s.bc1, z), _as(s.bc2, z), _as(s.weight_decay, z), _as(s.gscale, z)
    U = np.empty_like(P)
    for i in range(n):
        p = P[i]
        g = G[i]
        if f.scale:
            g = g * gs
        if f.maximize:
            g = -g
        mi = b1 * M[i] + omb1 * g
        vi = b2 * V[i] + omb2 * (g * g)
        M[i] = mi
        V[i] = vi
        U[i] = _dir(mi, vi, p, eps, c1, c2, wd, f.decay)
    out[0] = _sumsq_block(row[0], lo, hi, z)
    out[1] = _sumsq_block(U.ctypes.data, 0, n, z)


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """Second pass on elements [lo, hi): ``p = p - (lr * r) * u``, the
    tensor's ``lr * r`` (float64) at address ``row[4]``."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    M = _view(row[2], lo, m, z)
    V = _view(row[3], lo, m, z)
    step = _as(_view(row[4], 0, 1, 0.0)[0], z)
    eps, c1, c2, wd = _as(s.eps, z), _as(s.bc1, z), _as(s.bc2, z), _as(s.weight_decay, z)
    for i in range(m):
        p = P[i]
        P[i] = p - step * _dir(M[i], V[i], p, eps, c1, c2, wd, f.decay)


# The drivers of the block and the span (why per family, and why plain
# tuples: see ``_step.drive_serial``).
@njit(**JIT)
def reduce_serial(ptrs, sizes, out, s, f, z):
    drive_reduce_serial(block, ptrs, sizes, out, Scalars(*s), Flags(*f), z)


@njit(parallel=True, **JIT)
def reduce_parallel(ptrs, sizes, out, s, f, z):
    drive_reduce_parallel(block, ptrs, sizes, out, Scalars(*s), Flags(*f), z)


@njit(**JIT)
def serial(ptrs, sizes, s, f, z):
    drive_serial(span, ptrs, sizes, Scalars(*s), Flags(*f), z)


@njit(parallel=True, **JIT)
def parallel(ptrs, sizes, nthreads, s, f, z):
    drive_parallel(span, ptrs, sizes, nthreads, Scalars(*s), Flags(*f), z)


def step(params: dict, grads: dict, states: tuple, mode: int, **kw) -> None:
    """Multi-tensor LAMB step, keyword-only (see ``fusedoptim.families.lamb``)."""
    check_call(FAMILY, states, kw)
    groups = gather(params, grads, states, mode)
    if not groups:
        return
    b1, b2 = float(kw["beta1"]), float(kw["beta2"])
    wd, gscale = float(kw["weight_decay"]), float(kw["gscale"])
    s = Scalars(beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2, one_minus_beta2=1.0 - b2,
                eps=float(kw["eps"]), bc1=float(kw["bc1"]), bc2=float(kw["bc2"]),
                weight_decay=wd, gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), decay=wd != 0.0)
    # Everything the second pass needs is allocated before the first writes.
    scales = np.empty(len(groups))
    groups2 = [(*grp, scales[i:i + 1]) for i, grp in enumerate(groups)]
    sums = run_reduce((reduce_serial, reduce_parallel), groups, s, f, 2)
    lr = float(kw["lr"])
    for i, (sp, su) in enumerate(sums.tolist()):
        scales[i] = lr * trust_ratio(sp, su)
    run((serial, parallel), groups2, s, f)
