"""Adam and AdamW: the ``adam`` kernel family and its classes.

The family's step (every backend, keyword-only)::

    adam(params, grads, (m, v, vmax), mode, *, lr, beta1, beta2, eps, bc1, bc2,
         weight_decay, decoupled, maximize, amsgrad, torch_order, gscale)

``bc1 = 1 - beta1 ** t`` and ``bc2 = 1 - beta2 ** t`` are computed by the
caller in double precision; ``vmax`` is present exactly when ``amsgrad``.
``torch_order`` chooses between two rounding orders of the same formula:
PyTorch's (the classes) and the course's (``update_parameters_with_adam``);
see :func:`adam_tensor`.
"""

import math
from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, betas, flag, nonneg, prelude, same, Torch
from ._spec import ADAM_DOC, DECAY_DOC, MAXIMIZE_DOC

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "Adam", "AdamW", "adam_tensor"]


def adam_tensor(p, g, m, v, vmax, *, lr, beta1, beta2, eps, bc1, bc2, weight_decay,
                decoupled, maximize, amsgrad, torch_order, gscale):
    r"""One Adam step on one tensor, in place (the reference).

    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        \hat m = m / c_1 \\
        v &\leftarrow \beta_2 v + (1 - \beta_2) g^2, \qquad
        \hat v = \max(v_{max}, v) / c_2 \ \text{(AMSGrad)}
        \ \text{or}\ v / c_2 \\
        p &\leftarrow p - (\eta \hat m) / (\sqrt{\hat v} + \epsilon)

    In words: m = b1*m + (1-b1)*g; v = b2*v + ((1-b2)*g)*g;
    p = p - (lr * (m / c1)) / (sqrt(v) / sqrt(c2) + eps), with ``c1 = bc1``,
    ``c2 = bc2`` (PyTorch's order); with ``torch_order=False`` the course's
    v = b2*v + (1-b2)*(g*g) and sqrt(v / c2) + eps instead.  With ``decoupled=True`` (AdamW) the weight decay is
    ``p <- p * (1 - lr * weight_decay)`` before the update instead of an L2
    term in the gradient.  ``vmax`` (AMSGrad) becomes ``max(vmax, v)``
    stated exactly: ``vmax`` itself where ``vmax >= v`` or ``vmax`` is NaN,
    else ``v`` (so a NaN in either propagates, and of two equal zeros the
    old ``vmax`` is kept with its sign; ``np.maximum`` would return
    ``+0.0`` for ``(-0.0, +0.0)``).

    Two rounding orders (``torch_order``), which differ only in the last
    bits for ordinary gradients but not in where they overflow:

    * the course's (``torch_order=False``, the course's notebook):
      ``v = b2*v + (1-b2)*(g*g)`` and ``sqrt(v_hat / c2)``.  ``g*g``
      overflows from ``|g| > sqrt(max)`` (1.8e19 in float32, 1.3e154 in
      float64), and ``v / c2`` near it (``v / c2 ~ g*g`` on the first step);
    * PyTorch's (``torch_order=True``, the classes):
      ``v = b2*v + ((1-b2)*g)*g`` and ``sqrt(v_hat) / sqrt(c2)``, with
      ``sqrt(c2)`` computed in double and rounded once.  ``v`` then stays
      finite up to ``|g| ~ sqrt(max / (1-b2))`` (5.8e20 in float32 with
      ``b2 = 0.999``), as PyTorch's does.

    What torch 2.13 computes on the CPU (AVX512 build; found by comparing
    candidate formulas bitwise with torch's results on random inputs, and
    read in ``aten/src/ATen/native/cpu/FusedAdamKernel.cpp``):

    * single-tensor and foreach:
      ``exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`` is
      ``fma((1-b2)*g, g, b2*v)`` (``addcmul`` is ``fma(value*t1, t2, self)``
      in both dtypes, vector body and tail); the denominator is
      ``sqrt(v) / sqrt(c2) + eps`` and the step ``addcdiv_`` by
      ``lr / c1``;
    * fused (``fused=True``, the parity tests' other reference): ``v`` is
      ``fma((1-b2)*g, g, b2*v)`` in the vector body and
      ``fma(v, b2, ((1-b2)*g)*g)`` in the scalar tail;
      ``m.lerp_(g, 1-b1)`` is ``fma(1-b1, g - m, m)``; then
      ``p - (lr/c1) * m / (sqrt(v) / sqrt(c2) + eps)``, the scalars
      computed in double and rounded once.

    This reference keeps its own rounding of ``m`` and of the step, and no
    fused multiply-add (every backend must give the same bits), so it
    matches torch to the parity tolerances, and is finite wherever torch's
    update is: ``((1-b2)*g)*g`` without the fusion overflows only where the
    fused sum does (both terms are non-negative).
    """
    T = p.dtype.type
    if decoupled:
        g = prelude(p, g, T, gscale, maximize, 0.0)
        if weight_decay != 0.0:
            p[...] = p * T(1.0 - lr * weight_decay)
    else:
        g = prelude(p, g, T, gscale, maximize, weight_decay)
    m[...] = T(beta1) * m + T(1.0 - beta1) * g
    m_hat = m / T(bc1)
    if torch_order:
        v[...] = T(beta2) * v + (T(1.0 - beta2) * g) * g
    else:
        v[...] = T(beta2) * v + T(1.0 - beta2) * (g * g)
    if amsgrad:
        vmax[...] = np.where((vmax >= v) | np.isnan(vmax), vmax, v)
        v_hat = vmax
    else:
        v_hat = v
    if torch_order:
        denom = np.sqrt(v_hat) / T(math.sqrt(bc2)) + T(eps)
    else:
        denom = np.sqrt(v_hat / T(bc2)) + T(eps)
    p[...] = p - (T(lr) * m_hat) / denom


