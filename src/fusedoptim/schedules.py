"""Learning-rate schedules: Keras's, and the course's two functions.

The two course functions, :func:`update_lr` and :func:`schedule_lr_decay`,
take the epoch number and return the decayed rate.

The schedule classes are Keras's (``keras.optimizers.schedules``), with
Keras's names, arguments and positional order, ``name`` included, and its
formulas computed in Python double precision (Keras computes in float32, so
the values agree to float32 precision).  Each is a callable ``schedule(step)
-> float``.  Pass one as an optimizer's ``lr``: the optimizer calls it with
``opt.t``, the number of steps already taken (0 for the first update), as
Keras and optax do.  ``step`` may be any real ``>= 0`` (an epoch number works
as well when you drive ``opt.lr`` per epoch yourself).  Bad arguments raise
``TypeError`` (not a number, not a bool) or ``ValueError`` (out of range).

PyTorch's schedulers, as callables of the step count, are in
:mod:`fusedoptim.lr_scheduler`.
"""

import bisect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _validate as _v
from ._course import schedule_lr_decay, update_lr

__all__ = [
    "update_lr",
    "schedule_lr_decay",
    "InverseTimeDecay",
    "ExponentialDecay",
    "PiecewiseConstantDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "PolynomialDecay",
]


def _name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return name


def _positive(x, name):
    x = _v.real(x, name)
    if x <= 0.0:
        raise ValueError(f"{name} must be > 0, got {x}")
    return x


def _flag(x, name):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__}")
    return bool(x)


def _count(x: Any, name: str, minimum: int = 1) -> int:
    """A step count: an int ``>= minimum`` (bool refused)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return int(x)


def _factor(x: Any, name: str, lo_open: bool) -> float:
    """A factor in ``(0, 1]`` (``lo_open``) or ``[0, 1]``."""
    x = _v.real(x, name)
    if x > 1.0 or x < 0.0 or (lo_open and x == 0.0):
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}0, 1], got {x}")
    return x


def _power(lr: float, rate: float, k: float) -> float:
    """``lr * rate ** k``; past float range ``inf`` (0 when ``lr`` is 0),
    which an optimizer refuses with an error naming the step, where
    Python's power would raise ``OverflowError``."""
    try:
        return lr * rate ** k
    except OverflowError:  # rate > 1 at a huge step
        return math.inf if lr != 0.0 else 0.0


def _step(step):
    # An optimizer passes a Python int: skip the general check's ABC lookups.
    if type(step) is int and step >= 0:
        return float(step)
    return _v.nonneg(step, "step")


class _Schedule:
    """Shared ``repr``; subclasses list their arguments in ``_args``."""

    _args: tuple[str, ...] = ()

    def __call__(self, step: float) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{a}={getattr(self, a)!r}" for a in self._args)
        return f"{type(self).__name__}({args})"


