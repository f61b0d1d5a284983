"""The element helpers the Numba spans share (the twin of ``_ext/_loops.pxd``).

Kept apart from ``_step`` (the drivers) so that a family's span reads as its
own update only: the gradient prelude every family starts with is written
once, here, in ``families._spec.prelude``'s order.
"""

from numba import njit

from ._step import JIT

__all__ = ["prelude"]


@njit(inline="always", **JIT)
def prelude(g, p, gs, scale, maximize, wd, decay):
    """``families._spec.prelude`` for one element: clip scale, sign, L2.

    Inlined at the IR level, so a literal ``False`` flag (LAMB, Lion: no L2)
    leaves no branch, and the loops vectorize as they did written out.
    """
    if scale:
        g = g * gs
    if maximize:
        g = -g
    if decay:
        g = g + wd * p
    return g
