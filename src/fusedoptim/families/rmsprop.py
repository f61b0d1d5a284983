"""RMSProp, the course's and ``torch.optim.RMSprop``: the ``rmsprop`` kernel
family and its class.

The family's step (every backend, keyword-only)::

    rmsprop(params, grads, (sq, gavg, buf), mode, *, lr, alpha, eps, momentum,
            weight_decay, eps_inside, maximize, centered, has_buf, gscale)

``gavg`` is present exactly when ``centered``, ``buf`` when ``has_buf``.
``eps_inside`` also chooses the rounding order: ``False`` is
``torch.optim.RMSprop``'s formula in PyTorch's order, ``True`` the course's
(and Keras's) in the course's; see :func:`rmsprop_tensor`.
"""

from typing import TYPE_CHECKING

import numpy as np

from ..optimizer import Optimizer
from ._spec import Family, Hyper, beta, flag, nonneg, prelude, same, Torch

if TYPE_CHECKING:
    from ._spec import LR, Params

__all__ = ["FAMILY", "RMSProp", "rmsprop_tensor"]


def rmsprop_tensor(p, g, sq, gavg, buf, *, lr, alpha, eps, momentum, weight_decay,
                   eps_inside, maximize, centered, has_buf, gscale):
    r"""One RMSProp step on one tensor, in place (the reference).

    .. math::

        s &\leftarrow \alpha s + (1 - \alpha) g^2 \\
        \bar g &\leftarrow \alpha \bar g + (1 - \alpha) g
            \quad\text{(centered, } d = s - \bar g^2 \text{, else } d = s) \\
        r &= \sqrt{d + \epsilon} \ \text{(eps inside)}
            \quad\text{or}\quad r = \sqrt{d} + \epsilon \\
        b &\leftarrow \mu b + g / r,\ p \leftarrow p - \eta b
            \quad\text{(momentum)}\qquad
        p \leftarrow p - (\eta g) / r \quad\text{(otherwise)}

    In words: s = a*s + (1-a)*(g*g); r = sqrt(s + eps) or sqrt(s) + eps;
    p = p - (lr*g)/r.  The course's RMSProp is ``eps_inside=True``, not
    centered, no buffer.

    Rounding order.  With ``eps_inside=True`` (the course, Keras) the square
    is ``(1-a)*(g*g)`` and ``d = s - gavg*gavg``.  With ``eps_inside=False``
    (``torch.optim.RMSprop``) it is PyTorch's: ``s = a*s + ((1-a)*g)*g``,
    and centered ``d = s - gavg*gavg`` except that ``d = s`` where ``s`` is
    ``+inf`` and ``gavg`` finite.  Why: torch 2.13's
    ``square_avg.mul_(alpha).addcmul_(grad, grad, value=1-alpha)`` and
    ``square_avg.addcmul(grad_avg, grad_avg, value=-1)`` are fused
    multiply-adds, ``fma(value*t1, t2, self)`` (measured bitwise on the CPU
    for float32 and float64, vector body and tail), so the first overflows
    only where the sum does (``|g| > 1.8e20`` in float32 with ``a = 0.99``,
    not 1.8e19) and the second leaves an infinite ``s`` infinite, where
    ``inf - inf`` would be NaN: at ``|g| = 1e30`` in float32, centered with
    momentum, torch's parameter stays put (``g / inf = 0``) instead of
    turning NaN.  ``grad_avg.lerp_(grad, 1-a)`` (``gavg + w*(g - gavg)``)
    keeps this reference's ``a*gavg + (1-a)*g``: the two differ in rounding
    only.  No backend uses a fused multiply-add (they must give the same
    bits), so the match with torch is within the parity tolerances.
    """
    T = p.dtype.type
    g = prelude(p, g, T, gscale, maximize, weight_decay)
    if eps_inside:
        sq[...] = T(alpha) * sq + T(1.0 - alpha) * (g * g)
    else:
        sq[...] = T(alpha) * sq + (T(1.0 - alpha) * g) * g
    d = sq
    if centered:
        gavg[...] = T(alpha) * gavg + T(1.0 - alpha) * g
        d = sq - gavg * gavg
        if not eps_inside:
            d = np.where((sq == T(np.inf)) & (np.abs(gavg) < T(np.inf)), sq, d)
    if eps_inside:
        r = np.sqrt(d + T(eps))
    else:
        r = np.sqrt(d) + T(eps)
    if has_buf:
        buf[...] = T(momentum) * buf + g / r
        p[...] = p - T(lr) * buf
    else:
        p[...] = p - (T(lr) * g) / r


FAMILY = Family(
    name="rmsprop",
    slots=("sq", "gavg", "buf"),
    optional={"gavg": "centered", "buf": "has_buf"},
    scalars=("lr", "alpha", "eps", "momentum", "weight_decay"),
    flags=("eps_inside", "maximize", "centered", "has_buf"),
    update=rmsprop_tensor,
)