class _PeriodDecay(_Schedule):
    """Keras's decays by a rate per ``decay_steps`` period (``InverseTimeDecay``,
    ``ExponentialDecay``): one constructor body and one period count, so
    the two differ only in their formula and the rate's check."""

    _args = ("initial_learning_rate", "decay_steps", "decay_rate", "staircase")

    def _set(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
             staircase: bool, name: str, rate_check: Callable[[Any, str], float]) -> None:
        self.initial_learning_rate = _v.nonneg(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.decay_rate = rate_check(decay_rate, "decay_rate")
        self.staircase = _flag(staircase, "staircase")
        self.name = _name(name)

    def _periods(self, step: float) -> float:
        """Periods elapsed at ``step``, whole ones with ``staircase``."""
        p = _step(step) / self.decay_steps
        return math.floor(p) if self.staircase else p


class InverseTimeDecay(_PeriodDecay):
    r"""Inverse-time decay (Keras's ``InverseTimeDecay``).

    .. math::

        \eta(s) = \frac{\eta_0}{1 + r\, p}, \qquad
        p = s / n \quad\text{or, with staircase,}\quad
        p = \lfloor s / n \rfloor

    In plain text: ``initial_learning_rate / (1 + decay_rate * step /
    decay_steps)``, the quotient floored with ``staircase``.  The course's
    ``update_lr(lr0, epoch, rate)`` is ``InverseTimeDecay(lr0, 1,
    rate)(epoch)`` and ``schedule_lr_decay(lr0, epoch, rate, interval)`` is
    ``InverseTimeDecay(lr0, interval, rate, staircase=True)(epoch)``, bit
    for bit.

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\eta_0 \ge 0`, the rate at step 0.
    decay_steps : float
        :math:`n > 0`.
    decay_rate : float
        :math:`r \ge 0`.
    staircase : bool
        Decay in whole periods of ``decay_steps``.
    name : str
        Keras's name of the schedule (kept, unused).
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "InverseTimeDecay") -> None:
        self._set(initial_learning_rate, decay_steps, decay_rate, staircase, name, _v.nonneg)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), or epochs."""
        p = self._periods(step)
        return self.initial_learning_rate / (1 + self.decay_rate * p)


class ExponentialDecay(_PeriodDecay):
    r"""Exponential decay (Keras's ``ExponentialDecay``).

    .. math::

        \eta(s) = \eta_0\, r^{p}, \qquad
        p = s / n \quad\text{or, with staircase,}\quad
        p = \lfloor s / n \rfloor

    In plain text: ``initial_learning_rate * decay_rate ** (step /
    decay_steps)``, the exponent floored with ``staircase``.  With
    ``decay_rate > 1`` the rate grows; once it exceeds float range it is
    ``inf`` (``0.0`` when ``initial_learning_rate`` is 0), which an optimizer
    refuses with a ``ValueError`` naming the step.

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\eta_0 \ge 0`, the rate at step 0.
    decay_steps : float
        :math:`n > 0`.
    decay_rate : float
        :math:`r > 0`, the factor applied every ``decay_steps``.
    staircase : bool
        Decay in whole periods of ``decay_steps``.
    name : str
        Keras's name of the schedule (kept, unused).
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "ExponentialDecay") -> None:
        self._set(initial_learning_rate, decay_steps, decay_rate, staircase, name, _positive)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), or epochs."""
        return _power(self.initial_learning_rate, self.decay_rate, self._periods(step))


class PiecewiseConstantDecay(_Schedule):
    r"""Piecewise-constant rate (Keras's ``PiecewiseConstantDecay``).

    .. math::

        \eta(s) = v_0 \ (s \le b_0), \quad
        v_i \ (b_{i-1} < s \le b_i), \quad
        v_k \ (s > b_{k-1})

    In plain text: ``values[i]`` where ``i`` is the number of boundaries
    strictly below ``step`` (a step equal to a boundary keeps the value
    before it).

    Parameters
    ----------
    boundaries : sequence of float
        :math:`b_0 < \dots < b_{k-1}`, strictly increasing, finite.
    values : sequence of float
        :math:`v_0, \dots, v_k`, one more than ``boundaries``, each ``>= 0``.
    name : str
        Keras's name of the schedule (kept, unused).
    """

    _args = ("boundaries", "values")

    def __init__(self, boundaries: Sequence[float], values: Sequence[float],
                 name: str = "PiecewiseConstant") -> None:
        for arg, label in ((boundaries, "boundaries"), (values, "values")):
            if isinstance(arg, (str, bytes)) or not hasattr(arg, "__len__"):
                raise TypeError(f"{label} must be a sequence of numbers, "
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
        self.name = _name(name)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), or epochs."""
        # bisect_left counts the boundaries strictly below step, so a step
        # equal to a boundary still gets the value before it.
        return self.values[bisect.bisect_left(self.boundaries, _step(step))]


def _cosine(fraction: float, alpha: float) -> float:
    """Keras's decayed factor ``(1 - alpha) * 0.5 * (1 + cos(pi * f)) + alpha``."""
    return (1 - alpha) * (0.5 * (1.0 + math.cos(math.pi * fraction))) + alpha


def _alpha(alpha) -> float:
    alpha = _v.nonneg(alpha, "alpha")
    if alpha > 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


class CosineDecay(_Schedule):
    r"""Cosine decay, with an optional linear warmup (Keras's ``CosineDecay``).

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
    :math:`s = w + n`.  In plain text: a half cosine from the peak down to
    ``alpha`` times the peak over ``decay_steps``, after an optional linear
    ramp to the peak.

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\eta_0 \ge 0`, the rate at step 0.
    decay_steps : float
        :math:`n > 0`.
    alpha : float
        :math:`\alpha \in [0, 1]`, the final rate as a fraction of the
        peak.
    name : str
        Keras's name of the schedule (kept, unused); Keras's fourth
        positional argument.
    warmup_target : float or None
        :math:`\eta_w \ge 0`, the rate reached after the warmup; ``None``
        for no warmup.
    warmup_steps : float
        :math:`w \ge 0`; must be 0 without a ``warmup_target`` (Keras
        ignores it there).
    """

    _args = ("initial_learning_rate", "decay_steps", "alpha", "warmup_target", "warmup_steps")

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float | None = None,
                 warmup_steps: float = 0) -> None:
        self.initial_learning_rate = _v.nonneg(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.alpha = _alpha(alpha)
        self.name = _name(name)
        if warmup_target is not None:
            warmup_target = _v.nonneg(warmup_target, "warmup_target")
        self.warmup_target = warmup_target
        self.warmup_steps = _v.nonneg(warmup_steps, "warmup_steps")
        if warmup_target is None and self.warmup_steps != 0.0:
            raise ValueError("warmup_steps needs a warmup_target")

    def _decay(self, step: float, peak: float) -> float:
        return peak * _cosine(step / self.decay_steps, self.alpha)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), or epochs."""
        step = _step(step)
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            lr0 = self.initial_learning_rate
            return (self.warmup_target - lr0) * (step / self.warmup_steps) + lr0
        return self._decay(step - self.warmup_steps, self.warmup_target)


# A step this close below a period start (relative) is at the start: the
# computed starts are within about 10 ulps of the decimal ones (t_mul=1.1 as
# 11/10), and Keras's float32 rounds at 2**-24.
_SNAP = 1.0 - 2.0 ** -46
_LN2 = math.log(2.0)


class CosineDecayRestarts(_Schedule):
    r"""Cosine decay with warm restarts, SGDR (Keras's ``CosineDecayRestarts``).

    Period :math:`i` (from 0) lasts :math:`n\, t^i` steps and starts at
    :math:`S_i = n (1 + t + \dots + t^{i-1})`; within it, with
    :math:`f = (s - S_i) / (n\, t^i) \in [0, 1)`,

    .. math::

        \eta(s) = \eta_0 \left((1 - \alpha)\, \tfrac12\, m^i
            \left(1 + \cos \pi f\right) + \alpha\right)

    for ``first_decay_steps`` :math:`n`, ``t_mul`` :math:`t` and ``m_mul``
    :math:`m`.  In plain text: a cosine decay over ``first_decay_steps``,
    then restarted with periods ``t_mul`` times longer and peaks ``m_mul``
    times lower each time.  Keras finds :math:`i` as :math:`\lfloor
    \log(1 + (s/n)(t - 1)) / \log t \rfloor`, in float32.  Here :math:`i`
    is the last period with :math:`S_i (1 - 2^{-46}) \le s`, :math:`S_i`
    computed in double precision: a start is only known to rounding
    (``t_mul=1.1`` is not 11/10, and :math:`S_3` for ``first_decay_steps=100``
    comes out as 331.00000000000006), so a step that close below a start
    (under a whole step up to step :math:`7 \cdot 10^{13}`) is at the start,
    :math:`f = 0`, and gets the period's peak exactly.

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\eta_0 \ge 0`.
    first_decay_steps : float
        :math:`n > 0`, the length of the first period.
    t_mul : float
        :math:`t \ge 1` (shrinking periods would restart infinitely often).
    m_mul : float
        :math:`m \ge 0`.
    alpha : float
        :math:`\alpha \in [0, 1]`, the floor as a fraction of
        ``initial_learning_rate``.
    name : str
        Keras's name of the schedule (kept, unused).
    """

    _args = ("initial_learning_rate", "first_decay_steps", "t_mul", "m_mul", "alpha")

    def __init__(self, initial_learning_rate: float, first_decay_steps: float,
                 t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0,
                 name: str = "SGDRDecay") -> None:
        self.initial_learning_rate = _v.nonneg(initial_learning_rate, "initial_learning_rate")
        self.first_decay_steps = _positive(first_decay_steps, "first_decay_steps")
        self.t_mul = _v.real(t_mul, "t_mul")
        if self.t_mul < 1.0:
            raise ValueError(f"t_mul must be >= 1, got {self.t_mul}")
        self.m_mul = _v.nonneg(m_mul, "m_mul")
        self.alpha = _alpha(alpha)
        self.name = _name(name)

    def _start(self, i: int) -> float:
        """Start of period ``i`` in steps, ``n (t**i - 1) / (t - 1)``, within
        a few ulps: ``t**i - 1`` cancels below 2, so there by ``expm1``."""
        t, n = self.t_mul, self.first_decay_steps
        if t == 1.0:
            return n * i
        x = i * math.log1p(t - 1.0)
        try:
            return n * ((math.expm1(x) if x < _LN2 else t ** i - 1.0) / (t - 1.0))
        except OverflowError:
            return math.inf

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), or epochs."""
        step = _step(step)
        n, t = self.first_decay_steps, self.t_mul
        p = step / n
        i = math.floor(p if t == 1.0 else math.log1p(p * (t - 1.0)) / math.log1p(t - 1.0))
        # The logarithm's estimate can be one off at a restart, so i is settled
        # against the starts the fraction uses, with _SNAP's margin for their
        # rounding: a restart step gets f = 0, the peak, exactly.
        lo, hi = self._start(i), self._start(i + 1)
        while step >= hi * _SNAP:
            i, lo, hi = i + 1, hi, self._start(i + 2)
        while i > 0 and step < lo * _SNAP:
            i, lo, hi = i - 1, self._start(i - 1), lo
        fraction = max(0.0, (step - lo) / (n * t ** i))
        m_fac = _power(1.0, self.m_mul, i)
        cosine = 0.5 * m_fac * (1.0 + math.cos(math.pi * fraction))
        return self.initial_learning_rate * ((1 - self.alpha) * cosine + self.alpha)


class PolynomialDecay(_Schedule):
    r"""Polynomial decay (Keras's ``PolynomialDecay``).

    .. math::

        \eta(s) = (\eta_0 - \eta_e) \left(1 - \frac{\min(s, n)}{n}\right)^{k}
                  + \eta_e

    and, with ``cycle``, :math:`n` replaced by :math:`n \lceil s / n \rceil`
    (:math:`n` at step 0), so the decay restarts every ``decay_steps``.  In
    plain text: from ``initial_learning_rate`` to ``end_learning_rate``
    along ``(1 - fraction) ** power`` over ``decay_steps``, then constant
    (or restarted, with ``cycle``).

    Parameters
    ----------
    initial_learning_rate : float
        :math:`\eta_0 \ge 0`.
    decay_steps : float
        :math:`n > 0`.
    end_learning_rate : float
        :math:`\eta_e \ge 0`.
    power : float
        :math:`k \ge 0`.
    cycle : bool
        Restart the decay every ``decay_steps`` (Keras's ``cycle``).
    name : str
        Keras's name of the schedule (kept, unused).
    """

    _args = ("initial_learning_rate", "decay_steps", "end_learning_rate", "power", "cycle")

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 end_learning_rate: float = 0.0001, power: float = 1.0, cycle: bool = False,
                 name: str = "PolynomialDecay") -> None:
        self.initial_learning_rate = _v.nonneg(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.end_learning_rate = _v.nonneg(end_learning_rate, "end_learning_rate")
        self.power = _v.nonneg(power, "power")
        self.cycle = _flag(cycle, "cycle")
        self.name = _name(name)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), or epochs."""
        step = _step(step)
        n = self.decay_steps
        if self.cycle:
            n = n * (1.0 if step == 0 else math.ceil(step / n))
        else:
            step = min(step, n)
        p = step / n
        end = self.end_learning_rate
        return (self.initial_learning_rate - end) * (1 - p) ** self.power + end
