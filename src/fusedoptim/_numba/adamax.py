"""Adamax's Numba element span and step (``fusedoptim.families.adamax``)."""

from collections import namedtuple

from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("adamax")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars", "clr beta1 one_minus_beta1 beta2 eps weight_decay gscale")
Flags = namedtuple("Flags", "scale maximize l2")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.adamax.adamax_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    M = _view(row[2], lo, m, z)
    U = _view(row[3], lo, m, z)
    clr, b1, omb1 = _as(s.clr, z), _as(s.beta1, z), _as(s.one_minus_beta1, z)
    b2, eps = _as(s.beta2, z), _as(s.eps, z)
    wd, gs = _as(s.weight_decay, z), _as(s.gscale, z)
    for i in range(m):
        p = P[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, wd, f.l2)
        mi = b1 * M[i] + omb1 * g
        b = b2 * U[i]
        x = abs(g) + eps
        # torch.maximum: b where b >= x or b is NaN, else x.
        if not (b >= x or b != b):
            b = x
        M[i] = mi
        U[i] = b
        P[i] = p - (clr * mi) / b


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
    b1, wd, gscale = float(kw["beta1"]), float(kw["weight_decay"]), float(gscale)
    s = Scalars(clr=float(kw["lr"]) / float(kw["bc1"]), beta1=b1, one_minus_beta1=1.0 - b1,
                beta2=float(kw["beta2"]), eps=float(kw["eps"]), weight_decay=wd,
                gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), l2=wd != 0.0)
    return s, f


step, step_groups = family_steps(FAMILY, "Adamax", _args, (serial, parallel))
