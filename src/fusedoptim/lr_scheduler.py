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
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from . import _validate as _v
from .schedules import _Schedule, _positive, _power, _step

__all__ = [
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "LinearLR",
    "CosineAnnealingLR",
    "LambdaLR",
    "OneCycleLR",
    "SequentialLR",
    "ReduceLROnPlateau",
]


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
        if not callable(lr_lambda):
            raise TypeError(f"lr_lambda must be callable, got {type(lr_lambda).__name__}")
        self.lr_lambda = lr_lambda

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        if not (type(step) is int and step >= 0):
            _step(step)
        return self.lr * self.lr_lambda(step)


def _anneal_cos(start: float, end: float, pct: float) -> float:
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


class OneCycleLR(_Schedule):
    r"""The 1cycle policy (torch's ``OneCycleLR``, learning rate only).

    From :math:`\eta_{max} / d` up to :math:`\eta_{max}` over the first
    ``pct_start`` of ``total_steps``, then down to :math:`\eta_{max} / (d
    f)`, each phase annealed by cosine, :math:`e + (b - e)(1 + \cos \pi
    p)/2`, or linearly, :math:`(e - b) p + b`, for a phase from :math:`b`
    to :math:`e` at fraction :math:`p`.  With ``three_phase`` the rate goes
    back down to :math:`\eta_{max}/d` symmetrically before the final
    annihilation.  In plain text: warm up to ``max_lr``, then anneal to a
    very small rate, with torch's phase ends (``pct_start * total_steps -
    1``, ``total_steps - 1``).

    Torch's momentum cycling is not included, and torch has it on by
    default: its ``cycle_momentum=True`` sets an SGD optimizer's momentum
    (even one built without momentum) to ``max_momentum=0.95``, cycled down
    to ``base_momentum=0.85`` and back (Adam's ``beta1`` likewise).  The
    rates are the same either way, but the torch run this class matches is
    ``OneCycleLR(..., cycle_momentum=False)``.  The arguments after
    ``anneal_strategy`` are keyword-only here.

    Parameters
    ----------
    max_lr : float
        :math:`\eta_{max} \ge 0`.
    total_steps : int or None
        Steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
        A step beyond ``total_steps`` raises ``ValueError``, as in torch.
    epochs, steps_per_epoch : int or None
        ``total_steps = epochs * steps_per_epoch`` when ``total_steps`` is
        ``None``.
    pct_start : float
        Fraction of the cycle spent increasing, in ``[0, 1]``;
        ``pct_start * total_steps == 1`` is refused (a warmup of zero length,
        as torch refuses it).
    anneal_strategy : {"cos", "linear"}
        How each phase goes from its start rate to its end rate: along half
        a cosine (``"cos"``) or a straight line (``"linear"``).
    div_factor : float, keyword-only
        :math:`d > 0`: the initial rate is ``max_lr / div_factor``.
    final_div_factor : float, keyword-only
        :math:`f > 0`: the final rate is the initial one over this.
    three_phase : bool, keyword-only
        ``False``: up to ``max_lr``, then down to the final rate.  ``True``:
        up to ``max_lr``, back down to the initial rate over as many steps,
        then down to the final rate.
    """

    _args = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "div_factor",
             "final_div_factor", "three_phase")

    def __init__(self, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos", *,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False) -> None:
        self.max_lr = _v.nonneg(max_lr, "max_lr")
        if total_steps is not None:
            self.total_steps = _count(total_steps, "total_steps")
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_count(epochs, "epochs")
                                * _count(steps_per_epoch, "steps_per_epoch"))
        else:
            raise ValueError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
        self.pct_start = _factor(pct_start, "pct_start", lo_open=False)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', "
                             f"got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.div_factor = _positive(div_factor, "div_factor")
        self.final_div_factor = _positive(final_div_factor, "final_div_factor")
        self.three_phase = _v.flag(three_phase, "three_phase")
        initial = self.max_lr / self.div_factor
        low = initial / self.final_div_factor
        n = self.total_steps
        if float(self.pct_start * n) == 1.0:
            # Torch's first phase ends at pct_start * n - 1 = 0, and step 0
            # divides by its zero length (torch raises at construction).
            raise ValueError(f"pct_start * total_steps must not be 1 (the warmup phase "
                             f"has zero length), got pct_start={self.pct_start}, "
                             f"total_steps={n}")
        self._phases: tuple[tuple[float, float, float], ...]
        if self.three_phase:
            self._phases = ((float(self.pct_start * n) - 1, initial, self.max_lr),
                            (float(2 * self.pct_start * n) - 2, self.max_lr, initial),
                            (n - 1, initial, low))
        else:
            self._phases = ((float(self.pct_start * n) - 1, initial, self.max_lr),
                            (n - 1, self.max_lr, low))

    def __call__(self, step: float) -> float:
        """``step -> rate``; ``step``: the optimizer steps taken (``opt.t``), torch's last_epoch."""
        step = _step(step)
        if step > self.total_steps:
            raise ValueError(f"OneCycleLR was asked for step {step:g} of a cycle of "
                             f"{self.total_steps} total_steps")
        anneal = _anneal_cos if self.anneal_strategy == "cos" else _anneal_linear
        start_step = 0.0
        last = len(self._phases) - 1
        for i, (end_step, lo, hi) in enumerate(self._phases):
            if step <= end_step or i == last:
                # torch's expression: the last phase is empty with pct_start=1
                # (or three_phase, 2 * pct_start * total_steps = total_steps + 1),
                # which step total_steps reaches; torch divides by zero there too.
                try:
                    pct = (step - start_step) / (end_step - start_step)
                except ZeroDivisionError:
                    raise ValueError(f"OneCycleLR: a phase of zero length (pct_start="
                                     f"{self.pct_start}, total_steps={self.total_steps})"
                                     ) from None
                return anneal(lo, hi, pct)
            start_step = end_step
        raise AssertionError("unreachable")


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


from ._plateau import ReduceLROnPlateau  # noqa: E402  (its own module: a different kind)
