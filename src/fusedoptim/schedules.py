"""Learning-rate schedules.

The two course functions, :func:`update_lr` and :func:`schedule_lr_decay`,
take the epoch number and return the decayed rate.

The schedule classes are callables ``schedule(step) -> float`` with the
formulas Keras documents for its schedules of the same names, computed in
Python double precision.  Pass one as an optimizer's ``lr``: the optimizer
calls it with ``opt.t``, the number of steps already taken (0 for the first
update), as Keras and optax do.  ``step`` may be any real ``>= 0`` (an epoch
number works as well when you drive ``opt.lr`` per epoch yourself).  Bad
arguments raise ``TypeError`` (not a number, not a bool) or ``ValueError``
(out of range).
"""

import bisect
import math

import numpy as np

from . import _validate as _v

__all__ = [
    "update_lr",
    "schedule_lr_decay",
    "InverseTimeDecay",
    "ExponentialDecay",
    "PiecewiseConstant",
    "CosineDecay",
]


def _positive(x, name):
    x = _v.real(x, name)
    if x <= 0.0:
        raise ValueError(f"{name} must be > 0, got {x}")
    return x


def _flag(x, name):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__}")
    return bool(x)


def _step(step):
    # An optimizer passes a Python int: skip the general check's ABC lookups.
    if type(step) is int and step >= 0:
        return float(step)
    return _v.nonneg(step, "step")


class _Schedule:
    """Shared ``repr``; subclasses list their arguments in ``_args``."""

    _args: tuple[str, ...] = ()

    def __repr__(self):
        args = ", ".join(f"{a}={getattr(self, a)!r}" for a in self._args)
        return f"{type(self).__name__}({args})"


