"""Checkpoints of an optimizer: a flat dict of arrays and scalars, no pickle.

:class:`Checkpointing` is the part of :class:`fusedoptim.Optimizer` that
writes and reads that dict; the optimizer supplies ``_hp`` (checked
hyperparameters), ``_state`` (``{slot: {name: array}}``), ``_lr``, ``_t``,
``skipped_steps`` and ``last_grad_norm``.
"""

import numbers
import os
from collections.abc import Mapping

import numpy as np

from . import _validate as _v

__all__ = ["Checkpointing"]


def _flat_keys(name, value):
    """Checkpoint keys of one hyperparameter: a pair such as ``betas`` is
    kept as ``beta1``, ``beta2`` (scalars only in a checkpoint)."""
    if isinstance(value, tuple):
        stem = name[:-1] if name.endswith("s") else name
        return [(f"{stem}{i + 1}", x) for i, x in enumerate(value)]
    return [(name, value)]


def _as_python(x):
    """A checkpoint scalar as a Python object (``np.load`` gives 0-d arrays)."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x.item()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _count(x, key):
    x = _as_python(x)
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"state_dict[{key!r}] must be an integer, got {type(x).__name__}")
    if x < 0:
        raise ValueError(f"state_dict[{key!r}] must be >= 0, got {x}")
    if x >= 2**63:  # what np.savez stores as int64; a step count fits far below
        raise ValueError(f"state_dict[{key!r}] must be < 2**63, got {x}")
    return int(x)


def _same_setting(saved, value):
    if value is None or isinstance(value, bool):
        return type(saved) is type(value) and saved == value
    return (isinstance(saved, numbers.Real) and not isinstance(saved, (bool, np.bool_))
            and float(saved) == value)


class Checkpointing:
    """``state_dict`` and the checks and copies behind ``load_state_dict``."""

    def _flat_hp(self):
        return [kv for name, value in self._hp.items() for kv in _flat_keys(name, value)]

    def state_dict(self):
        """A snapshot of the optimizer, as a flat dict of NumPy arrays and
        Python scalars (``np.savez(path, **sd)`` saves it; ``np.load(path,
        allow_pickle=False)`` reads it back).

        Keys
        ----
        ``"optimizer"``
            The class name.
        ``"t"``, ``"skipped_steps"``
            The step counts.
        ``"lr"``
            The learning rate, when it is a float.  A schedule is code, not
            data: it is not saved (no ``"lr"`` key); pass it to the new
            optimizer's constructor, and the restored ``t`` resumes it where
            it stopped.
        ``"hp/<name>"``
            Every other hyperparameter (``max_grad_norm`` only when set).
        ``"state/<slot>/<parameter name>"``
            A copy of each state array, e.g. ``"state/exp_avg/W1"``.

        The parameters themselves are not included: save them next to it.
        """
        sd = {"optimizer": type(self).__name__, "t": self._t,
              "skipped_steps": self.skipped_steps}
        if not callable(self._lr):
            sd["lr"] = self._lr
        for name, value in self._flat_hp():
            if value is not None:
                sd["hp/" + name] = value
        for label, d in self._state.items():
            for name, a in d.items():
                sd[f"state/{label}/{name}"] = a.copy(order="K")
        return sd

    def _load_state_dict(self, state_dict):
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        sd = {}
        for key in state_dict:
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r}")
            try:
                sd[key] = state_dict[key]  # an NpzFile reads from disk on each access
            except (ValueError, OSError, EOFError) as exc:
                # e.g. an object array in an .npz loaded with allow_pickle=False
                raise ValueError(f"state_dict[{key!r}] cannot be read: {exc}") from None

        def get(key):
            try:
                return sd[key]
            except KeyError:
                raise KeyError(f"state_dict has no {key!r}") from None

        kind = _as_python(get("optimizer"))
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is from {kind!r}, not {type(self).__name__!r}")
        for name, value in self._flat_hp():
            key = "hp/" + name
            if key in sd:
                saved = _as_python(sd[key])
            elif value is None:
                continue
            else:
                get(key)
            if not _same_setting(saved, value):
                raise ValueError(f"{name} is {saved!r} in state_dict but {value!r} here")
        t = _count(get("t"), "t")
        skipped = _count(get("skipped_steps"), "skipped_steps")
        lr = None
        if "lr" in sd:
            lr = _v.nonneg(_as_python(sd["lr"]), "state_dict['lr']")
        copies = []
        expected = {"optimizer", "t", "skipped_steps", "lr"}
        expected.update("hp/" + name for name, v in self._flat_hp() if v is not None)
        for label, d in self._state.items():
            for name, live in d.items():
                key = f"state/{label}/{name}"
                expected.add(key)
                a = get(key)
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"state_dict[{key!r}] must be a numpy.ndarray, "
                                    f"got {type(a).__name__}")
                if a.dtype != live.dtype:
                    raise TypeError(f"state_dict[{key!r}] has dtype {a.dtype} but the "
                                    f"parameter has {live.dtype}")
                if a.shape != live.shape:
                    raise ValueError(f"state_dict[{key!r}] has shape {a.shape} but the "
                                     f"parameter has shape {live.shape}")
                copies.append((live, a))
        for key in sd:
            if key not in expected:
                raise ValueError(f"state_dict has an unexpected key {key!r}")
        for live, a in copies:
            np.copyto(live, a)
        self._t = t
        self._skipped_steps = skipped
        self._last_grad_norm = None
        if lr is not None:
            self._lr = lr

    def save(self, path: str | os.PathLike[str], parameters: bool = False) -> None:
        """Write a safetensors checkpoint: :func:`fusedoptim.save_checkpoint`."""
        from ._safetensors import save_checkpoint
        save_checkpoint(self, path, parameters)

    def load(self, path: str | os.PathLike[str], parameters: bool = True) -> None:
        """Restore a safetensors checkpoint: :func:`fusedoptim.load_checkpoint`."""
        from ._safetensors import load_checkpoint
        load_checkpoint(self, path, parameters)
