r"""Every optimizer as a function over caller-held state, as in optax and
``torch.optim``'s functional forms.

For each class of :data:`fusedoptim.OPTIMIZERS` this module has one
function named after it in lower case (``gd``, ``momentum``, ``sgd``,
``rmsprop``, ``adam``, ``adamw``, ``adagrad``, ``adamax``, ``nadam``,
``radam``, ``adadelta``, ``lion``, ``lamb``)::

    fn(params, grads, state, *, lr=<the class's default>, <its hyperparameters>,
       max_grad_norm=None) -> params

It runs the same fused step of the active backend as the class, with the
same hyperparameters, checks and messages, so ``state`` and ``params`` end
with the bits a ``fusedoptim.AdamW(params, ...)`` stepping the same
gradients would give.  The caller holds the state, made by
:func:`init_state`: ``{"step": 0, <slot>: {name: array}, ...}``, one dict of
arrays per state slot the hyperparameters switch on (PyTorch's names:
``exp_avg``, ``max_exp_avg_sq`` only with ``amsgrad=True``, ...).  A call
updates ``params`` and the state arrays in place, adds one to
``state["step"]`` and returns ``params``; a call that raises changes
nothing (arrays and ``state["step"]``).

The functions are made from the registry (:mod:`fusedoptim.families`), so
a newly registered class gets one.  What the classes add is left to the
caller: ``lr`` is a float (evaluate a schedule yourself:
``lr=schedule(state["step"])``, the value the classes would use), one call
per parameter group (each with its own state), no ``skip_nonfinite``
(``fusedoptim.global_norm(grads)`` tells a non-finite step) and
full-precision state only (no ``state_dtype``).  A state must not be
stepped by two threads at once; the functions keep nothing between calls
but NAdam's per-thread cache of :math:`\prod \mu_i`, a function of the
step count.

Examples
--------
>>> import numpy as np
>>> from fusedoptim import stateless
>>> params = {"w": np.array([1.0, -2.0])}
>>> hp = dict(lr=0.1, weight_decay=0.5, amsgrad=True)
>>> state = stateless.init_state("AdamW", params, **hp)
>>> sorted(state)
['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'step']
>>> params = stateless.adamw(params, {"w": np.array([0.5, -0.5])}, state, **hp)
>>> params["w"], state["step"]                 # as fusedoptim.AdamW(params, **hp).step
(array([ 0.85, -1.8 ]), 1)
"""

import inspect
import numbers
import threading
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import numpy.typing as npt

from . import _validate as _v
from ._norm import clip_decision
from .backend import active as _backend
from .families import OPTIMIZERS
from .optimizer import REQUIRED, Optimizer

#: A float32 or float64 array.
Array = npt.NDArray[Any]
#: Parameters or gradients by name.
Arrays = dict[str, Array]
#: What :func:`init_state` makes: ``{"step": int, slot: {name: array}}``.
State = dict[str, Any]
P = TypeVar("P", bound=Arrays)


class _Bare(threading.local):
    """One instance of each class made without ``__init__``, per thread.

    ``kernel_args`` and ``initial_value`` are instance methods: they read
    class attributes (AdamW's ``decoupled``) and NAdam's cache of
    :math:`\\prod \\mu_i`, which a bare instance starts empty.  Per thread,
    because that cache is not safe to share: a step of another thread may
    drop the entry a step is reading.
    """

    def __init__(self) -> None:
        self.of: dict[type, Optimizer] = {}


_BARE = _Bare()


def _instance(cls: type[Optimizer]) -> Optimizer:
    inst = _BARE.of.get(cls)
    if inst is None:
        inst = _BARE.of[cls] = cls.__new__(cls)
    return inst


def _settings(cls: type[Optimizer], fname: str, kwargs: dict,
              need_lr: bool) -> tuple[dict, float | None]:
    """The checked hyperparameters (``lr`` included) and ``max_grad_norm``
    of a call with keywords ``kwargs``, by the class's own checks."""
    names = _KEYWORDS[cls]
    for key in kwargs:
        if key not in names:
            raise TypeError(f"{fname}() got an unexpected keyword argument {key!r}")
    lr = kwargs.get("lr", cls.lr_default)
    if lr is REQUIRED:
        if need_lr:
            raise TypeError(f"{fname}() missing required keyword argument 'lr'")
        lr = 0.0  # only the slots are wanted; they do not depend on lr
    elif callable(lr):
        raise TypeError("lr must be a float, not a schedule; pass its value, "
                        "lr=schedule(state['step'])")
    hp = {"lr": _v.nonneg(lr, "lr")}
    for h in cls.hyper:
        hp[h.name] = h.check(kwargs.get(h.name, h.default), h.name)
    cls.check(hp)
    mgn = kwargs.get("max_grad_norm")
    return hp, None if mgn is None else _v.nonneg(mgn, "max_grad_norm")


