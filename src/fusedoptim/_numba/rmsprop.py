"""RMSProp's Numba element span and step (``fusedoptim.families.rmsprop``)."""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("rmsprop")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars",
                     "lr alpha one_minus_alpha eps momentum weight_decay gscale")
Flags = namedtuple("Flags", "scale maximize decay centered has_buf eps_inside")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.rmsprop.rmsprop_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    S = _view(row[2], lo, m, z)
    A = _view(row[3], lo, m, z)
    B = _view(row[4], lo, m, z)
    lr, a, oma, eps = _as(s.lr, z), _as(s.alpha, z), _as(s.one_minus_alpha, z), _as(s.eps, z)
    mu, wd, gs = _as(s.momentum, z), _as(s.weight_decay, z), _as(s.gscale, z)
    for i in range(m):
        p = P[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, wd, f.decay)
        # eps_inside: the course's rounding order; otherwise PyTorch's.
        if f.eps_inside:
            sq = a * S[i] + oma * (g * g)
        else:
            sq = a * S[i] + (oma * g) * g
        S[i] = sq
        d = sq
        if f.centered:
            ga = a * A[i] + oma * g
            A[i] = ga
            if not f.eps_inside and sq == np.inf and abs(ga) < np.inf:
                d = sq  # torch's fused multiply-add: inf - (finite)^2 is inf
            else:
                d = sq - ga * ga
        if f.eps_inside:
            r = np.sqrt(d + eps)
        else:
            r = np.sqrt(d) + eps
        if f.has_buf:
            b = mu * B[i] + g / r
            B[i] = b
            P[i] = p - lr * b
        else:
            P[i] = p - (lr * g) / r


# The drivers of this span (why per family, and why matrices of scalars and
# flags: see ``_step.drive_serial_groups``).
_NS, _NF = len(Scalars._fields), len(Flags._fields)


@njit(**JIT)
def unpack(s, f):
    """One group's rows of the scalar and flag matrices as the span's namedtuples."""
    return Scalars(*to_fixed_tuple(s, _NS)), Flags(*to_fixed_tuple(f, _NF))


@njit(**JIT)
def serial(ptrs, sizes, grp, s, f, z):
    drive_serial_groups(span, unpack, ptrs, sizes, grp, s, f, z)


@njit(parallel=True, **JIT)
def parallel(ptrs, sizes, grp, nthreads, s, f, z):
    drive_parallel_groups(span, unpack, ptrs, sizes, grp, nthreads, s, f, z)


def _args(kw, gscale):
    """The span's scalars and flags for one group's keywords ``kw``."""
    alpha, wd, gscale = float(kw["alpha"]), float(kw["weight_decay"]), float(gscale)
    s = Scalars(lr=float(kw["lr"]), alpha=alpha, one_minus_alpha=1.0 - alpha,
                eps=float(kw["eps"]), momentum=float(kw["momentum"]), weight_decay=wd,
                gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), decay=wd != 0.0,
              centered=bool(kw["centered"]), has_buf=bool(kw["has_buf"]),
              eps_inside=bool(kw["eps_inside"]))
    return s, f


step, step_groups = family_steps(FAMILY, "RMSProp", _args, (serial, parallel))
