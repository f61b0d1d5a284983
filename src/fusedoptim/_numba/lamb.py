"""LAMB's Numba passes and step (``fusedoptim.families.lamb``): the first
pass (``_step.run_reduce``) updates the moments and sums the squares of the
parameter and the direction per block; the second (``_step.run_groups``) applies
each tensor's ``lr * trust ratio``, read through a fifth address in the
tensor's row."""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from .._validate import gather
from ..families import check_call, check_groups, family_of
from ..families.lamb import trust_ratio
from ._norm import _sumsq_block
from ._loops import prelude
from ._step import (JIT, _as, _view, drive_parallel_groups, drive_reduce_parallel_groups,
                    drive_reduce_serial_groups, drive_serial_groups, group_of, run_groups,
                    run_reduce)

__all__ = ["step", "step_groups"]

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
        g = prelude(G[i], p, gs, f.scale, f.maximize, gs, False)
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


# The drivers of the block and the span (why per family, and why matrices of
# scalars and flags: see ``_step.drive_serial_groups``).
_NS, _NF = len(Scalars._fields), len(Flags._fields)


@njit(**JIT)
def unpack(s, f):
    """One group's rows of the scalar and flag matrices as the spans' namedtuples."""
    return Scalars(*to_fixed_tuple(s, _NS)), Flags(*to_fixed_tuple(f, _NF))


@njit(**JIT)
def reduce_serial(ptrs, sizes, grp, out, s, f, z):
    drive_reduce_serial_groups(block, unpack, ptrs, sizes, grp, out, s, f, z)


@njit(parallel=True, **JIT)
def reduce_parallel(ptrs, sizes, grp, out, s, f, z):
    drive_reduce_parallel_groups(block, unpack, ptrs, sizes, grp, out, s, f, z)


@njit(**JIT)
def serial(ptrs, sizes, grp, s, f, z):
    drive_serial_groups(span, unpack, ptrs, sizes, grp, s, f, z)


@njit(parallel=True, **JIT)
def parallel(ptrs, sizes, grp, nthreads, s, f, z):
    drive_parallel_groups(span, unpack, ptrs, sizes, grp, nthreads, s, f, z)


def _args(kw: dict, gscale: float) -> tuple:
    """The spans' scalars and flags for one group's keywords ``kw``."""
    b1, b2 = float(kw["beta1"]), float(kw["beta2"])
    wd, gscale = float(kw["weight_decay"]), float(gscale)
    s = Scalars(beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2, one_minus_beta2=1.0 - b2,
                eps=float(kw["eps"]), bc1=float(kw["bc1"]), bc2=float(kw["bc2"]),
                weight_decay=wd, gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), decay=wd != 0.0)
    return s, f


def _two_passes(gathered: list, s, f, lrs: list, where: list | None) -> None:
    """The first pass, each tensor's ``lr * trust ratio`` (``lrs[i]``: tensor
    ``i``'s group's lr), the second pass; ``s``, ``f`` and ``where`` as in
    ``_step.run_groups``."""
    # Everything the second pass needs is allocated before the first writes.
    scales = np.empty(len(gathered))
    second = [(*grp, scales[i:i + 1]) for i, grp in enumerate(gathered)]
    sums = run_reduce((reduce_serial, reduce_parallel), gathered, s, f, 2, where)
    for i, (sp, su) in enumerate(sums.tolist()):
        scales[i] = lrs[i] * trust_ratio(sp, su)
    run_groups((serial, parallel), second, s, f, where)


def step(params: dict, grads: dict, states: tuple, mode: int, **kw) -> None:
    """Multi-tensor LAMB step, keyword-only (see ``fusedoptim.families.lamb``)."""
    check_call(FAMILY, states, kw)
    gathered = gather(params, grads, states, mode)
    if not gathered:
        return
    s, f = _args(kw, kw["gscale"])
    _two_passes(gathered, s, f, [float(kw["lr"])] * len(gathered), None)


def step_groups(params: dict, grads: dict, states: tuple, mode: int, groups: tuple,
                sizes: tuple, *, gscale: float) -> None:
    """``step`` over several parameter groups in one call (see
    ``fusedoptim._reference``): group ``k``'s keywords on its ``sizes[k]``
    tensors, in both passes."""
    check_groups(FAMILY, states, groups, sizes)
    gathered = gather(params, grads, states, mode)
    where = group_of(sizes, len(gathered))
    if not gathered:
        return
    args = [_args(kw, gscale) for kw in groups]
    _two_passes(gathered, [a[0] for a in args], [a[1] for a in args],
                [float(groups[k]["lr"]) for k in where], where)
