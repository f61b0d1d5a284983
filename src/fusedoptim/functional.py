"""The course-compatible functions over dicts of arrays.

Signatures are those of the course notes, so notebook code works unchanged;
the bugs of the notes are fixed (RMSProp divides by the root; any parameter
name works, not only ``W1``/``b1``) and each step is one fused, in-place,
multi-tensor call on the active backend.  A parameter ``name`` has its
gradient at ``grads["d" + name]`` and its state at ``v["d" + name]`` /
``s["d" + name]``; other keys in ``grads`` are ignored.  A call that raises
has changed nothing.
"""

from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from . import _validate as _v
from ._alloc import zeros_like_state
from ._validate import ABSENT as _ABSENT, COURSE as _COURSE
from ._validate import beta as _beta, nonneg as _nonneg, step as _step
from .backend import active as _backend

# The update functions bind the checks and constants above as module globals
# rather than ``_v.`` attributes: on the course's tiny models the step is all
# overhead, and every lookup counts.

#: An array fusedoptim updates or reads: float32 or float64.
Array = npt.NDArray[Any]
#: The parameters, gradients or a state: arrays by name, in a ``dict`` (the
#: functions refuse other mappings with ``TypeError``).
Arrays = dict[str, Array]
# The dicts the update functions return are the ones they were given.
P = TypeVar("P", bound=Arrays)
V = TypeVar("V", bound=Arrays)
S = TypeVar("S", bound=Arrays)

__all__ = [
    "update_parameters_with_gd",
    "initialize_velocity",
    "update_parameters_with_momentum",
    "initialize_rmsprop",
    "update_parameters_with_rmsprop",
    "initialize_adam",
    "update_parameters_with_adam",
    "BiasCorrected",
]


def update_parameters_with_gd(parameters: P, grads: Arrays, learning_rate: float) -> P:
    r"""One step of gradient descent, in place.

    .. math:: p \leftarrow p - \alpha\, dp

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32 or float64 arrays, updated in place.
    grads : dict of str to ndarray
        ``grads["d" + name]`` is the gradient of ``parameters[name]``.
    learning_rate : float
        :math:`\alpha \ge 0`.

    Returns
    -------
    parameters : dict
        The same dict, holding the same (updated) arrays.
    """
    lr = _nonneg(learning_rate, "learning_rate")
    _backend().sgd(parameters, grads, (_ABSENT,), _COURSE, lr=lr, momentum=0.0,
                   dampening=0.0, weight_decay=0.0, nesterov=False, first=False,
                   maximize=False, has_buf=False, gscale=1.0)
    return parameters


def _zeros_like_each(parameters: Arrays, slot: int = 0) -> dict[str, Array]:
    _v._check_dict(parameters, "parameters")
    out = {}
    for name, p in parameters.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        _v._check_array(p, f"parameters[{name!r}]")
        # The parameter's layout (C or Fortran), which the kernels require of
        # state arrays; placed apart from the parameter in memory (_alloc).
        out["d" + name] = zeros_like_state(p, slot)
    return out


def initialize_velocity(parameters: Arrays) -> dict[str, Array]:
    """Zero velocity ``v["d" + name]`` for each parameter (same shape, dtype
    and layout).

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32 or float64 arrays; only read.

    Returns
    -------
    v : dict of str to ndarray
        A new dict: ``v["d" + name]`` is a new zero array for each
        ``parameters[name]``.
    """
    return _zeros_like_each(parameters)


def update_parameters_with_momentum(parameters: P, grads: Arrays, v: V, beta: float,
                                    learning_rate: float) -> tuple[P, V]:
    r"""One step of gradient descent with (EMA) momentum, in place.

    .. math::

        v &\leftarrow \beta v + (1 - \beta)\, dp \\
        p &\leftarrow p - \alpha v

    Parameters
    ----------
    parameters, grads : dict of str to ndarray
        As in :func:`update_parameters_with_gd`.
    v : dict of str to ndarray
        Velocity from :func:`initialize_velocity`, updated in place.
    beta : float
        Momentum, in ``[0, 1)``.
    learning_rate : float
        :math:`\alpha \ge 0`.

    Returns
    -------
    parameters, v : dict
        The same dicts.
    """
    b = _beta(beta, "beta")
    lr = _nonneg(learning_rate, "learning_rate")
    _backend().sgd(parameters, grads, (("v", v),), _COURSE, lr=lr, momentum=b,
                   dampening=b, weight_decay=0.0, nesterov=False, first=False,
                   maximize=False, has_buf=True, gscale=1.0)
    return parameters, v


def initialize_rmsprop(parameters: Arrays) -> dict[str, Array]:
    """Zero mean-square state ``s["d" + name]`` for each parameter (same
    shape, dtype and layout).

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32 or float64 arrays; only read.

    Returns
    -------
    s : dict of str to ndarray
        A new dict: ``s["d" + name]`` is a new zero array for each
        ``parameters[name]``.
    """
    return _zeros_like_each(parameters)


