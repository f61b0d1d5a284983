"""``OneCycleLR``: the 1cycle policy (torch's
``torch.optim.lr_scheduler.OneCycleLR``, learning rate only), a callable of
the step count as the other schedules of :mod:`fusedoptim.lr_scheduler`."""

import math

from . import _validate as _v
from .schedules import _Schedule, _count, _factor, _positive, _step

__all__ = ["OneCycleLR"]


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
