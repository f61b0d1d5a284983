"""Checkpoints of an optimizer: a flat dict of arrays and scalars, no pickle.

:class:`Checkpointing` is the part of :class:`fusedoptim.Optimizer` that
writes and reads that dict; the optimizer supplies ``_groups`` (its
parameter groups), ``_group_t0``, ``_opts`` (``max_grad_norm``,
``skip_nonfinite``), ``_state`` (``{slot: {name: array}}``), ``_t``,
``skipped_steps``, ``last_grad_norm``, ``_params``, ``_plan``, ``_lowp``
(the reduced-precision state's format, or ``None``), ``_busy``,
``family``, ``state_names``, ``kernel_args`` and ``_slot_arrays``.
"""

import numbers
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _validate as _v
from ._groups import exclusive

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


#: Settings that ``state_dict`` leaves out when they are ``None``: there a
#: missing key is the value ``None``, not a damaged checkpoint.
_ABSENT_WHEN_NONE = frozenset({"hp/max_grad_norm"})


def _entry(sd, key):
    """``sd[key]``, or ``KeyError`` naming the missing key."""
    try:
        return sd[key]
    except KeyError:
        raise KeyError(f"state_dict has no {key!r}") from None


def _check_class(optimizer, sd):
    """Raise unless ``sd`` is a checkpoint of ``optimizer``'s class."""
    kind = _as_python(_entry(sd, "optimizer"))
    if kind != type(optimizer).__name__:
        raise ValueError(f"state_dict is from {kind!r}, not {type(optimizer).__name__!r}")


def _groups_mismatch(saved, mine):
    plural = "" if saved == 1 else "s"
    return ValueError(f"state_dict has {saved} parameter group{plural} but this "
                      f"optimizer has {mine}")


def _same_setting(saved, value):
    if value is None or isinstance(value, bool):
        return type(saved) is type(value) and saved == value
    return (isinstance(saved, numbers.Real) and not isinstance(saved, (bool, np.bool_))
            and float(saved) == value)