FAMILY = Family(
    name="adam",
    slots=("m", "v", "vmax"),
    optional={"vmax": "amsgrad"},
    scalars=("lr", "beta1", "beta2", "eps", "bc1", "bc2", "weight_decay"),
    flags=("decoupled", "maximize", "amsgrad", "torch_order"),
    update=adam_tensor,
)


_ADAM_MATH = r"""
    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        \hat v &= v_{max} \leftarrow \max(v_{max}, v) \ \text{(AMSGrad)}
            \quad\text{or}\quad \hat v = v \\
        p &\leftarrow p - \frac{\eta\, m / c_1}{\sqrt{\hat v / c_2} + \epsilon},
        \qquad c_1 = 1 - \beta_1^t,\ c_2 = 1 - \beta_2^t

    In words: ``m = b1*m + (1-b1)*g; v = b2*v + ((1-b2)*g)*g;
    p -= lr * (m / c1) / (sqrt(v) / sqrt(c2) + eps)``, rounded in
    PyTorch's order, so that a gradient PyTorch's Adam survives (up to
    about 5.8e20 in float32 with ``b2 = 0.999``) leaves this one finite too.
"""


class Adam(Optimizer):
    __doc__ = rf"""Adam with ``torch.optim.Adam``'s semantics.
    {_ADAM_MATH}
    after the gradient prelude (maximize: :math:`g \leftarrow -g`; L2 weight
    decay: :math:`g \leftarrow g + \lambda p`).  ``t`` counts from 1 and the
    bias corrections are computed in double precision.  State slots:
    ``"exp_avg"``, ``"exp_avg_sq"``, ``"max_exp_avg_sq"`` (AMSGrad).  With
    the default ``weight_decay=0`` this is the course's Adam
    (:func:`fusedoptim.update_parameters_with_adam`) in PyTorch's rounding
    order: equal to it up to rounding for ordinary gradients, finite beyond
    ``|g| = 1.8e19`` (float32) where the course's order overflows.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    {ADAM_DOC}
    {DECAY_DOC}
    amsgrad : bool
        Use the running maximum of :math:`v`.
    {MAXIMIZE_DOC}
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.Adam(params, lr=0.1, max_grad_norm=10.0)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # the first step moves each p by ~lr
    True
    >>> params["w"], sorted(opt.state), opt.t
    (array([ 0.9, -1.9]), ['exp_avg', 'exp_avg_sq'], 1)
    >>> round(opt.last_grad_norm, 4)   # the gradients' global L2 norm (read-only)
    0.7071
    """

    family = FAMILY
    lr_default = 0.001
    hyper = (
        Hyper("betas", (0.9, 0.999), betas, "Decays (beta1, beta2) of the moments"),
        Hyper("eps", 1e-8, nonneg, "Epsilon"),
        Hyper("weight_decay", 0.0, nonneg, "Weight decay"),
        Hyper("amsgrad", False, flag, "Whether AMSGrad is used"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    torch = Torch("Adam", same("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
                  fused=True)
    decoupled = False

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.001,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
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
        def amsgrad(self) -> bool: ...
        @property
        def maximize(self) -> bool: ...

    def kernel_args(self, hp, lr, t):
        b1, b2 = hp["betas"]
        return dict(lr=lr, beta1=b1, beta2=b2, eps=hp["eps"], bc1=1.0 - b1 ** t,
                    bc2=1.0 - b2 ** t, weight_decay=hp["weight_decay"],
                    decoupled=self.decoupled, maximize=hp["maximize"],
                    amsgrad=hp["amsgrad"], torch_order=True)


class AdamW(Adam):
    __doc__ = rf"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    .. math:: p \leftarrow p\,(1 - \eta \lambda)

    In words: ``p *= 1 - lr * weight_decay`` first (the factor computed in
    double, rounded once), then the Adam update of :class:`Adam` without an
    L2 term in the gradient:
    {_ADAM_MATH}
    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    {ADAM_DOC}
    weight_decay : float
        :math:`\lambda \ge 0` (default 0.01), decoupled: it scales ``p``
        (above), not the gradient.
    amsgrad : bool
        Use the running maximum of :math:`v`.
    {MAXIMIZE_DOC}
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.AdamW(params, lr=0.1, weight_decay=0.5)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # p *= 0.95, then the Adam step
    True
    >>> params["w"]
    array([ 0.85, -1.8 ])
    """

    hyper = Adam.override(weight_decay=0.01)
    torch = Torch("AdamW", Adam.torch.keywords, fused=True)
    decoupled = True

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.001,
                     betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                     weight_decay: float = 0.01, amsgrad: bool = False, *, maximize: bool = False,
                     max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                     state_dtype: str | None = None, state_rounding: str | None = None,
                     state_seed: int = 0) -> None: ...
