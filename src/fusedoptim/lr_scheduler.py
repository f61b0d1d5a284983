"""PyTorch's learning-rate schedulers (``torch.optim.lr_scheduler``), as
callables of the step count.

Each class here is a plain callable ``schedule(step) -> float`` with torch's
name and arguments, the optimizer argument replaced by the base rate ``lr``
(``max_lr`` for :class:`OneCycleLR`).  Pass one as an optimizer's ``lr``.

How torch's counting maps: torch's scheduler starts with ``last_epoch = 0``
and ``scheduler.step()`` after each ``optimizer.step()`` adds one, so the
rate of torch's optimizer step ``t + 1`` is the scheduler's rate at
``last_epoch = t``.  A fusedoptim optimizer calls its schedule with ``opt.t``,
the steps already taken (0 on the first step), so ``schedule(t)`` here is
torch's rate at ``last_epoch = t``, and a training loop gets the rates the
same torch loop gets.  (Stepped once per epoch instead, ``step`` counts
epochs: set ``opt.lr = schedule(epoch)`` yourself.)

The values are torch's closed forms (``_get_closed_form_lr``), with the same
Python expressions, so they are the bits torch computes when it is given an
epoch.  Torch's ``scheduler.step()`` itself applies chained, recursive
updates (``lr *= gamma`` ...), which accumulate rounding error: the rates it
reaches differ from the closed forms in the last bits (the tests allow a
relative 1e-12 over the steps they run).

:class:`ReduceLROnPlateau` is metric driven: it is not a schedule but an
object whose ``step(metric)`` lowers an optimizer's learning rate(s).
"""

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from . import _validate as _v
from .schedules import _Schedule, _count, _factor, _power, _step

__all__ = [
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "LinearLR",
    "CosineAnnealingLR",
    "LambdaLR",
    "MultiplicativeLR",
    "ConstantLR",
    "PolynomialLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "SequentialLR",
    "ReduceLROnPlateau",
]


def _callable(f: Any, name: str) -> Any:
    if not callable(f):
        raise TypeError(f"{name} must be callable, got {type(f).__name__}")
    return f


