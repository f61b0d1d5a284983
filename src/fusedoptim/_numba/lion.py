"""Lion's Numba element span and step (``fusedoptim.families.lion``)."""

from collections import namedtuple

from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("lion")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars", "lr beta1 one_minus_beta1 beta2 one_minus_beta2 "
                                "weight_decay gscale")
Flags = namedtuple("Flags", "scale maximize decay")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.lion.lion_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    M = _view(row[2], lo, m, z)
    lr, b1, omb1 = _as(s.lr, z), _as(s.beta1, z), _as(s.one_minus_beta1, z)
    b2, omb2 = _as(s.beta2, z), _as(s.one_minus_beta2, z)
    wd, gs = _as(s.weight_decay, z), _as(s.gscale, z)
    one, zero = _as(1.0, z), _as(0.0, z)
    for i in range(m):
        p = P[i]
        m0 = M[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, gs, False)
        c = b1 * m0 + omb1 * g
        # np.sign: +1, -1, +0.0 for either zero, a NaN itself.
        if c > zero:
            sg = one
        elif c < zero:
            sg = -one
        elif c == c:
            sg = zero
        else:
            sg = c
        if f.decay:
            sg = sg + wd * p
        P[i] = p - lr * sg
        M[i] = b2 * m0 + omb2 * g


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
    b1, b2 = float(kw["beta1"]), float(kw["beta2"])
    wd, gscale = float(kw["weight_decay"]), float(gscale)
    s = Scalars(lr=float(kw["lr"]), beta1=b1, one_minus_beta1=1.0 - b1, beta2=b2,
                one_minus_beta2=1.0 - b2, weight_decay=wd, gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), decay=wd != 0.0)
    return s, f


step, step_groups = family_steps(FAMILY, "Lion", _args, (serial, parallel))
