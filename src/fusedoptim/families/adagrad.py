"""Adagrad: the ``adagrad`` kernel family and its class.

The family's step (every backend, keyword-only)::

    adagrad(params, grads, (sum,), mode, *, lr, eps, weight_decay, maximize, gscale)

``lr`` is the step's decayed rate ``lr / (1 + (t - 1) * lr_decay)``, computed
by the caller in double precision.
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, flag, nonneg, prelude, same, Torch

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "Adagrad", "adagrad_tensor"]


def adagrad_tensor(p, g, s, *, lr, eps, weight_decay, maximize, gscale):
    r"""One Adagrad step on one tensor, in place (the reference).

    .. math::

        s \leftarrow s + g^2, \qquad
        p \leftarrow p - \eta \, \bigl(g / (\sqrt{s} + \epsilon)\bigr)

    In words: s = s + g*g; p = p - lr * (g / (sqrt(s) + eps)), after the
    gradient prelude (maximize, then L2 weight decay), in the order of
    ``torch.optim.Adagrad`` (``addcmul_``, ``sqrt().add_(eps)``,
    ``addcdiv_``).

    The square is already PyTorch's: torch 2.13's
    ``state_sum.addcmul_(grad, grad, value=1)`` is ``fma(g, g, s)`` on the
    CPU, single-tensor and fused alike (compared bitwise), so ``s + g*g``
    without the fusion differs in rounding only, and overflows exactly
    where it does (``s >= 0``): from ``|g| = 1.8e19`` in float32 and
    ``1.3e154`` in float64 both give an infinite sum and leave the
    parameter where it was (``g / inf = 0``).  The step rounds as
    ``lr * (g / std)``; torch's fused kernel rounds ``(lr * g) / std`` and
    its single-tensor ``addcdiv_`` uses a fused multiply-add: rounding
    differences, unless ``lr > 1`` and ``|g|`` is near the largest float.
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, weight_decay)
    s[...] = s + g * g
    p[...] = p - T(lr) * (g / (np.sqrt(s) + T(eps)))


FAMILY = Family(
    name="adagrad",
    slots=("sum",),
    scalars=("lr", "eps", "weight_decay"),
    flags=("maximize",),
    update=adagrad_tensor,
)


class Adagrad(Optimizer):
    __doc__ = rf"""Adagrad with ``torch.optim.Adagrad``'s semantics.

    .. math::

        \eta_t = \eta / (1 + (t - 1)\,\delta), \qquad
        s \leftarrow s + g^2, \qquad
        p \leftarrow p - \eta_t \, g / (\sqrt{{s}} + \epsilon)

    In words: ``lr_t = lr / (1 + (t - 1) * lr_decay); s += g*g;
    p -= lr_t * g / (sqrt(s) + eps)``, after the gradient prelude
    (maximize: :math:`g \leftarrow -g`; L2 weight decay:
    :math:`g \leftarrow g + \lambda p`).  State slot ``"sum"`` starts at
    ``initial_accumulator_value``.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    lr_decay : float
        :math:`\delta \ge 0`.
    weight_decay : float
        :math:`\lambda \ge 0`.
    initial_accumulator_value : float
        Starting value of :math:`s` (``>= 0``); a parameter group's own
        value counts for its parameters (torch 2.13 starts every group's
        sum at the constructor's value).
    eps : float
        :math:`\epsilon \ge 0`.
    maximize : bool
        Ascend the objective instead of descending.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.ones(3)}}
    >>> opt = fo.Adagrad(params, lr=0.1)
    >>> opt.step({{"w": np.full(3, 0.5)}})
    True
    >>> params["w"]
    array([0.9, 0.9, 0.9])
    """

    family = FAMILY
    lr_default = 0.01
    hyper = (
        Hyper("lr_decay", 0.0, nonneg, "Decay of the learning rate per step"),
        Hyper("weight_decay", 0.0, nonneg, "L2 weight decay"),
        Hyper("initial_accumulator_value", 0.0, nonneg, "Starting value of the sum"),
        Hyper("eps", 1e-10, nonneg, "Epsilon"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("sum",)
    torch = Torch("Adagrad", same("lr", "lr_decay", "weight_decay", "initial_accumulator_value",
                                 "eps", "maximize"), fused=True)

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.01, lr_decay: float = 0.0,
                     weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                     eps: float = 1e-10, *, maximize: bool = False,
                     max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                     state_dtype: str | None = None, state_rounding: str | None = None,
                     state_seed: int = 0) -> None: ...

        @property
        def lr_decay(self) -> float: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def initial_accumulator_value(self) -> float: ...
        @property
        def eps(self) -> float: ...
        @property
        def maximize(self) -> bool: ...

    def initial_value(self, slot, hp):
        return hp["initial_accumulator_value"]

    def kernel_args(self, hp, lr, t):
        return dict(lr=lr / (1.0 + (t - 1) * hp["lr_decay"]), eps=hp["eps"],
                    weight_decay=hp["weight_decay"], maximize=hp["maximize"])