class RMSProp(Optimizer):
    __doc__ = rf"""RMSProp: the course's formula, or ``torch.optim.RMSprop``.

    .. math::

        s &\leftarrow \beta s + (1 - \beta) g^2, \qquad
        \bar g \leftarrow \beta \bar g + (1 - \beta) g \ \text{{(centered)}} \\
        d &= s - \bar g^2 \ \text{{(centered)}} \quad\text{{or}}\quad d = s \\
        r &= \sqrt{{d + \epsilon}} \ \text{{(eps inside)}}
            \quad\text{{or}}\quad r = \sqrt{{d}} + \epsilon \\
        b &\leftarrow \mu b + g / r,\ p \leftarrow p - \eta b
            \ \text{{(momentum)}} \qquad p \leftarrow p - \eta g / r
            \ \text{{(otherwise)}}

    In words: ``s = beta*s + (1-beta)*g*g; p -= lr*g / sqrt(s + eps)`` by
    default, after the gradient prelude of :class:`SGD` (maximize, L2 weight
    decay).  The defaults give the course's RMSProp
    (:func:`fusedoptim.update_parameters_with_rmsprop`, bit for bit).
    ``eps_inside_sqrt=False`` with ``beta`` as PyTorch's ``alpha`` (default
    0.99 there) gives ``torch.optim.RMSprop``, rounded in PyTorch's order
    (finite wherever PyTorch's step is, e.g. for float32 gradients beyond
    1.8e19).  State slots:
    ``"square_avg"``, ``"grad_avg"`` (centered), ``"momentum_buffer"``
    (``momentum > 0``).

    Parameters
    ----------
    {Optimizer.PARAMETERS_DOC}
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    beta : float
        :math:`\beta \in [0, 1)`, the decay of the averages.
    eps : float
        :math:`\epsilon \ge 0`.
    eps_inside_sqrt : bool
        Where :math:`\epsilon` goes (inside: course, Keras; outside: PyTorch).
    centered : bool
        Divide by the estimated variance instead of the second moment.
    momentum : float
        :math:`\mu \ge 0`.
    weight_decay : float
        L2 penalty added to the gradient (:math:`\ge 0`).
    maximize : bool
        Ascend the objective instead of descending.
    {Optimizer.COMMON_DOC}

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {{"w": np.array([1.0, -2.0])}}
    >>> opt = fo.RMSProp(params, lr=0.01)
    >>> opt.step({{"w": np.array([0.5, -0.5])}})   # s = 0.1 * g * g
    True
    >>> params["w"]
    array([ 0.96837723, -1.96837723])
    """

    family = FAMILY
    lr_default = 0.01
    hyper = (
        Hyper("beta", 0.9, beta, "Decay of the moving averages"),
        Hyper("eps", 1e-8, nonneg, "Epsilon"),
        Hyper("eps_inside_sqrt", True, flag, "Whether eps is added under the root"),
        Hyper("centered", False, flag, "Whether the variance is used"),
        Hyper("momentum", 0.0, nonneg, "Momentum factor"),
        Hyper("weight_decay", 0.0, nonneg, "L2 weight decay"),
        Hyper("maximize", False, flag, "Whether the objective is maximized"),
    )
    state_names = ("square_avg", "grad_avg", "momentum_buffer")
    # torch's alpha is our beta; its eps is outside the root.
    torch = Torch("RMSprop", {"alpha": "beta", **same("lr", "eps", "centered", "momentum",
                                                       "weight_decay", "maximize")},
                  same_when={"eps_inside_sqrt": False},
                  differs="PyTorch adds eps outside the root, the course's RMSProp inside")

    if TYPE_CHECKING:  # __signature__, spelled out (tests/test_typing.py keeps them equal)
        def __init__(self, parameters: Params, lr: LR = 0.01, beta: float = 0.9, eps: float = 1e-8,
                     eps_inside_sqrt: bool = True, centered: bool = False, momentum: float = 0.0,
                     weight_decay: float = 0.0, *, maximize: bool = False,
                     max_grad_norm: float | None = None, skip_nonfinite: bool = False,
                     state_dtype: str | None = None, state_rounding: str | None = None,
                     state_seed: int = 0) -> None: ...

        @property
        def beta(self) -> float: ...
        @property
        def eps(self) -> float: ...
        @property
        def eps_inside_sqrt(self) -> bool: ...
        @property
        def centered(self) -> bool: ...
        @property
        def momentum(self) -> float: ...
        @property
        def weight_decay(self) -> float: ...
        @property
        def maximize(self) -> bool: ...

    def kernel_args(self, hp, lr, t):
        return dict(lr=lr, alpha=hp["beta"], eps=hp["eps"], momentum=hp["momentum"],
                    weight_decay=hp["weight_decay"], eps_inside=hp["eps_inside_sqrt"],
                    maximize=hp["maximize"], centered=hp["centered"],
                    has_buf=hp["momentum"] != 0.0)
