"""How an optimizer is declared: its kernel family and its class's hyperparameters.

A *family* is one fused element loop shared by several optimizer classes
(``sgd`` runs GD, Momentum and SGD).  It declares, in one place:

* ``slots`` -- its state arrays, in the order every backend receives them;
* ``optional`` -- which slots are switched on by a boolean keyword (AMSGrad's
  ``vmax`` by ``amsgrad``); the other slots are always present;
* ``scalars`` and ``flags`` -- the float and bool keywords of its step (on top
  of ``gscale``, the clipping factor every family takes);
* ``update`` -- the reference update of one tensor in plain NumPy, which
  states the exact operation order every backend reproduces bit for bit;
* ``second_pass`` -- for a family whose update needs a per-tensor reduction
  first (LAMB's norms), the state slots its second pass reads again besides
  the parameter: the first pass writes the states and reduces, the second
  writes the parameter.  Empty for a one-pass family.

Each backend exposes one callable per family, named after it, with the same
keyword-only signature::

    backend.adam(params, grads, states, mode, *, lr, beta1, ..., gscale)

``states`` is a tuple of ``(label, dict or None)`` pairs in ``slots`` order
(``None`` for an optional slot that is off); ``mode`` is ``_validate.COURSE``
or ``_validate.NAMED``.  A call either validates the whole step and writes it,
or raises and writes nothing.
"""

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from .. import _validate as _v

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy as np

    # The types of the classes' TYPE_CHECKING constructors (their runtime
    # __init__ takes *args and binds the __signature__ built from ``hyper``).
    Params: TypeAlias = dict[str, np.ndarray] | list[dict[str, Any]] | tuple[dict[str, Any], ...]
    LR: TypeAlias = float | Callable[[int], float]

__all__ = ["Family", "Hyper", "Torch", "same", "check_call", "check_groups", "prelude", "flag", "betas",
           "real", "nonneg", "beta"]


@dataclass(frozen=True)
class Family:
    """One fused kernel family (see the module docstring)."""

    name: str
    slots: tuple
    scalars: tuple
    flags: tuple
    update: Callable
    optional: dict = field(default_factory=dict)
    second_pass: tuple = ()

    @property
    def keywords(self):
        """Every keyword of the family's step, ``gscale`` included."""
        return self.scalars + self.flags + ("gscale",)

    @cached_property
    def switches(self):
        """The flags that switch a state slot on."""
        return tuple(dict.fromkeys(self.optional.values()))

    @cached_property
    def group_keyword_set(self):
        """The keywords of one group of a step over several (``gscale``
        is the step's, shared by every group)."""
        return frozenset(self.scalars + self.flags)

    @cached_property
    def keyword_set(self):
        """``keywords`` as a set: a valid call's keywords compare equal to
        it in one operation (the Python backends check every step)."""
        return frozenset(self.keywords)

    def active_slots(self, kw):
        """The slots a step with keywords ``kw`` uses, as booleans."""
        return tuple(bool(kw[self.optional[s]]) if s in self.optional else True
                     for s in self.slots)

    def arrays_moved(self, kw: dict) -> int:
        """Arrays a step reads and writes per element: the parameter (read and
        written), the gradient (read) and each active state (read and
        written); a two-pass family reads the parameter and its
        ``second_pass`` slots once more."""
        again = 1 + len(self.second_pass) if self.second_pass else 0
        return 3 + 2 * sum(self.active_slots(kw)) + again


def check_call(family, states, kw):
    """The checks a typed, keyword-only signature makes in the compiled
    backend, for the Python backends: every keyword present, no unknown one,
    one ``(label, dict or None)`` pair per slot, and exactly the slots the
    flags switch on.  Raises ``TypeError`` or ``ValueError``; writes nothing."""
    if kw.keys() != family.keyword_set:
        _keyword_error(family, kw)
    check_states(family, states, kw)


def _keyword_error(family, kw, where="", keywords=None):
    keywords = family.keywords if keywords is None else keywords
    missing = [k for k in keywords if k not in kw]
    if missing:
        raise TypeError(f"{family.name}(){where} missing keyword argument {missing[0]!r}")
    for k in kw:
        if k not in keywords:
            raise TypeError(f"{family.name}(){where} got an unexpected keyword argument {k!r}")


def check_groups(family, states, groups, sizes):
    """``check_call`` for a step over several parameter groups (every
    backend's ``<family>_groups``): ``groups`` a non-empty tuple of dicts,
    each holding every keyword of the family but ``gscale``; ``sizes`` a
    tuple of one int ``>= 0`` per group (its number of tensors, in
    ``params`` order); ``states`` exactly the slots that some group's flags
    switch on.  Raises ``TypeError`` or ``ValueError``; writes nothing."""
    keys = family.group_keyword_set
    if not (isinstance(groups, tuple) and isinstance(sizes, tuple) and groups
            and len(sizes) == len(groups)
            and all([isinstance(kw, dict) and kw.keys() == keys for kw in groups])
            and all([type(m) is int and m >= 0 for m in sizes])):
        _groups_error(family, groups, sizes)
    check_states(family, states, {flag: any([kw[flag] for kw in groups])
                                  for flag in family.switches})


