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
Gradients
    ``opt.step(grads)`` takes ``grads[name]`` or, as in the course notes,
    ``grads["d" + name]`` for each parameter ``name`` (other keys are
    ignored).  A parameter with neither raises ``KeyError``; one with both
    raises ``ValueError``.  A key that is another parameter's name is that
    parameter's gradient (with parameters ``ecoder`` and ``decoder``,
    ``grads["decoder"]`` is never ``ecoder``'s).  The caller's gradients
    are never written, and a ``defaultdict`` of them gains no key.
Learning rate
    ``opt.lr`` is a float or a schedule, a callable ``schedule(step) ->
    float`` such as those of :mod:`fusedoptim.schedules`.  A schedule is
    called once per step with ``opt.t``, the number of steps taken so far
    (0 on the first step), as optax and Keras do, so ``schedule(0)`` is the
    rate of the first update.  ``opt.lr`` may be reassigned between steps
    (how per-epoch schedules are driven); the value is checked when set, and
    a schedule's value when it is used.
Clipping (``max_grad_norm``)
    The global L2 norm of all gradients is computed in float64 in a fixed,
    thread-independent order (``backend.grad_sumsq``); the gradients are
    scaled inside the fused step by ``min(1, max_grad_norm / (norm + 1e-6))``,
    as ``torch.nn.utils.clip_grad_norm_`` does.  ``opt.last_grad_norm`` is
    that norm, or ``None`` when no norm was computed (neither clipping nor
    ``skip_nonfinite``).
Bad steps (``skip_nonfinite``)
    When a gradient holds NaN or infinity the whole step is skipped:
    parameters, state and ``opt.t`` are untouched (so a schedule does not
    advance either), ``opt.skipped_steps`` grows by one and ``step`` returns
    ``False``.  Without ``skip_nonfinite`` such a step runs unclipped and the
    NaN or infinity reaches the parameters, as it would with PyTorch.
Errors
    A step that raises (bad key, shape, dtype, a schedule returning a bad
    value, ...) changes nothing: not the parameters, not the state, not
    ``t``, ``skipped_steps`` or ``last_grad_norm``.
Checkpoints
    :meth:`Optimizer.state_dict` / :meth:`Optimizer.load_state_dict`; see
    there.  Hyperparameters other than ``lr`` are fixed at construction
    (read-only attributes).
