"""The global gradient norm's reference: float64 sums of squares in a fixed order.

Every backend computes each block's sum the same way, then adds the block
sums in order, so the norm for clipping does not depend on how blocks are
shared among threads.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np

from ._validate import NAMED, gather

__all__ = ["SUMSQ_BLOCK", "SUMSQ_LANES", "CLIP_EPS", "sumsq_blocks", "grad_sumsq",
           "overflow_safe_norm", "clip_decision"]

#: Elements per block of the float64 sum of squares, and interleaved lanes
#: per block (see ``sumsq_blocks``).
SUMSQ_BLOCK = 4096
SUMSQ_LANES = 8

#: ``torch.nn.utils.clip_grad_norm_``'s guard against a zero norm.
CLIP_EPS = 1e-6


def sumsq_blocks(g):
    """Float64 partial sums of squares of one gradient, one per block.

    The gradient is read in memory order (``gather`` gives it the layout of
    its parameter, C or Fortran) and cut into blocks of ``SUMSQ_BLOCK``
    elements (the last one shorter).  Inside a block, element ``i`` goes to
    lane ``i % SUMSQ_LANES``; each lane adds its squares sequentially; the
    lanes are then combined pairwise, ``((l0 + l1) + (l2 + l3)) + ((l4 + l5)
    + (l6 + l7))``.  Eight independent lanes let a compiled loop use SIMD
    while keeping one fixed order.
    """
    x = np.ravel(g, order="K").astype(np.float64)
    n = x.size
    if n == 0:
        return np.zeros(0)
    nb = -(-n // SUMSQ_BLOCK)
    sq = np.zeros(nb * SUMSQ_BLOCK)
    # A square that overflows is the expected signal (a non-finite sum sends
    # the caller to overflow_safe_norm), not something to warn about; so are
    # the infinities it then adds.
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(x, x, out=sq[:n])
        # cumsum is a sequential scan, so its last row is the in-order lane
        # sum; the zero padding adds exact zeros.
        lanes = np.cumsum(sq.reshape(nb, SUMSQ_BLOCK // SUMSQ_LANES, SUMSQ_LANES),
                          axis=1)[:, -1, :]
        while lanes.shape[1] > 1:
            lanes = lanes[:, 0::2] + lanes[:, 1::2]
    return lanes[:, 0]


def grad_sumsq(params, grads, mode):
    """Float64 sum of squares over all gradients, in a thread-independent
    order: the block sums of ``sumsq_blocks`` for each gradient, parameters
    in dict order, added one after another to a running total from 0.0."""
    total = 0.0
    for _p, g in gather(params, grads, (), mode):
        for block_sum in sumsq_blocks(g).tolist():
            total += block_sum
    return total


def overflow_safe_norm(gs: Sequence[np.ndarray],
                       sumsq: float) -> tuple[float, bool, Callable[[float], float] | None]:
    """The 2-norm of ``gs`` when their float64 sum of squares ``sumsq`` is
    not finite.

    Returns ``(norm, finite, scale_of)``: ``finite`` is whether every
    element is finite; then ``scale_of(max_norm)`` is the clipping factor
    ``max_norm / (norm + 1e-6)`` (``max_norm / amax / root`` when the norm
    itself exceeds float64).  The norm is ``amax * sqrt(sum((g / amax)**2))``
    with ``amax`` the largest magnitude, summed in the fixed block order of
    :func:`fusedoptim._norm.sumsq_blocks` (reproducible on any thread count).
    """
    if not all(np.isfinite(g).all() for g in gs):
        return math.sqrt(sumsq), False, None
    amax = max(float(np.max(np.abs(g))) for g in gs if g.size)
    total = 0.0
    for g in gs:
        for block_sum in sumsq_blocks(np.asarray(g, dtype=np.float64) / amax).tolist():
            total += block_sum
    root = math.sqrt(total)
    norm = amax * root

    def scale_of(max_norm: float) -> float:
        if math.isfinite(norm):
            return max_norm / (norm + CLIP_EPS)
        return max_norm / amax / root

    return norm, True, scale_of


def clip_decision(backend, params, grads, max_norm, skip_nonfinite):
    """``(gscale, norm, skip)`` of an optimizer step's gradients: the factor
    they are scaled by inside the step (``min(1, max_norm / (norm +
    CLIP_EPS))``, ``clip_grad_norm_``'s), their global norm (``None`` when
    neither ``max_norm`` nor ``skip_nonfinite`` asks for it) and whether
    ``skip_nonfinite`` skips the step.

    A non-finite norm gets ``clip_grad_norm_``'s (and torch's) factor when
    the step is not skipped: 0 for an infinite norm (an infinite element
    becomes NaN, the finite ones 0), NaN for a NaN one.
    """
    if max_norm is None and not skip_nonfinite:
        return 1.0, None, False
    # One read-only pass: the norm for clipping doubles as a cheap
    # non-finite detector (NaN or inf anywhere makes it non-finite).
    sumsq = backend.grad_sumsq(params, grads, NAMED)
    finite = math.isfinite(sumsq)
    if finite:
        norm = math.sqrt(sumsq)
        scale = None if max_norm is None else max_norm / (norm + CLIP_EPS)
    else:
        # NaN or inf, or finite float64 gradients above about 1e154 whose
        # squares overflow.
        norm, finite, scale_of = overflow_safe_norm(
            [g for _p, g in gather(params, grads, (), NAMED)], sumsq)
        if max_norm is None:
            scale = None
        elif finite:
            scale = scale_of(max_norm)
        else:
            scale = max_norm / (norm + CLIP_EPS)
    # not >= (rather than <): a NaN factor is applied, as torch.clamp keeps it.
    gscale = scale if scale is not None and not scale >= 1.0 else 1.0
    return gscale, norm, not finite and skip_nonfinite
