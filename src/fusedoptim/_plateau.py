"""``ReduceLROnPlateau``: lower an optimizer's learning rate when a metric
stops improving (torch's ``torch.optim.lr_scheduler.ReduceLROnPlateau``)."""

import math
import numbers
from typing import Any

from . import _validate as _v

__all__ = ["ReduceLROnPlateau"]


def _choice(x: Any, name: str, options: tuple[str, ...]) -> str:
    if x not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {x!r}")
    return x


def _count(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return int(x)


class ReduceLROnPlateau:
    r"""Multiply an optimizer's learning rate by ``factor`` when a metric has
    not improved for ``patience`` calls of :meth:`step` (torch's
    ``ReduceLROnPlateau``, same arguments, same rules).

    A metric :math:`a` improves on the best so far :math:`b` when, for
    ``mode="min"``, :math:`a < b (1 - \theta)` (``threshold_mode="rel"``)
    or :math:`a < b - \theta` (``"abs"``), and mirrored for ``"max"``.
    After more than ``patience`` calls without improvement each rate
    becomes :math:`\max(\eta f, \eta_{min})`, unless that changes it by
    ``eps`` or less; then ``cooldown`` calls pass before bad calls count
    again.  In plain text: call ``step(validation_loss)`` once per epoch;
    when the loss stalls, the rate drops tenfold (by default).

    The optimizer's rates are its ``param_groups``' ``"lr"`` entries when it
    has ``param_groups``, else its ``lr``; they must be floats (a schedule
    cannot be multiplied: it raises ``TypeError`` when a reduction is due,
    and nothing changes).

    Parameters
    ----------
    optimizer : fusedoptim.Optimizer
        The optimizer whose rate(s) to lower.
    mode : {"min", "max"}
        Whether the metric should go down or up.
    factor : float
        :math:`f \in [0, 1)`.
    patience : int
        Calls without improvement tolerated, ``>= 0``.
    threshold : float
        :math:`\theta \ge 0`, the least change that counts as improvement.
    threshold_mode : {"rel", "abs"}
    cooldown : int
        Calls after a reduction during which bad calls are not counted.
    min_lr : float, or list or tuple of float
        The floor, one for all groups or one per group.
    eps : float
        Reductions of ``eps`` or less are not applied.

    Attributes
    ----------
    best : float
        The best metric so far (``inf`` or ``-inf`` before the first step).
    num_bad_epochs, cooldown_counter, last_epoch : int
        Torch's counters (``last_epoch`` counts the calls of ``step``).
    """

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | list[float] | tuple[float, ...] = 0, eps: float = 1e-8) -> None:
        if not (hasattr(optimizer, "param_groups") or hasattr(optimizer, "lr")):
            raise TypeError(f"optimizer must have param_groups or lr, "
                            f"got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.mode = _choice(mode, "mode", ("min", "max"))
        self.factor = _v.nonneg(factor, "factor")
        if self.factor >= 1.0:
            raise ValueError(f"factor must be < 1, got {self.factor}")
        self.patience = _count(patience, "patience")
        self.threshold = _v.nonneg(threshold, "threshold")
        self.threshold_mode = _choice(threshold_mode, "threshold_mode", ("rel", "abs"))
        self.cooldown = _count(cooldown, "cooldown")
        self._default_min_lr: float | None
        if isinstance(min_lr, (list, tuple)):  # one per group, as torch takes them
            self.min_lrs = [_v.nonneg(x, f"min_lr[{i}]") for i, x in enumerate(min_lr)]
            if len(self.min_lrs) != len(self._rates()):
                raise ValueError(f"min_lr has {len(self.min_lrs)} entries for "
                                 f"{len(self._rates())} parameter groups")
            self._default_min_lr = None
        else:
            self._default_min_lr = _v.nonneg(min_lr, "min_lr")
            self.min_lrs = [self._default_min_lr] * len(self._rates())
        self.eps = _v.nonneg(eps, "eps")
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = self._rates()

    # --- the optimizer's rates ------------------------------------------------

    def _rates(self) -> list[Any]:
        groups = getattr(self.optimizer, "param_groups", None)
        if groups is not None:
            return [g["lr"] for g in groups]
        return [self.optimizer.lr]

    def _set_rate(self, i: int, value: float) -> None:
        groups = getattr(self.optimizer, "param_groups", None)
        if groups is not None:
            groups[i]["lr"] = value
        else:
            self.optimizer.lr = value

    def get_last_lr(self) -> list[Any]:
        """The rates after the last :meth:`step` (as torch's)."""
        return list(self._last_lr)

    @property
    def in_cooldown(self) -> bool:
        """Whether bad calls are currently not counted."""
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` (torch's test)."""
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return a < best * (1.0 - self.threshold) if rel else a < best - self.threshold
        return a > best * (self.threshold + 1.0) if rel else a > best + self.threshold

    # --- stepping ---------------------------------------------------------------

    def _reduce_lr(self) -> None:
        rates = self._rates()
        if len(rates) != len(self.min_lrs):
            if self._default_min_lr is None:
                raise ValueError(f"min_lr has {len(self.min_lrs)} entries but the optimizer "
                                 f"now has {len(rates)} parameter groups")
            self.min_lrs = [self._default_min_lr] * len(rates)
        new = []
        for i, lr in enumerate(rates):  # all checked before any is written
            if callable(lr) or isinstance(lr, bool) or not isinstance(lr, numbers.Real):
                raise TypeError(f"ReduceLROnPlateau needs float learning rates, but group "
                                f"{i}'s lr is {type(lr).__name__}")
            old = float(lr)
            new_lr = max(old * self.factor, self.min_lrs[i])
            new.append(new_lr if old - new_lr > self.eps else None)
        for i, value in enumerate(new):
            if value is not None:
                self._set_rate(i, value)

    def step(self, metrics: float) -> None:
        """Record one value of the metric (once per epoch, usually), and
        lower the rate(s) when it has stalled.  A metric that is NaN counts
        as no improvement.  Raises before changing anything on a bad
        metric or a rate that is a schedule."""
        if isinstance(metrics, (str, bytes, bool)):
            raise TypeError(f"metrics must be a real number, got {type(metrics).__name__}")
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"metrics must be a real number, "
                            f"got {type(metrics).__name__}") from None
        best, bad, cool = self.best, self.num_bad_epochs, self.cooldown_counter
        if self.is_better(current, best):
            best, bad = current, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0  # bad calls during the cooldown are ignored
        if bad > self.patience:
            self._reduce_lr()
            cool, bad = self.cooldown, 0
        self.best, self.num_bad_epochs, self.cooldown_counter = best, bad, cool
        self.last_epoch += 1
        self._last_lr = self._rates()

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, best={self.best}, "
                f"num_bad_epochs={self.num_bad_epochs})")
