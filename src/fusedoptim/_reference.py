"""Plain NumPy implementations: the oracle, and the ``numpy`` backend.

Every faster backend (``cython``, ``numba``) must reproduce these functions
bit for bit, for float32 and float64, at every thread count.  They state the
exact operation order in code, so read them as the specification.

Scalar rules
------------
Hyperparameters arrive as Python floats (already checked by ``_validate``).
Anything derived from them (``1 - beta``, the Adam bias corrections
``1 - beta ** t``, the decoupled decay factor ``1 - lr * weight_decay``) is
computed in double precision, then rounded once to the arrays' dtype, which is
what NumPy 2 does with a Python float next to a float32 array (NEP 50).  All
array arithmetic then happens in the arrays' dtype, one IEEE operation at a
time: no fused multiply-add, no reassociation, ``x ** 2`` is ``x * x``, and a
division is a division (never a multiplication by a reciprocal).

Three kernel families cover every optimizer in the library:

``sgd``      gradient descent, the course's EMA momentum, ``torch.optim.SGD``
``rmsprop``  the course's RMSProp and ``torch.optim.RMSprop``
``adam``     the course's Adam, ``torch.optim.Adam`` and ``AdamW``

Each takes the same *gradient prelude*, applied in this order to a private
copy of the gradient (the caller's gradient is never written)::

    g = g * gscale              if gscale != 1   (global-norm clipping)
    g = -g                      if maximize
    g = g + weight_decay * p    if weight_decay != 0 and the decay is L2
"""

import numpy as np

from ._validate import gather

__all__ = [
    "sgd_tensor",
    "rmsprop_tensor",
    "adam_tensor",
    "sgd",
    "rmsprop",
    "adam",
    "grad_sumsq",
    "set_num_threads",
    "sumsq_blocks",
    "SUMSQ_BLOCK",
    "SUMSQ_LANES",
]

#: Elements per block of the float64 sum of squares, and interleaved lanes
#: per block (see ``sumsq_blocks``).  Every backend computes each block's sum
#: the same way, then adds the block sums in order, so the global norm does
#: not depend on how blocks are shared among threads.
SUMSQ_BLOCK = 4096
SUMSQ_LANES = 8


def _prelude(p, g, T, gscale, maximize, weight_decay):
    if gscale != 1.0:
        g = g * T(gscale)
    if maximize:
        g = -g
    if weight_decay != 0.0:
        g = g + T(weight_decay) * p
    return g


def sgd_tensor(p, g, buf, lr, momentum, dampening, nesterov, first,
               weight_decay, maximize, gscale):
    r"""One SGD step on one tensor, in place.

    .. math::

        b &\leftarrow g \quad\text{(first step)}\qquad
        b \leftarrow \mu b + (1 - \tau) g \quad\text{(later steps)} \\
        d &= g + \mu b \ \text{(Nesterov)} \quad\text{or}\quad d = b \\
        p &\leftarrow p - \eta d

    With ``buf=None`` there is no momentum and ``d = g``.  The course's GD is
    ``buf=None``; its EMA momentum is ``momentum = dampening = beta``,
    ``first=False`` (so ``v = beta * v + (1 - beta) * g``).
    """
    T = p.dtype.type
    g = _prelude(p, g, T, gscale, maximize, weight_decay)
    if buf is not None:
        if first:
            buf[...] = g
        else:
            buf[...] = T(momentum) * buf + T(1.0 - dampening) * g
        if nesterov:
            g = g + T(momentum) * buf
        else:
            g = buf
    p[...] = p - T(lr) * g


def rmsprop_tensor(p, g, sq, gavg, buf, lr, alpha, eps, eps_inside,
                   momentum, weight_decay, maximize, gscale):
    r"""One RMSProp step on one tensor, in place.

    .. math::

        s &\leftarrow \alpha s + (1 - \alpha) g^2 \\
        \bar g &\leftarrow \alpha \bar g + (1 - \alpha) g
            \quad\text{(centered, } d = s - \bar g^2 \text{, else } d = s) \\
        r &= \sqrt{d + \epsilon} \ \text{(eps inside)}
            \quad\text{or}\quad r = \sqrt{d} + \epsilon \\
        b &\leftarrow \mu b + g / r,\ p \leftarrow p - \eta b
            \quad\text{(momentum)}\qquad
        p \leftarrow p - (\eta g) / r \quad\text{(otherwise)}

    The course's RMSProp is ``eps_inside=True`` with no ``gavg`` or ``buf``.
    """
    T = p.dtype.type
    g = _prelude(p, g, T, gscale, maximize, weight_decay)
    sq[...] = T(alpha) * sq + T(1.0 - alpha) * (g * g)
    d = sq
    if gavg is not None:
        gavg[...] = T(alpha) * gavg + T(1.0 - alpha) * g
        d = sq - gavg * gavg
    if eps_inside:
        r = np.sqrt(d + T(eps))
    else:
        r = np.sqrt(d) + T(eps)
    if buf is not None:
        buf[...] = T(momentum) * buf + g / r
        p[...] = p - T(lr) * buf
    else:
        p[...] = p - (T(lr) * g) / r


