"""NAdam: the ``nadam`` kernel family and its class.

The family's step (every backend, keyword-only)::

    nadam(params, grads, (m, v), mode, *, lr, beta1, beta2, eps, bc2, lr_g,
          lr_m, weight_decay, decoupled, maximize, gscale)

The per-step scalars are computed by the class in double precision, as
``torch.optim.NAdam`` computes them in Python: ``bc2 = 1 - beta2 ** t``,
``lr_g = lr * (1 - mu_t) / (1 - prod_{i<=t} mu_i)`` and
``lr_m = lr * mu_{t+1} / (1 - prod_{i<=t+1} mu_i)``, with the momentum
schedule ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))``.
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, betas, flag, nonneg, prelude, same, Torch
from ._spec import ADAM_DOC, DECAY_DOC, MAXIMIZE_DOC

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "NAdam", "nadam_tensor"]


def nadam_tensor(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *,
                 lr: float, beta1: float, beta2: float, eps: float, bc2: float, lr_g: float,
                 lr_m: float, weight_decay: float, decoupled: bool, maximize: bool,
                 gscale: float) -> None:
    r"""One NAdam step on one tensor, in place (the reference).

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + ((1 - \beta_2) g) g, \qquad
        d = \sqrt{v / c_2} + \epsilon \\
        p &\leftarrow p - (\eta_g g + \eta_m m) / d

    In words: m = b1*m + (1-b1)*g; v = b2*v + ((1-b2)*g)*g;
    d = sqrt(v / bc2) + eps; p = p - (lr_g*g + lr_m*m) / d, after the
    gradient prelude (maximize, then L2 weight decay).  ``torch.optim.NAdam``
    divides twice (two ``addcdiv_`` calls); one division of the sum is one
    rounding fewer and one division per element less in a loop that is
    bound by its arithmetic on AVX2.  With ``decoupled=True``
    the weight decay is ``p <- p * (1 - lr * weight_decay)`` before the
    update instead of an L2 term in the gradient.
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
    d = np.sqrt(v / T(bc2)) + T(eps)
    p[...] = p - (T(lr_g) * g + T(lr_m) * m) / d


FAMILY = Family(
    name="nadam",
    slots=("m", "v"),
    scalars=("lr", "beta1", "beta2", "eps", "bc2", "lr_g", "lr_m", "weight_decay"),
    flags=("decoupled", "maximize"),
    update=nadam_tensor,
)


