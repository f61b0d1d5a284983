"""The validation layer: checks a whole step before anything is written.

``gather`` turns the user's dicts into a list of clean, checked array groups,
or raises a short error that names the key or argument.  The ``numpy`` and
``numba`` backends call it; the ``cython`` backend has a compiled twin in
``_ext/_gather.pyx`` that must raise the same exception with the same message
for the same input (``tests/test_validation.py`` checks both side by side).
The messages both raise directly are built by the small functions below
(``bad_name``, ``not_contiguous``, ...), so each is written once.

Rules (one place, so every backend agrees)
------------------------------------------
* ``parameters``, ``grads`` and every state are ``dict`` instances.
* In ``COURSE`` mode the gradient of parameter ``name`` is
  ``grads["d" + name]`` and its state is ``state["d" + name]``; in ``NAMED``
  mode (optimizer classes) the gradient is ``grads[name]`` or
  ``grads["d" + name]`` (not both) and the state is ``state[name]``.  Other
  keys in ``grads`` are ignored.
* A parameter is a writeable, aligned, native-byte-order ``numpy.ndarray`` of
  float32 or float64 whose memory is one contiguous block (C or Fortran
  order).  A non-contiguous parameter is refused: updating a copy would leave
  the caller's array unchanged.
* A gradient has the parameter's dtype and shape, in any layout; one whose
  layout differs from its parameter's is copied into that layout (gradients
  are only read).
* A state has the parameter's dtype, shape and strides, and is writeable.
* No written array (parameter or state) shares memory with another array of
  the step; gradients may share memory with each other.
"""

import math
import numbers
import operator
import sys
from collections.abc import Sequence

import numpy as np

COURSE = 0
NAMED = 1

#: A state slot that this step does not use (no momentum buffer, ...).
ABSENT = ("", None)

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _type_name(x):
    return type(x).__name__


# --- errors the compiled twin raises too (one source for each message) ---------


def bad_name(name):
    return TypeError(f"parameter names must be str, got {name!r}")


def not_contiguous(label):
    return ValueError(f"{label} is not contiguous; fusedoptim updates arrays in place "
                      f"and never a copy (store np.ascontiguousarray of it back in the dict)")


def missing_state(label, skey, name):
    return KeyError(f"{label} has no {skey!r} (state of parameter {name!r})")


def layout_mismatch(label, plabel):
    return ValueError(f"{label} does not have the memory layout of {plabel}")


def overlap(later, earlier):
    return ValueError(f"{later} shares memory with {earlier}")


def _check_dict(obj, label):
    if not isinstance(obj, dict):
        raise TypeError(f"{label} must be a dict of arrays, got {_type_name(obj)}")


def _check_array(a, label):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{label} must be a numpy.ndarray, got {_type_name(a)}")
    dt = a.dtype
    if dt not in _FLOAT_DTYPES:
        if dt.kind == "f" and not dt.isnative:
            raise TypeError(f"{label} is not in native byte order ({dt.str}); "
                            f"convert it with .astype('{dt.newbyteorder('=').str}')")
        raise TypeError(f"{label} has dtype {dt}; fusedoptim updates float32 "
                        f"and float64 arrays")


def _check_writeable(a, label):
    if not a.flags.writeable:
        raise ValueError(f"{label} is read-only")
    if not a.flags.aligned:
        raise ValueError(f"{label} is not aligned")


def _check_like(a, label, p, plabel):
    if a.dtype != p.dtype:
        raise TypeError(f"{label} has dtype {a.dtype} but {plabel} has {p.dtype}")
    if a.shape != p.shape:
        raise ValueError(f"{label} has shape {a.shape} but {plabel} has shape {p.shape}")


def _is_dense(a):
    return a.flags.c_contiguous or a.flags.f_contiguous


def _same_layout(a, p):
    """True when elementwise loops over the raw memory of ``a`` and ``p``
    visit corresponding elements."""
    if a.size <= 1:
        return True
    if p.flags.c_contiguous:
        return a.flags.c_contiguous
    return a.flags.f_contiguous


def _bounds(a):
    """Half-open byte range spanned by ``a``; ``None`` for an empty array."""
    if a.size == 0:
        return None
    lo = hi = a.__array_interface__["data"][0]
    for n, st in zip(a.shape, a.strides):
        if st > 0:
            hi += (n - 1) * st
        else:
            lo += (n - 1) * st
    return lo, hi + a.itemsize


