"""Learning-rate schedules.

The two course functions, :func:`update_lr` and :func:`schedule_lr_decay`,
take the epoch number and return the decayed rate.
"""

import math

from . import _validate as _v

__all__ = ["update_lr", "schedule_lr_decay"]


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