def _class_of(optimizer: Any) -> type[Optimizer]:
    if isinstance(optimizer, str):
        cls = OPTIMIZERS.get(optimizer) or _BY_LOWER.get(optimizer)
        if cls is None:
            raise ValueError(f"no optimizer {optimizer!r}; one of {', '.join(OPTIMIZERS)}")
        return cls
    if isinstance(optimizer, type) and optimizer in _STEPS:
        return optimizer
    raise TypeError(f"optimizer must be a class of fusedoptim.OPTIMIZERS or its name, "
                    f"got {optimizer!r}")


def init_state(optimizer: "str | type[Optimizer]", params: Arrays, /,
               **hyperparameters: Any) -> State:
    """The state of ``optimizer``'s function for ``params``: ``{"step": 0,
    slot: {name: array}, ...}``.

    Parameters
    ----------
    optimizer : str or type
        A class of :data:`fusedoptim.OPTIMIZERS` or its name (``"AdamW"``
        or ``"adamw"``).
    params : dict of str to ndarray
        float32/float64 arrays; only read.
    **hyperparameters
        The keywords the step will take (``lr`` and ``max_grad_norm`` too,
        so one dict serves both calls), checked as the step checks them.
        They choose the slots: ``max_exp_avg_sq`` only with ``amsgrad=True``,
        ``momentum_buffer`` only with ``momentum > 0``, ...; and the
        starting values (Adagrad's ``initial_accumulator_value``).

    Returns
    -------
    dict
        ``state["step"]`` is 0; each slot the hyperparameters switch on is
        a dict of new arrays, one per parameter, of its shape, dtype and
        memory layout (placed in memory as the classes place their state),
        holding the slot's initial value (0 but for Adagrad's sum).
    """
    cls = _class_of(optimizer)
    hp, _mgn = _settings(cls, "init_state", hyperparameters, need_lr=False)
    _v._check_dict(params, "params")
    for name, p in params.items():
        if not isinstance(name, str):
            raise _v.bad_name(name)
        _v._check_array(p, f"params[{name!r}]")
    fam = cls.family
    assert fam is not None  # every class of OPTIMIZERS has one
    inst = _instance(cls)
    on = fam.active_slots(inst.kernel_args(hp, hp["lr"], 1))
    state: State = {"step": 0}
    group = {**hp, "params": params}  # the classes' own slot arrays, filled as theirs
    for label, used in zip(cls.state_names, on):
        if used:
            state[label] = inst._slot_arrays(label, group)
    return state


def _steps_taken(state: Any) -> int:
    if not isinstance(state, dict):
        raise TypeError(f"state must be the dict init_state made, got {type(state).__name__}")
    if "step" not in state:
        raise KeyError("state has no 'step' (init_state makes it)")
    n = state["step"]
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"state['step'] must be an integer >= 0, got {n!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"state['step'] must be an integer >= 0, got {n}")
    if n >= 2**63 - 1:  # a checkpoint stores int64: refused as the classes refuse it
        raise OverflowError("state['step'] would reach 2**63")
    return n


#: The annotation of a hyperparameter, by the type of its default.
_TYPES: dict[type, Any] = {bool: bool, float: float, tuple: tuple[float, float]}


