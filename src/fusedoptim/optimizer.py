"""Optimizer objects for training loops: ``torch.optim``-style classes.

The base class of every optimizer: state, learning rate, clipping, skipping
and checkpoints.  Each optimizer owns its state, keyed by parameter name, and
runs a whole step as ONE fused multi-tensor call of the active backend
(``cython``, ``numba`` or ``numpy``; bit-for-bit identical).

The classes themselves are declared in :mod:`fusedoptim.families`, beside
their kernel family: a class names its ``family``, its hyperparameters
(``hyper``: name, default, check), the names of its state slots and how its
hyperparameters become the family's step keywords (``kernel_args``).  This
module derives the constructor, the read-only hyperparameter attributes and
the checkpoint keys from that declaration.

Common behaviour
----------------
Parameter groups
    ``parameters`` is a dict ``{name: array}`` (one group) or, as in
    PyTorch, a list of groups ``{"params": {name: array}, "lr": ...,
    "weight_decay": ..., ...}``, each overriding the constructor's values
    (``opt.defaults``); an unknown key raises, and a name may appear in one
    group only.  ``opt.param_groups`` lists them (dicts whose
    hyperparameters may be reassigned between steps, checked when set) and
    ``opt.add_param_group`` adds one; :func:`fusedoptim.exclude_from_weight_decay`
    builds the usual two.  ``step`` takes one gradient dict for all groups
    and runs them all in ONE fused call of the backend (its kernels take
    per-group hyperparameters; reduced-precision state: one call per group,
    after one check of the whole step); clipping and non-finite skipping
    use the one norm of all gradients.  The hyperparameter attributes
    (``opt.weight_decay``, ``opt.betas``, ``opt.lr``, ...) are the value
    every group shares; when the groups differ, reading one raises
    ``ValueError`` (read ``param_groups``).  Setting ``opt.lr`` sets all.
Gradients
    ``opt.step(grads)`` takes ``grads[name]`` or, as in the course notes,
    ``grads["d" + name]`` for each parameter ``name`` (other keys are
    ignored).  A parameter with neither raises ``KeyError``; one with both
    raises ``ValueError``.  A key that is another parameter's name is that
    parameter's gradient (``grads["decoder"]`` is never ``ecoder``'s).  The
    caller's gradients are never written (a ``defaultdict`` gains no key).
Learning rate
    ``opt.lr`` is a float or a schedule ``schedule(step) -> float`` (see
    :mod:`fusedoptim.schedules`), called once per step with ``opt.t``, the
    steps taken so far, as optax and Keras do: ``schedule(0)`` is the first
    update's rate.  ``opt.lr`` may be reassigned between steps (checked when
    set; a schedule's value when used).  ``opt.current_lr`` is the next
    step's rate, ``opt.last_lr`` the last one's (per group: ``current_lrs``,
    ``last_lrs``).
Clipping (``max_grad_norm``)
    The global L2 norm of all gradients is computed in float64 in a fixed,
    thread-independent order (``backend.grad_sumsq``); the gradients are
    scaled inside the fused step by ``min(1, max_grad_norm / (norm + 1e-6))``,
    as ``torch.nn.utils.clip_grad_norm_`` does.  ``opt.last_grad_norm`` is
    that norm, or ``None`` when no norm was computed (neither clipping nor
    ``skip_nonfinite``).
Bad steps (``skip_nonfinite``)
    When a gradient holds NaN or infinity the whole step is skipped:
    parameters, state and ``opt.t`` (so the schedule) are untouched,
    ``opt.skipped_steps`` grows by one and ``step`` returns ``False``.
    Without it such a step runs, clipped as ``clip_grad_norm_`` clips it:
    with ``max_grad_norm`` an infinite norm scales every gradient by 0 (an
    infinite element becomes NaN, the finite ones 0) and a NaN norm by NaN;
    NaN reaches the parameters, as it would with PyTorch.
Errors
    A step that raises (bad key, shape, dtype, a schedule's bad value, ...)
    changes nothing: not the parameters, the state, ``t``, ``skipped_steps``
    or ``last_grad_norm``.  Ctrl-C during a compiled step lands after it:
    the step is done and counted.
Checkpoints
    :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict`.
    ``max_grad_norm`` and ``skip_nonfinite`` are fixed at construction;
    the groups' hyperparameters change through ``param_groups`` only.
"""

