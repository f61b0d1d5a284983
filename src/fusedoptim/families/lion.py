"""Lion: the ``lion`` kernel family and its class.

The family's step (every backend, keyword-only)::

    lion(params, grads, (m,), mode, *, lr, beta1, beta2, weight_decay, maximize, gscale)
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, betas, flag, nonneg, prelude

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "Lion", "lion_tensor"]


def lion_tensor(p: np.ndarray, g: np.ndarray, m: np.ndarray, *, lr: float, beta1: float,
                beta2: float, weight_decay: float, maximize: bool, gscale: float) -> None:
    r"""One Lion step on one tensor, in place (the reference).

    .. math::

        c &= \beta_1 m + (1 - \beta_1) g \\
        p &\leftarrow p - \eta\,(\operatorname{sign}(c) + \lambda p) \\
        m &\leftarrow \beta_2 m + (1 - \beta_2) g

    In words: c = b1*m + (1-b1)*g; p = p - lr * (sign(c) + wd*p);
    m = b2*m + (1-b2)*g, after the gradient prelude (clipping scale, then
    maximize; no L2 term).  ``sign`` is ``np.sign``: +1, -1, ``+0.0`` for
    either zero, and NaN passed through.  Without weight decay the term
    ``wd*p`` is not added (so ``p = p - lr*sign(c)``).  The parameter's
    decay uses the parameter before the step, as ``optax.lion``
    (``add_decayed_weights`` on the sign update, then ``-lr``).
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, 0.0)
    c = T(beta1) * m + T(1.0 - beta1) * g
    u = np.sign(c)
    if weight_decay != 0.0:
        u = u + T(weight_decay) * p
    p[...] = p - T(lr) * u
    m[...] = T(beta2) * m + T(1.0 - beta2) * g


FAMILY = Family(
    name="lion",
    slots=("m",),
    scalars=("lr", "beta1", "beta2", "weight_decay"),
    flags=("maximize",),
    update=lion_tensor,
)


class Lion(Optimizer):
    __doc__ = rf"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization
    Algorithms"), as ``optax.lion``.

    .. math::

        c = \beta_1 m + (1 - \beta_1) g, \qquad
        p \leftarrow p - \eta\,(\operatorname{{sign}}(c) + \lambda p), \qquad
        m \leftarrow \beta_2 m + (1 - \beta_2) g

    In words: ``c = b1*m + (1-b1)*g; p -= lr * (sign(c) + wd*p);
    m = b2*m + (1-b2)*g`` (``sign(0) = 0``).  One state, so a step moves 5
    arrays (20 bytes per float32 element) against Adam's 7.  State slot:
    ``"exp_avg"``.  The paper's defaults are ``lr=1e-4`` and a weight decay
    3 to 10 times that of AdamW; ``weight_decay`` defaults to 0 here (optax:
    1e-3).

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    betas : (float, float)
        :math:`\beta_1` (the update's interpolation) and :math:`\beta_2`
        (the momentum's decay), each in ``[0, 1)``.
    weight_decay : float
        :math:`\lambda \ge 0`, decoupled (applied with the learning rate).
    maximize : bool
        Ascend the objective instead of descending.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.ones(3)}}
    >>> opt = fo.Lion(params, lr=0.1)
    >>> opt.step({{"w": np.array([0.5, -2.0, 0.0])}})
    True
    >>> params["w"]
    array([0.9, 1.1, 1. ])
    """

    family = FAMILY
    lr_default = 1e-4
    hyper = (
        Hyper("betas", (0.9, 0.99), betas, "Interpolation and momentum decays (beta1, beta2)"),
        Hyper("weight_decay", 0.0, nonneg, "Decoupled weight decay"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("exp_avg",)
    torch = None  # torch.optim has no Lion

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 1e-4,
                     betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                     maximize: bool = False, max_grad_norm: float | None = None,
                     skip_nonfinite: bool = False, state_dtype: str | None = None,
                     state_rounding: str | None = None, state_seed: int = 0) -> None: ...

        @property
        def betas(self) -> tuple[float, float]: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def maximize(self) -> bool: ...

    def kernel_args(self, hp: dict, lr: float, t: int) -> dict:
        b1, b2 = hp["betas"]
        return dict(lr=lr, beta1=b1, beta2=b2, weight_decay=hp["weight_decay"],
                    maximize=hp["maximize"])