def _make(cls: type[Optimizer]) -> Callable[..., Any]:
    fam = cls.family
    assert fam is not None
    fname = cls.__name__.lower()

    def step(params: P, grads: Arrays, state: State, **kwargs: Any) -> P:
        hp, mgn = _settings(cls, fname, kwargs, need_lr=True)
        t = _steps_taken(state) + 1
        kw = _instance(cls).kernel_args(hp, hp["lr"], t)
        states = []
        for label, on in zip(cls.state_names, fam.active_slots(kw)):
            if not on:
                states.append(_v.ABSENT)
                continue
            if label not in state:
                raise KeyError(f"state has no {label!r} (needed by {cls.__name__} with "
                               f"these settings)")
            _v._check_dict(state[label], f"state[{label!r}]")
            states.append((f"state[{label!r}]", state[label]))
        backend = _backend()
        gscale = clip_decision(backend, params, grads, mgn, False)[0]
        # Counted before the call, as the classes count: a Ctrl-C landing as
        # a compiled kernel returns finds the step done and counted.  An
        # Exception comes before the first write (the backend checks the
        # whole step first), and the Python backend's Ctrl-C may land
        # mid-step: those uncount it, as in Optimizer._step.
        state["step"] = t
        try:
            getattr(backend, fam.name)(params, grads, tuple(states), _v.NAMED, **kw,
                                       gscale=gscale)
        except BaseException as exc:
            if isinstance(exc, Exception) or getattr(backend, "INTERRUPTIBLE", False):
                state["step"] = t - 1
            raise
        return params

    # help(), Sphinx and inspect see the class's keywords, typed as the
    # TYPE_CHECKING block below spells them out.
    Q = inspect.Parameter
    sig = [Q("params", Q.POSITIONAL_OR_KEYWORD, annotation=P),
           Q("grads", Q.POSITIONAL_OR_KEYWORD, annotation=Arrays),
           Q("state", Q.POSITIONAL_OR_KEYWORD, annotation=State),
           Q("lr", Q.KEYWORD_ONLY, default=cls.lr_default, annotation=float)]
    sig += [Q(h.name, Q.KEYWORD_ONLY, default=h.default, annotation=_TYPES[type(h.default)])
            for h in cls.hyper]
    sig.append(Q("max_grad_norm", Q.KEYWORD_ONLY, default=None, annotation=float | None))
    step.__signature__ = inspect.Signature(sig, return_annotation=P)  # type: ignore[attr-defined]
    step.__annotations__ = {**{q.name: q.annotation for q in sig}, "return": P}
    step.__name__ = step.__qualname__ = fname
    step.__doc__ = _doc(cls, fname)
    return step


_LR_DOC = """lr : float
    The learning rate, >= 0 ({default}).  A schedule is refused: pass its
    value, ``lr=schedule(state["step"])``."""

_DOC = """One {cls} step on caller-held ``state``, in place: the step of
:class:`fusedoptim.{cls}`, bit for bit.

{head}

The hyperparameters are the class's, with its defaults, checks and
messages.  A call that raises changes nothing: not ``params``, the state
arrays or ``state["step"]``.

Parameters
----------
params : dict of str to ndarray
    float32/float64 arrays, updated in place.
grads : dict of str to ndarray
    The gradient of ``params[name]`` at ``grads[name]`` or
    ``grads["d" + name]``; same shape and dtype.  Never written.
state : dict
    ``init_state("{cls}", params, ...)``: ``state["step"]``, the steps
    taken, and a dict of arrays per slot these hyperparameters use, all
    updated in place (slots they do not use are left alone).
    Full-precision state only (no ``state_dtype``).
{entries}
max_grad_norm : float or None
    Clip the global L2 norm of ``grads`` to this value (``>= 0``): the
    gradients are scaled by ``min(1, max_grad_norm / (norm + 1e-6))``
    inside the step, as the class's ``max_grad_norm`` does.

Returns
-------
params : dict
    The same dict; ``state["step"]`` is one more.

Raises
------
TypeError
    An unknown keyword (named), a bad type, a schedule as ``lr``.
ValueError
    A bad value (the class's message), a shape or layout mismatch.
KeyError
    A missing gradient, state slot or state array (named).

Examples
--------
>>> import numpy as np
>>> from fusedoptim import stateless
>>> params = {{"w": np.array([1.0, -2.0])}}
>>> state = stateless.init_state("{cls}", params, lr=0.1)
>>> stateless.{fname}(params, {{"w": np.array([0.5, -0.5])}}, state, lr=0.1) is params
True
>>> state["step"]
1
"""


