"""``copy.copy``, ``copy.deepcopy`` and ``pickle`` of an optimizer.

One ``__reduce__`` serves all three.  It rebuilds the copy as a user would:
the constructor over the parameter groups (the optimizer's own dicts of the
parameter arrays, with each group's hyperparameters) and ``get_config()``,
then ``load_state_dict`` of a ``state_dict()`` snapshot, which restores
``t``, ``skipped_steps``, the groups' step offsets and the state arrays.

The arrays are passed as objects, never copied here: ``copy.copy`` keeps
them (a new optimizer over the same parameters), while deepcopy and pickle
copy them through their memo, which the caller's own references share: in
``copy.deepcopy((params, opt))`` the copy steps the arrays of the copied
``params``.  The object is created first and built by ``__setstate__``, so
that a schedule holding the optimizer (a cycle) is copied too.

Beyond a checkpoint, a copy carries a schedule given as ``lr`` (as an
object), ``last_grad_norm`` and ``last_lrs``.  Attributes a caller set on
the optimizer are not carried (torch's copies carry its ``__dict__``): the
copy is what the constructor and ``load_state_dict`` make.
"""

from typing import Any

from ._groups import exclusive

__all__ = ["Copying"]


def _blank(cls: type) -> Any:
    """An uninitialized ``cls``, built by its ``__setstate__``."""
    return object.__new__(cls)


class _Private(dict):
    """The snapshot's ``state_dict``: its arrays are already its own copies,
    so deepcopy keeps them rather than copy them a second time (a large
    model's state is the bulk of a copy's memory)."""

    def __deepcopy__(self, memo: dict) -> "_Private":
        return self

    def __reduce__(self) -> tuple:
        return dict, (dict(self),)  # a plain dict in a pickle


class Copying:
    """The copy protocol of :class:`fusedoptim.Optimizer`: see the class
    docstring of ``Optimizer`` and the README's "Checkpoints"."""

    # Declared for type checkers only (set by Optimizer.__init__).
    _groups: list
    _state: dict
    _lowp: Any
    _last_grad_norm: Any
    _last_lrs: Any

    @exclusive
    def __reduce__(self) -> tuple:
        # Under the optimizer's lock: a copy taken while another thread
        # steps would otherwise mix two steps (it raises RuntimeError then).
        lowp = self._lowp
        if lowp is not None and (lowp.whole is not None or lowp.index_base or lowp.full_sizes):
            # Its rounding counts from this rank's place in the whole step,
            # which a lone copy would not know.
            raise TypeError(f"{type(self).__name__} holding a shard of a ShardedOptimizer "
                            f"cannot be copied or pickled")
        state = {
            "groups": [{**g, "params": dict(g["params"])} for g in self._groups],
            "config": self.get_config(),  # type: ignore[attr-defined]
            "state_dict": _Private(self._state_dict()),  # type: ignore[attr-defined]
            # Not in a checkpoint (load_state_dict resets them), but a
            # copy is the same optimizer: its next reads give the same.
            "last_grad_norm": self._last_grad_norm,
            "last_lrs": self._last_lrs,
            "slots": list(self._state),
        }
        return _blank, (type(self),), state

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["groups"], **state["config"])  # type: ignore[misc]
        self._load_state_dict(state["state_dict"])  # type: ignore[attr-defined]
        self._last_grad_norm = state["last_grad_norm"]
        self._last_lrs = state["last_lrs"]
        # A slot that a setting switched on since the last step is in the
        # constructor's state, not yet in the original's (its next step
        # adds it, at the same initial value): ``opt.state`` reads alike.
        for label in [x for x in self._state if x not in state["slots"]]:
            del self._state[label]
