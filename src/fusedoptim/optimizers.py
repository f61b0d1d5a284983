"""Optimizer objects for training loops: ``torch.optim``-style classes.

Each optimizer owns its state, keyed by parameter name, and runs a whole step
as ONE fused multi-tensor call of the active backend (``cython``, ``numba``
or ``numpy``; bit-for-bit identical).  The classes map onto the three kernel
families of :mod:`fusedoptim._reference`:

=============  ==========================================================
``GD``         ``p <- p - lr * g``
``Momentum``   the course's EMA momentum ``v <- beta v + (1 - beta) g``
``SGD``        ``torch.optim.SGD`` (momentum, dampening, Nesterov, L2)
``RMSProp``    the course's RMSProp, or ``torch.optim.RMSprop``
``Adam``       ``torch.optim.Adam`` (L2 weight decay, AMSGrad, maximize)
``AdamW``      ``torch.optim.AdamW`` (decoupled weight decay)
=============  ==========================================================

Common behaviour
----------------
Gradients
    ``opt.step(grads)`` takes ``grads[name]`` or, as in the course notes,
    ``grads["d" + name]`` for each parameter ``name`` (other keys are
    ignored).  A parameter with neither raises ``KeyError``; one with both
    raises ``ValueError``.  The caller's gradients are never written.
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

import math
import numbers
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from . import _validate as _v
from ._reference import sumsq_blocks
from ._alloc import zeros_like_state
from .backend import active as _backend

__all__ = ["Optimizer", "GD", "Momentum", "SGD", "RMSProp", "Adam", "AdamW"]

# clip_grad_norm_'s guard against division by a zero norm.
_CLIP_EPS = 1e-6


def _flag(x, name):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(x).__name__}")
    return bool(x)


def _check_parameters(parameters):
    _v._check_dict(parameters, "parameters")
    if not parameters:
        raise ValueError("parameters is empty")
    for name, p in parameters.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        label = f"parameters[{name!r}]"
        _v._check_array(p, label)
        _v._check_writeable(p, label)
        if not _v._is_dense(p):
            raise ValueError(f"{label} is not contiguous; fusedoptim updates arrays in "
                             f"place and never a copy")
    return parameters


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
    return int(x)


def _same_setting(saved, value):
    if value is None or isinstance(value, bool):
        return type(saved) is type(value) and saved == value
    return (isinstance(saved, numbers.Real) and not isinstance(saved, (bool, np.bool_))
            and float(saved) == value)


def _hyper(name, doc):
    return property(lambda self: self._hp[name], doc=f"{doc} (fixed at construction).")


def _concurrent_use():
    return RuntimeError("this optimizer is already stepping in another thread; step one "
                        "optimizer from one thread at a time (or give each thread its own)")


class Optimizer:
    """Base class: state, learning rate, clipping, skipping, checkpoints.

    Subclasses set ``_family`` (``"sgd"``, ``"rmsprop"`` or ``"adam"``),
    fill ``self._hp`` with their checked hyperparameters, call
    ``_init_state`` with the labels of their kernel family's state slots
    (``None`` for a slot they do not use) and implement ``_kernel``.

    Threads: the kernels release the GIL on large steps, so independent
    optimizers step in parallel from different threads.  One optimizer is
    stepped from one thread at a time; a ``step`` or ``load_state_dict``
    that finds it busy in another thread raises ``RuntimeError`` (a
    non-blocking lock, so the check costs nothing measurable).
    """

    def __init__(self, parameters, lr, max_grad_norm, skip_nonfinite):
        self._params = _check_parameters(parameters)
        self.lr = lr
        if max_grad_norm is not None:
            max_grad_norm = _v.real(max_grad_norm, "max_grad_norm")
            if max_grad_norm <= 0.0:
                raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        self._hp["max_grad_norm"] = max_grad_norm
        self._hp["skip_nonfinite"] = _flag(skip_nonfinite, "skip_nonfinite")
        self._t = 0
        self.skipped_steps = 0
        self.last_grad_norm = None
        # Held for the length of a step or a state load; never waited on.
        self._busy = threading.Lock()

    def _init_state(self, labels):
        # Each parameter's layout (C or Fortran), which the kernels require of
        # state arrays; slot k placed apart from the parameter in memory (_alloc).
        self._state = {label: {name: zeros_like_state(p, slot)
                               for name, p in self._params.items()}
                       for slot, label in enumerate(labels) if label is not None}
        self._states = tuple(_v.ABSENT if label is None else (label, self._state[label])
                             for label in labels)

    # --- public attributes --------------------------------------------------

    @property
    def parameters(self):
        """The dict of parameters this optimizer updates in place."""
        return self._params

    @property
    def t(self):
        """Steps taken (skipped steps not counted)."""
        return self._t

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
        hp = ", ".join(f"{k}={v!r}" for k, v in self._hp.items())
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
        if not all(np.isfinite(g).all() for _p, g in groups):
            return math.sqrt(sumsq), False, None
        amax = max(float(np.max(np.abs(g))) for _p, g in groups if g.size)
        total = 0.0
        for _p, g in groups:
            for block_sum in sumsq_blocks(np.asarray(g, dtype=np.float64) / amax).tolist():
                total += block_sum
        root = math.sqrt(total)
        norm = amax * root

        def scale_of(max_norm):
            if math.isfinite(norm):
                return max_norm / (norm + _CLIP_EPS)
            return max_norm / amax / root  # the norm itself exceeds float64

        return norm, True, scale_of

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
                self.skipped_steps += 1
                self.last_grad_norm = norm
                return False
            if scale is not None and scale < 1.0:
                gscale = scale
        self._kernel(backend, grads, lr, self._t + 1, gscale)
        self._t += 1
        self.last_grad_norm = norm
        return True

    def _kernel(self, backend, grads, lr, t, gscale):
        raise NotImplementedError

    # --- checkpoints --------------------------------------------------------

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
        for name, value in self._hp.items():
            if value is not None:
                sd["hp/" + name] = value
        for label, d in self._state.items():
            for name, a in d.items():
                sd[f"state/{label}/{name}"] = a.copy(order="K")
        return sd

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

    def _load_state_dict(self, state_dict):
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        sd = {}
        for key in state_dict:
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r}")
            sd[key] = state_dict[key]  # an NpzFile reads from disk on each access

        def get(key):
            try:
                return sd[key]
            except KeyError:
                raise KeyError(f"state_dict has no {key!r}") from None

        kind = _as_python(get("optimizer"))
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is from {kind!r}, not {type(self).__name__!r}")
        for name, value in self._hp.items():
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
        expected.update("hp/" + name for name, v in self._hp.items() if v is not None)
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
        self.skipped_steps = skipped
        self.last_grad_norm = None
        if lr is not None:
            self._lr = lr


_COMMON_DOC = """max_grad_norm : float or None, keyword-only
        Clip the global L2 norm of all gradients to this value (``> 0``).
    skip_nonfinite : bool, keyword-only
        Skip the whole step when a gradient holds NaN or infinity."""


class GD(Optimizer):
    __doc__ = rf"""Gradient descent.

    .. math:: p \leftarrow p - \eta g

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32/float64 arrays, updated in place.
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    {_COMMON_DOC}
    """

    def __init__(self, parameters, lr, *, max_grad_norm=None, skip_nonfinite=False):
        self._hp = {}
        super().__init__(parameters, lr, max_grad_norm, skip_nonfinite)
        self._init_state((None,))

    def _kernel(self, backend, grads, lr, t, gscale):
        backend.sgd(self._params, grads, self._states, _v.NAMED, lr, 0.0, 0.0, False, False,
                    0.0, False, gscale)


class Momentum(Optimizer):
    __doc__ = rf"""Gradient descent with the course's (EMA) momentum.

    .. math::

        v &\leftarrow \beta v + (1 - \beta) g \\
        p &\leftarrow p - \eta v

    with :math:`v` starting at zero (state slot ``"velocity"``); the same
    numbers as :func:`fusedoptim.update_parameters_with_momentum`.

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32/float64 arrays, updated in place.
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    beta : float
        :math:`\beta \in [0, 1)`.
    {_COMMON_DOC}
    """

    def __init__(self, parameters, lr, beta=0.9, *, max_grad_norm=None,
                 skip_nonfinite=False):
        self._hp = {"beta": _v.beta(beta, "beta")}
        super().__init__(parameters, lr, max_grad_norm, skip_nonfinite)
        self._init_state(("velocity",))

    beta = _hyper("beta", "Momentum coefficient")

    def _kernel(self, backend, grads, lr, t, gscale):
        b = self._hp["beta"]
        backend.sgd(self._params, grads, self._states, _v.NAMED, lr, b, b, False, False,
                    0.0, False, gscale)


class SGD(Optimizer):
    __doc__ = rf"""Stochastic gradient descent with ``torch.optim.SGD``'s semantics.

    .. math::

        g &\leftarrow -g \ \text{{(maximize)}}, \qquad
        g \leftarrow g + \lambda p \ \text{{(weight decay)}} \\
        b &\leftarrow g \ \text{{(first step)}}, \qquad
        b \leftarrow \mu b + (1 - \tau) g \ \text{{(later steps)}} \\
        d &= g + \mu b \ \text{{(Nesterov)}} \quad\text{{or}}\quad d = b \\
        p &\leftarrow p - \eta d

    Without momentum (:math:`\mu = 0`) there is no buffer and :math:`d = g`.
    The buffer (state slot ``"momentum_buffer"``) takes the raw gradient on
    the first step, as in PyTorch, not :math:`(1 - \tau) g`.

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32/float64 arrays, updated in place.
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    momentum : float
        :math:`\mu \ge 0`.
    dampening : float
        :math:`\tau`.
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float
        :math:`\lambda \ge 0`, L2 penalty added to the gradient.
    maximize : bool
        Ascend the objective instead of descending.
    {_COMMON_DOC}
    """

    def __init__(self, parameters, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False, *, max_grad_norm=None,
                 skip_nonfinite=False):
        self._hp = {
            "momentum": _v.nonneg(momentum, "momentum"),
            "dampening": _v.real(dampening, "dampening"),
            "nesterov": _flag(nesterov, "nesterov"),
            "weight_decay": _v.nonneg(weight_decay, "weight_decay"),
            "maximize": _flag(maximize, "maximize"),
        }
        if self._hp["nesterov"] and (self._hp["momentum"] == 0.0
                                     or self._hp["dampening"] != 0.0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")
        super().__init__(parameters, lr, max_grad_norm, skip_nonfinite)
        self._init_state(("momentum_buffer" if self._hp["momentum"] != 0.0 else None,))

    momentum = _hyper("momentum", "Momentum factor")
    dampening = _hyper("dampening", "Dampening of the momentum")
    nesterov = _hyper("nesterov", "Whether Nesterov momentum is used")
    weight_decay = _hyper("weight_decay", "L2 weight decay")
    maximize = _hyper("maximize", "Whether the objective is maximized")

    def _kernel(self, backend, grads, lr, t, gscale):
        hp = self._hp
        backend.sgd(self._params, grads, self._states, _v.NAMED, lr, hp["momentum"],
                    hp["dampening"], hp["nesterov"], t == 1, hp["weight_decay"],
                    hp["maximize"], gscale)


class RMSProp(Optimizer):
    __doc__ = rf"""RMSProp: the course's formula, or ``torch.optim.RMSprop``.

    .. math::

        s &\leftarrow \beta s + (1 - \beta) g^2, \qquad
        \bar g \leftarrow \beta \bar g + (1 - \beta) g \ \text{{(centered)}} \\
        d &= s - \bar g^2 \ \text{{(centered)}} \quad\text{{or}}\quad d = s \\
        r &= \sqrt{{d + \epsilon}} \ \text{{(eps inside)}}
            \quad\text{{or}}\quad r = \sqrt{{d}} + \epsilon \\
        b &\leftarrow \mu b + g / r,\ p \leftarrow p - \eta b
            \ \text{{(momentum)}} \qquad p \leftarrow p - \eta g / r
            \ \text{{(otherwise)}}

    after the gradient prelude of :class:`SGD` (maximize, L2 weight decay).
    The defaults give the course's RMSProp
    (:func:`fusedoptim.update_parameters_with_rmsprop`, bit for bit).
    ``eps_inside_sqrt=False`` with ``beta`` as PyTorch's ``alpha`` (default
    0.99 there) gives ``torch.optim.RMSprop``.  State slots:
    ``"square_avg"``, ``"grad_avg"`` (centered), ``"momentum_buffer"``
    (``momentum > 0``).

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32/float64 arrays, updated in place.
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    beta : float
        :math:`\beta \in [0, 1)`, the decay of the averages.
    eps : float
        :math:`\epsilon \ge 0`.
    eps_inside_sqrt : bool
        Where :math:`\epsilon` goes (inside: course, Keras; outside: PyTorch).
    centered : bool
        Divide by the estimated variance instead of the second moment.
    momentum : float
        :math:`\mu \ge 0`.
    weight_decay : float
        L2 penalty added to the gradient (:math:`\ge 0`).
    maximize : bool
        Ascend the objective instead of descending.
    {_COMMON_DOC}
    """

    def __init__(self, parameters, lr=0.01, beta=0.9, eps=1e-8, eps_inside_sqrt=True,
                 centered=False, momentum=0.0, weight_decay=0.0, maximize=False, *,
                 max_grad_norm=None, skip_nonfinite=False):
        self._hp = {
            "beta": _v.beta(beta, "beta"),
            "eps": _v.nonneg(eps, "eps"),
            "eps_inside_sqrt": _flag(eps_inside_sqrt, "eps_inside_sqrt"),
            "centered": _flag(centered, "centered"),
            "momentum": _v.nonneg(momentum, "momentum"),
            "weight_decay": _v.nonneg(weight_decay, "weight_decay"),
            "maximize": _flag(maximize, "maximize"),
        }
        super().__init__(parameters, lr, max_grad_norm, skip_nonfinite)
        self._init_state(("square_avg",
                          "grad_avg" if self._hp["centered"] else None,
                          "momentum_buffer" if self._hp["momentum"] != 0.0 else None))

    beta = _hyper("beta", "Decay of the moving averages")
    eps = _hyper("eps", "Epsilon")
    eps_inside_sqrt = _hyper("eps_inside_sqrt", "Whether eps is added under the root")
    centered = _hyper("centered", "Whether the variance is used")
    momentum = _hyper("momentum", "Momentum factor")
    weight_decay = _hyper("weight_decay", "L2 weight decay")
    maximize = _hyper("maximize", "Whether the objective is maximized")

    def _kernel(self, backend, grads, lr, t, gscale):
        hp = self._hp
        backend.rmsprop(self._params, grads, self._states, _v.NAMED, lr, hp["beta"],
                        hp["eps"], hp["eps_inside_sqrt"], hp["momentum"],
                        hp["weight_decay"], hp["maximize"], gscale)


def _betas(betas):
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return _v.beta(betas[0], "betas[0]"), _v.beta(betas[1], "betas[1]")


_ADAM_MATH = r"""
    .. math::

        m &\leftarrow \beta_1 m + (1 - \beta_1) g, \qquad
        v \leftarrow \beta_2 v + (1 - \beta_2) g^2 \\
        \hat v &= v_{max} \leftarrow \max(v_{max}, v) \ \text{(AMSGrad)}
            \quad\text{or}\quad \hat v = v \\
        p &\leftarrow p - \frac{\eta\, m / c_1}{\sqrt{\hat v / c_2} + \epsilon},
        \qquad c_1 = 1 - \beta_1^t,\ c_2 = 1 - \beta_2^t