def _entries(state_dict):
    """The checkpoint's entries as a plain dict, each read once (an NpzFile
    reads from disk on every access); keys must be str."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
    sd = {}
    for key in state_dict:
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {key!r}")
        try:
            sd[key] = state_dict[key]
        except (ValueError, OSError, EOFError) as exc:
            # e.g. an object array in an .npz loaded with allow_pickle=False
            raise ValueError(f"state_dict[{key!r}] cannot be read: {exc}") from None
    return sd


class Checkpointing:
    """``state_dict``, ``load_state_dict`` and the checks and copies behind it."""

    # Declared for type checkers only (set by Optimizer.__init__).
    _groups: list
    _group_t0: list
    _opts: dict
    _state: dict
    _busy: threading.Lock
    _lowp: Any

    if TYPE_CHECKING:
        @property
        def skipped_steps(self) -> int: ...

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments but the parameters, so that
        ``type(opt)(params, **opt.get_config())`` builds an optimizer with
        the same settings (Keras' ``get_config``; ``opt.defaults`` holds the
        hyperparameters only).

        Returns
        -------
        dict
            ``lr`` and every hyperparameter as given to the constructor (the
            groups' own values are in ``param_groups``), ``max_grad_norm``,
            ``skip_nonfinite``, ``state_dtype``, ``state_rounding`` and
            ``state_seed``.
        """
        lowp = self._lowp
        return {**self.defaults, **self._opts,  # type: ignore[attr-defined]
                "state_dtype": None if lowp is None else lowp.dtype,
                "state_rounding": None if lowp is None else lowp.rounding,
                "state_seed": 0 if lowp is None else lowp.seed}

    def _flat_hp(self, group=None):
        """Checkpoint keys and values of ``group``'s hyperparameters (``lr``
        aside), then of the optimizer's options; one group: its own."""
        group = self._groups[0] if group is None else group
        items = [(h.name, group[h.name]) for h in self.hyper]
        items += list(self._opts.items())
        return [kv for name, value in items for kv in _flat_keys(name, value)]

    def _group_keys(self):
        """Per group: its key prefix, its hyperparameters' flat keys and
        values (options excluded), for the several-group format."""
        return [(f"group/{i}/", [kv for h in self.hyper
                                 for kv in _flat_keys(h.name, g[h.name])])
                for i, g in enumerate(self._groups)]

    @exclusive
    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the optimizer, as a flat dict of NumPy arrays and
        Python scalars (``np.savez(path, **sd)`` saves it; ``np.load(path,
        allow_pickle=False)`` reads it back).

        Returns
        -------
        dict of str to ndarray or scalar
            A fresh dict (the state arrays are copies), with the keys below.

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
            A copy of each state array, e.g. ``"state/exp_avg/W1"``; a slot
            that a setting switched on since the last step is included at
            its initial value (an optimizer built with the settings saved
            has it), and one switched on and off again is kept.
        ``"state_dtype"``, ``"state_rounding"``, ``"state_seed"``
            With reduced-precision state only: its format, its rounding and
            the seed of stochastic rounding (modulo 2**32, all the rounding
            uses).  Loading checks them: the same codes decoded under another
            format, or rounded under another seed, would continue another run.
        ``"params"``, ``"shape/<name>"``, ``"order/<name>"``
            With reduced-precision state only, whose arrays are flat: the
            parameter names in order (every group's, in group order; a NumPy
            string array), and each
            parameter's shape (int64) and memory order (``"C"`` or ``"F"``).
            Loading refuses another shape, or another memory order of a
            parameter with two axes longer than 1 (the flat state would go
            to other elements), and, with stochastic rounding, which counts
            elements in parameter order, another order of the names.

        With several parameter groups, ``"lr"`` and the groups'
        hyperparameters are per group instead: ``"groups"`` (their number),
        then for group ``i``: ``"group/<i>/params"`` (its parameter names, a
        NumPy string array), ``"group/<i>/lr"`` (when a float),
        ``"group/<i>/hp/<name>"`` and ``"group/<i>/t0"`` (``t`` when it was
        added); ``"hp/max_grad_norm"`` and ``"hp/skip_nonfinite"`` stay
        global.  A one-group checkpoint keeps the keys above.

        The parameters themselves are not included: save them next to it.

        Raises
        ------
        RuntimeError
            The optimizer is in use in another thread, or this is called
            from within its step (a schedule or signal handler): a snapshot
            then would mix two steps.
        """
        return self._state_dict()

    def _state_dict(self):
        sd = {"optimizer": type(self).__name__, "t": self._t,
              "skipped_steps": self.skipped_steps}
        if len(self._groups) == 1:
            lr = self._groups[0]["lr"]
            if not callable(lr):
                sd["lr"] = lr
            hp = self._flat_hp()
        else:
            sd["groups"] = len(self._groups)
            for (prefix, flat), g, t0 in zip(self._group_keys(), self._groups,
                                             self._group_t0):
                sd[prefix + "params"] = np.array(list(g["params"]), dtype=str)
                if not callable(g["lr"]):
                    sd[prefix + "lr"] = g["lr"]
                for name, value in flat:
                    sd[prefix + "hp/" + name] = value
                sd[prefix + "t0"] = t0
            hp = [kv for name, value in self._opts.items() for kv in _flat_keys(name, value)]
        for name, value in hp:
            if value is not None:
                sd["hp/" + name] = value
        sd.update(self._state_format())
        if self._lowp is not None:
            sd.update(self._lowp.records(self))
        for label, d in list(self._state.items()) + list(self._pending_slots().items()):
            for name, a in d.items():
                sd[f"state/{label}/{name}"] = a.copy(order="K")
        return sd

    def _slots_on(self):
        """Labels of the state slots the groups' current settings switch on
        (the flags depend on the settings only, not on ``t``)."""
        fam = self.family
        if not fam.optional:
            return set(self.state_names)
        on = set()
        for g, t0 in zip(self._groups, self._group_t0):
            flags = fam.active_slots(self.kernel_args(g, 0.0, self._t + 1 - t0))
            on.update(label for label, x in zip(self.state_names, flags) if x)
        return on

    def _pending_slots(self):
        """The slots a setting switched on since the last step, at their
        initial values: the next step would add them, and an optimizer
        constructed with these settings has them (as ``_make_plan``)."""
        if self._plan is not None or self._lowp is not None:
            return {}
        on = self._slots_on()
        return {label: self._fresh_slot(label) for label in self.state_names
                if label in on and label not in self._state}

    def _fresh_slot(self, label):
        """Slot ``label``'s arrays for every group, at its initial value."""
        return {name: a for g in self._groups for name, a in self._slot_arrays(label, g).items()}

    def _state_format(self):
        """The checkpoint keys of the reduced-precision state's format
        (none for full-precision state)."""
        lowp = self._lowp
        if lowp is None:
            return {}
        return {"state_dtype": lowp.dtype, "state_rounding": lowp.rounding,
                "state_seed": lowp.seed % 2**32}

    def _check_state_format(self, sd):
        """Raise ``ValueError`` unless checkpoint ``sd`` holds state in this
        optimizer's format, rounding and seed (before the state arrays are
        compared, whose dtypes would only hint at it)."""
        mine = self._state_format()
        saved_dtype = _as_python(sd.get("state_dtype"))
        if saved_dtype is not None and not isinstance(saved_dtype, str):
            raise TypeError(f"state_dict['state_dtype'] must be a str, got "
                            f"{type(saved_dtype).__name__}")
        if saved_dtype != mine.get("state_dtype"):
            raise ValueError(f"state_dtype is {saved_dtype!r} in state_dict but "
                             f"{mine.get('state_dtype')!r} here")
        for key in ("state_rounding", "state_seed"):
            if key in mine:
                saved = _as_python(sd.get(key))
                if saved is None:
                    raise KeyError(f"state_dict has no {key!r}")
                if type(saved) is not type(mine[key]) or saved != mine[key]:
                    raise ValueError(f"{key} is {saved!r} in state_dict but {mine[key]!r} here")
        if self._lowp is not None:
            return set(mine) | self._lowp.check_records(self, sd)
        return set(mine)

    @exclusive
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` snapshot into this optimizer.

        The optimizer must have been built over parameters with the same
        names, shapes and dtypes and with the same hyperparameters (``lr``
        excepted).  The state arrays are copied into the optimizer's own
        arrays; ``t`` and ``skipped_steps`` are restored, and so is ``lr``
        when the checkpoint holds a float one (it then replaces this
        optimizer's ``lr``, schedule or not, as ``torch.optim`` restores its
        param groups' ``lr``); ``last_grad_norm`` is reset to ``None``.
        A state slot that the settings leave off is taken from the
        checkpoint when it holds one (kept after a setting switched it on
        and off), and dropped when it does not, so that switching it on
        again resumes as the saved optimizer would.  Reduced-precision
        state must also find the parameters' shapes, memory orders and
        (with stochastic rounding) order as saved (see :meth:`state_dict`);
        full-precision state loads over either memory order, but clipping
        and LAMB sum their norms in memory order, so a run resumed over
        another order differs from the saved one in the last bits.
        Everything is checked before anything is written: after a raise the
        optimizer is unchanged.

        Parameters
        ----------
        state_dict : mapping
            A dict from :meth:`state_dict`, or the ``NpzFile`` of
            ``np.load`` of one saved with ``np.savez``.

        Raises
        ------
        KeyError
            A key is missing.
        TypeError
            A value has the wrong type or dtype.
        ValueError
            Any other mismatch (class, shape, hyperparameter, groups).
        RuntimeError
            The optimizer is in use in another thread, or within its step.
        """
        self._load_state_dict(state_dict)

    def _load_state_dict(self, state_dict):
        sd = _entries(state_dict)

        def get(key):
            return _entry(sd, key)

        _check_class(self, sd)
        several = len(self._groups) > 1
        expected = {"optimizer", "t", "skipped_steps"}
        if several:
            hp = [("hp/" + k, v) for name, value in self._opts.items()
                  for k, v in _flat_keys(name, value)]
            # No "groups" key: the one-group layout (state_dict writes it
            # for several groups only).
            ngroups = _count(sd["groups"], "groups") if "groups" in sd else 1
            if ngroups != len(self._groups):
                raise _groups_mismatch(ngroups, len(self._groups))
            expected.add("groups")
        else:
            if "groups" in sd:
                raise _groups_mismatch(_count(sd["groups"], "groups"), 1)
            hp = [("hp/" + name, value) for name, value in self._flat_hp()]
            expected.add("lr")
        lrs, t0s = [], []
        for i, (prefix, flat) in enumerate(self._group_keys() if several else []):
            names = np.asarray(get(prefix + "params"))
            if names.ndim != 1 or names.dtype.kind != "U" or \
                    names.tolist() != list(self._groups[i]["params"]):
                raise ValueError(f"state_dict[{prefix + 'params'!r}] does not name the "
                                 f"parameters of param_groups[{i}]")
            hp += [(prefix + "hp/" + name, value) for name, value in flat]
            lrs.append(_v.nonneg(_as_python(sd[prefix + "lr"]),
                                 f"state_dict[{prefix + 'lr'!r}]")
                       if prefix + "lr" in sd else None)
            t0s.append(_count(get(prefix + "t0"), prefix + "t0"))
            expected.update((prefix + "params", prefix + "lr", prefix + "t0"))
        for key, value in hp:
            if key in sd:
                saved = _as_python(sd[key])
            elif value is None:
                continue
            elif key in _ABSENT_WHEN_NONE:
                saved = None  # unset when saved: a difference like any other
            else:
                get(key)
            if not _same_setting(saved, value):
                label = key[3:] if key.startswith("hp/") else key
                raise ValueError(f"{label} is {saved!r} in state_dict but {value!r} here")
            expected.add(key)
        expected.update(self._check_state_format(sd))
        t = _count(get("t"), "t")
        skipped = _count(get("skipped_steps"), "skipped_steps")
        if any(t0 > t for t0 in t0s):
            raise ValueError("state_dict has a group added after its step count t")
        if not several:
            lrs = [_v.nonneg(_as_python(sd["lr"]), "state_dict['lr']") if "lr" in sd else None]
        copies, slots = self._state_copies(sd, expected)
        for key in sd:
            if key not in expected:
                raise ValueError(f"state_dict has an unexpected key {key!r}")
        self._state = slots
        for live, a in copies:
            np.copyto(live, a)
        self._t = t
        self._skipped_steps = skipped
        self._last_grad_norm = None
        self._last_lrs = None
        if several:
            self._group_t0[:] = t0s
        for g, lr in zip(self._groups, lrs):
            if lr is not None:
                dict.__setitem__(g, "lr", lr)
        self._plan = None

    def _state_copies(self, sd, expected):
        """``(live state array, checkpoint array)`` pairs, every checkpoint
        array checked against the live one, and the state slots after the
        load; their keys are added to ``expected``.  A slot that settings
        switched on and then off is kept (``_make_plan``): the checkpoint's
        is taken, and one it lacks is dropped, so a later switch resumes as
        the saved optimizer would."""
        slots = dict(self._state)
        if self._lowp is None:
            on = self._slots_on()
            for label in self.state_names:
                saved = any(f"state/{label}/{name}" in sd for name in self._params)
                if label not in slots and saved:
                    slots[label] = self._fresh_slot(label)
                elif label in slots and not saved and label not in on:
                    del slots[label]
        copies = []
        for label, d in slots.items():
            for name, live in d.items():
                key = f"state/{label}/{name}"
                expected.add(key)
                a = _entry(sd, key)
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"state_dict[{key!r}] must be a numpy.ndarray, "
                                    f"got {type(a).__name__}")
                if a.dtype != live.dtype:
                    raise TypeError(f"state_dict[{key!r}] has dtype {a.dtype} but this "
                                    f"optimizer's state array has {live.dtype}")
                if a.shape != live.shape:
                    raise ValueError(f"state_dict[{key!r}] has shape {a.shape} but this "
                                     f"optimizer's state array has shape {live.shape}")
                copies.append((live, a))
        return copies, slots

    def save(self, path: str | os.PathLike[str], parameters: bool = False) -> None:
        """Write a safetensors checkpoint: :func:`fusedoptim.save_checkpoint`.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (replaced; an interrupted save leaves the old one).
        parameters : bool
            Also store the parameters, as ``"parameters/<name>"``.
        """
        from ._safetensors import save_checkpoint
        save_checkpoint(self, path, parameters)

    def load(self, path: str | os.PathLike[str], parameters: bool = True) -> None:
        """Restore a safetensors checkpoint: :func:`fusedoptim.load_checkpoint`.

        Parameters
        ----------
        path : str or os.PathLike
            A file written by :meth:`save`; everything is checked before
            anything is written, and a mismatch raises with nothing changed.
        parameters : bool
            Copy the saved parameters into the parameter arrays (in place)
            when the file holds them.
        """
        from ._safetensors import load_checkpoint
        load_checkpoint(self, path, parameters)
