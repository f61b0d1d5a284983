"""Gradient clipping outside an optimizer: ``clip_grad_norm_``, ``clip_grad_value_``
and ``global_norm``.

The norm is the one an optimizer's ``max_grad_norm`` uses: a float64 sum of
squares in the fixed block order of :mod:`fusedoptim._norm`, computed by the
active backend (``backend.grad_sumsq``), so it does not depend on the
backend or the thread count.  When that sum overflows while every gradient
is finite (float64 gradients above about 1e154), the norm is computed from
the gradients divided by their largest magnitude instead, as in the
optimizer step.
"""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _validate as _v
from ._norm import CLIP_EPS, overflow_safe_norm
from .backend import active as _backend

__all__ = ["clip_grad_norm_", "clip_grad_value_", "global_norm"]


def _arrays(grads: dict, written: bool) -> list[np.ndarray]:
    """The checked gradient arrays of ``grads`` (any keys), in dict order."""
    _v._check_dict(grads, "grads")
    out, items = [], []
    for key in _v.keys_of(grads):
        g = _v.lookup(grads, key)
        label = f"grads[{key!r}]"
        if g is _v._MISSING:
            raise KeyError(f"grads has no {key!r}, though iterating it gave that key")
        _v._check_array(g, label)
        if written:
            _v._check_writeable(g, label)
        if type(g) is not np.ndarray:
            g = g.view(np.ndarray)
        out.append(g)
        items.append((label, g, written))
    if written:
        # Scaled in place: an array reachable twice would be scaled twice.
        pair = _v._find_overlap(items)
        if pair is not None:
            raise _v.overlap(*pair)
    return out


def _backend_sumsq(gs: Sequence[np.ndarray]) -> float:
    """``backend.grad_sumsq`` over plain arrays.

    The backends take ``(parameters, gradients)``; the parameters are only
    checked against the gradients' shape, dtype and layout, never read, so
    uninitialised placeholders stand in for them (``np.empty`` touches no
    memory).  A non-contiguous gradient is copied into C order by the
    backend, as in an optimizer step.
    """
    params, grads = {}, {}
    for i, g in enumerate(gs):
        fortran = g.flags.f_contiguous and not g.flags.c_contiguous
        params[str(i)] = np.empty(g.shape, g.dtype, order="F" if fortran else "C")
        grads[str(i)] = g
    return _backend().grad_sumsq(params, grads, _v.NAMED)


def _norm_type(norm_type: Any) -> float:
    if isinstance(norm_type, (bool, np.bool_)) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type must be 2.0 or inf, got {type(norm_type).__name__}")
    if float(norm_type) not in (2.0, math.inf):
        raise ValueError(f"norm_type must be 2.0 or inf, got {norm_type!r}")
    return float(norm_type)


def _inf_norm(gs: Sequence[np.ndarray]) -> float:
    """Largest magnitude (NaN if any element is NaN), without a temporary."""
    norm = 0.0
    for g in gs:
        if g.size:
            m = max(float(g.max()), -float(g.min()))  # g.max() is NaN if any is
            if math.isnan(m):
                return math.nan
            norm = max(norm, m)
    return norm


def _norm(gs: Sequence[np.ndarray],
          norm_type: float) -> tuple[float, bool, Callable[[float], float] | None]:
    """``(norm, finite, scale_of)`` as :func:`overflow_safe_norm`."""
    if norm_type == math.inf:
        norm = _inf_norm(gs)
    else:
        sumsq = _backend_sumsq(gs)
        if not math.isfinite(sumsq):
            return overflow_safe_norm(gs, sumsq)
        norm = math.sqrt(sumsq)
    return norm, math.isfinite(norm), lambda max_norm: max_norm / (norm + CLIP_EPS)


def global_norm(grads: dict, norm_type: float = 2.0) -> float:
    r"""Norm of all gradients together, as one vector.

    .. math:: \|g\|_2 = \sqrt{\textstyle\sum_k \sum_i g_{k,i}^2}

    In plain text: the square root of the sum of the squares of every
    element of every array in ``grads``, summed in float64 in a fixed order
    (the same bits on every backend and thread count; the norm an
    optimizer's ``max_grad_norm`` compares).

    Parameters
    ----------
    grads : dict of ndarray
        float32 or float64 arrays under any keys (``"dW1"`` or ``"W1"``
        alike); they are only read.
    norm_type : float
        ``2.0`` (default) or ``math.inf`` (the largest magnitude).

    Returns
    -------
    float
        The norm; ``nan`` or ``inf`` when a gradient holds NaN or infinity.
        Finite float64 gradients whose sum of squares overflows still get
        their exact-range norm.
    """
    norm, _finite, _scale = _norm(_arrays(grads, written=False), _norm_type(norm_type))
    return norm


