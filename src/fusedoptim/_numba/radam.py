"""RAdam's Numba element span and step (``fusedoptim.families.radam``)."""

from collections import namedtuple

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("radam")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars", "lr beta1 one_minus_beta1 beta2 one_minus_beta2 eps bc1 "
                                "bc2_sqrt rect weight_decay shrink gscale")
Flags = namedtuple("Flags", "scale maximize l2 decoupled rectified")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.radam.radam_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    M = _view(row[2], lo, m, z)
    V = _view(row[3], lo, m, z)
    lr, b1, omb1 = _as(s.lr, z), _as(s.beta1, z), _as(s.one_minus_beta1, z)
    b2, omb2, eps = _as(s.beta2, z), _as(s.one_minus_beta2, z), _as(s.eps, z)
    c1, s2, rect = _as(s.bc1, z), _as(s.bc2_sqrt, z), _as(s.rect, z)
    wd, shrink, gs = _as(s.weight_decay, z), _as(s.shrink, z), _as(s.gscale, z)
    one = _as(1.0, z)
    for i in range(m):
        p = P[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, wd, f.l2)
        if f.decoupled:
            p = p * shrink
        mi = b1 * M[i] + omb1 * g
        M[i] = mi
        vi = b2 * V[i] + (omb2 * g) * g
        V[i] = vi
        mh = mi / c1
        if f.rectified:
            # torch: bc2 ** 0.5 / x is x.reciprocal() * bc2 ** 0.5.
            a = (one / (np.sqrt(vi) + eps)) * s2
            P[i] = p - ((mh * lr) * a) * rect
        else:
            P[i] = p - mh * lr


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
    s = Scalars(lr=lr, beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2,
                one_minus_beta2=1.0 - b2, eps=float(kw["eps"]), bc1=float(kw["bc1"]),
                bc2_sqrt=float(kw["bc2_sqrt"]), rect=float(kw["rect"]), weight_decay=wd,
                shrink=1.0 - lr * wd, gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), l2=decay and not decoupled,
              decoupled=decay and decoupled, rectified=bool(kw["rectified"]))
    return s, f


step, step_groups = family_steps(FAMILY, "RAdam", _args, (serial, parallel))
