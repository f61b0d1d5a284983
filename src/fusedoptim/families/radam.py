"""RAdam: the ``radam`` kernel family and its class.

The family's step (every backend, keyword-only)::

    radam(params, grads, (m, v), mode, *, lr, beta1, beta2, eps, bc1, bc2_sqrt,
          rect, weight_decay, decoupled, maximize, rectified, gscale)

The per-step scalars are computed by the class in double precision, as
``torch.optim.RAdam`` computes them in Python: ``bc1 = 1 - beta1 ** t``,
``bc2_sqrt = (1 - beta2 ** t) ** 0.5``, the rectification term ``rect`` and
``rectified = rho_t > 5`` (one branch for the whole step, not per element).
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, betas, flag, nonneg, prelude, same, Torch
from ._spec import ADAM_DOC, DECAY_DOC, MAXIMIZE_DOC

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "RAdam", "radam_tensor"]


def radam_tensor(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *,
                 lr: float, beta1: float, beta2: float, eps: float, bc1: float,
                 bc2_sqrt: float, rect: float, weight_decay: float, decoupled: bool,
                 maximize: bool, rectified: bool, gscale: float) -> None:
    r"""One RAdam step on one tensor, in place (the reference).

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + ((1 - \beta_2) g) g, \qquad
        \hat m = m / c_1 \\
        p &\leftarrow p - \bigl((\hat m \eta) \cdot
            ((1 / (\sqrt v + \epsilon)) \sqrt{c_2})\bigr) r
            \quad\text{(rectified)}, \qquad
        p \leftarrow p - \hat m \eta \quad\text{(otherwise)}

    In words: m = b1*m + (1-b1)*g; v = b2*v + ((1-b2)*g)*g; mh = m / bc1;
    rectified: p = p - ((mh*lr) * ((1 / (sqrt(v) + eps)) * bc2_sqrt)) * rect;
    otherwise: p = p - mh*lr; after the gradient prelude (maximize, then L2
    weight decay), in the order of ``torch.optim.RAdam`` (whose
    ``bc2 ** 0.5 / x`` is ``x.reciprocal() * bc2 ** 0.5``).  With
    ``decoupled=True`` the weight decay is ``p <- p * (1 - lr *
    weight_decay)`` before the update instead of an L2 term in the gradient.
    """
    T = p.dtype.type
    if decoupled:
        g = prelude(p, g, T, gscale, maximize, 0.0)
        if weight_decay != 0.0:
            p[...] = p * T(1.0 - lr * weight_decay)
    else:
        g = prelude(p, g, T, gscale, maximize, weight_decay)
    m[...] = T(beta1) * m + T(1.0 - beta1) * g
    v[...] = T(beta2) * v + (T(1.0 - beta2) * g) * g
    mh = m / T(bc1)
    if rectified:
        adaptive = (T(1.0) / (np.sqrt(v) + T(eps))) * T(bc2_sqrt)
        p[...] = p - ((mh * T(lr)) * adaptive) * T(rect)
    else:
        p[...] = p - mh * T(lr)


FAMILY = Family(
    name="radam",
    slots=("m", "v"),
    scalars=("lr", "beta1", "beta2", "eps", "bc1", "bc2_sqrt", "rect", "weight_decay"),
    flags=("decoupled", "maximize", "rectified"),
    update=radam_tensor,
)


class RAdam(Optimizer):
    __doc__ = rf"""RAdam (Liu et al. 2020, "On the Variance of the Adaptive
    Learning Rate and Beyond") with ``torch.optim.RAdam``'s semantics.

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2, \qquad
        \rho_\infty = \frac{{2}}{{1 - \beta_2}} - 1, \qquad
        \rho_t = \rho_\infty - \frac{{2 t \beta_2^t}}{{1 - \beta_2^t}} \\
        p &\leftarrow p - \eta \, \frac{{m}}{{1 - \beta_1^t}} \,
            \frac{{\sqrt{{1 - \beta_2^t}}}}{{\sqrt v + \epsilon}} \, r_t
            \ \text{{if}}\ \rho_t > 5, \quad\text{{else}}\quad
        p \leftarrow p - \eta \, \frac{{m}}{{1 - \beta_1^t}}, \qquad
        r_t = \sqrt{{\frac{{(\rho_t - 4)(\rho_t - 2)\rho_\infty}}
            {{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}}}

    In words: ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;`` when
    ``rho_t > 5``, ``p -= lr * m/(1-b1**t) * sqrt(1-b2**t)/(sqrt(v)+eps) * r_t``,
    else ``p -= lr * m/(1-b1**t)``; after the gradient prelude (maximize:
    :math:`g \leftarrow -g`; L2 weight decay: :math:`g \leftarrow g +
    \lambda p`).  With ``decoupled_weight_decay=True`` the decay is
    :math:`p \leftarrow p (1 - \eta\lambda)` first instead (RAdamW).  The
    branch and :math:`r_t` are per step, computed in double.  State slots:
    ``"exp_avg"``, ``"exp_avg_sq"``.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    {ADAM_DOC}
    {DECAY_DOC}
    decoupled_weight_decay : bool
        Decay the parameters directly (RAdamW) instead of through the gradient.
    {MAXIMIZE_DOC}
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.RAdam(params, lr=0.1)
    >>> g = {{"w": np.array([0.5, -0.5])}}
    >>> opt.step(g), opt.step(g)   # rho_t <= 5: the bias-corrected momentum alone
    (True, True)
    >>> params["w"]
    array([ 0.9, -1.9])
    """

    family = FAMILY
    lr_default = 0.001
    hyper = (
        Hyper("betas", (0.9, 0.999), betas, "Decays (beta1, beta2) of the moments"),
        Hyper("eps", 1e-8, nonneg, "Epsilon"),
        Hyper("weight_decay", 0.0, nonneg, "Weight decay"),
        Hyper("decoupled_weight_decay", False, flag, "Whether the decay is decoupled"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("exp_avg", "exp_avg_sq")
    torch = Torch("RAdam", same("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay",
                               "maximize"))

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.001,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                     maximize: bool = False, max_grad_norm: float | None = None,
                     skip_nonfinite: bool = False, state_dtype: str | None = None,
                     state_rounding: str | None = None, state_seed: int = 0) -> None: ...

        @property
        def betas(self) -> tuple[float, float]: ...
        @property
        def eps(self) -> float: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def decoupled_weight_decay(self) -> bool: ...
        @property
        def maximize(self) -> bool: ...

    def kernel_args(self, hp: dict, lr: float, t: int) -> dict:
        b1, b2 = hp["betas"]
        bc2 = 1.0 - b2 ** t
        # torch's expressions, operation for operation.
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
        rectified = rho_t > 5.0
        rect = 1.0
        if rectified:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                    / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        return dict(lr=lr, beta1=b1, beta2=b2, eps=hp["eps"], bc1=1.0 - b1 ** t,
                    bc2_sqrt=bc2 ** 0.5, rect=rect, weight_decay=hp["weight_decay"],
                    decoupled=hp["decoupled_weight_decay"], maximize=hp["maximize"],
                    rectified=rectified)
