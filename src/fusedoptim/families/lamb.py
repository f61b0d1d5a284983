"""LAMB: the ``lamb`` kernel family and its class.

The family's step (every backend, keyword-only)::

    lamb(params, grads, (m, v), mode, *, lr, beta1, beta2, eps, bc1, bc2,
         weight_decay, maximize, gscale)

``bc1 = 1 - beta1 ** t`` and ``bc2 = 1 - beta2 ** t`` are computed by the
caller in double precision.  The update of a tensor needs the norms of the
whole tensor, so the compiled and JIT backends run a step in two passes
inside the one call: the first updates ``m`` and ``v`` and sums the squares
of ``p`` and of the update direction in the fixed blocks of
``fusedoptim._norm.sumsq_blocks`` (the block sums in their own slots, added
in order afterwards: the same bits on any number of threads); the second
recomputes the direction from the new ``m`` and ``v`` (the same operations,
so the same bits) and writes ``p``.  ``FAMILY.second_pass`` accounts for
the traffic: 10 arrays per element instead of Adam's 7.
"""

import math
from typing import TYPE_CHECKING

import numpy as np

from .._norm import sumsq_blocks
from ..optimizer import Optimizer
from ._spec import Family, Hyper, betas, flag, nonneg, prelude

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "LAMB", "lamb_tensor", "trust_ratio"]


def _sumsq(x: np.ndarray) -> float:
    """Float64 sum of squares of ``x``: its ``sumsq_blocks`` added in order
    to a running total from 0.0 (the global norm's order, per tensor)."""
    total = 0.0
    for block_sum in sumsq_blocks(x).tolist():
        total += block_sum
    return total


def trust_ratio(p_sumsq: float, u_sumsq: float) -> float:
    """``||p|| / ||u||`` from the two float64 sums of squares, in double:
    ``sqrt(p_sumsq) / sqrt(u_sumsq)``, or 1.0 where either sum is 0 (as
    ``optax.scale_by_trust_ratio``).  A NaN sum gives NaN."""
    if p_sumsq == 0.0 or u_sumsq == 0.0:
        return 1.0
    return math.sqrt(p_sumsq) / math.sqrt(u_sumsq)


def lamb_tensor(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *, lr: float,
                beta1: float, beta2: float, eps: float, bc1: float, bc2: float,
                weight_decay: float, maximize: bool, gscale: float) -> None:
    r"""One LAMB step on one tensor, in place (the reference).

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        u &= \frac{m / c_1}{\sqrt{v / c_2} + \epsilon} + \lambda p, \qquad
        r = \|p\| / \|u\|\ (1 \text{ if either is } 0) \\
        p &\leftarrow p - (\eta r)\, u

    In words: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*(g*g);
    u = (m / c1) / (sqrt(v / c2) + eps), then u = u + wd*p when wd != 0;
    r = trust_ratio(sumsq(p), sumsq(u)); p = p - (lr * r) * u, after the
    gradient prelude (clipping scale, then maximize; no L2 term), with
    ``c1 = bc1``, ``c2 = bc2``.  The sums of squares are those of
    ``_norm.sumsq_blocks`` (float64, fixed 4096-element blocks of 8 lanes
    in memory order, blocks added in order); ``p`` there is the parameter
    before the step.  ``lr * r`` is computed in double and rounded once to
    the dtype.
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, 0.0)
    m[...] = T(beta1) * m + T(1.0 - beta1) * g
    v[...] = T(beta2) * v + T(1.0 - beta2) * (g * g)
    u = (m / T(bc1)) / (np.sqrt(v / T(bc2)) + T(eps))
    if weight_decay != 0.0:
        u = u + T(weight_decay) * p
    r = trust_ratio(_sumsq(p), _sumsq(u))
    p[...] = p - T(lr * r) * u


FAMILY = Family(
    name="lamb",
    slots=("m", "v"),
    scalars=("lr", "beta1", "beta2", "eps", "bc1", "bc2", "weight_decay"),
    flags=("maximize",),
    update=lamb_tensor,
    second_pass=("m", "v"),
)


class LAMB(Optimizer):
    __doc__ = rf"""LAMB (You et al. 2020, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 Minutes"), as ``optax.lamb``: Adam's
    direction with decoupled weight decay, scaled per tensor by the trust
    ratio.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        u &= \frac{{m / c_1}}{{\sqrt{{v / c_2}} + \epsilon}} + \lambda p,
        \qquad c_1 = 1 - \beta_1^t,\ c_2 = 1 - \beta_2^t \\
        p &\leftarrow p - \eta\, \frac{{\|p\|}}{{\|u\|}}\, u
        \qquad (\text{{ratio}}\ 1\ \text{{where}}\ \|p\| = 0\ \text{{or}}\ \|u\| = 0)

    In words: ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    u = (m/c1) / (sqrt(v/c2) + eps) + wd*p; p -= lr * (|p| / |u|) * u``,
    norms per tensor.  The norms are float64 sums of squares in a fixed
    block order (:func:`fusedoptim.families.lamb.lamb_tensor`), so results
    do not depend on the thread count.  State slots: ``"exp_avg"``,
    ``"exp_avg_sq"``.  A step moves 10 arrays per element (Adam: 7): the
    second pass over ``p``, ``m`` and ``v`` applies the ratio.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    betas : (float, float)
        :math:`\beta_1, \beta_2 \in [0, 1)`.
    eps : float
        :math:`\epsilon \ge 0`.
    weight_decay : float
        :math:`\lambda \ge 0`, added to the direction before the trust ratio.
    maximize : bool
        Ascend the objective instead of descending.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([3.0, 4.0])}}
    >>> opt = fo.LAMB(params, lr=0.1)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # u = (1, -1) scaled by |p| / |u| = 5 / sqrt(2)
    True
    >>> params["w"].round(4)
    array([2.6464, 4.3536])
    """

    family = FAMILY
    lr_default = 1e-3
    hyper = (
        Hyper("betas", (0.9, 0.999), betas, "Decays (beta1, beta2) of the moments"),
        Hyper("eps", 1e-6, nonneg, "Epsilon"),
        Hyper("weight_decay", 0.0, nonneg, "Decoupled weight decay"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("exp_avg", "exp_avg_sq")
    torch = None  # torch.optim has no LAMB

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.001,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                     weight_decay: float = 0.0, *, maximize: bool = False,
                     max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                     state_dtype: str | None = None, state_rounding: str | None = None,
                     state_seed: int = 0) -> None: ...

        @property
        def betas(self) -> tuple[float, float]: ...
        @property
        def eps(self) -> float: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def maximize(self) -> bool: ...

    def kernel_args(self, hp: dict, lr: float, t: int) -> dict:
        b1, b2 = hp["betas"]
        return dict(lr=lr, beta1=b1, beta2=b2, eps=hp["eps"], bc1=1.0 - b1 ** t,
                    bc2=1.0 - b2 ** t, weight_decay=hp["weight_decay"],
                    maximize=hp["maximize"])