"""


class Adam(Optimizer):
    __doc__ = rf"""Adam with ``torch.optim.Adam``'s semantics.
    {_ADAM_MATH}
    after the gradient prelude (maximize: :math:`g \leftarrow -g`; L2 weight
    decay: :math:`g \leftarrow g + \lambda p`).  ``t`` counts from 1 and the
    bias corrections are computed in double precision.  State slots:
    ``"exp_avg"``, ``"exp_avg_sq"``, ``"max_exp_avg_sq"`` (AMSGrad).  With
    the default ``weight_decay=0`` this is the course's Adam
    (:func:`fusedoptim.update_parameters_with_adam`, bit for bit).

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32/float64 arrays, updated in place.
    lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    betas : (float, float)
        :math:`\beta_1, \beta_2 \in [0, 1)`.
    eps : float
        :math:`\epsilon \ge 0`.
    weight_decay : float
        :math:`\lambda \ge 0`.
    amsgrad : bool
        Use the running maximum of :math:`v`.
    maximize : bool
        Ascend the objective instead of descending.
    {_COMMON_DOC}
    """

    _decoupled = False

    def __init__(self, parameters, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False, *, max_grad_norm=None, skip_nonfinite=False):
        beta1, beta2 = _betas(betas)
        self._hp = {
            "beta1": beta1,
            "beta2": beta2,
            "eps": _v.nonneg(eps, "eps"),
            "weight_decay": _v.nonneg(weight_decay, "weight_decay"),
            "amsgrad": _flag(amsgrad, "amsgrad"),
            "maximize": _flag(maximize, "maximize"),
        }
        super().__init__(parameters, lr, max_grad_norm, skip_nonfinite)
        self._init_state(("exp_avg", "exp_avg_sq",
                          "max_exp_avg_sq" if self._hp["amsgrad"] else None))

    @property
    def betas(self):
        """``(beta1, beta2)`` (fixed at construction)."""
        return self._hp["beta1"], self._hp["beta2"]

    eps = _hyper("eps", "Epsilon")
    weight_decay = _hyper("weight_decay", "Weight decay")
    amsgrad = _hyper("amsgrad", "Whether AMSGrad is used")
    maximize = _hyper("maximize", "Whether the objective is maximized")

    def _kernel(self, backend, grads, lr, t, gscale):
        hp = self._hp
        b1, b2 = hp["beta1"], hp["beta2"]
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        backend.adam(self._params, grads, self._states, _v.NAMED, lr, b1, b2, hp["eps"],
                     bc1, bc2, hp["weight_decay"], self._decoupled, hp["maximize"], gscale)


class AdamW(Adam):
    __doc__ = rf"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    .. math:: p \leftarrow p\,(1 - \eta \lambda)

    first (the factor computed in double, rounded once), then the Adam update
    of :class:`Adam` without an L2 term in the gradient:
    {_ADAM_MATH}
    Parameters are those of :class:`Adam`; ``weight_decay`` defaults to 0.01.
    """

    _decoupled = True

    def __init__(self, parameters, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 amsgrad=False, maximize=False, *, max_grad_norm=None, skip_nonfinite=False):
        super().__init__(parameters, lr, betas, eps, weight_decay, amsgrad, maximize,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)