def _mu(beta1: float, momentum_decay: float, t: int) -> float:
    """torch's momentum schedule mu_t, in double."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (t * momentum_decay)))


class NAdam(Optimizer):
    __doc__ = rf"""NAdam (Dozat 2016) with ``torch.optim.NAdam``'s semantics.

    .. math::

        \mu_t &= \beta_1 \bigl(1 - \tfrac12\, 0.96^{{t \psi}}\bigr), \qquad
        m \leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        p &\leftarrow p - \eta \, \frac{{1 - \mu_t}}{{1 - \prod_{{i \le t}} \mu_i}}
            \, \frac{{g}}{{d}}
          - \eta \, \frac{{\mu_{{t+1}}}}{{1 - \prod_{{i \le t+1}} \mu_i}}
            \, \frac{{m}}{{d}}, \qquad
        d = \sqrt{{v / (1 - \beta_2^t)}} + \epsilon

    In words: ``mu_t = b1 * (1 - 0.5 * 0.96**(t * momentum_decay));
    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    d = sqrt(v / (1 - b2**t)) + eps;
    p -= lr*(1-mu_t)/(1-prod(mu_1..mu_t)) * g/d
    + lr*mu_(t+1)/(1-prod(mu_1..mu_(t+1))) * m/d``, after the gradient
    prelude (maximize: :math:`g \leftarrow -g`; L2 weight decay:
    :math:`g \leftarrow g + \lambda p`).  With
    ``decoupled_weight_decay=True`` the decay is
    :math:`p \leftarrow p (1 - \eta\lambda)` first instead (NAdamW).  The
    product of the :math:`\mu_i` (torch's ``mu_product`` state) is computed
    in double from ``t``, one factor per step in step order, so a run
    resumed from a checkpoint (which restores ``t``) continues with the
    same bits.  It is a function of ``t`` and the current ``beta1`` and
    ``momentum_decay``: changing either between steps recomputes the
    factors of the past steps with the new values, where torch keeps the
    running product (the two then differ by the ratio of the old and new
    products).  State slots: ``"exp_avg"``, ``"exp_avg_sq"``.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    {ADAM_DOC}
    {DECAY_DOC}
    momentum_decay : float
        :math:`\psi \ge 0`.
    decoupled_weight_decay : bool
        Decay the parameters directly (NAdamW) instead of through the gradient.
    {MAXIMIZE_DOC}
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.NAdam(params, lr=0.1)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # a Nesterov look-ahead: ~1.06 lr
    True
    >>> params["w"].round(4)
    array([ 0.8944, -1.8944])
    """

    family = FAMILY
    lr_default = 0.002
    hyper = (
        Hyper("betas", (0.9, 0.999), betas, "Decays (beta1, beta2) of the moments"),
        Hyper("eps", 1e-8, nonneg, "Epsilon"),
        Hyper("weight_decay", 0.0, nonneg, "Weight decay"),
        Hyper("momentum_decay", 0.004, nonneg, "Momentum decay psi"),
        Hyper("decoupled_weight_decay", False, flag, "Whether the decay is decoupled"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("exp_avg", "exp_avg_sq")
    torch = Torch("NAdam", same("lr", "betas", "eps", "weight_decay", "momentum_decay",
                               "decoupled_weight_decay", "maximize"))

    # (beta1, momentum_decay) -> {t: prod_{i<=t} mu_i}: the last products
    # computed, so that a step multiplies in one factor instead of t.  One
    # entry per step count in use: parameter groups sharing the
    # hyperparameters but added at different steps count their own t (a
    # single entry would restart from 1 at every step, alternating between
    # groups).  It is a cache of a function of t, not state: a step that
    # fails leaves values that are still right for their t.
    _mu_products: "dict | None" = None
    _MU_ENTRIES = 8

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.002,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     weight_decay: float = 0.0, momentum_decay: float = 0.004,
                     decoupled_weight_decay: bool = False, *, maximize: bool = False,
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
        def momentum_decay(self) -> float: ...
        @property
        def decoupled_weight_decay(self) -> bool: ...
        @property
        def maximize(self) -> bool: ...

    def _mu_product(self, beta1: float, momentum_decay: float, t: int) -> float:
        if self._mu_products is None:
            self._mu_products = {}
        known = self._mu_products.setdefault((beta1, momentum_decay), {})
        t0 = max([k for k in known if k <= t], default=0)
        prod = known.get(t0, 1.0)
        for i in range(t0 + 1, t + 1):
            nxt = prod * _mu(beta1, momentum_decay, i)
            if nxt == prod:
                # A fixed point (0, or a subnormal k * 2**-1074 once
                # mu > 1 - 0.5 / k; by default about 1600 steps in, at
                # k = 1): mu_i never decreases with i and rounding is
                # monotone, so every later factor leaves it too, and a
                # resume at a huge t needs no t multiplications.
                break
            prod = nxt
        if t0 != t:
            # The group that was at t0 is now at t (another at t0 finds t).
            known.pop(t0, None)
            known[t] = prod
            if len(known) > self._MU_ENTRIES:
                del known[min(known)]
        return prod

    def kernel_args(self, hp: dict, lr: float, t: int) -> dict:
        b1, b2 = hp["betas"]
        psi = hp["momentum_decay"]
        mu, mu_next = _mu(b1, psi, t), _mu(b1, psi, t + 1)
        prod = self._mu_product(b1, psi, t)
        prod_next = prod * mu_next
        # torch: value=(-lr * (1.0 - mu) / (1.0 - mu_product)); the negation is exact.
        return dict(lr=lr, beta1=b1, beta2=b2, eps=hp["eps"], bc2=1.0 - b2 ** t,
                    lr_g=lr * (1.0 - mu) / (1.0 - prod),
                    lr_m=lr * mu_next / (1.0 - prod_next),
                    weight_decay=hp["weight_decay"],
                    decoupled=hp["decoupled_weight_decay"], maximize=hp["maximize"])
