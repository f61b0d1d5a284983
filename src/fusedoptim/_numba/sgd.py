"""SGD's Numba element span and step (``fusedoptim.families.sgd``)."""

from collections import namedtuple

from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from ..families import family_of
from ._family import family_steps
from ._loops import prelude
from ._step import JIT, _as, _view, drive_parallel_groups, drive_serial_groups

__all__ = ["step", "step_groups"]

FAMILY = family_of("sgd")

# The span's inputs, read by name: float64 scalars (derived ones computed in
# double, each rounded once to the dtype in the span) and the loop's switches.
Scalars = namedtuple("Scalars", "lr momentum one_minus_dampening weight_decay gscale")
Flags = namedtuple("Flags", "scale maximize decay has_buf first nesterov")


@njit(**JIT)
def span(row, lo, hi, s, f, z):
    """``families.sgd.sgd_tensor`` on elements [lo, hi)."""
    m = hi - lo
    P = _view(row[0], lo, m, z)
    G = _view(row[1], lo, m, z)
    B = _view(row[2], lo, m, z)
    lr, mu, omd = _as(s.lr, z), _as(s.momentum, z), _as(s.one_minus_dampening, z)
    wd, gs = _as(s.weight_decay, z), _as(s.gscale, z)
    for i in range(m):
        p = P[i]
        g = prelude(G[i], p, gs, f.scale, f.maximize, wd, f.decay)
        if f.has_buf:
            if f.first:
                b = g
            else:
                b = mu * B[i] + omd * g
            B[i] = b
            if f.nesterov:
                g = g + mu * b
            else:
                g = b
        P[i] = p - lr * g


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
    wd, gscale = float(kw["weight_decay"]), float(gscale)
    s = Scalars(lr=float(kw["lr"]), momentum=float(kw["momentum"]),
                one_minus_dampening=1.0 - float(kw["dampening"]), weight_decay=wd,
                gscale=gscale)
    f = Flags(scale=gscale != 1.0, maximize=bool(kw["maximize"]), decay=wd != 0.0,
              has_buf=bool(kw["has_buf"]), first=bool(kw["first"]),
              nesterov=bool(kw["nesterov"]))
    return s, f


step, step_groups = family_steps(FAMILY, "SGD", _args, (serial, parallel))