def update_parameters_with_rmsprop(parameters: P, grads: Arrays, s: S, beta: float = 0.9,
                                   learning_rate: float = 0.01,
                                   epsilon: float = 1e-8) -> tuple[P, S]:
    r"""One RMSProp step, in place.

    .. math::

        s &\leftarrow \beta s + (1 - \beta)\, dp^2 \\
        p &\leftarrow p - \alpha\, dp / \sqrt{s + \epsilon}

    In words: s = beta*s + (1-beta)*(g*g); p = p - (lr*g) / sqrt(s + epsilon),
    with ``g = grads["d" + name]``.

    The course notes print a product; the update divides.  ``epsilon`` sits
    inside the square root, as in the notes, Keras and TensorFlow.

    Parameters
    ----------
    parameters, grads : dict of str to ndarray
        As in :func:`update_parameters_with_gd`.
    s : dict of str to ndarray
        Mean-square state from :func:`initialize_rmsprop`, updated in place.
    beta : float
        Decay of the mean square, in ``[0, 1)``.
    learning_rate : float
        :math:`\alpha \ge 0`.
    epsilon : float
        :math:`\epsilon \ge 0`, added to ``s`` under the square root.

    Returns
    -------
    parameters, s : dict
        The same dicts.
    """
    b = _beta(beta, "beta")
    lr = _nonneg(learning_rate, "learning_rate")
    eps = _nonneg(epsilon, "epsilon")
    _backend().rmsprop(parameters, grads, (("s", s), _ABSENT, _ABSENT), _COURSE,
                       lr=lr, alpha=b, eps=eps, momentum=0.0, weight_decay=0.0,
                       eps_inside=True, maximize=False, centered=False, has_buf=False,
                       gscale=1.0)
    return parameters, s


def initialize_adam(parameters: Arrays) -> tuple[dict[str, Array], dict[str, Array]]:
    """Zero first and second moments ``v["d" + name]``, ``s["d" + name]``
    (same shape, dtype and layout as ``parameters[name]``).

    Parameters
    ----------
    parameters : dict of str to ndarray
        float32 or float64 arrays; only read.

    Returns
    -------
    v, s : dict of str to ndarray
        Two new dicts of new zero arrays, keyed ``"d" + name``.
    """
    return _zeros_like_each(parameters, 0), _zeros_like_each(parameters, 1)


class BiasCorrected(Mapping[str, Array]):
    """Read-only view ``state[key] / (1 - beta ** t)``, computed on each read.

    :func:`update_parameters_with_adam` returns two of these instead of
    computing ``v_corrected`` and ``s_corrected`` eagerly, so the fused step
    pays nothing for them.  An entry reflects the state at the time it is
    read: read it before the next step if you want that step's value.
    ``view[key]`` is a new array, ``state[key] / correction``; the keys are
    those of ``state``.

    Parameters
    ----------
    state : dict of str to ndarray
        The moments (``v`` or ``s``), kept by reference, not copied.
    correction : float
        The divisor ``1 - beta ** t``.  It is rounded to each array's dtype
        when an entry is read.

    Examples
    --------
    >>> import numpy as np, fusedoptim as fo
    >>> params = {"W": np.array([1.0, -2.0])}
    >>> v, s = fo.initialize_adam(params)
    >>> grads = {"dW": np.array([0.5, -0.5])}
    >>> _, _, _, v_corrected, s_corrected = fo.update_parameters_with_adam(
    ...     params, grads, v, s, t=1, learning_rate=0.1)
    >>> v["dW"], v_corrected["dW"]          # v / (1 - beta1**1)
    (array([ 0.05, -0.05]), array([ 0.5, -0.5]))
    """

    __slots__ = ("_state", "_correction")

    def __init__(self, state: Mapping[str, Array], correction: float) -> None:
        self._state = state
        self._correction = correction

    def __getitem__(self, key: str) -> Array:
        a = self._state[key]
        return a / a.dtype.type(self._correction)

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __repr__(self) -> str:
        return f"BiasCorrected(keys={list(self._state)}, correction={self._correction!r})"


def update_parameters_with_adam(parameters: P, grads: Arrays, v: V, s: S, t: int,
                                learning_rate: float = 0.01, beta1: float = 0.9,
                                beta2: float = 0.999, epsilon: float = 1e-8
                                ) -> tuple[P, V, S, BiasCorrected, BiasCorrected]:
    r"""One Adam step, in place.

    .. math::

        v &\leftarrow \beta_1 v + (1 - \beta_1)\, dp, \qquad
            \hat v = v / (1 - \beta_1^t) \\
        s &\leftarrow \beta_2 s + (1 - \beta_2)\, dp^2, \qquad
            \hat s = s / (1 - \beta_2^t) \\
        p &\leftarrow p - (\alpha \hat v) / (\sqrt{\hat s} + \epsilon)

    Parameters
    ----------
    parameters, grads : dict of str to ndarray
        As in :func:`update_parameters_with_gd`.
    v, s : dict of str to ndarray
        Moments from :func:`initialize_adam`, updated in place.
    t : int
        The 1-based step count (``t >= 1``).
    learning_rate, beta1, beta2, epsilon : float
        :math:`\alpha \ge 0`, :math:`\beta_1, \beta_2 \in [0, 1)`,
        :math:`\epsilon \ge 0`.

    Returns
    -------
    parameters, v, s : dict
        The same dicts.
    v_corrected, s_corrected : BiasCorrected
        Read-only mappings that compute :math:`\hat v`, :math:`\hat s` for a
        key when it is read.
    """
    t = _step(t)
    lr = _nonneg(learning_rate, "learning_rate")
    b1 = _beta(beta1, "beta1")
    b2 = _beta(beta2, "beta2")
    eps = _nonneg(epsilon, "epsilon")
    bc1 = 1.0 - b1 ** t
    bc2 = 1.0 - b2 ** t
    _backend().adam(parameters, grads, (("v", v), ("s", s), _ABSENT), _COURSE,
                    lr=lr, beta1=b1, beta2=b2, eps=eps, bc1=bc1, bc2=bc2,
                    weight_decay=0.0, decoupled=False, maximize=False, amsgrad=False,
                    torch_order=False, gscale=1.0)
    return parameters, v, s, BiasCorrected(v, bc1), BiasCorrected(s, bc2)