def _memory_owner(a):
    """The ndarray that owns ``a``'s memory, or ``None`` when the memory
    comes from elsewhere (a foreign buffer, or an array that does not own
    its data), in which case only addresses can tell what it overlaps."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    if root.base is None and root.flags.owndata:
        return root
    return None


def _overlap_candidates(items):
    """Indices of the items that may overlap another one, in step order.

    Reading an array's address from Python costs microseconds
    (``__array_interface__``), so addresses are read only where needed:
    two arrays whose memory belongs to different owning ndarrays lie in
    different allocations and cannot overlap.  The usual step (every array
    owns its memory) reads none.
    """
    groups = {}
    for idx, (_label, a, _written) in enumerate(items):
        owner = _memory_owner(a)
        if owner is None:
            return range(len(items))
        groups.setdefault(id(owner), []).append(idx)
    return sorted(i for g in groups.values() if len(g) > 1 for i in g)


def _find_overlap(items):
    """First overlapping pair among ``(label, array, written)`` items, in
    step order: returns ``(later_label, earlier_label)`` or ``None``.

    Only pairs with at least one written array count.  A sort finds whether
    there is any overlap in O(n log n); the quadratic scan that names the
    first pair runs only when there is one.  Items that cannot overlap
    anything (``_overlap_candidates``) are left out, which changes neither
    the answer nor which pair is named first.
    """
    spans = []
    for idx in _overlap_candidates(items):
        _label, a, written = items[idx]
        b = _bounds(a)
        if b is not None:
            spans.append((b[0], b[1], written, idx))
    if len(spans) < 2:
        return None
    spans.sort()
    found = False
    max_hi_written = max_hi_any = -1
    for lo, hi, written, _idx in spans:
        if lo < max_hi_written or (written and lo < max_hi_any):
            found = True
            break
        max_hi_any = max(max_hi_any, hi)
        if written:
            max_hi_written = max(max_hi_written, hi)
    if not found:
        return None
    spans.sort(key=lambda s: s[3])
    for j in range(1, len(spans)):
        lo_j, hi_j, w_j, idx_j = spans[j]
        for i in range(j):
            lo_i, hi_i, w_i, idx_i = spans[i]
            if (w_i or w_j) and lo_i < hi_j and lo_j < hi_i:
                return items[idx_j][0], items[idx_i][0]
    raise AssertionError("unreachable: sorted scan found an overlap")


def _grad_of(grads, name, mode):
    """``(key, array)`` of the gradient of parameter ``name``."""
    dkey = "d" + name
    if mode == COURSE:
        try:
            return dkey, grads[dkey]
        except KeyError:
            raise KeyError(f"grads has no {dkey!r} (gradient of parameter {name!r})") from None
    has_plain = name in grads
    has_d = dkey in grads
    if has_plain and has_d:
        raise ValueError(f"grads has both {name!r} and {dkey!r}; pass one "
                         f"gradient per parameter")
    if has_plain:
        return name, grads[name]
    if has_d:
        return dkey, grads[dkey]
    raise KeyError(f"grads has no {name!r} or {dkey!r} (gradient of parameter {name!r})")


def gather(params, grads, states, mode):
    """Check a whole step; return one tuple ``(p, g, *state_arrays)`` per
    parameter, in ``params`` order.

    ``states`` is a tuple of ``(label, dict or None)``; a ``None`` dict gives
    ``None`` in that position of every tuple.  Raises ``TypeError``,
    ``ValueError`` or ``KeyError`` naming the offending key; writes nothing.
    """
    _check_dict(params, "parameters")
    _check_dict(grads, "grads")
    for label, st in states:
        if st is not None:
            _check_dict(st, label)
    out = []
    items = []
    for name in params:
        if not isinstance(name, str):
            raise bad_name(name)
        plabel = f"parameters[{name!r}]"
        p = params[name]
        _check_array(p, plabel)
        _check_writeable(p, plabel)
        if not _is_dense(p):
            raise not_contiguous(plabel)
        gkey, g = _grad_of(grads, name, mode)
        glabel = f"grads[{gkey!r}]"
        _check_array(g, glabel)
        _check_like(g, glabel, p, plabel)
        items.append((plabel, p, True))
        items.append((glabel, g, False))
        group = [p, g if _same_layout(g, p) else _relayout(g, p)]
        skey = "d" + name if mode == COURSE else name
        for label, st in states:
            if st is None:
                group.append(None)
                continue
            try:
                a = st[skey]
            except KeyError:
                raise missing_state(label, skey, name) from None
            alabel = f"{label}[{skey!r}]"
            _check_array(a, alabel)
            _check_like(a, alabel, p, plabel)
            _check_writeable(a, alabel)
            if not (_is_dense(a) and _same_layout(a, p)):
                raise layout_mismatch(alabel, plabel)
            items.append((alabel, a, True))
            group.append(a)
        out.append(tuple(group))
    pair = _find_overlap(items)
    if pair is not None:
        raise overlap(*pair)
    return out


def _relayout(g, p):
    out = np.empty_like(p)
    np.copyto(out, g)
    return out


# --- hyperparameters --------------------------------------------------------


# The checks below open with a fast path for the common case (a finite Python
# float, a plain int step), which skips the ``numbers.Real`` ABC check: the
# course's tiny models spend most of a step here.  Anything else takes the
# full path, which owns every message.
_FMAX = sys.float_info.max


def real(x, name):
    """``x`` as a finite Python float; ``TypeError`` for non-numbers and
    bools, ``ValueError`` for NaN and infinity."""
    if type(x) is float and -_FMAX <= x <= _FMAX:
        return x
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_type_name(x)}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


def nonneg(x, name):
    if type(x) is float and 0.0 <= x <= _FMAX:
        return x
    x = real(x, name)
    if x < 0.0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def beta(x, name):
    if type(x) is float and 0.0 <= x < 1.0:
        return x
    x = real(x, name)
    if not 0.0 <= x < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {x}")
    return x


def step(t, name="t"):
    """The 1-based step count as a Python int."""
    if type(t) is int and 1 <= t < 9223372036854775808:
        return t
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer >= 1, got {t!r}")
    try:
        t = operator.index(t)
    except TypeError:
        raise TypeError(f"{name} must be an integer >= 1, got {_type_name(t)}") from None
    if t < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {t}")
    if t >= 2**63:
        raise ValueError(f"{name} must be < 2**63, got {t}")
    return t


def flag(x, name):
    """``x`` as a bool; only ``True``/``False`` (and NumPy's) are accepted."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {_type_name(x)}")
    return bool(x)


def betas(x, name="betas"):
    """A pair ``(beta1, beta2)``, each in ``[0, 1)``."""
    if not isinstance(x, Sequence) or isinstance(x, str) or len(x) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {x!r}")
    return (beta(x[0], f"{name}[0]"), beta(x[1], f"{name}[1]"))


def positive_int(n, name):
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive integer, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got {_type_name(n)}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n}")
    return n