import inspect
from dataclasses import replace
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _lowp, _validate as _v
from ._checkpoint import Checkpointing
from ._copying import Copying
from ._groups import (GroupsMixin, ParamGroup, _check_disjoint, _check_parameters,
                      exclusive, group_params)
from ._norm import clip_decision
from .backend import active as _backend

if TYPE_CHECKING:
    from .families import Family, Hyper, Torch

__all__ = ["Optimizer"]

#: ``Hyper.default`` of a required argument.
REQUIRED = inspect.Parameter.empty


def _hyper(name, doc):
    def get(self):
        return self._common(name)
    return property(get, doc=f"{doc}: the value of every parameter group (``ValueError`` "
                             f"when the groups differ; read ``param_groups[i][{name!r}]``).")


def _option(name, doc):
    return property(lambda self: self._opts[name], doc=f"{doc} (fixed at construction).")


def _nothing() -> None:
    pass


class Optimizer(Checkpointing, Copying, GroupsMixin):
    """Base class: parameter groups, state, learning rate, clipping,
    skipping, checkpoints.

    A subclass declares (see :mod:`fusedoptim.families`):

    ``family``
        The :class:`~fusedoptim.families.Family` whose step it runs.
    ``lr_default``
        The default learning rate (none: ``lr`` is required).
    ``hyper``
        Its other constructor arguments, as ``Hyper(name, default, check,
        doc)``, in signature order; each becomes a key of every parameter
        group and an attribute (the value the groups share).
    ``state_names``
        The name of each of the family's state slots (PyTorch's names).
    ``torch``
        PyTorch's counterpart, a :class:`~fusedoptim.families.Torch`
        (plain data), or ``None`` where ``torch.optim`` has none.
    ``kernel_args(hp, lr, t)``
        The family's step keywords for one group (``hp``: the group's
        hyperparameters) at its step ``t`` (from 1) and rate ``lr``.  The
        flags that switch a state slot on must depend on ``hp`` only.
    ``check(hp)`` (optional)
        Checks that involve several hyperparameters (of one group).
    ``initial_value(name, hp)`` (optional)
        The starting value of a state slot (default 0) for a group.

    Threads: the kernels release the GIL on large steps, so independent
    optimizers step in parallel; a ``step``, ``state_dict``, ``save``, copy,
    ``load_state_dict`` or ``add_param_group`` finding one in use (in
    another thread, or called from within its own step by a schedule or a
    signal handler) raises ``RuntimeError``.

    Copies: ``copy.deepcopy(opt)`` and ``pickle`` give an optimizer over
    copies of the parameters (the copied ``params``' arrays in
    ``copy.deepcopy((params, opt))``), ``copy.copy(opt)`` one over the same
    arrays; each with its own state, stepping as ``opt`` would, bit for bit.
    """

    family: "Family | None" = None
    lr_default: Any = REQUIRED
    hyper: "tuple[Hyper, ...]" = ()
    state_names: "tuple[str, ...]" = ()
    torch: "Torch | None" = None

    PARAMETERS_DOC = """parameters : dict of str to ndarray, or list of dict
        float32/float64 arrays, updated in place; or parameter groups as in
        PyTorch, ``[{"params": {name: array}, "lr": ..., ...}, ...]``, each
        overriding the other arguments (see ``param_groups``).  The
        optimizer keeps the arrays in a dict of its own
        (``opt.parameters``): a key added to or removed from the caller's
        dict later, or an array replaced there, does not change what it
        steps (``add_param_group`` adds parameters)."""

    COMMON_DOC = """max_grad_norm : float or None, keyword-only
        Clip the global L2 norm of all gradients (of every group) to this
        value (``>= 0``; ``0`` zeroes the gradients of every step whose
        gradients are finite, as ``clip_grad_norm_(grads, 0)`` does).
    skip_nonfinite : bool, keyword-only
        Skip the whole step when a gradient holds NaN or infinity.
    state_dtype : {None, "bfloat16", "int8"}, keyword-only
        Precision of the moments (Adam, AdamW, Momentum, SGD with momentum,
        RMSProp not centered without momentum, Adagrad, Lion; float32
        parameters; see the README's "Reduced-precision state").
    state_rounding : {None, "nearest", "stochastic"}, keyword-only
        Rounding of reduced-precision moments on store.
    state_seed : int, keyword-only
        Seed of stochastic rounding."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        P = inspect.Parameter
        params = [P("parameters", P.POSITIONAL_OR_KEYWORD),
                  P("lr", P.POSITIONAL_OR_KEYWORD, default=cls.lr_default)]
        # maximize keyword-only, as torch's: torch code passing foreach by position
        # (Adagrad, Adamax, Adadelta) would bind it to maximize, and ascend
        params += sorted((P(h.name, P.KEYWORD_ONLY if h.name == "maximize" else
                            P.POSITIONAL_OR_KEYWORD, default=h.default) for h in cls.hyper),
                         key=lambda p: p.kind)
        params += [P("max_grad_norm", P.KEYWORD_ONLY, default=None),
                   P("skip_nonfinite", P.KEYWORD_ONLY, default=False)]
        params += _lowp.SIGNATURE  # state_dtype, state_rounding, state_seed
        cls.__signature__ = inspect.Signature(params)
        for h in cls.hyper:
            if h.name not in cls.__dict__:
                setattr(cls, h.name, _hyper(h.name, h.doc))
        cls._checks = {h.name: h.check for h in cls.hyper}

    @classmethod
    def override(cls, **defaults):
        """``hyper`` with some defaults replaced (for a subclass)."""
        unknown = set(defaults) - {h.name for h in cls.hyper}
        if unknown:
            raise TypeError(f"{cls.__name__} has no hyperparameter {sorted(unknown)[0]!r}")
        return tuple(replace(h, default=defaults[h.name]) if h.name in defaults else h
                     for h in cls.hyper)

    @classmethod
    def check(cls, hp):
        """Checks across hyperparameters (none by default)."""

    def initial_value(self, name, hp):
        """Starting value of state slot ``name`` (0 by default)."""
        return 0.0

    def kernel_args(self, hp, lr, t):
        raise NotImplementedError

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self.family is None:
            raise TypeError("Optimizer is a base class; use one of fusedoptim.OPTIMIZERS")
        try:
            bound = self.__signature__.bind(*args, **kwargs)  # type: ignore[attr-defined]
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}(): {exc}") from None
        bound.apply_defaults()
        a = bound.arguments
        defaults = {"lr": self._check_group_value("lr", a["lr"])}
        defaults.update((h.name, h.check(a[h.name], h.name)) for h in self.hyper)
        self.check(defaults)
        mgn = a["max_grad_norm"]
        self._opts = {"max_grad_norm": None if mgn is None else _v.nonneg(mgn, "max_grad_norm"),
                      "skip_nonfinite": _v.flag(a["skip_nonfinite"], "skip_nonfinite")}
        #: The constructor's hyperparameters: each group's unless it overrides them.
        self.defaults = defaults
        self._groups = []
        self._group_t0 = []     # opt.t when each group was added (its steps: t - t0)
        self._params = {}
        self._state: dict = {}
        self._plan = None       # _make_plan() for the current group settings
        self._t = 0
        self._skipped_steps = 0
        self._last_grad_norm = None
        self._last_lrs = None
        parameters = a["parameters"]
        if isinstance(parameters, (list, tuple)):
            if not parameters:
                raise ValueError("parameters is an empty list of groups")
            groups: list = []
            flat: dict = {}
            for i, g in enumerate(parameters):
                groups.append(self._new_group(g, f"parameters[{i}]", flat))
                flat.update(groups[-1]["params"])
            self._params = _check_disjoint(flat)
        else:
            # Its own dicts, as with groups (and torch's own list): a key the
            # caller adds or removes later is not a half-registered parameter,
            # in the optimizer or in its group (a view of the caller's dict
            # showed a layer added for add_param_group in two groups).
            self._params = _check_disjoint(dict(_check_parameters(parameters)))
            groups = [ParamGroup(self, {"params": group_params(dict(self._params),
                                                               "parameters"),
                                        **defaults})]
        for g in groups:
            self._add_group(g)
        self._lowp = _lowp.configure(self, a)  # None: full-precision state
        if self._lowp is not None:
            self._lowp.init_state(self)
        states, sizes, new_slots, hps = self._make_plan()
        self._state.update(new_slots)
        self._plan = (states, sizes, None, hps)
        # Held by step, state_dict, load_state_dict and add_param_group
        # (_groups.exclusive): one at a time, none from within another.
        self._busy: threading.Lock = threading.Lock()
        self._busy_thread: int | None = None  # the thread holding _busy (its messages)

    # --- public attributes --------------------------------------------------

    @property
    def parameters(self) -> dict:
        """The parameters this optimizer updates in place, every group's, by
        name: the arrays are the ones it steps; the dict is a fresh copy, so
        changing it does not change what the optimizer steps."""
        return dict(self._params)

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the state arrays (codes and scales included)."""
        return _lowp.state_nbytes(self)

    @property
    def t(self) -> int:
        """Steps taken (skipped steps not counted)."""
        return self._t

    @property
    def skipped_steps(self) -> int:
        """Steps skipped by ``skip_nonfinite`` (read-only; restored by
        :meth:`load_state_dict`)."""
        return self._skipped_steps

    @property
    def last_grad_norm(self) -> float | None:
        """The global L2 norm of the last step's gradients, in float64, before
        clipping (read-only): the norm of a skipped step too, and ``None``
        before the first step, after :meth:`load_state_dict`, or when neither
        ``max_grad_norm`` nor ``skip_nonfinite`` asks for the norm."""
        return self._last_grad_norm

    @property
    def state(self) -> dict:
        """The live state arrays, ``{slot: {parameter name: array}}``.

        The arrays are the optimizer's own (writing them changes the next
        step); the dicts are fresh copies, so replacing an entry does not.
        """
        return {label: dict(d) for label, d in self._state.items()}

    max_grad_norm = _option("max_grad_norm", "Global-norm clipping threshold, or None")
    skip_nonfinite = _option("skip_nonfinite", "Whether non-finite steps are skipped")

    def __repr__(self):
        if len(self._groups) > 1:
            lowp = "" if self._lowp is None else f", {self._lowp!r}"
            return (f"{type(self).__name__}({len(self._params)} parameters in "
                    f"{len(self._groups)} groups{lowp}, t={self._t})")
        hp = ", ".join([f"{h.name}={self._groups[0][h.name]!r}" for h in self.hyper]
                       + [f"{k}={v!r}" for k, v in self._opts.items()])
        if self._lowp is not None:
            hp += f", {self._lowp!r}"
        n = len(self._params)
        return (f"{type(self).__name__}({n} parameter{'s' if n != 1 else ''}, "
                f"lr={self._groups[0]['lr']!r}, {hp}, t={self._t})")

    # --- stepping -----------------------------------------------------------

    @exclusive
    def step(self, grads: dict[str, np.ndarray]) -> bool:
        """One optimizer step, in place.

        Parameters
        ----------
        grads : dict of str to ndarray
            The gradient of parameter ``name`` at ``grads[name]`` or
            ``grads["d" + name]``; same shape and dtype as the parameter.

        Returns
        -------
        bool
            ``True`` if the step was applied, ``False`` if it was skipped
            (``skip_nonfinite`` and a non-finite gradient).
        """
        return self._step(grads)

    @exclusive
    def step_scaled(self, grads: dict, gscale: float, norm: float | None,
                    skip: bool = False) -> bool:
        """A step whose clipping and skipping were decided by the caller.

        For wrappers that compute the gradient norm elsewhere (e.g.
        :class:`fusedoptim.distributed.ShardedOptimizer`, over every rank's
        slice): the fused update with the gradients scaled by ``gscale``, as
        :meth:`step` does after its own norm.

        Parameters
        ----------
        grads : dict of str to ndarray
            As for :meth:`step`.
        gscale : float
            The factor in ``[0, 1]`` applied to every gradient (clipping), or
            NaN (a NaN norm's clipping factor, as ``clip_grad_norm_``'s).
        norm : float or None
            The gradient norm, ``>= 0`` (NaN and infinity included: a
            non-finite gradient's); it becomes ``last_grad_norm``.
        skip : bool
            Skip the step: it is counted in ``skipped_steps``, nothing else
            changes.

        Returns
        -------
        bool
            ``False`` if skipped, else ``True``.
        """
        return self._step(grads, _v.scaled_step(gscale, norm, skip))

    def _step(self, grads, decided=None):
        plan = self._plan
        fresh = plan is None
        if fresh:
            plan = self._make_plan()
        # hps: plain-dict copies of the groups' settings, taken with the plan
        # (any assignment to a group drops the plan): faster to read than the
        # ParamGroup dict subclass in the per-step kernel_args.
        states, sizes, new_slots, hps = plan
        t = self._t + 1
        if t >= 2**63:  # what a checkpoint stores (int64): refused before any write
            raise OverflowError("the step count t would reach 2**63")
        if sizes is None:  # one group: the usual case, without the loops
            hp = hps[0]
            lr = hp["lr"]
            if callable(lr):
                lr = self._lr_of(hp)
            lrs = (lr,)
            kw = self.kernel_args(hp, lr, t)  # one group: added at t = 0
        else:
            lrs = tuple([self._lr_of(hp) for hp in hps])
            kws = tuple([self.kernel_args(hp, lr, t - t0)
                         for hp, lr, t0 in zip(hps, lrs, self._group_t0)])
        backend = _backend()
        if decided is None:
            decided = clip_decision(backend, self._params, grads, self._opts["max_grad_norm"],
                                    self._opts["skip_nonfinite"])
        gscale, norm, skip = decided
        if skip:
            # Checked as a step's: step_scaled's caller decided without them.
            _v.gather(self._params, grads, (), _v.NAMED)
            self._skipped_steps += 1
            self._last_grad_norm = norm
            return False
        # The kernel and its arguments first: between counting the step and
        # calling its kernel nothing is called, because a pending Ctrl-C (any
        # signal's handler) runs as a call returns: it then lands before the
        # count, or in or after the kernel (compiled: the step is done and
        # counted, as a handler's checkpoint must see it).  An Exception from
        # the kernel uncounts it.
        if self._lowp is not None:
            if sizes is None:
                kernel, args = self._lowp.step(self, backend, grads, kw, gscale, t)
            else:  # one call per group, run by one callable
                kernel, args = self._lowp.step_groups(self, backend, grads, kws, gscale, t)
            kwargs = {}
        else:
            kernel, args, kwargs = self._kernel(backend, grads, states, sizes,
                                                kw if sizes is None else kws, gscale)
        undo = self._t, self._last_grad_norm, self._last_lrs, self._plan
        try:
            if fresh:  # slots a new setting switched on are kept once a step used them
                self._state.update(new_slots)
                self._plan = (states, sizes, None, hps)
            self._t, self._last_grad_norm, self._last_lrs = t, norm, lrs
            kernel(*args, **kwargs)
        except BaseException as exc:
            if (not isinstance(exc, Exception) and self._t == t
                    and not getattr(backend, "INTERRUPTIBLE", False)):
                # Ctrl-C after the count: the compiled kernel has run, and
                # a step of one call per group runs the calls not yet made.
                getattr(kernel, "finish", _nothing)()
                raise
            self._t, self._last_grad_norm, self._last_lrs, self._plan = undo
            for label in new_slots or ():
                self._state.pop(label, None)
            raise
        return True

    def _kernel(self, backend, grads, states, sizes, kw, gscale):
        """The backend's step for one group (``sizes`` None, ``kw`` its
        keywords) or for several in one fused call (``kw`` per group), with
        its arguments and keywords."""
        name = self.family.name
        args = (self._params, grads, states, _v.NAMED)
        if sizes is None:
            return getattr(backend, name), args, {**kw, "gscale": gscale}
        kernel = getattr(backend, name + "_groups", None)
        if kernel is None:
            raise NotImplementedError(f"the {backend.__name__} backend's {name} family "
                                      f"has no step over several parameter groups")
        return kernel, args + (kw, sizes), {"gscale": gscale}

    def _make_plan(self):
        """The states, group sizes, new state slots and plain copies of the
        groups' settings for a step with the groups' current settings, after
        the checks that involve several hyperparameters (nothing is stored: a
        failing step changes nothing)."""
        groups = self._groups
        fam = self.family
        active = [False] * len(fam.slots)
        for g, t0 in zip(groups, self._group_t0):
            self.check(g)
            on = fam.active_slots(self.kernel_args(g, 0.0, self._t + 1 - t0))
            active = [x or y for x, y in zip(active, on)]
        new_slots = {}
        states = []
        for label, on in zip(self.state_names, active):
            if not on:
                states.append(_v.ABSENT)
                continue
            d = self._state.get(label)
            if d is None:
                # Switched on now (or at construction): every group's arrays.
                d = {}
                for g in groups:
                    d.update(self._slot_arrays(label, g))
                new_slots[label] = d
            states.append((label, d))
        sizes = None if len(groups) == 1 else tuple(len(g["params"]) for g in groups)
        return tuple(states), sizes, new_slots, [dict(g) for g in groups]
