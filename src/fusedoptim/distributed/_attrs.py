"""The attributes a distributed optimizer shares with the single-process one:
read-only pass-throughs to its inner optimizer, its one parameter group,
its ``repr``."""

from collections.abc import Callable
from typing import Any

from .._groups import CheckedGroup

__all__ = ["InnerAttributes"]


class _GroupView(CheckedGroup):
    """The one group of a distributed optimizer: the inner optimizer's group
    with the full parameters' names; assignments go to the inner group,
    which checks them (an unknown key raises ``KeyError``), and no key can
    be removed, as with :class:`fusedoptim.ParamGroup`."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any, names: list) -> None:
        super().__init__(inner.param_groups[0])
        dict.__setitem__(self, "params", names)
        self._inner = inner

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "params":
            raise TypeError("a distributed optimizer's params cannot be replaced")
        group = self._inner.param_groups[0]
        group[key] = value  # checked (and refused for an unknown key) there
        dict.__setitem__(self, key, group[key])

    def update(self, *args: Any, **kwargs: Any) -> None:
        new = dict(*args, **kwargs)
        if "params" in new:
            raise TypeError("a distributed optimizer's params cannot be replaced")
        group = self._inner.param_groups[0]
        group.update(new)  # every value checked before any is set
        dict.update(self, {k: group[k] for k in new})


class InnerAttributes:
    """What :class:`Distributed` reads from its inner optimizer (set by
    its constructor): the same names as on the single-process optimizer,
    read-only except ``lr`` and ``param_groups``' hyperparameters."""

    optimizer_class: Any
    inner: Any
    world_size: int
    _params: dict
    _names: list

    @property
    def parameters(self) -> dict:
        """The dict of parameters updated in place (the full tensors)."""
        return self._params

    @property
    def t(self) -> int:
        """Steps taken (skipped steps not counted)."""
        return self.inner.t

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient."""
        return self.inner.skipped_steps

    @property
    def last_grad_norm(self) -> float | None:
        """The global norm of the last mean gradient, or ``None``."""
        return self.inner.last_grad_norm

    @property
    def max_grad_norm(self) -> float | None:
        """Global-norm clipping threshold, or None (fixed at construction)."""
        return self.inner.max_grad_norm

    @property
    def skip_nonfinite(self) -> bool:
        """Whether non-finite steps are skipped (fixed at construction)."""
        return self.inner.skip_nonfinite

    @property
    def defaults(self) -> dict:
        """The constructor's hyperparameters, ``lr`` included (a copy)."""
        return dict(self.inner.defaults)

    @property
    def lr(self) -> float | Callable[[int], float]:
        """Learning rate, a float or a schedule.  Set it alike on every rank:
        before each step the ranks compare ``lr`` (a float by its exact
        value, a schedule by its type) and a schedule's value for that step
        (bitwise), with ``t`` and the other hyperparameters; a difference, or
        a schedule that raises or gives an invalid value on any rank, raises
        ``ValueError`` on every rank before anything changes.  The step uses
        that value: a schedule is called once per step."""
        return self.inner.lr

    @lr.setter
    def lr(self, value: float | Callable[[int], float]) -> None:
        self.inner.lr = value

    @property
    def current_lr(self) -> float:
        """The learning rate of the next step (a schedule's value at ``t``;
        local: the ranks compare it when they step)."""
        return self.inner.current_lr

    @property
    def current_lrs(self) -> list:
        """``[current_lr]``: the one group's rate for the next step."""
        return self.inner.current_lrs

    @property
    def last_lr(self) -> float | None:
        """The learning rate of the last step taken (``None`` before the
        first and after a load)."""
        return self.inner.last_lr

    @property
    def last_lrs(self) -> list | None:
        """``[last_lr]``, or ``None``."""
        return self.inner.last_lrs

    @property
    def param_groups(self) -> list:
        """One parameter group (``params`` must be a dict: groups are not
        supported across ranks), ``torch.optim``-style: ``{"params": names,
        "lr": ..., <hyperparameter>: value, ...}``.  Assigning a
        hyperparameter sets the inner optimizer's group (checked as there), so
        :class:`~fusedoptim.lr_scheduler.ReduceLROnPlateau` and other
        schedulers drive it; set it alike on every rank.  Unknown keys and
        removals are refused, as on a single-process group."""
        return [_GroupView(self.inner, list(self._names))]

    def add_param_group(self, param_group: dict) -> None:
        """Refused: the distributed optimizers have one parameter group.

        Raises
        ------
        TypeError
            Always (on the calling rank; nothing is exchanged).
        """
        raise TypeError("add_param_group: parameter groups are not supported by the "
                        "distributed optimizers")

    def __getattr__(self, name: str) -> Any:
        # Hyperparameters (betas, momentum, ...) read through to the inner optimizer.
        inner = self.__dict__.get("inner")
        if inner is not None and any(h.name == name for h in self.optimizer_class.hyper):
            return getattr(inner, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        inner = self.__dict__.get("inner")
        if inner is None:  # a failed construction
            return f"<{type(self).__name__}, not constructed>"
        group = inner.param_groups[0]
        hp = ", ".join([f"{h.name}={group[h.name]!r}" for h in self.optimizer_class.hyper]
                       + [f"{k}={v!r}" for k, v in inner._opts.items()])
        if inner._lowp is not None:
            hp += f", {inner._lowp!r}"
        # The inner optimizer's repr, counted over the whole model (a
        # sharded rank's inner optimizer holds pieces of it).
        return (f"{type(self).__name__}({self.optimizer_class.__name__}("
                f"{len(self._params)} parameters, lr={group['lr']!r}, {hp}, t={inner.t}), "
                f"world_size={self.world_size})")