class StepLR(_Schedule):
    r"""Decay by ``gamma`` every ``step_size`` steps (torch's ``StepLR``).

    .. math:: \eta(s) = \eta_0\, \gamma^{\lfloor s / k \rfloor}

    In plain text: ``lr * gamma ** (step // step_size)``.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`, torch's ``initial_lr``.
    step_size : int
        :math:`k \ge 1`.
    gamma : float
        :math:`\gamma \ge 0`.
    """

    _args = ("lr", "step_size", "gamma")

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.step_size = _count(step_size, "step_size")
        self.gamma = _v.nonneg(gamma, "gamma")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        return _power(self.lr, self.gamma, _step(step) // self.step_size)


class MultiStepLR(_Schedule):
    r"""Decay by ``gamma`` at each milestone (torch's ``MultiStepLR``).

    .. math:: \eta(s) = \eta_0\, \gamma^{\#\{m_i \le s\}}

    In plain text: ``lr * gamma ** (number of milestones <= step)``; a
    milestone given twice counts twice, as in torch.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    milestones : sequence of int
        Steps ``>= 0`` (any order).
    gamma : float
        :math:`\gamma \ge 0`.
    """

    _args = ("lr", "milestones", "gamma")

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self.lr = _v.nonneg(lr, "lr")
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(f"milestones must be a sequence of ints, "
                            f"got {type(milestones).__name__}")
        self.milestones = sorted(_count(m, f"milestones[{i}]", 0)
                                 for i, m in enumerate(milestones))
        self.gamma = _v.nonneg(gamma, "gamma")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        return _power(self.lr, self.gamma, bisect.bisect_right(self.milestones, _step(step)))


class ExponentialLR(_Schedule):
    r"""Decay by ``gamma`` every step (torch's ``ExponentialLR``).

    .. math:: \eta(s) = \eta_0\, \gamma^{s}

    In plain text: ``lr * gamma ** step``.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    gamma : float
        :math:`\gamma \ge 0` (above 1 the rate grows, to ``inf`` past
        float range, which an optimizer refuses naming the step).
    """

    _args = ("lr", "gamma")

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.gamma = _v.nonneg(gamma, "gamma")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        return _power(self.lr, self.gamma, _step(step))


class LinearLR(_Schedule):
    r"""Linear change of the rate's factor, usually a warmup (torch's ``LinearLR``).

    .. math:: \eta(s) = \eta_0 \left(a + \frac{(b - a) \min(T, s)}{T}\right)

    In plain text: ``lr`` times a factor going linearly from
    ``start_factor`` to ``end_factor`` over ``total_iters`` steps, then
    ``lr * end_factor``.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    start_factor : float
        :math:`a \in (0, 1]`.
    end_factor : float
        :math:`b \in [0, 1]`.
    total_iters : int
        :math:`T \ge 1`.
    """

    _args = ("lr", "start_factor", "end_factor", "total_iters")

    def __init__(self, lr: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.start_factor = _factor(start_factor, "start_factor", lo_open=True)
        self.end_factor = _factor(end_factor, "end_factor", lo_open=False)
        self.total_iters = _count(total_iters, "total_iters")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        a, b, n = self.start_factor, self.end_factor, self.total_iters
        return self.lr * (a + (b - a) * min(n, _step(step)) / n)


class CosineAnnealingLR(_Schedule):
    r"""Cosine annealing (torch's ``CosineAnnealingLR``, its closed form).

    .. math:: \eta(s) = \eta_{min} + (\eta_0 - \eta_{min})
              \frac{1 + \cos(\pi s / T)}{2}

    In plain text: a half cosine from ``lr`` to ``eta_min`` over ``T_max``
    steps; past ``T_max`` it rises again (period ``2 T_max``), as torch's
    does.  Keras's :class:`~fusedoptim.schedules.CosineDecay` stays at its
    floor instead.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    T_max : int
        :math:`T \ge 1`.
    eta_min : float
        :math:`\eta_{min} \ge 0`.
    """

    _args = ("lr", "T_max", "eta_min")

    def __init__(self, lr: float, T_max: int, eta_min: float = 0.0) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.T_max = _count(T_max, "T_max")
        self.eta_min = _v.nonneg(eta_min, "eta_min")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        lo = self.eta_min
        return lo + (self.lr - lo) * (1 + math.cos(math.pi * _step(step) / self.T_max)) / 2


class LambdaLR(_Schedule):
    r"""The rate times a function of the step (torch's ``LambdaLR``).

    .. math:: \eta(s) = \eta_0\, \lambda(s)

    In plain text: ``lr * lr_lambda(step)``, ``step`` an int for an int
    step; a negative or non-finite product is refused by the optimizer.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    lr_lambda : callable
        ``step -> float``.
    """

    _args = ("lr", "lr_lambda")

    def __init__(self, lr: float, lr_lambda: Callable[[Any], float]) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.lr_lambda = _callable(lr_lambda, "lr_lambda")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        if not (type(step) is int and step >= 0):
            _step(step)
        return self.lr * self.lr_lambda(step)


class MultiplicativeLR(_Schedule):
    r"""The rate multiplied by a function of the step at every step (torch's
    ``MultiplicativeLR``).

    .. math:: \eta(s) = \eta_0 \prod_{i=1}^{s} \lambda(i)

    In plain text: ``lr * lr_lambda(1) * ... * lr_lambda(step)``, multiplied
    in that order (torch's stepped values, bit for bit, for an
    ``lr_lambda`` that depends only on its argument).  The last product is
    kept, so consecutive steps cost one call of ``lr_lambda``.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    lr_lambda : callable
        ``step -> float``, called with ints ``>= 1``.
    """

    _args = ("lr", "lr_lambda")

    def __init__(self, lr: float, lr_lambda: Callable[[int], float]) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.lr_lambda = _callable(lr_lambda, "lr_lambda")
        self._last: tuple = (None, None, 0, self.lr)  # (lr, lr_lambda, step, rate)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        n = _step(step)
        if n != int(n):
            raise ValueError(f"MultiplicativeLR needs a whole step, got {step}")
        lr, f, k, rate = self._last
        if lr != self.lr or f is not self.lr_lambda or k > n:  # changed since: from the start
            k, rate = 0, self.lr
        for i in range(k + 1, int(n) + 1):
            rate = rate * self.lr_lambda(i)
        self._last = (self.lr, self.lr_lambda, int(n), rate)
        return rate


class ConstantLR(_Schedule):
    r"""The rate times a constant factor until a step (torch's ``ConstantLR``).

    .. math:: \eta(s) = \eta_0 \, (f \text{ if } s < T \text{ else } 1)

    In plain text: ``lr * factor`` for the first ``total_iters`` steps, then
    ``lr`` (usually a warmup).

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    factor : float
        :math:`f \in [0, 1]`.
    total_iters : int
        :math:`T \ge 0`.
    """

    _args = ("lr", "factor", "total_iters")

    def __init__(self, lr: float, factor: float = 1.0 / 3, total_iters: int = 5) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.factor = _factor(factor, "factor", lo_open=False)
        self.total_iters = _count(total_iters, "total_iters", minimum=0)

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        f = self.factor
        return self.lr * (f + (_step(step) >= self.total_iters) * (1 - f))


class PolynomialLR(_Schedule):
    r"""Polynomial decay to 0 over a number of steps (torch's ``PolynomialLR``).

    .. math:: \eta(s) = \eta_0 \left(1 - \frac{\min(T, s)}{T}\right)^{p}

    In plain text: ``lr * (1 - min(total_iters, step) / total_iters) **
    power``; 0 from ``total_iters`` on (``lr`` with ``power=0``).  Keras's
    :class:`~fusedoptim.schedules.PolynomialDecay` ends at a floor instead.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    total_iters : int
        :math:`T \ge 1`.
    power : float
        :math:`p \ge 0`.
    """

    _args = ("lr", "total_iters", "power")

    def __init__(self, lr: float, total_iters: int = 5, power: float = 1.0) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.total_iters = _count(total_iters, "total_iters")
        self.power = _v.nonneg(power, "power")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        n = self.total_iters
        return self.lr * (1.0 - min(n, _step(step)) / n) ** self.power


class CosineAnnealingWarmRestarts(_Schedule):
    r"""Cosine annealing with warm restarts, SGDR (torch's
    ``CosineAnnealingWarmRestarts``).

    .. math:: \eta(s) = \eta_{min} + (\eta_0 - \eta_{min})
              \frac{1 + \cos(\pi s_c / T_c)}{2}

    In plain text: a half cosine from ``lr`` to ``eta_min`` over ``T_0``
    steps, then again from ``lr`` over ``T_0 * T_mult`` steps, and so on;
    :math:`s_c` is the step within the current cycle of length :math:`T_c`.
    The cycle is found by whole-number arithmetic, as torch's stepping
    finds it (its ``step(epoch)`` takes a logarithm, which can put an exact
    restart one step off).  Keras's
    :class:`~fusedoptim.schedules.CosineDecayRestarts` is the same idea with
    Keras's arguments.

    Parameters
    ----------
    lr : float
        :math:`\eta_0 \ge 0`.
    T_0 : int
        Steps of the first cycle, ``>= 1``.
    T_mult : int
        Growth of each cycle, ``>= 1``.
    eta_min : float
        :math:`\eta_{min} \ge 0`.
    """

    _args = ("lr", "T_0", "T_mult", "eta_min")

    def __init__(self, lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> None:
        self.lr = _v.nonneg(lr, "lr")
        self.T_0 = _count(T_0, "T_0")
        self.T_mult = _count(T_mult, "T_mult")
        self.eta_min = _v.nonneg(eta_min, "eta_min")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        s = _step(step)
        whole = math.floor(s)
        cycle = self.T_0
        if self.T_mult == 1:
            whole %= cycle
        else:
            while whole >= cycle:  # about log(step) / log(T_mult) cycles
                whole -= cycle
                cycle *= self.T_mult
        lo = self.eta_min
        cur = whole + (s - math.floor(s))
        return lo + (self.lr - lo) * (1 + math.cos(math.pi * cur / cycle)) / 2


class SequentialLR(_Schedule):
    r"""Schedules one after another (torch's ``SequentialLR``): warmup, then decay.

    .. math:: \eta(s) = \eta^{(i)}(s - m_{i-1}), \qquad
              i = \#\{m_j \le s\}, \ m_{-1} = 0

    In plain text: schedule ``i`` runs from milestone ``i - 1`` (from step
    0 for the first), counting its own steps from 0 there, as torch restarts
    each scheduler at its milestone.

    Parameters
    ----------
    schedules : sequence of callables
        ``step -> float`` each (any schedule of this library, or a float
        for a constant stretch); torch's ``schedulers``.
    milestones : sequence of int
        One fewer than ``schedules``, increasing, ``>= 1``.
    """

    _args = ("schedules", "milestones")

    def __init__(self, schedules: Sequence[Callable[[int], float] | float],
                 milestones: Sequence[int]) -> None:
        for arg, label in ((schedules, "schedules"), (milestones, "milestones")):
            if isinstance(arg, (str, bytes)) or not hasattr(arg, "__len__"):
                raise TypeError(f"{label} must be a sequence, got {type(arg).__name__}")
        out = []
        for i, s in enumerate(schedules):
            if isinstance(s, type):  # callable, but calling it makes a schedule
                raise TypeError(f"schedules[{i}] is the class {s.__name__}; pass an "
                                f"instance, e.g. {s.__name__}(...)")
            if not callable(s):
                value = _v.nonneg(s, f"schedules[{i}]")
                s = _Constant(value)
            out.append(s)
        if not out:
            raise ValueError("schedules is empty")
        self.schedules = out
        self.milestones = [_count(m, f"milestones[{i}]") for i, m in enumerate(milestones)]
        if len(self.milestones) != len(out) - 1:
            raise ValueError(f"milestones must have one entry fewer than schedules, got "
                             f"{len(self.milestones)} for {len(out)} schedules")
        for i in range(1, len(self.milestones)):
            if not self.milestones[i - 1] < self.milestones[i]:
                raise ValueError(f"milestones must be increasing, but milestones[{i}] = "
                                 f"{self.milestones[i]} follows {self.milestones[i - 1]}")

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        s = step if type(step) is int and step >= 0 else _step(step)
        i = bisect.bisect_right(self.milestones, s)
        return self.schedules[i](s - self.milestones[i - 1] if i else s)


class _Constant(_Schedule):
    _args = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, step: float) -> float:
        return self.value

    def __repr__(self) -> str:
        # SequentialLR's repr shows the float the user passed, not this wrapper
        return repr(self.value)


from ._onecycle import OneCycleLR  # noqa: E402  (its own module: the longest)
from ._plateau import ReduceLROnPlateau  # noqa: E402  (its own module: a different kind)
