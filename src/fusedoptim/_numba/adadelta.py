"""Adadelta's Numba element span and step (``fusedoptim.families.adadelta``)."""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("adadelta")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars", "lr rho one_minus_rho eps weight_decay gscale")
Flags = namedtuple("Flags", "scale maximize l2")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.adadelta.adadelta_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    S = _view(row[2], lo, m, z)
    A = _view(row[3], lo, m, z)
    lr, rho, omr = _as(s.lr, z), _as(s.rho, z), _as(s.one_minus_rho, z)
    eps, wd, gs = _as(s.eps, z), _as(s.weight_decay, z), _as(s.gscale, z)
    for i in range(m):
        p = P[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, wd, f.l2)
        a0 = A[i]
        si = rho * S[i] + (omr * g) * g
        S[i] = si
        d = np.sqrt((a0 + eps) / (si + eps)) * g
        A[i] = rho * a0 + (omr * d) * d
        P[i] = p - lr * d


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
    rho, wd, gscale = float(kw["rho"]), float(kw["weight_decay"]), float(gscale)
    s = Scalars(lr=float(kw["lr"]), rho=rho, one_minus_rho=1.0 - rho, eps=float(kw["eps"]),
                weight_decay=wd, gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), l2=wd != 0.0)
    return s, f


step, step_groups = family_steps(FAMILY, "Adadelta", _args, (serial, parallel))
