"""How the flattened parameters are cut among ranks, and flat views of them.

The parameters of one dtype form one flat space: each tensor in memory
order (C or Fortran, as it is laid out), tensors in dict order.  The space is
cut into one contiguous slice per rank.  A cut falls on a tensor boundary or
on a multiple of ``SUMSQ_BLOCK`` elements from a tensor's start, so that the
float64 blocks of the gradient norm (``fusedoptim._norm``) are never split
between ranks and the sharded norm equals the single-process one bit for
bit; slices are therefore balanced to within half a block (2048 elements).
"""

from bisect import bisect_right
from typing import Any

import numpy as np

from .._norm import SUMSQ_BLOCK

__all__ = ["Group", "balanced_cuts", "flat_view", "flat_parameters", "order_of"]


def order_of(p: np.ndarray) -> str:
    """``"F"`` for a Fortran-ordered (and not C-ordered) array, else ``"C"``:
    the order that reads ``p`` in memory order."""
    return "F" if p.flags.f_contiguous and not p.flags.c_contiguous else "C"


def flat_view(p: np.ndarray) -> np.ndarray:
    """A 1-D view of a dense array in memory order (never a copy)."""
    v = p.reshape(-1, order="F") if order_of(p) == "F" else p.reshape(-1)
    if p.size and not np.shares_memory(v, p):  # reshape copied: not dense
        raise ValueError("parameter is not contiguous")
    return v


def balanced_cuts(sizes: list, world: int, block: int = SUMSQ_BLOCK) -> list:
    """Non-decreasing cut points ``c_r`` from ``c_0 = 0`` to ``c_world =
    sum(sizes)`` of the flat space of tensors of ``sizes``: rank ``r`` owns
    ``[c_r, c_{r+1})``.

    Cut ``r`` is the allowed point (a tensor boundary, or a multiple of
    ``block`` from a tensor's start) nearest to ``r * n // world`` (the lower
    one on a tie), and no lower than the previous cut.

    Parameters
    ----------
    sizes : list of int
        The number of elements of each tensor, in flat order (at least one
        tensor).
    world : int
        The number of ranks.
    block : int, optional
        Cuts inside a tensor fall on multiples of ``block`` from its start.
        The default, 4096, is the block of the gradient norm's float64 sums,
        so that no rank splits a block.

    Returns
    -------
    list of int
        ``world + 1`` cut points, from 0 to ``sum(sizes)``.  Two equal cuts
        give a rank no element.
    """
    starts = [0]
    for s in sizes:
        starts.append(starts[-1] + s)
    n = starts[-1]
    cuts = [0]
    for r in range(1, world):
        x = r * n // world
        i = bisect_right(starts, x, 0, len(sizes)) - 1  # tensor holding element x
        start, end = starts[i], starts[i] + sizes[i]
        lo = start + (x - start) // block * block
        hi = min(lo + block, end)
        c = lo if x - lo <= hi - x else hi
        cuts.append(max(c, cuts[-1]))
    cuts.append(n)
    return cuts


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _address(a):
    return a.__array_interface__["data"][0]


def _contiguous_run(views: list):
    """One 1-D array over the memory of ``views`` (1-D, same dtype) when they
    lie end to end in this order inside one ndarray; else ``None``."""
    views = [v for v in views if v.size] or views[:1]  # empty ones hold no bytes
    if len(views) == 1:
        return views[0]
    root = _root(views[0])
    if not (root.flags.c_contiguous or root.flags.f_contiguous):
        return None
    addr = _address(views[0])
    for v in views:
        if _root(v) is not root or _address(v) != addr:
            return None
        addr += v.nbytes
    raw = flat_view(root).view(np.uint8)
    off = _address(views[0]) - _address(root)
    return raw[off:off + (addr - _address(views[0]))].view(views[0].dtype)


class Group:
    """The parameters of one dtype: their flat space, its cuts, and the
    pieces of it this rank owns.

    Attributes
    ----------
    index : list of int
        Position of each tensor in the parameters dict.
    names, sizes, starts : list
        Each tensor's name, number of elements and start in the flat space.
    cuts : list of int
        ``balanced_cuts(sizes, world)``.
    pieces : list of (int, int, int)
        ``(k, a, b)``: elements ``[a, b)`` of tensor ``k`` (in this group) are
        this rank's, in flat order.
    flat : ndarray or None
        A 1-D array over all the group's parameter memory when it is one
        contiguous run (single tensor, or views laid end to end in one
        buffer as :func:`flat_parameters` makes them); ``None`` otherwise.
    """

    def __init__(self, dtype: Any, index: list, names: list, arrays: list, world: int,
                 rank: int) -> None:
        self.dtype = np.dtype(dtype)
        self.index = index
        self.names = names
        self.orders = [order_of(p) for p in arrays]
        self.views = [flat_view(p) for p in arrays]
        self.sizes = [v.size for v in self.views]
        self.starts = [0]
        for s in self.sizes:
            self.starts.append(self.starts[-1] + s)
        self.n = self.starts[-1]
        self.cuts = balanced_cuts(self.sizes, world)
        self.counts = [self.cuts[r + 1] - self.cuts[r] for r in range(world)]
        self.lo, self.hi = self.cuts[rank], self.cuts[rank + 1]
        self.pieces = self.pieces_of(self.lo, self.hi)
        self.flat = _contiguous_run(self.views)
        # Communication buffers, set by the optimizer that owns the group.
        self.mean: Any = None
        self.recv: Any = None
        self.send: Any = None
        self.pad: Any = None
        self.full: Any = None

    def pieces_of(self, lo: int, hi: int) -> list:
        """``(k, a, b)`` for each tensor ``k`` overlapping flat ``[lo, hi)``."""
        out = []
        for k, size in enumerate(self.sizes):
            s = self.starts[k]
            a, b = max(lo, s), min(hi, s + size)
            if a < b:
                out.append((k, a - s, b - s))
        return out


def flat_parameters(parameters: dict) -> dict:
    """Copies of ``parameters`` as views into one flat buffer per dtype.

    The result has the same names, shapes, dtypes and values (C order); the
    arrays of one dtype lie end to end in one buffer, so
    :class:`~fusedoptim.distributed.ShardedOptimizer` sends them without
    copying them into a staging buffer first.  Train with the returned
    arrays (they are the parameters the optimizer updates).

    Parameters
    ----------
    parameters : dict of str to ndarray
        The parameters; only read.

    Returns
    -------
    dict of str to ndarray
        New arrays, by the same names in the same order; ``parameters`` is
        not changed and shares no memory with them.
    """
    total: dict = {}
    for p in parameters.values():
        dt = np.dtype(p.dtype)
        total[dt] = total.get(dt, 0) + p.size
    buffers = {dt: np.empty(n, dt) for dt, n in total.items()}
    used = dict.fromkeys(total, 0)
    out = {}
    for name, p in parameters.items():
        dt = np.dtype(p.dtype)
        o = used[dt]
        view = buffers[dt][o:o + p.size].reshape(p.shape)
        view[...] = p
        used[dt] = o + p.size
        out[name] = view
    return out
