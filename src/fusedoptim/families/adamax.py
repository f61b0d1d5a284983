"""Adamax: the ``adamax`` kernel family and its class.

The family's step (every backend, keyword-only)::

    adamax(params, grads, (m, u), mode, *, lr, beta1, beta2, eps, bc1,
           weight_decay, maximize, gscale)

``bc1 = 1 - beta1 ** t`` is computed by the caller in double precision; the
step size ``lr / bc1`` is computed from it in double and rounded once to the
dtype, as ``torch.optim.Adamax`` computes its ``clr``.
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, betas, flag, nonneg, prelude, same, Torch
from ._spec import ADAM_DOC, DECAY_DOC, MAXIMIZE_DOC

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "Adamax", "adamax_tensor"]


def adamax_tensor(p: np.ndarray, g: np.ndarray, m: np.ndarray, u: np.ndarray, *,
                  lr: float, beta1: float, beta2: float, eps: float, bc1: float,
                  weight_decay: float, maximize: bool, gscale: float) -> None:
    r"""One Adamax step on one tensor, in place (the reference).

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        u \leftarrow \max(\beta_2 u,\ |g| + \epsilon), \qquad
        p \leftarrow p - (\eta_t m) / u, \quad \eta_t = \eta / c_1

    In words: m = b1*m + (1-b1)*g; u = max(b2*u, abs(g) + eps);
    p = p - (clr * m) / u with clr = lr / bc1 (in double, rounded once),
    after the gradient prelude (maximize, then L2 weight decay), in the
    order of ``torch.optim.Adamax``: its ``eps`` is added to ``|g|`` inside
    the maximum, and its ``addcdiv_(exp_avg, exp_inf, value=-clr)`` is
    ``p + (-clr * m) / u``.  The maximum is stated exactly: ``b2*u`` where
    it is ``>= |g| + eps`` or NaN, else ``|g| + eps`` (a NaN in either
    propagates, as with ``torch.maximum``).
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, weight_decay)
    m[...] = T(beta1) * m + T(1.0 - beta1) * g
    b = T(beta2) * u
    x = np.abs(g) + T(eps)
    u[...] = np.where((b >= x) | np.isnan(b), b, x)
    p[...] = p - (T(lr / bc1) * m) / u


FAMILY = Family(
    name="adamax",
    slots=("m", "u"),
    scalars=("lr", "beta1", "beta2", "eps", "bc1", "weight_decay"),
    flags=("maximize",),
    update=adamax_tensor,
)


class Adamax(Optimizer):
    __doc__ = rf"""Adamax (Kingma and Ba 2015, section 7.1) with
    ``torch.optim.Adamax``'s semantics.

    .. math::

        m \leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        u \leftarrow \max(\beta_2 u,\ |g| + \epsilon), \qquad
        p \leftarrow p - \frac{{\eta}}{{1 - \beta_1^t}} \, \frac{{m}}{{u}}

    In words: ``m = b1*m + (1-b1)*g; u = max(b2*u, abs(g) + eps);
    p -= lr / (1 - b1**t) * m / u``, after the gradient prelude (maximize:
    :math:`g \leftarrow -g`; L2 weight decay: :math:`g \leftarrow g +
    \lambda p`).  As in torch, ``eps`` is added to ``|g|`` inside the
    maximum.  State slots: ``"exp_avg"``, ``"exp_inf"``.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    {ADAM_DOC}
    {DECAY_DOC}
    {MAXIMIZE_DOC}
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.Adamax(params, lr=0.1)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # the first step moves each p by lr
    True
    >>> params["w"], sorted(opt.state)
    (array([ 0.9, -1.9]), ['exp_avg', 'exp_inf'])
    """

    family = FAMILY
    lr_default = 0.002
    hyper = (
        Hyper("betas", (0.9, 0.999), betas, "Decays (beta1, beta2) of the moments"),
        Hyper("eps", 1e-8, nonneg, "Epsilon"),
        Hyper("weight_decay", 0.0, nonneg, "L2 weight decay"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("exp_avg", "exp_inf")
    torch = Torch("Adamax", same("lr", "betas", "eps", "weight_decay", "maximize"))

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.002,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
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
                    weight_decay=hp["weight_decay"], maximize=hp["maximize"])
