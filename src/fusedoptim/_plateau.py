"""``ReduceLROnPlateau``: lower an optimizer's learning rate when a metric
stops improving (torch's ``torch.optim.lr_scheduler.ReduceLROnPlateau``)."""

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

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


def _real(x: Any, name: str) -> float:
    """A real number (``inf`` and NaN included: ``best`` starts at ``inf``)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    return float(x)


def _list(sd: Mapping[str, Any], key: str) -> list[Any]:
    x = sd[key]
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"{key} must be a list, got {type(x).__name__}")
    return list(x)


def _plain_rate(r: Any) -> float | None:
    """A rate as a plain float, or ``None`` for a schedule."""
    return None if callable(r) or isinstance(r, bool) or not isinstance(r, numbers.Real) \
        else float(r)


#: The keys of :meth:`ReduceLROnPlateau.state_dict` (torch's).
_STATE_KEYS = ("factor", "default_min_lr", "min_lrs", "patience", "cooldown", "eps",
               "last_epoch", "_last_lr", "mode_worse", "mode", "threshold", "threshold_mode",
               "best", "cooldown_counter", "num_bad_epochs")


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
        Whether ``threshold`` is relative to the best metric or absolute.
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
        """The rates after the last :meth:`step` (as torch's).

        Returns
        -------
        list
            One rate per parameter group (a float, or the group's schedule).
        """
        return list(self._last_lr)

    @property
    def in_cooldown(self) -> bool:
        """Whether bad calls are currently not counted."""
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` (torch's test).

        Parameters
        ----------
        a : float
            A value of the metric.
        best : float
            The best value so far.

        Returns
        -------
        bool
            ``True`` when ``a`` beats ``best`` by more than ``threshold``
            in the direction of ``mode`` (never for NaN).
        """
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
        lower the rate(s) when it has stalled.

        Parameters
        ----------
        metrics : float
            The metric's value, e.g. the validation loss (a real number, or
            an array of one, as torch takes a one-element tensor; NaN counts
            as no improvement).  A bad metric, or a rate that is a schedule
            when a reduction is due, raises with nothing changed.
        """
        if isinstance(metrics, np.ndarray) and metrics.size == 1:
            metrics = metrics.reshape(()).item()
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

    # --- checkpoints ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, under torch's keys, as plain Python numbers,
        strings, ``None`` and lists: ``json.dumps`` writes it and
        ``json.loads`` reads it back (``mode_worse`` is infinite, as torch's,
        and so is ``best`` before the first metric: written ``Infinity``,
        which Python's ``json`` reads but strict JSON, ``allow_nan=False``,
        refuses).  Save it beside the optimizer's checkpoint, which holds
        the optimizer only (``opt.save`` has no room for it).  The keys:
        ``factor``, ``default_min_lr``
        (``None`` when ``min_lr`` was given per group), ``min_lrs``,
        ``patience``, ``cooldown``, ``eps``, ``last_epoch``, ``_last_lr``,
        ``mode_worse``, ``mode``, ``threshold``, ``threshold_mode``,
        ``best``, ``cooldown_counter``, ``num_bad_epochs``.  The optimizer is
        not part of it (it has its own checkpoint); a rate that is a
        schedule is ``None`` in ``_last_lr``.  ``torch``'s
        ``ReduceLROnPlateau.load_state_dict`` takes it, and
        :meth:`load_state_dict` takes torch's.

        Returns
        -------
        dict
            A fresh dict of the keys above.
        """
        return {
            "factor": self.factor, "default_min_lr": self._default_min_lr,
            "min_lrs": list(self.min_lrs), "patience": self.patience,
            "cooldown": self.cooldown, "eps": self.eps, "last_epoch": self.last_epoch,
            "_last_lr": [_plain_rate(r) for r in self._last_lr],
            "mode_worse": math.inf if self.mode == "min" else -math.inf, "mode": self.mode,
            "threshold": self.threshold, "threshold_mode": self.threshold_mode,
            "best": self.best, "cooldown_counter": self.cooldown_counter,
            "num_bad_epochs": self.num_bad_epochs,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (ours or torch's): every key is
        checked before any is set, and a failing call changes nothing.  The
        arguments saved (``mode``, ``factor``, ...) replace the
        constructor's, as in torch.

        Parameters
        ----------
        state_dict : mapping
            A :meth:`state_dict`, or torch's ``ReduceLROnPlateau``'s; a
            ``None`` in its ``_last_lr`` reads the optimizer's current rate.
            Its ``min_lrs``, when given per group (``default_min_lr`` is
            ``None``), must be one per parameter group of the optimizer.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        missing = [k for k in _STATE_KEYS if k not in state_dict]
        if missing:
            raise KeyError(f"state_dict has no {missing[0]!r}")
        unknown = [k for k in state_dict if k not in _STATE_KEYS]
        if unknown:
            raise KeyError(f"state_dict has an unexpected key {unknown[0]!r}")
        sd = state_dict
        mode = str(_choice(sd["mode"], "mode", ("min", "max")))
        factor = _v.nonneg(sd["factor"], "factor")
        if factor >= 1.0:
            raise ValueError(f"factor must be < 1, got {factor}")
        counts = {k: _count(sd[k], k) for k in ("patience", "cooldown", "last_epoch",
                                                "cooldown_counter", "num_bad_epochs")}
        threshold = _v.nonneg(sd["threshold"], "threshold")
        threshold_mode = str(_choice(sd["threshold_mode"], "threshold_mode", ("rel", "abs")))
        eps = _v.nonneg(sd["eps"], "eps")
        default = None if sd["default_min_lr"] is None else \
            _v.nonneg(sd["default_min_lr"], "default_min_lr")
        min_lrs = [_v.nonneg(x, f"min_lrs[{i}]") for i, x in enumerate(_list(sd, "min_lrs"))]
        best = _real(sd["best"], "best")
        _real(sd["mode_worse"], "mode_worse")  # torch's; derived from mode here
        rates = self._rates()
        if default is None and len(min_lrs) != len(rates):
            # else the first reduction would raise, epochs after the load
            raise ValueError(f"state_dict['min_lrs'] has {len(min_lrs)} entries but the "
                             f"optimizer has {len(rates)} parameter group"
                             f"{'' if len(rates) == 1 else 's'}")
        last = _list(sd, "_last_lr")
        last_lr = [rates[i] if x is None and i < len(rates) else _real(x, f"_last_lr[{i}]")
                   for i, x in enumerate(last)]
        self.mode, self.factor, self.threshold = mode, factor, threshold
        self.threshold_mode, self.eps = threshold_mode, eps
        self._default_min_lr, self.min_lrs, self.best = default, min_lrs, best
        self.patience, self.cooldown = counts["patience"], counts["cooldown"]
        self.last_epoch, self.cooldown_counter = counts["last_epoch"], counts["cooldown_counter"]
        self.num_bad_epochs = counts["num_bad_epochs"]
        self._last_lr = last_lr

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, best={self.best}, "
                f"num_bad_epochs={self.num_bad_epochs})")
