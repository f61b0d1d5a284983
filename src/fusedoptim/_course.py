"""The course's two learning-rate decays, functions of the epoch number
(re-exported by :mod:`fusedoptim.schedules`, whose ``InverseTimeDecay``
gives the same values as a schedule)."""

import math

from . import _validate as _v

__all__ = ["update_lr", "schedule_lr_decay"]


def _checked(learning_rate0: float, epoch_num: float,
             decay_rate: float) -> tuple[float, float, float]:
    """The three arguments both functions share, each checked ``>= 0``."""
    return (_v.nonneg(learning_rate0, "learning_rate0"), _v.nonneg(epoch_num, "epoch_num"),
            _v.nonneg(decay_rate, "decay_rate"))


def update_lr(learning_rate0: float, epoch_num: float, decay_rate: float) -> float:
    r"""Inverse-time decay on every epoch (the course's ``update_lr``).

    .. math:: \alpha = \frac{\alpha_0}{1 + r\, e}

    In words: ``learning_rate0 / (1 + decay_rate * epoch_num)``, bit for bit
    ``InverseTimeDecay(learning_rate0, 1, decay_rate)(epoch_num)``.

    Parameters
    ----------
    learning_rate0 : float
        :math:`\alpha_0 \ge 0`, the rate at epoch 0.
    epoch_num : float
        :math:`e \ge 0`, the epoch number.
    decay_rate : float
        :math:`r \ge 0`.

    Returns
    -------
    float
        :math:`\alpha`, the learning rate of epoch ``epoch_num``.
    """
    lr0, epoch, rate = _checked(learning_rate0, epoch_num, decay_rate)
    return lr0 / (1 + rate * epoch)


def schedule_lr_decay(learning_rate0: float, epoch_num: float, decay_rate: float,
                      time_interval: float = 1000) -> float:
    r"""Inverse-time decay in steps of ``time_interval`` epochs (the course's
    ``schedule_lr_decay``).

    .. math:: \alpha = \frac{\alpha_0}{1 + r \lfloor e / k \rfloor}

    In words: ``learning_rate0 / (1 + decay_rate * floor(epoch_num /
    time_interval))``, bit for bit ``InverseTimeDecay(learning_rate0,
    time_interval, decay_rate, staircase=True)(epoch_num)``.

    Parameters
    ----------
    learning_rate0 : float
        :math:`\alpha_0 \ge 0`, the rate of the first ``time_interval``
        epochs.
    epoch_num : float
        :math:`e \ge 0`, the epoch number.
    decay_rate : float
        :math:`r \ge 0`.
    time_interval : float
        :math:`k > 0`, the epochs between two decays.

    Returns
    -------
    float
        :math:`\alpha`, the learning rate of epoch ``epoch_num``.
    """
    lr0, epoch, rate = _checked(learning_rate0, epoch_num, decay_rate)
    interval = _v.real(time_interval, "time_interval")
    if interval <= 0:
        raise ValueError(f"time_interval must be > 0, got {interval}")
    return lr0 / (1 + rate * math.floor(epoch / interval))
