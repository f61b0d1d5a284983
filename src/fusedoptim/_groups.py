"""Parameter groups: PyTorch's ``param_groups`` over dicts of arrays.

An optimizer holds one or more groups, each a :class:`ParamGroup`: a dict
with ``"params"`` (the group's ``{name: array}``, fixed once added) and every
hyperparameter of the class, ``"lr"`` included.  Assigning a hyperparameter
checks it at once (a bad value raises and changes nothing); checks that
involve several hyperparameters (SGD's ``nesterov``) and a schedule's value
are checked at the next step, before anything is written.

:func:`exclude_from_weight_decay` builds the two groups a Keras or optax user
reaches for: the parameters that decay, and those that do not.
"""

import copy
import functools
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from . import _validate as _v
from ._alloc import zeros_like_state

__all__ = ["GroupsMixin", "ParamGroup", "exclude_from_weight_decay"]


def _check_parameters(parameters, label="parameters"):
    _v._check_dict(parameters, label)
    if not parameters:
        raise ValueError(f"{label} is empty")
    if label == "parameters" and isinstance(parameters.get("params"), Mapping):
        raise TypeError(f"{label} is a parameter group, not a dict of arrays; pass a "
                        f"list of groups: [{{'params': ..., ...}}]")
    for name, p in parameters.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        if "\0" in name:  # np.savez cuts a zip member's name at a NUL
            raise ValueError(f"parameter name {name!r} contains a NUL character, "
                             f"which a checkpoint (np.savez) cannot store")
        label = f"parameters[{name!r}]"
        _v._check_array(p, label)
        _v._check_writeable(p, label)
        if not _v._is_dense(p):
            raise ValueError(f"{label} is not contiguous; fusedoptim updates arrays in "
                             f"place and never a copy")
    return parameters


def _check_disjoint(parameters):
    """Raise ``ValueError`` if two parameters share memory (one array under
    two names, or overlapping views): the step would write the same
    elements twice, so it is refused here rather than at every step."""
    pair = _v._find_overlap([(f"parameters[{name!r}]", p, True)
                             for name, p in parameters.items()])
    if pair is not None:
        raise _v.overlap(*pair)
    return parameters


_F = TypeVar("_F", bound=Callable[..., Any])


def _in_use(opt: Any, name: str) -> RuntimeError:
    if opt._busy_thread == threading.get_ident():
        return RuntimeError(f"{name}() called from within this optimizer's own step or load "
                            f"(a schedule, callback or signal handler): call it between steps")
    return RuntimeError("this optimizer is in use in another thread (a step, a load, a "
                        "snapshot or a new group); use an optimizer from one thread at a "
                        "time (or give each thread its own)")