def clip_grad_norm_(grads: dict, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    r"""Scale a dict of gradients in place so that their global norm is at
    most ``max_norm``; return the norm before scaling.

    .. math:: c = \min\left(1, \frac{\text{max\_norm}}{\|g\| + 10^{-6}}\right),
              \qquad g \leftarrow c\, g

    In plain text: ``coef = min(1, max_norm / (norm + 1e-6))`` and every
    gradient is multiplied by ``coef`` (``torch.nn.utils.clip_grad_norm_``'s
    formula).  ``coef`` is computed in double precision and rounded once to
    the gradients' dtype; each element is multiplied once in that dtype.
    The norm is :func:`global_norm`'s (float64 for float32 gradients too).
    Scaling ``grads`` and then stepping an optimizer without
    ``max_grad_norm`` gives the same bits as stepping it with
    ``max_grad_norm=max_norm``.  The results are close to PyTorch's, not
    its bits (see Notes).

    Parameters
    ----------
    grads : dict of ndarray
        float32 or float64 arrays under any keys, writeable, none sharing
        memory with another (each is scaled once, in place; any layout).
    max_norm : float
        ``>= 0`` and finite; ``0`` zeroes every finite gradient, as in
        PyTorch.
    norm_type : float
        ``2.0`` (default) or ``math.inf``.
    error_if_nonfinite : bool
        Raise ``RuntimeError`` (and scale nothing) when a gradient holds NaN
        or infinity.  Otherwise such gradients are scaled by the resulting
        ``coef`` (NaN, or 0 for an infinite norm), as PyTorch does.

    Returns
    -------
    float
        The global norm of the gradients before scaling.

    Notes
    -----
    PyTorch rounds more often: it computes ``coef`` as
    ``max_norm * (1 / (norm + 1e-6))``, each operation rounded in the
    gradients' dtype, from a norm summed in another order (for float32
    gradients in float32; the float64 norm here is the more accurate one).
    With ``k`` the relative difference between the two norms in units of
    the dtype's machine epsilon, each clipped element is within ``2 k + 7``
    ulp (units in the last place) of PyTorch's: a bound from the roundings;
    in our measurements at most ``2 k + 4``, and 2 ulp (float64) or 3 ulp
    (float32) when the norms are equal.  ``k`` grows with the number of
    elements: for random normal gradients it stayed below 3 up to a
    thousand elements, and reached 10 to 14 at 10**5, and about 60
    (float64) and 120 (float32) at 10**6.
    """
    max_norm = _v.nonneg(max_norm, "max_norm")
    norm_type = _norm_type(norm_type)
    error_if_nonfinite = _v.flag(error_if_nonfinite, "error_if_nonfinite")
    gs = _arrays(grads, written=True)
    norm, finite, scale_of = _norm(gs, norm_type)
    if not finite:
        if error_if_nonfinite:
            raise RuntimeError(f"the total norm of order {norm_type} of grads is non-finite "
                               f"({norm}), so it cannot be clipped; pass "
                               f"error_if_nonfinite=False to scale by it anyway")
        coef = max_norm / (norm + CLIP_EPS)
    else:
        assert scale_of is not None  # given whenever the gradients are finite
        coef = scale_of(max_norm)
    # min(coef, 1.0) keeps a NaN coef, as torch.clamp does.
    if not coef >= 1.0:
        with np.errstate(invalid="ignore"):  # inf * 0 is NaN, silently, as in torch
            for g in gs:
                np.multiply(g, g.dtype.type(coef), out=g)
    return norm


def clip_grad_value_(grads: dict, clip_value: float) -> None:
    r"""Clamp every element of a dict of gradients, in place, to
    ``[-clip_value, clip_value]``.

    .. math:: g \leftarrow \min(\max(g, -c), c)

    In plain text: each element below ``-clip_value`` becomes
    ``-clip_value``, each above ``clip_value`` becomes ``clip_value``, the
    others (NaN included) stay as they are, bit for bit (the sign of a zero
    too); ``torch.nn.utils.clip_grad_value_``'s results.  ``clip_value`` is
    rounded to each gradient's dtype first, as PyTorch does (above
    float32's range it rounds to infinity and float32 gradients are left as
    they are, where PyTorch raises).

    Parameters
    ----------
    grads : dict of ndarray
        float32 or float64 arrays under any keys, writeable, none sharing
        memory with another (any layout).
    clip_value : float
        ``>= 0`` and finite (PyTorch also takes a negative value, which
        sets every element to it, and infinity or NaN).

    Returns
    -------
    None
        As PyTorch's.

    Examples
    --------
    >>> import numpy as np
    >>> import fusedoptim as fo
    >>> grads = {"dW1": np.array([-3.0, 0.5, np.nan, 7.0])}
    >>> fo.clip_grad_value_(grads, 1.0)
    >>> grads["dW1"]
    array([-1. ,  0.5,  nan,  1. ])
    """
    clip_value = _v.nonneg(clip_value, "clip_value")
    for g in _arrays(grads, written=True):
        with np.errstate(over="ignore"):  # beyond float32: an infinite bound
            hi = g.dtype.type(clip_value)
        # Replace only the elements strictly outside, as PyTorch's clamp
        # does: np.clip and np.maximum may swap a zero for the bound's -0.0,
        # and comparisons with NaN are false, so NaN stays NaN.
        np.copyto(g, -hi, where=g < -hi)
        np.copyto(g, hi, where=g > hi)