def adam_tensor(p, g, m, v, vmax, lr, beta1, beta2, eps, bc1, bc2,
                weight_decay, decoupled, maximize, gscale):
    r"""One Adam step on one tensor, in place.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        \hat m = m / c_1 \\
        v &\leftarrow \beta_2 v + (1 - \beta_2) g^2, \qquad
        \hat v = \max(v_{max}, v) / c_2 \ \text{(AMSGrad)}
        \ \text{or}\ v / c_2 \\
        p &\leftarrow p - (\eta \hat m) / (\sqrt{\hat v} + \epsilon)

    where ``c1 = 1 - beta1 ** t`` and ``c2 = 1 - beta2 ** t`` are passed in
    (``bc1``, ``bc2``).  With ``decoupled=True`` (AdamW) the weight decay is
    ``p <- p * (1 - lr * weight_decay)`` before the update instead of an L2
    term in the gradient.  ``vmax`` (AMSGrad) is updated in place to
    ``max(vmax, v)``, NaN propagating as in ``np.maximum``.
    """
    T = p.dtype.type
    if decoupled:
        g = _prelude(p, g, T, gscale, maximize, 0.0)
        if weight_decay != 0.0:
            p[...] = p * T(1.0 - lr * weight_decay)
    else:
        g = _prelude(p, g, T, gscale, maximize, weight_decay)
    m[...] = T(beta1) * m + T(1.0 - beta1) * g
    m_hat = m / T(bc1)
    v[...] = T(beta2) * v + T(1.0 - beta2) * (g * g)
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
        v_hat = vmax / T(bc2)
    else:
        v_hat = v / T(bc2)
    p[...] = p - (T(lr) * m_hat) / (np.sqrt(v_hat) + T(eps))


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


# --- multi-tensor entry points: the backend interface ----------------------
#
# Every backend module exposes these four functions with these signatures.
# ``states`` is a tuple of ``(label, dict or None)`` pairs, in the family's
# fixed order; ``None`` means the state is not used (no momentum buffer, not
# centered, no AMSGrad).  ``mode`` is ``_validate.COURSE`` or
# ``_validate.NAMED``.  Nothing is written unless the whole step validates.


def sgd(params, grads, states, mode, lr, momentum, dampening, nesterov,
        first, weight_decay, maximize, gscale):
    """Multi-tensor SGD step; ``states = ((label, buf),)``."""
    for p, g, buf in gather(params, grads, states, mode):
        sgd_tensor(p, g, buf, lr, momentum, dampening, nesterov, first,
                   weight_decay, maximize, gscale)


def rmsprop(params, grads, states, mode, lr, alpha, eps, eps_inside,
            momentum, weight_decay, maximize, gscale):
    """Multi-tensor RMSProp step; ``states = (sq, gavg, buf)`` pairs."""
    for p, g, sq, gavg, buf in gather(params, grads, states, mode):
        rmsprop_tensor(p, g, sq, gavg, buf, lr, alpha, eps, eps_inside,
                       momentum, weight_decay, maximize, gscale)


def adam(params, grads, states, mode, lr, beta1, beta2, eps, bc1, bc2,
         weight_decay, decoupled, maximize, gscale):
    """Multi-tensor Adam step; ``states = (m, v, vmax)`` pairs."""
    for p, g, m, v, vmax in gather(params, grads, states, mode):
        adam_tensor(p, g, m, v, vmax, lr, beta1, beta2, eps, bc1, bc2,
                    weight_decay, decoupled, maximize, gscale)


def grad_sumsq(params, grads, mode):
    """Float64 sum of squares over all gradients, in a thread-independent
    order: the block sums of ``sumsq_blocks`` for each gradient, parameters
    in dict order, added one after another to a running total from 0.0."""
    total = 0.0
    for _p, g in gather(params, grads, (), mode):
        for block_sum in sumsq_blocks(g).tolist():
            total += block_sum
    return total


def set_num_threads(n):
    """The reference runs on one thread; accepted for a uniform interface."""