def exclusive(method: _F) -> _F:
    """``method`` of an optimizer, run holding its lock (``_busy``): a step,
    a load, a snapshot or a new group, one at a time, none from within
    another (a schedule or signal handler during a step), else
    ``RuntimeError``.  ``with`` takes the lock in one instruction, so that
    an exception raised by a signal handler (Ctrl-C) as it is taken cannot
    leave it held; an ``acquire()`` before ``try`` could (20 of 300 Ctrl-C
    during training left the optimizer locked for good)."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        busy = self._busy
        if busy.locked():
            raise _in_use(self, method.__name__)
        with busy:  # (another thread that took it since: this one waits its turn)
            self._busy_thread = threading.get_ident()
            try:
                return method(self, *args, **kwargs)
            finally:
                self._busy_thread = None

    return run  # type: ignore[return-value]




class CheckedGroup(dict):
    """A group dict whose writes go through ``__setitem__`` and ``update``
    (which subclasses define to check them): dict's own ``setdefault`` and
    ``|=`` would store a value unchecked, and no key can be removed.  The
    base of :class:`ParamGroup` and of the distributed optimizers' view of
    their one group."""

    __slots__ = ()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __ior__(self, other: Any) -> "CheckedGroup":  # type: ignore[misc]
        self.update(other)  # dict's own |= would skip the checks
        return self

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a parameter group's keys cannot be removed")

    __delitem__ = pop = popitem = clear = _refuse  # type: ignore[assignment]

    # Copies (a logger's snapshot, an LR-range test's) are plain dicts, with
    # "params" a dict: detached from the optimizer, as torch's groups copy.
    # Rebuilding this class would go through the checked __setitem__.
    def _plain(self) -> dict:
        return {k: dict(v) if k == "params" else v for k, v in self.items()}

    def __copy__(self) -> dict:
        return dict(self)

    def __deepcopy__(self, memo: dict) -> dict:
        return copy.deepcopy(self._plain(), memo)

    def __reduce__(self) -> tuple:
        return dict, (self._plain(),)


class ParamGroup(CheckedGroup):
    """One parameter group of an optimizer (see the module docstring).

    Reading works as for any dict.  ``group[key] = value`` (and ``update``,
    ``setdefault``, ``|=``) checks ``value`` as the constructor would and raises
    ``KeyError`` for a key that is not a hyperparameter of the optimizer;
    ``"params"`` cannot be replaced (use ``add_param_group``) and no key can
    be removed.
    """

    __slots__ = ("_owner",)

    def __init__(self, owner: Any, values: dict) -> None:
        super().__init__(values)
        self._owner = owner

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, self._owner._check_group_value(key, value))
        self._owner._groups_changed()

    def update(self, *args: Any, **kwargs: Any) -> None:
        new = dict(*args, **kwargs)
        checked = {k: self._owner._check_group_value(k, v) for k, v in new.items()}
        dict.update(self, checked)  # all checked first: a bad value changes nothing
        self._owner._groups_changed()


def group_params(params: Any, label: str) -> Mapping:
    """A group's ``"params"`` as a read-only view of a dict of arrays (the
    arrays checked by the optimizer)."""
    _v._check_dict(params, label)
    if not params:
        raise ValueError(f"{label} is empty")
    return MappingProxyType(params)


class GroupsMixin:
    """The parameter-group part of :class:`fusedoptim.Optimizer`: the groups,
    their checks, their state arrays and the learning-rate accessors.  The
    optimizer supplies ``_groups``, ``_group_t0``, ``_params``, ``_state``,
    ``_plan``, ``_checks`` (hyperparameter name to check), ``defaults``,
    ``_t``, ``_last_lrs``, ``_busy``, ``check`` and ``initial_value``."""

    # Declared for type checkers only (set by Optimizer.__init__).
    _groups: list
    _group_t0: list
    _params: dict
    _state: dict
    _last_lrs: Any
    _busy: Any
    _busy_thread: Any

    # --- parameter groups -----------------------------------------------------

    def _check_group_value(self, key, value):
        """``value`` checked as hyperparameter ``key`` of a group."""
        if key == "lr":
            if isinstance(value, type):  # callable, but calling it makes a schedule
                raise TypeError(f"lr is the class {value.__name__}; pass an instance, "
                                f"e.g. {value.__name__}(...)")
            return value if callable(value) else _v.nonneg(value, "lr")
        check = self._checks.get(key)
        if check is None:
            if key == "params":
                raise TypeError("a group's 'params' cannot be replaced; use add_param_group")
            raise KeyError(f"{type(self).__name__} has no hyperparameter {key!r}")
        return check(value, key)

    def _groups_changed(self):
        self._plan = None

    def _new_group(self, group, label, taken=None):
        """A :class:`ParamGroup` from a user's group dict (checked; its names
        not in ``taken``, the names of the groups so far)."""
        if not isinstance(group, dict):
            raise TypeError(f"parameters must be a dict of arrays or a list of group dicts; "
                            f"{label} is {type(group).__name__}")
        if "params" not in group:
            raise KeyError(f"{label} has no 'params'")
        params = _check_parameters(group["params"], f"{label}['params']")
        taken = self._params if taken is None else taken
        for name in params:
            if name in taken:
                raise ValueError(f"parameter {name!r} is in two parameter groups")
        values = dict(self.defaults)
        for key, value in group.items():
            if key != "params":
                if not isinstance(key, str):
                    raise TypeError(f"{label} keys must be str, got {key!r}")
                values[key] = self._check_group_value(key, value)
        self.check(values)
        return ParamGroup(self, {"params": group_params(dict(params), label), **values})

    def _add_group(self, group):
        """Append ``group`` and allocate its parameters' state for every
        slot that is on (in the reduced-precision format, if any)."""
        lowp = getattr(self, "_lowp", None)  # (set after the constructor's groups)
        if lowp is not None:
            lowp.add_group(self, group)
        else:
            for label in self._state:
                self._state[label].update(self._slot_arrays(label, group))
        self._groups.append(group)
        self._group_t0.append(self._t)
        self._plan = None

    def _slot_arrays(self, label, group):
        """Fresh state arrays of slot ``label`` for ``group``'s parameters."""
        slot = self.state_names.index(label)
        fill = self.initial_value(label, group)
        out = {}
        for name, p in group["params"].items():
            a = zeros_like_state(p, slot)
            if fill != 0.0:
                a.fill(fill)
            out[name] = a
        return out

    @property
    def param_groups(self) -> list:
        """The parameter groups, PyTorch's shape: a list of dicts holding
        ``"params"`` (the group's ``{name: array}``, read-only) and every
        hyperparameter, ``"lr"`` included (a float or a schedule).  Assign
        a group's hyperparameters between steps (``opt.param_groups[0]["lr"]
        = 0.01``): the value is checked at once.  A state slot that a new
        setting switches on (e.g. ``amsgrad``) starts at its initial value
        (PyTorch's SGD starts a momentum buffer from the gradient instead;
        that differs when ``dampening != 0``)."""
        return list(self._groups)

    @exclusive
    def add_param_group(self, param_group: dict) -> None:
        """Add a parameter group, as ``torch.optim``'s ``add_param_group``.

        Its bias corrections and first-step behaviour count its own steps,
        as in PyTorch.  Its ``"lr"`` schedule, though, is called with the
        optimizer's count ``opt.t``, as every group's is: added at ``opt.t ==
        100``, the group's first step takes ``schedule(100)``.  For a
        schedule ``s`` counted from the group's own first step, pass ``"lr":
        lambda t, i=len(opt.param_groups): s(t - opt.group_starts[i])``: its
        first step takes ``s(0)``, and an optimizer rebuilt the same way
        resumes it, as ``load_state_dict`` restores :attr:`group_starts`.
        (``lambda t, t0=opt.t: s(t - t0)`` starts alike but does not resume:
        rebuilt before the load, it binds the new optimizer's ``t``.)

        Parameters
        ----------
        param_group : dict
            ``{"params": {name: array}, hyperparameter: value, ...}``: new
            parameter names (in no other group); the hyperparameters it
            leaves out take the constructor's values (``opt.defaults``).
            Checked first: a bad group raises and adds nothing.
        """
        group = self._new_group(param_group, "param_group")
        flat = dict(self._params)
        flat.update(group["params"])
        _check_disjoint(flat)
        lowp = getattr(self, "_lowp", None)
        if lowp is not None:
            lowp.check_group(self, group)
        self._add_group(group)
        self._params = flat

    @property
    def group_starts(self) -> list[int]:
        """``opt.t`` when each parameter group was added (0 for the
        constructor's): a group's own steps are ``opt.t -
        opt.group_starts[i]``.  Read-only; restored by ``load_state_dict``."""
        return list(self._group_t0)

    def _common(self, key):
        """The value of ``key`` in every group (one group: its value)."""
        groups = self._groups
        value = groups[0][key]
        for g in groups[1:]:
            if g[key] != value:
                raise ValueError(f"the parameter groups have different {key}; read "
                                 f"opt.param_groups[i][{key!r}]")
        return value

    @property
    def lr(self) -> float | Callable[[int], float]:
        """Learning rate: a float ``>= 0`` or a schedule ``step -> float``.
        With several groups, the one they share (``ValueError`` when they
        differ); setting it sets every group's."""
        return self._common("lr")

    @lr.setter
    def lr(self, value: float | Callable[[int], float]) -> None:
        value = self._check_group_value("lr", value)
        for g in self._groups:
            dict.__setitem__(g, "lr", value)
        self._plan = None

    def _lr_of(self, group):
        lr = group["lr"]
        if not callable(lr):
            return lr
        value = lr(self._t)
        if type(value) is float and 0.0 <= value < math.inf:  # the usual case, cheaply
            return value
        return _v.nonneg(value, f"lr schedule value at step {self._t}")

    @property
    def current_lrs(self) -> list:
        """Each group's learning rate for the next step (a schedule's value
        at ``t``)."""
        return [self._lr_of(g) for g in self._groups]

    @property
    def current_lr(self) -> float:
        """The learning rate of the next step, the one every group shares
        (``ValueError`` when they differ: see ``current_lrs``)."""
        lrs = self.current_lrs
        if any(x != lrs[0] for x in lrs):
            raise ValueError("the parameter groups have different learning rates; "
                             "read opt.current_lrs")
        return lrs[0]

    @property
    def last_lrs(self) -> list | None:
        """Each group's learning rate in the last step taken (``None``
        before the first, and after ``load_state_dict``)."""
        return None if self._last_lrs is None else list(self._last_lrs)

    @property
    def last_lr(self) -> float | None:
        """The learning rate of the last step taken, shared by every group
        (``ValueError`` when they differ: see ``last_lrs``)."""
        lrs = self._last_lrs
        if lrs is None:
            return None
        if any(x != lrs[0] for x in lrs):
            raise ValueError("the parameter groups had different learning rates; "
                             "read opt.last_lrs")
        return lrs[0]


