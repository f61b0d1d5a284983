"""NAdam's Numba element span and step (``fusedoptim.families.nadam``)."""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("nadam")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars", "beta1 one_minus_beta1 beta2 one_minus_beta2 eps bc2 "
                                "lr_g lr_m weight_decay shrink gscale")
Flags = namedtuple("Flags", "scale maximize l2 decoupled")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.nadam.nadam_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    M = _view(row[2], lo, m, z)
    V = _view(row[3], lo, m, z)
    b1, omb1 = _as(s.beta1, z), _as(s.one_minus_beta1, z)
    b2, omb2, eps = _as(s.beta2, z), _as(s.one_minus_beta2, z), _as(s.eps, z)
    c2, lrg, lrm = _as(s.bc2, z), _as(s.lr_g, z), _as(s.lr_m, z)
    wd, shrink, gs = _as(s.weight_decay, z), _as(s.shrink, z), _as(s.gscale, z)
    for i in range(m):
        p = P[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, wd, f.l2)
        if f.decoupled:
            p = p * shrink
        mi = b1 * M[i] + omb1 * g
        M[i] = mi
        vi = b2 * V[i] + (omb2 * g) * g
        V[i] = vi
        d = np.sqrt(vi / c2) + eps
        P[i] = p - (lrg * g + lrm * mi) / d


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


def _args(kw: dict, gscale: float) -> tuple:
    """The span's scalars and flags for one group's keywords ``kw``."""
    lr, b1, b2 = float(kw["lr"]), float(kw["beta1"]), float(kw["beta2"])
    wd, gscale = float(kw["weight_decay"]), float(gscale)
    decay, decoupled = wd != 0.0, bool(kw["decoupled"])
    s = Scalars(beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2, one_minus_beta2=1.0 - b2,
                eps=float(kw["eps"]), bc2=float(kw["bc2"]), lr_g=float(kw["lr_g"]),
                lr_m=float(kw["lr_m"]), weight_decay=wd, shrink=1.0 - lr * wd,
                gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), l2=decay and not decoupled,
              decoupled=decay and decoupled)
    return s, f


step, step_groups = family_steps(FAMILY, "NAdam", _args, (serial, parallel))