class InverseTimeDecay(_Schedule):
    r"""Inverse-time decay.

    .. math::

        \eta(s) = \frac{\eta_0}{1 + r\, p}, \qquad
        p = s / n \quad\text{or, with staircase,}\quad
        p = \lfloor s / n \rfloor

    for step :math:`s`, ``decay_rate`` :math:`r` and ``decay_steps``
    :math:`n` (Keras's ``InverseTimeDecay``).  The course's
    ``update_lr(lr0, epoch, rate)`` is ``InverseTimeDecay(lr0, rate)(epoch)``
    and ``schedule_lr_decay(lr0, epoch, rate, interval)`` is
    ``InverseTimeDecay(lr0, rate, interval, staircase=True)(epoch)``, bit
    for bit.

    Parameters
    ----------
    lr0 : float
        :math:`\eta_0 \ge 0`, the rate at step 0.
    decay_rate : float
        :math:`r \ge 0`.
    decay_steps : float
        :math:`n > 0`.
    staircase : bool
        Decay in whole periods of ``decay_steps``.
    """

    _args = ("lr0", "decay_rate", "decay_steps", "staircase")

    def __init__(self, lr0, decay_rate, decay_steps=1, staircase=False):
        self.lr0 = _v.nonneg(lr0, "lr0")
        self.decay_rate = _v.nonneg(decay_rate, "decay_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.staircase = _flag(staircase, "staircase")

    def __call__(self, step):
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.lr0 / (1 + self.decay_rate * p)


class ExponentialDecay(_Schedule):
    r"""Exponential decay.

    .. math::

        \eta(s) = \eta_0\, r^{p}, \qquad
        p = s / n \quad\text{or, with staircase,}\quad
        p = \lfloor s / n \rfloor

    (Keras's ``ExponentialDecay``; the arguments are in the order of
    :class:`InverseTimeDecay`).  With ``decay_rate > 1`` the rate grows;
    once it exceeds float range it is ``inf`` (``0.0`` when ``lr0`` is 0),
    which an optimizer refuses with a ``ValueError`` naming the step.

    Parameters
    ----------
    lr0 : float
        :math:`\eta_0 \ge 0`, the rate at step 0.
    decay_rate : float
        :math:`r > 0`, the factor applied every ``decay_steps``.
    decay_steps : float
        :math:`n > 0`.
    staircase : bool
        Decay in whole periods of ``decay_steps``.
    """

    _args = ("lr0", "decay_rate", "decay_steps", "staircase")

    def __init__(self, lr0, decay_rate, decay_steps=1, staircase=False):
        self.lr0 = _v.nonneg(lr0, "lr0")
        self.decay_rate = _positive(decay_rate, "decay_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.staircase = _flag(staircase, "staircase")

    def __call__(self, step):
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        try:
            factor = self.decay_rate ** p
        except OverflowError:
            # decay_rate > 1 grows past float range: the rate is infinite,
            # which an optimizer refuses with an error naming the step.
            factor = math.inf
        return self.lr0 * factor if self.lr0 != 0.0 else 0.0


class PiecewiseConstant(_Schedule):
    r"""Piecewise-constant rate.

    .. math::

        \eta(s) = v_0 \ (s \le b_0), \quad
        v_i \ (b_{i-1} < s \le b_i), \quad
        v_k \ (s > b_{k-1})

    for ``boundaries`` :math:`b_0 < \dots < b_{k-1}` and ``values``
    :math:`v_0, \dots, v_k` (Keras's ``PiecewiseConstantDecay``).

    Parameters
    ----------
    boundaries : sequence of float
        Strictly increasing, finite.
    values : sequence of float
        One more than ``boundaries``, each ``>= 0``.
    """

    _args = ("boundaries", "values")

    def __init__(self, boundaries, values):
        for arg, name in ((boundaries, "boundaries"), (values, "values")):
            if isinstance(arg, (str, bytes)) or not hasattr(arg, "__len__"):
                raise TypeError(f"{name} must be a sequence of numbers, "
                                f"got {type(arg).__name__}")
        self.boundaries = [_v.real(b, f"boundaries[{i}]") for i, b in enumerate(boundaries)]
        self.values = [_v.nonneg(x, f"values[{i}]") for i, x in enumerate(values)]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"values must have one more entry than boundaries, got "
                             f"{len(self.values)} values for {len(self.boundaries)} boundaries")
        for i in range(1, len(self.boundaries)):
            if not self.boundaries[i - 1] < self.boundaries[i]:
                raise ValueError(f"boundaries must be strictly increasing, but "
                                 f"boundaries[{i}] = {self.boundaries[i]} follows "
                                 f"{self.boundaries[i - 1]}")

    def __call__(self, step):
        # bisect_left counts the boundaries strictly below step, so a step
        # equal to a boundary still gets the value before it.
        return self.values[bisect.bisect_left(self.boundaries, _step(step))]


class CosineDecay(_Schedule):
    r"""Cosine decay, with an optional linear warmup.

    Without warmup (``warmup_target=None``):

    .. math::

        \eta(s) = \eta_0 \left((1 - \alpha)\, \tfrac12
            \left(1 + \cos\left(\pi \tfrac{\min(s, n)}{n}\right)\right)
            + \alpha\right)

    from :math:`\eta_0` down to :math:`\alpha \eta_0` over ``decay_steps``
    :math:`n` steps, then constant.  With warmup the rate first rises
    linearly from :math:`\eta_0` to the target :math:`\eta_w` over
    ``warmup_steps`` :math:`w`,

    .. math:: \eta(s) = (\eta_w - \eta_0) \tfrac{s}{w} + \eta_0
              \qquad (s < w),

    then decays as above from :math:`\eta_w` (in place of :math:`\eta_0`)
    with :math:`s - w` steps done, reaching :math:`\alpha \eta_w` at
    :math:`s = w + n` (Keras's ``CosineDecay``).

    Parameters
    ----------
    lr0 : float
        :math:`\eta_0 \ge 0`, the rate at step 0.
    decay_steps : float
        :math:`n > 0`.
    alpha : float
        :math:`\alpha \in [0, 1]`, the final rate as a fraction of the
        peak.
    warmup_target : float or None
        :math:`\eta_w \ge 0`, the rate reached after the warmup; ``None``
        for no warmup.
    warmup_steps : float
        :math:`w \ge 0`; must be 0 without a ``warmup_target``.
    """

    _args = ("lr0", "decay_steps", "alpha", "warmup_target", "warmup_steps")

    def __init__(self, lr0, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        self.lr0 = _v.nonneg(lr0, "lr0")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.alpha = _v.nonneg(alpha, "alpha")
        if self.alpha > 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if warmup_target is not None:
            warmup_target = _v.nonneg(warmup_target, "warmup_target")
        self.warmup_target = warmup_target
        self.warmup_steps = _v.nonneg(warmup_steps, "warmup_steps")
        if warmup_target is None and self.warmup_steps != 0.0:
            raise ValueError("warmup_steps needs a warmup_target")

    def _decay(self, step, peak):
        fraction = step / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * fraction))
        return peak * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step):
        step = _step(step)
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.lr0)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            return (self.warmup_target - self.lr0) * (step / self.warmup_steps) + self.lr0
        return self._decay(step - self.warmup_steps, self.warmup_target)


def update_lr(learning_rate0, epoch_num, decay_rate):
    r"""Inverse-time decay on every epoch.

    .. math:: \alpha = \frac{\alpha_0}{1 + \text{decay\_rate} \cdot \text{epoch\_num}}
    """
    lr0 = _v.nonneg(learning_rate0, "learning_rate0")
    epoch = _v.nonneg(epoch_num, "epoch_num")
    rate = _v.nonneg(decay_rate, "decay_rate")
    return lr0 / (1 + rate * epoch)


def schedule_lr_decay(learning_rate0, epoch_num, decay_rate, time_interval=1000):
    r"""Inverse-time decay in steps of ``time_interval`` epochs.

    .. math:: \alpha = \frac{\alpha_0}{1 + \text{decay\_rate} \cdot
              \lfloor \text{epoch\_num} / \text{time\_interval} \rfloor}
    """
    lr0 = _v.nonneg(learning_rate0, "learning_rate0")
    epoch = _v.nonneg(epoch_num, "epoch_num")
    rate = _v.nonneg(decay_rate, "decay_rate")
    interval = _v.real(time_interval, "time_interval")
    if interval <= 0:
        raise ValueError(f"time_interval must be > 0, got {interval}")
    return lr0 / (1 + rate * math.floor(epoch / interval))