def exclude_from_weight_decay(parameters: dict[str, np.ndarray],
                              predicate: Callable[[str, np.ndarray], bool] | None = None,
                              *, var_names: Iterable[str] | None = None) -> list[dict]:
    r"""Split parameters into a group that decays and one that does not.

    The weight-decay exclusion of Keras (``exclude_from_weight_decay(
    var_names=...)``) and optax (a mask), as parameter groups::

        opt = fusedoptim.AdamW(fusedoptim.exclude_from_weight_decay(params),
                               lr=1e-3, weight_decay=0.01)

    Parameters
    ----------
    parameters : dict of str to ndarray
        The parameters, in the order the groups keep.
    predicate : callable, optional
        ``predicate(name, array) -> bool``: True excludes the parameter
        from weight decay.
    var_names : iterable of str, optional
        Regular expressions; a parameter whose name matches one of them
        (``re.search``, as Keras does) is excluded.  With neither
        ``predicate`` nor ``var_names``, the 1-d (and 0-d) arrays are
        excluded (biases, the scales of normalization layers), optax's and
        PyTorch's usual rule.  The course's biases are ``(n, 1)`` arrays:
        exclude them by name, e.g. ``var_names=[r"^b\d+$"]``.

    Returns
    -------
    list of dict
        ``[{"params": decayed}, {"params": excluded, "weight_decay": 0.0}]``
        without the empty one; pass it as an optimizer's ``parameters``
        (other hyperparameters come from the constructor's arguments).
    """
    _v._check_dict(parameters, "parameters")
    if predicate is not None and not callable(predicate):
        raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
    patterns = []
    if var_names is not None:
        if isinstance(var_names, str):
            raise TypeError("var_names must be an iterable of str, not a str")
        for k, pat in enumerate(var_names):
            if not isinstance(pat, str):
                raise TypeError(f"var_names[{k}] must be a str, got {type(pat).__name__}")
            try:
                patterns.append(re.compile(pat))
            except re.error as exc:
                raise ValueError(f"var_names[{k}] is not a regular expression: {exc}") \
                    from None
    if predicate is None and var_names is None:
        def predicate(name, p):
            return np.ndim(p) <= 1
    decayed: dict = {}
    excluded: dict = {}
    for name, p in parameters.items():
        out = bool(predicate(name, p)) if predicate is not None else False
        if not out and isinstance(name, str):
            out = any(pat.search(name) for pat in patterns)
        (excluded if out else decayed)[name] = p
    groups: list[dict] = []
    if decayed:
        groups.append({"params": decayed})
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0})
    if not groups:
        raise ValueError("parameters is empty")
    return groups
