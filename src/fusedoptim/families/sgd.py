"""Gradient descent, the course's momentum and ``torch.optim.SGD``: the
``sgd`` kernel family and its classes.

The family's step (every backend, keyword-only)::

    sgd(params, grads, (buf,), mode, *, lr, momentum, dampening, weight_decay,
        nesterov, first, maximize, has_buf, gscale)

``buf`` is present exactly when ``has_buf``; ``first`` marks the first step
(PyTorch's buffer then takes the gradient itself).
"""

from typing import TYPE_CHECKING

from ..optimizer import Optimizer
from ._spec import Family, Hyper, beta, flag, nonneg, prelude, real, same, Torch

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "GD", "Momentum", "SGD", "sgd_tensor"]


def sgd_tensor(p, g, buf, *, lr, momentum, dampening, weight_decay, nesterov, first,
               maximize, has_buf, gscale):
    r"""One SGD step on one tensor, in place (the reference).

    .. math::

        b &\leftarrow g \quad\text{(first step)}\qquad
        b \leftarrow \mu b + (1 - \tau) g \quad\text{(later steps)} \\
        d &= g + \mu b \ \text{(Nesterov)} \quad\text{or}\quad d = b \\
        p &\leftarrow p - \eta d

    In words: b = mu*b + (1-tau)*g (b = g on the first step); d = g + mu*b
    with Nesterov, else b; p = p - lr*d.  Without a buffer (``has_buf``
    false) ``d = g``.  The course's GD has no buffer; its EMA momentum is
    ``momentum = dampening = beta``, ``first=False``.
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, weight_decay)
    if has_buf:
        if first:
            buf[...] = g
        else:
            buf[...] = T(momentum) * buf + T(1.0 - dampening) * g
        if nesterov:
            g = g + T(momentum) * buf
        else:
            g = buf
    p[...] = p - T(lr) * g


FAMILY = Family(
    name="sgd",
    slots=("buf",),
    optional={"buf": "has_buf"},
    scalars=("lr", "momentum", "dampening", "weight_decay"),
    flags=("nesterov", "first", "maximize", "has_buf"),
    update=sgd_tensor,
)


def _sgd_args(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
              first=False, maximize=False, has_buf=False):
    return dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                nesterov=nesterov, first=first, maximize=maximize, has_buf=has_buf)


class GD(Optimizer):
    __doc__ = rf"""Gradient descent.

    .. math:: p \leftarrow p - \eta g

    In words: ``p -= lr * g``.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.GD(params, lr=0.1)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # p -= 0.1 * g
    True
    >>> params["w"]
    array([ 0.95, -1.95])
    """

    family = FAMILY
    hyper = ()
    state_names = ("momentum_buffer",)
    torch = Torch("SGD", same("lr"), fused=True)

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR, *, max_grad_norm: float | None = None,
                     skip_nonfinite: bool = False, state_dtype: str | None = None,
                     state_rounding: str | None = None, state_seed: int = 0) -> None: ...

    def kernel_args(self, hp, lr, t):
        return _sgd_args(lr)


class Momentum(Optimizer):
    __doc__ = rf"""Gradient descent with the course's (EMA) momentum.

    .. math::

        v &\leftarrow \beta v + (1 - \beta) g \\
        p &\leftarrow p - \eta v

    In words: ``v = beta*v + (1-beta)*g; p -= lr*v``, with :math:`v` starting
    at zero (state slot ``"velocity"``); the same numbers as
    :func:`fusedoptim.update_parameters_with_momentum`.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    beta : float
        :math:`\beta \in [0, 1)`.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.Momentum(params, lr=0.1, beta=0.9)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # v = 0.1 * g, p -= 0.1 * v
    True
    >>> params["w"], opt.state["velocity"]["w"]
    (array([ 0.995, -1.995]), array([ 0.05, -0.05]))
    """

    family = FAMILY
    hyper = (Hyper("beta", 0.9, beta, "Momentum coefficient"),)
    state_names = ("velocity",)
    # torch's SGD buffer starts at the first gradient (dampening skipped on
    # the first step), this velocity at zero: no torch setting is the same.
    torch = Torch("SGD", {"lr": "lr", "momentum": "beta", "dampening": "beta"}, fused=True,
                  same_when=None,
                  differs="the course's EMA momentum is PyTorch's SGD with dampening = "
                          "momentum, whose buffer starts at the first gradient")

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR, beta: float = 0.9, *,
                     max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                     state_dtype: str | None = None, state_rounding: str | None = None,
                     state_seed: int = 0) -> None: ...

        @property
        def beta(self) -> float: ...

    def kernel_args(self, hp, lr, t):
        b = hp["beta"]
        return _sgd_args(lr, momentum=b, dampening=b, has_buf=True)


class SGD(Optimizer):
    __doc__ = rf"""Stochastic gradient descent with ``torch.optim.SGD``'s semantics.

    .. math::

        g &\leftarrow -g \ \text{{(maximize)}}, \qquad
        g \leftarrow g + \lambda p \ \text{{(weight decay)}} \\
        b &\leftarrow g \ \text{{(first step)}}, \qquad
        b \leftarrow \mu b + (1 - \tau) g \ \text{{(later steps)}} \\
        d &= g + \mu b \ \text{{(Nesterov)}} \quad\text{{or}}\quad d = b \\
        p &\leftarrow p - \eta d

    In words: ``b = mu*b + (1-tau)*g`` (``b = g`` on the first step);
    ``d = g + mu*b`` with Nesterov, else ``b``; ``p -= lr*d``.  Without
    momentum (:math:`\mu = 0`) there is no buffer and :math:`d = g`.  The
    buffer (state slot ``"momentum_buffer"``) takes the raw gradient on the
    first step, as in PyTorch, not :math:`(1 - \tau) g`.

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    momentum : float
        :math:`\mu \ge 0`.
    dampening : float
        :math:`\tau`.
    weight_decay : float
        :math:`\lambda \ge 0`, L2 penalty added to the gradient.
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool
        Ascend the objective instead of descending.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.SGD(params, lr=0.1, momentum=0.9)
    >>> g = {{"w": np.array([0.5, -0.5])}}
    >>> opt.step(g), opt.step(g)                   # b = g, then b = 0.9 * b + g
    (True, True)
    >>> params["w"]
    array([ 0.855, -1.855])
    """

    family = FAMILY
    hyper = (
        Hyper("momentum", 0.0, nonneg, "Momentum factor"),
        Hyper("dampening", 0.0, real, "Dampening of the momentum"),
        Hyper("weight_decay", 0.0, nonneg, "L2 weight decay"),
        Hyper("nesterov", False, flag, "Whether Nesterov momentum is used"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("momentum_buffer",)
    torch = Torch("SGD", same("lr", "momentum", "dampening", "nesterov", "weight_decay",
                                 "maximize"), fused=True)

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR, momentum: float = 0.0,
                     dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                     maximize: bool = False, max_grad_norm: float | None = None,
                     skip_nonfinite: bool = False, state_dtype: str | None = None,
                     state_rounding: str | None = None, state_seed: int = 0) -> None: ...

        @property
        def momentum(self) -> float: ...
        @property
        def dampening(self) -> float: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def nesterov(self) -> bool: ...
        @property
        def maximize(self) -> bool: ...

    @classmethod
    def check(cls, hp):
        if hp["nesterov"] and (hp["momentum"] == 0.0 or hp["dampening"] != 0.0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")

    def kernel_args(self, hp, lr, t):
        return _sgd_args(lr, hp["momentum"], hp["dampening"], hp["weight_decay"],
                         hp["nesterov"], t == 1, hp["maximize"], hp["momentum"] != 0.0)


