"""Adadelta: the ``adadelta`` kernel family and its class.

The family's step (every backend, keyword-only)::

    adadelta(params, grads, (sq, acc), mode, *, lr, rho, eps, weight_decay,
             maximize, gscale)
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, flag, nonneg, real, prelude, same, Torch

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "Adadelta", "adadelta_tensor"]


def adadelta_tensor(p: np.ndarray, g: np.ndarray, sq: np.ndarray, acc: np.ndarray, *,
                    lr: float, rho: float, eps: float, weight_decay: float, maximize: bool,
                    gscale: float) -> None:
    r"""One Adadelta step on one tensor, in place (the reference).

    .. math::

        s &\leftarrow \rho s + ((1 - \rho) g) g, \qquad
        \delta = \sqrt{(a + \epsilon) / (s + \epsilon)}\, g \\
        a &\leftarrow \rho a + ((1 - \rho) \delta) \delta, \qquad
        p \leftarrow p - \eta \delta

    In words: sq = rho*sq + ((1-rho)*g)*g;
    delta = sqrt((acc + eps) / (sq + eps)) * g;
    acc = rho*acc + ((1-rho)*delta)*delta; p = p - lr*delta, after the
    gradient prelude (maximize, then L2 weight decay), in the order of
    ``torch.optim.Adadelta`` (``addcmul_(g, g, value=1-rho)`` rounds
    ``value * g`` first, so a gradient whose square overflows still gives a
    finite average where torch's does), except that the ratio of the two
    roots is the root of the ratio: one square root per element instead of
    torch's two (the loop is bound by its arithmetic on AVX2, and it is one
    rounding fewer).
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, weight_decay)
    omr = T(1.0 - rho)
    sq[...] = T(rho) * sq + (omr * g) * g
    delta = np.sqrt((acc + T(eps)) / (sq + T(eps))) * g
    acc[...] = T(rho) * acc + (omr * delta) * delta
    p[...] = p - T(lr) * delta


FAMILY = Family(
    name="adadelta",
    slots=("sq", "acc"),
    scalars=("lr", "rho", "eps", "weight_decay"),
    flags=("maximize",),
    update=adadelta_tensor,
)


def _rho(x: object, name: str) -> float:
    x = float(real(x, name))
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return x


class Adadelta(Optimizer):
    __doc__ = rf"""Adadelta (Zeiler 2012) with ``torch.optim.Adadelta``'s
    semantics.

    .. math::

        s \leftarrow \rho s + (1 - \rho) g^2, \qquad
        \delta = \sqrt{{\frac{{a + \epsilon}}{{s + \epsilon}}}}\, g, \qquad
        a \leftarrow \rho a + (1 - \rho) \delta^2, \qquad
        p \leftarrow p - \eta \delta

    In words: ``sq = rho*sq + (1-rho)*g*g; delta = sqrt((acc + eps) /
    (sq + eps)) * g; acc = rho*acc + (1-rho)*delta*delta;
    p -= lr * delta``, after the gradient prelude (maximize:
    :math:`g \leftarrow -g`; L2 weight decay: :math:`g \leftarrow g +
    \lambda p`).  State slots: ``"square_avg"``, ``"acc_delta"``.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0` (torch's default 1.0), or a schedule ``step -> float``.
    rho : float
        :math:`\rho \in [0, 1]`.
    eps : float
        :math:`\epsilon \ge 0`.
    weight_decay : float
        :math:`\lambda \ge 0`.
    maximize : bool
        Ascend the objective instead of descending.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.Adadelta(params)   # lr=1.0, rho=0.9, eps=1e-6
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # a first step of ~sqrt(eps / (1 - rho))
    True
    >>> params["w"].round(4), sorted(opt.state)
    (array([ 0.9968, -1.9968]), ['acc_delta', 'square_avg'])
    """

    family = FAMILY
    lr_default = 1.0
    hyper = (
        Hyper("rho", 0.9, _rho, "Decay of the running averages"),
        Hyper("eps", 1e-6, nonneg, "Epsilon"),
        Hyper("weight_decay", 0.0, nonneg, "L2 weight decay"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("square_avg", "acc_delta")
    torch = Torch("Adadelta", same("lr", "rho", "eps", "weight_decay", "maximize"))

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 1.0, rho: float = 0.9, eps: float = 1e-6,
                     weight_decay: float = 0.0, *, maximize: bool = False,
                     max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                     state_dtype: str | None = None, state_rounding: str | None = None,
                     state_seed: int = 0) -> None: ...

        @property
        def rho(self) -> float: ...
        @property
        def eps(self) -> float: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def maximize(self) -> bool: ...

    def kernel_args(self, hp: dict, lr: float, t: int) -> dict:
        return dict(lr=lr, rho=hp["rho"], eps=hp["eps"], weight_decay=hp["weight_decay"],
                    maximize=hp["maximize"])