"""

import inspect
import math
from dataclasses import replace
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _lowp
from . import _validate as _v
from ._alloc import zeros_like_state
from ._checkpoint import Checkpointing
from ._norm import overflow_safe_norm
from .backend import active as _backend

if TYPE_CHECKING:
    from .families import Family, Hyper

__all__ = ["Optimizer"]

# clip_grad_norm_'s guard against division by a zero norm.
_CLIP_EPS = 1e-6

#: ``Hyper.default`` of a required argument.
REQUIRED = inspect.Parameter.empty


def _check_parameters(parameters):
    _v._check_dict(parameters, "parameters")
    if not parameters:
        raise ValueError("parameters is empty")
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


def _hyper(name, doc):
    return property(lambda self: self._hp[name], doc=f"{doc} (fixed at construction).")


def _concurrent_use():
    return RuntimeError("this optimizer is already stepping in another thread; step one "
                        "optimizer from one thread at a time (or give each thread its own)")


class Optimizer(Checkpointing):
    """Base class: state, learning rate, clipping, skipping, checkpoints.

    A subclass declares (see :mod:`fusedoptim.families`):

    ``family``
        The :class:`~fusedoptim.families.Family` whose step it runs.
    ``lr_default``
        The default learning rate (none: ``lr`` is required).
    ``hyper``
        Its other constructor arguments, as ``Hyper(name, default, check,
        doc)``, in signature order; each becomes a read-only attribute.
    ``state_names``
        The name of each of the family's state slots (PyTorch's names).
    ``kernel_args(hp, lr, t)``
        The family's step keywords for step ``t`` (from 1) at rate ``lr``.
    ``check(hp)`` (optional)
        Checks that involve several hyperparameters.
    ``initial_value(name, hp)`` (optional)
        The starting value of a state slot (default 0).

    Threads: the kernels release the GIL on large steps, so independent
    optimizers step in parallel from different threads.  One optimizer is
    stepped from one thread at a time; a ``step`` or ``load_state_dict``
    that finds it busy in another thread raises ``RuntimeError`` (a
    non-blocking lock, so the check costs nothing measurable).
    """

    family: "Family | None" = None
    lr_default: Any = REQUIRED
    hyper: "tuple[Hyper, ...]" = ()
    state_names: tuple[str, ...] = ()

    COMMON_DOC = """max_grad_norm : float or None, keyword-only
        Clip the global L2 norm of all gradients to this value (``> 0``).
    skip_nonfinite : bool, keyword-only
        Skip the whole step when a gradient holds NaN or infinity.
    state_dtype : {None, "bfloat16", "int8"}, keyword-only
        Precision of the moments (Adam and AdamW; see fusedoptim._lowp).
    state_rounding : {None, "nearest", "stochastic"}, keyword-only
        Rounding of reduced-precision moments on store.
    state_seed : int, keyword-only
        Seed of stochastic rounding."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        P = inspect.Parameter
        params = [P("parameters", P.POSITIONAL_OR_KEYWORD),
                  P("lr", P.POSITIONAL_OR_KEYWORD, default=cls.lr_default)]
        params += [P(h.name, P.POSITIONAL_OR_KEYWORD, default=h.default) for h in cls.hyper]
        params += [P("max_grad_norm", P.KEYWORD_ONLY, default=None),
                   P("skip_nonfinite", P.KEYWORD_ONLY, default=False)]
        params += _lowp.SIGNATURE  # state_dtype, state_rounding, state_seed
        cls.__signature__ = inspect.Signature(params)
        for h in cls.hyper:
            if h.name not in cls.__dict__:
                setattr(cls, h.name, _hyper(h.name, h.doc))

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

    def __init__(self, *args, **kwargs):
        if self.family is None:
            raise TypeError("Optimizer is a base class; use one of fusedoptim.OPTIMIZERS")
        try:
            bound = self.__signature__.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}(): {exc}") from None
        bound.apply_defaults()
        a = bound.arguments
        self._params = _check_parameters(a["parameters"])
        self.lr = a["lr"]
        hp = {h.name: h.check(a[h.name], h.name) for h in self.hyper}
        self.check(hp)
        max_grad_norm = a["max_grad_norm"]
        if max_grad_norm is not None:
            max_grad_norm = _v.real(max_grad_norm, "max_grad_norm")
            if max_grad_norm <= 0.0:
                raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        hp["max_grad_norm"] = max_grad_norm
        hp["skip_nonfinite"] = _v.flag(a["skip_nonfinite"], "skip_nonfinite")
        self._hp = hp
        self._t = 0
        self._skipped_steps = 0
        self._last_grad_norm = None
        # Held for the length of a step or a state load; never waited on.
        self._busy = threading.Lock()
        self._lowp = _lowp.configure(self, a)  # None: full-precision state
        self._init_state()

    def _init_state(self):
        if self._lowp is not None:
            return self._lowp.init_state(self)
        fam = self.family
        active = fam.active_slots(self.kernel_args(self._hp, 0.0, 1))
        # Each parameter's layout (C or Fortran), which the kernels require of
        # state arrays; slot k placed apart from the parameter in memory (_alloc).
        self._state = {}
        states = []
        for slot, (label, on) in enumerate(zip(self.state_names, active)):
            if not on:
                states.append(_v.ABSENT)
                continue
            fill = self.initial_value(label, self._hp)
            d = {}
            for name, p in self._params.items():
                a = zeros_like_state(p, slot)
                if fill != 0.0:
                    a.fill(fill)
                d[name] = a
            self._state[label] = d
            states.append((label, d))
        self._states = tuple(states)

    # --- public attributes --------------------------------------------------

    @property
    def parameters(self):
        """The dict of parameters this optimizer updates in place."""
        return self._params

    @property
    def state_nbytes(self) -> int:
        """Bytes held by the state arrays (codes and scales included)."""
        return _lowp.state_nbytes(self)

    @property
    def t(self):
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
    def state(self):
        """The live state arrays, ``{slot: {parameter name: array}}``.

        The arrays are the optimizer's own (writing them changes the next
        step); the dicts are fresh copies, so replacing an entry does not.
        """
        return {label: dict(d) for label, d in self._state.items()}

    @property
    def lr(self):
        """Learning rate: a float ``>= 0`` or a schedule ``step -> float``."""
        return self._lr

    @lr.setter
    def lr(self, value):
        if callable(value):
            self._lr = value
        else:
            self._lr = _v.nonneg(value, "lr")

    max_grad_norm = _hyper("max_grad_norm", "Global-norm clipping threshold, or None")
    skip_nonfinite = _hyper("skip_nonfinite", "Whether non-finite steps are skipped")

    def _lr_now(self):
        lr = self._lr
        if not callable(lr):
            return lr
        value = lr(self._t)
        if type(value) is float and 0.0 <= value < math.inf:  # the usual case, cheaply
            return value
        return _v.nonneg(value, f"lr schedule value at step {self._t}")

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self._flat_hp())
        if self._lowp is not None:
            hp += f", {self._lowp!r}"
        return f"{type(self).__name__}({len(self._params)} parameters, lr={self._lr!r}, {hp}, t={self._t})"

    # --- stepping -----------------------------------------------------------

    def _norm_slow(self, grads, sumsq):
        """The sum of squares is not finite: find out why.

        Returns ``(norm, finite, scale_of)`` where ``scale_of(max_norm)`` is
        the clipping factor.  float64 gradients above about 1e154 overflow
        the sum of squares while being finite; their norm is then computed
        from the gradients divided by their largest magnitude (exact in
        order, so still reproducible).
        """
        groups = _v.gather(self._params, grads, (), _v.NAMED)
        return overflow_safe_norm([g for _p, g in groups], sumsq)

    def step(self, grads):
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
        if not self._busy.acquire(blocking=False):
            raise _concurrent_use()
        try:
            return self._step(grads)
        finally:
            self._busy.release()

    def _step(self, grads):
        lr = self._lr_now()
        max_norm = self._hp["max_grad_norm"]
        gscale, norm = 1.0, None
        backend = _backend()
        if max_norm is not None or self._hp["skip_nonfinite"]:
            # One read-only pass: the norm for clipping doubles as a cheap
            # non-finite detector (NaN or inf anywhere makes it non-finite).
            sumsq = backend.grad_sumsq(self._params, grads, _v.NAMED)
            finite = math.isfinite(sumsq)
            if finite:
                norm = math.sqrt(sumsq)
                scale = None if max_norm is None else max_norm / (norm + _CLIP_EPS)
            else:
                norm, finite, scale_of = self._norm_slow(grads, sumsq)
                scale = None if (max_norm is None or not finite) else scale_of(max_norm)
            if not finite and self._hp["skip_nonfinite"]:
                self._skipped_steps += 1
                self._last_grad_norm = norm
                return False
            if scale is not None and scale < 1.0:
                gscale = scale
        self._kernel(backend, grads, lr, self._t + 1, gscale)
        self._t += 1
        self._last_grad_norm = norm
        return True

    def _kernel(self, backend, grads, lr, t, gscale):
        if self._lowp is not None:
            return self._lowp.step(self, backend, grads, lr, t, gscale)
        getattr(backend, self.family.name)(self._params, grads, self._states, _v.NAMED,
                                          gscale=gscale,
                                          **self.kernel_args(self._hp, lr, t))

    # --- checkpoints --------------------------------------------------------

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` snapshot (a dict, or the ``NpzFile``
        of ``np.load``) into this optimizer.

        The optimizer must have been built over parameters with the same
        names, shapes and dtypes and with the same hyperparameters (``lr``
        excepted); everything is checked before anything is written, and a
        mismatch raises (``KeyError`` for a missing key, ``TypeError`` for a
        wrong type or dtype, ``ValueError`` otherwise) with nothing changed.
        The state arrays are copied into the optimizer's own arrays; ``t``
        and ``skipped_steps`` are restored, and so is ``lr`` when the
        checkpoint holds a float one (it then replaces this optimizer's
        ``lr``, schedule or not, as ``torch.optim`` restores its param
        groups' ``lr``); ``last_grad_norm`` is reset to ``None``.
        """
        if not self._busy.acquire(blocking=False):
            raise _concurrent_use()
        try:
            self._load_state_dict(state_dict)
        finally:
            self._busy.release()
