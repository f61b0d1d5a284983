"""The global gradient norm's reference: float64 sums of squares in a fixed order.

Every backend computes each block's sum the same way, then adds the block
sums in order, so the norm for clipping does not depend on how blocks are
shared among threads.
"""

import numpy as np

from ._validate import gather

__all__ = ["SUMSQ_BLOCK", "SUMSQ_LANES", "sumsq_blocks", "grad_sumsq"]

#: Elements per block of the float64 sum of squares, and interleaved lanes
#: per block (see ``sumsq_blocks``).
SUMSQ_BLOCK = 4096
SUMSQ_LANES = 8


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
    np.multiply(x, x, out=sq[:n])
    # cumsum is a sequential scan, so its last row is the in-order lane sum;
    # the zero padding adds exact zeros.
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