def _doc(cls: type[Optimizer], fname: str) -> str:
    """The function's docstring: the class's description and formula, and
    its own entry of each hyperparameter (``Hyper.doc`` where it has none)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    head, _, rest = doc.partition("\nParameters\n----------\n")
    own: dict[str, list[str]] = {}
    name = None
    for line in rest.split("\n\n")[0].splitlines():
        if not line[:1].isspace():
            name = line.partition(" : ")[0]
            own[name] = []
        if name is not None:
            own[name].append(line)
    default = "required" if cls.lr_default is REQUIRED else f"default {cls.lr_default!r}"
    entries = [_LR_DOC.format(default=default)]
    for h in cls.hyper:
        entries.append("\n".join(own.get(h.name, [f"{h.name} : {type(h.default).__name__}",
                                                    f"    {h.doc}."])))
    return _DOC.format(cls=cls.__name__, fname=fname, head=head.strip(),
                       entries="\n".join(entries))


#: Class -> its function (in registry order); class -> its keywords.
_STEPS = {cls: _make(cls) for cls in OPTIMIZERS.values()}
_KEYWORDS = {cls: frozenset(["lr", "max_grad_norm", *(h.name for h in cls.hyper)])
             for cls in OPTIMIZERS.values()}
_BY_LOWER = {cls.__name__.lower(): cls for cls in OPTIMIZERS.values()}
# A clash would silently hide a function or shadow a keyword: refuse it.
if (len(_BY_LOWER) != len(OPTIMIZERS) or set(_BY_LOWER) & set(globals())
        or any(k & {"params", "grads", "state"} for k in _KEYWORDS.values())):
    raise ImportError("two optimizer classes, or a class and a name of fusedoptim.stateless, "
                      "have the same lower-case name, or a hyperparameter is named params, "
                      "grads or state")
globals().update((f.__name__, f) for f in _STEPS.values())

__all__ = ["init_state", *_BY_LOWER]

if TYPE_CHECKING:
    # The functions made above, spelled out for type checkers (which cannot
    # follow the registry); tests/test_stateless.py keeps them equal to the
    # functions' __signature__.
    def gd(params: P, grads: Arrays, state: State, *, lr: float,
           max_grad_norm: float | None = None) -> P: ...

    def momentum(params: P, grads: Arrays, state: State, *, lr: float, beta: float = 0.9,
                 max_grad_norm: float | None = None) -> P: ...

    def sgd(params: P, grads: Arrays, state: State, *, lr: float, momentum: float = 0.0,
            dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
            maximize: bool = False, max_grad_norm: float | None = None) -> P: ...

    def rmsprop(params: P, grads: Arrays, state: State, *, lr: float = 0.01,
                beta: float = 0.9, eps: float = 1e-8, eps_inside_sqrt: bool = True,
                centered: bool = False, momentum: float = 0.0, weight_decay: float = 0.0,
                maximize: bool = False, max_grad_norm: float | None = None) -> P: ...

    def adam(params: P, grads: Arrays, state: State, *, lr: float = 0.001,
             betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
             weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False,
             max_grad_norm: float | None = None) -> P: ...

    def adamw(params: P, grads: Arrays, state: State, *, lr: float = 0.001,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.01, amsgrad: bool = False, maximize: bool = False,
              max_grad_norm: float | None = None) -> P: ...

    def adagrad(params: P, grads: Arrays, state: State, *, lr: float = 0.01,
                lr_decay: float = 0.0, weight_decay: float = 0.0,
                initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                maximize: bool = False, max_grad_norm: float | None = None) -> P: ...

    def adamax(params: P, grads: Arrays, state: State, *, lr: float = 0.002,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.0, maximize: bool = False,
               max_grad_norm: float | None = None) -> P: ...

    def nadam(params: P, grads: Arrays, state: State, *, lr: float = 0.002,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, momentum_decay: float = 0.004,
              decoupled_weight_decay: bool = False, maximize: bool = False,
              max_grad_norm: float | None = None) -> P: ...

    def radam(params: P, grads: Arrays, state: State, *, lr: float = 0.001,
              betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
              maximize: bool = False, max_grad_norm: float | None = None) -> P: ...

    def adadelta(params: P, grads: Arrays, state: State, *, lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, maximize: bool = False,
                 max_grad_norm: float | None = None) -> P: ...

    def lion(params: P, grads: Arrays, state: State, *, lr: float = 0.0001,
             betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
             maximize: bool = False, max_grad_norm: float | None = None) -> P: ...

    def lamb(params: P, grads: Arrays, state: State, *, lr: float = 0.001,
             betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
             weight_decay: float = 0.0, maximize: bool = False,
             max_grad_norm: float | None = None) -> P: ...