def _groups_error(family, groups, sizes):
    """Raise the error ``check_groups`` found (the slow path names it)."""
    if not isinstance(groups, tuple) or not groups:
        raise ValueError(f"{family.name}: groups must be a non-empty tuple of dicts")
    if not isinstance(sizes, tuple) or len(sizes) != len(groups):
        raise ValueError(f"{family.name}: sizes must be a tuple of one count per group "
                         f"({len(groups)})")
    for k, kw in enumerate(groups):
        if not isinstance(kw, dict):
            raise TypeError(f"{family.name}: groups[{k}] must be a dict, got "
                            f"{type(kw).__name__}")
        if kw.keys() != family.group_keyword_set:
            _keyword_error(family, kw, f" groups[{k}]", family.scalars + family.flags)
    for k, m in enumerate(sizes):
        if type(m) is not int or m < 0:
            raise ValueError(f"{family.name}: sizes[{k}] must be an int >= 0, got {m!r}")
    raise AssertionError("unreachable: check_groups found no error")  # pragma: no cover


def check_states(family, states, kw):
    if len(states) != len(family.slots):
        raise ValueError(f"{family.name} takes {len(family.slots)} state slots "
                         f"{family.slots}, got {len(states)}")
    for slot, on, (_label, d) in zip(family.slots, family.active_slots(kw), states):
        if on and d is None:
            raise ValueError(f"{family.name}: state slot {slot!r} is needed but absent")
        if not on and d is not None:
            raise ValueError(f"{family.name}: state slot {slot!r} is given but "
                             f"{family.optional[slot]}=False")


def prelude(p, g, T, gscale, maximize, weight_decay):
    """The gradient prelude every family applies, in this order, to a private
    copy of the gradient (the caller's gradient is never written)::

        g = g * gscale              if gscale != 1   (global-norm clipping)
        g = -g                      if maximize
        g = g + weight_decay * p    if weight_decay != 0 (L2 decay)
    """
    if gscale != 1.0:
        g = g * T(gscale)
    if maximize:
        g = -g
    if weight_decay != 0.0:
        g = g + T(weight_decay) * p
    return g


# --- class hyperparameters --------------------------------------------------------

# The numpydoc ``Parameters`` entries the Adam-like classes share, written once
# (indented for a class docstring, like ``Optimizer.PARAMETERS_DOC``); each
# class writes its own entries between them.
ADAM_DOC = r"""lr : float or callable
        :math:`\eta \ge 0`, or a schedule ``step -> float``.
    betas : (float, float)
        :math:`\beta_1, \beta_2 \in [0, 1)`.
    eps : float
        :math:`\epsilon \ge 0`."""
DECAY_DOC = r"""weight_decay : float
        :math:`\lambda \ge 0`."""
MAXIMIZE_DOC = """maximize : bool
        Ascend the objective instead of descending."""


@dataclass(frozen=True)
class Hyper:
    """A constructor argument of an optimizer class: its name, default
    (``inspect.Parameter.empty`` for none), the check that returns the clean value or raises
    an error naming it, and a one-line description."""

    name: str
    default: Any
    check: Callable
    doc: str


@dataclass(frozen=True)
class Torch:
    """PyTorch's counterpart of an optimizer class, as plain data (the
    package never imports torch): ``torch.optim.<name>``, built with
    :meth:`kwargs`.  The torch-parity tests (``tests/test_torch_parity.py``)
    and the ``bench`` command's ``torch`` rows are derived from it.

    ``keywords``
        torch's keyword argument -> the hyperparameter of ours it takes
        (``"lr"`` or a ``Hyper`` name); several keywords may take one.
    ``fused``
        torch has a ``fused=True`` CPU implementation.
    ``same_when``
        The values of our hyperparameters under which torch computes the
        same steps (up to rounding); ``None``: under none.
    ``differs``
        How torch's steps differ otherwise (empty when ``same_when`` is
        empty: they never differ).
    """

    name: str
    keywords: dict
    fused: bool = False
    same_when: "dict | None" = field(default_factory=dict)
    differs: str = ""

    def kwargs(self, hp: dict) -> dict:
        """torch's keyword arguments for our hyperparameters ``hp``."""
        return {key: hp[ours] for key, ours in self.keywords.items()}

    def difference(self, hp: dict) -> str:
        """How torch's steps differ from ours under ``hp``; empty when they
        are the same (up to rounding)."""
        if self.same_when is not None and all(hp[k] == v for k, v in self.same_when.items()):
            return ""
        return self.differs


def same(*names: str) -> dict:
    """``Torch.keywords`` for keywords that torch and we name alike."""
    return {n: n for n in names}


# The checks a Hyper names; one source for each rule (fusedoptim._validate).
flag = _v.flag
betas = _v.betas
real = _v.real
nonneg = _v.nonneg
beta = _v.beta
