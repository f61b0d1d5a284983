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
* ``parameters``, ``grads`` and every state are ``dict`` instances (a
  subclass is read through its own methods, the same way on every backend:
  ``parameters`` is iterated once, into a list that fixes the step's
  tensors; a key is looked up with ``key in d`` before ``d[key]``, so a
  ``defaultdict`` never gains a key; ``len()`` is never used, so a
  ``__len__`` that lies cannot size anything).
* In ``COURSE`` mode the gradient of parameter ``name`` is
  ``grads["d" + name]`` and its state is ``state["d" + name]``; in ``NAMED``
  mode (optimizer classes) the gradient is ``grads[name]`` or
  ``grads["d" + name]`` (not both) and the state is ``state[name]``.  A key
  that is itself a parameter's name is that parameter's gradient: with
  parameters ``ecoder`` and ``decoder``, ``grads["decoder"]`` is never taken
  for ``ecoder``.  Other keys in ``grads`` are ignored.
* A parameter is a writeable, aligned, native-byte-order ``numpy.ndarray`` of
  float32 or float64 whose memory is one contiguous block (C or Fortran
  order).  A non-contiguous parameter is refused: updating a copy would leave
  the caller's array unchanged.
* Array subclasses: ``numpy.memmap`` and ``numpy.recarray`` (of a float
  dtype) are accepted and treated as the plain ndarray over their memory
  (their arithmetic is ndarray's, so every backend computes the same bits).
  Every other subclass is refused, NumPy's own (``numpy.matrix``, whose
  ``*`` is a matrix product; ``numpy.ma.MaskedArray``, whose arithmetic
  skips masked elements) and anyone else's: a fused kernel works on raw
  memory and cannot honour different arithmetic, and the ``numpy`` backend
  would silently compute something else.  ``np.asarray(x)`` of a refused
  array is a plain view of the same memory.
* A gradient has the parameter's dtype and shape, in any layout; one whose
  layout differs from its parameter's is copied into that layout (gradients
  are only read).
* A state has the parameter's dtype, shape and strides, and is writeable.
* No written array (parameter or state) shares memory with another array of
  the step; gradients may share memory with each other.  Memory is compared
  by address: two separate ``np.memmap`` mappings of one file have different
  addresses and are not detected (a documented limit; map a file once).
"""

import difflib
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
#: ndarray subclasses whose arithmetic is ndarray's (see the module docstring).
PLAIN_SUBCLASSES = (np.memmap, np.recarray)


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


def param_vanished(name):
    return KeyError(f"parameters has no {name!r}, though iterating it gave that key")


def subclass_refused(a, label):
    cls = type(a)
    return TypeError(f"{label} is a {cls.__module__}.{cls.__qualname__}, not a plain "
                     f"numpy.ndarray (its arithmetic may differ); pass np.asarray of it")


_MISSING = object()


def lookup(d, key):
    """``d[key]``, or ``_MISSING`` when ``key`` is absent.  A dict subclass
    is asked ``key in d`` first, so a ``defaultdict`` gains no key."""
    if type(d) is dict:
        return d.get(key, _MISSING)
    if key not in d:
        return _MISSING
    return d[key]


def keys_of(d):
    """The keys of ``d``, iterated once (never sized by ``len``)."""
    if type(d) is dict:
        return list(d)
    return [k for k in d]


def _check_dict(obj, label):
    if not isinstance(obj, dict):
        raise TypeError(f"{label} must be a dict of arrays, got {_type_name(obj)}")


def _check_array(a, label):
    if not isinstance(a, np.ndarray):
        if isinstance(a, np.generic):  # what NumPy returns for a 0-d result
            raise TypeError(f"{label} must be a numpy.ndarray, got a numpy.{_type_name(a)} "
                            f"scalar (np.asarray makes it a 0-d array)")
        raise TypeError(f"{label} must be a numpy.ndarray, got {_type_name(a)}")
    if type(a) is not np.ndarray and type(a) not in PLAIN_SUBCLASSES:
        raise subclass_refused(a, label)
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


def _sweep_overlaps(spans, last):
    """Whether two of the spans (sorted by start) whose item index is at
    most ``last`` intersect, one of them written: one linear sweep."""
    max_hi_written = max_hi_any = -1
    for lo, hi, written, idx in spans:
        if idx > last:
            continue
        if lo < max_hi_written or (written and lo < max_hi_any):
            return True
        if hi > max_hi_any:
            max_hi_any = hi
        if written and hi > max_hi_written:
            max_hi_written = hi
    return False


def _find_overlap(items):
    """First overlapping pair among ``(label, array, written)`` items, in
    step order: returns ``(later_label, earlier_label)`` or ``None``.

    Only pairs with at least one written array count.  "First" means the
    smallest later index, then the smallest earlier one.  One sort, then
    sweeps: whether any pair overlaps is one sweep; the later item of the
    first pair is found by bisecting on the prefix of items that holds an
    overlap (monotone in its length), O(n log n) in all; its earlier partner
    by one scan.  Items that cannot overlap anything
    (``_overlap_candidates``) are left out, which changes neither the answer
    nor which pair is named.
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
    lo_k, hi_k = 0, len(items) - 1
    if not _sweep_overlaps(spans, hi_k):
        return None
    while lo_k < hi_k:  # the smallest last index whose prefix overlaps
        mid = (lo_k + hi_k) // 2
        if _sweep_overlaps(spans, mid):
            hi_k = mid
        else:
            lo_k = mid + 1
    j = next(s for s in spans if s[3] == hi_k)
    partners = [s[3] for s in spans if s[3] < hi_k and (s[2] or j[2])
                and s[0] < j[1] and j[0] < s[1]]
    return items[hi_k][0], items[min(partners)][0]


def _grad_of(grads, name, mode, params):
    """``(key, array)`` of the gradient of parameter ``name``."""
    dkey = "d" + name
    if mode == COURSE:
        g = lookup(grads, dkey)
        if g is _MISSING:
            raise KeyError(f"grads has no {dkey!r} (gradient of parameter {name!r})")
        return dkey, g
    has_plain = name in grads
    # A key that is another parameter's name is that parameter's gradient.
    has_d = dkey in grads and dkey not in params
    if has_plain and has_d:
        raise ValueError(f"grads has both {name!r} and {dkey!r}; pass one "
                         f"gradient per parameter")
    if has_plain or has_d:
        key = name if has_plain else dkey
        return key, grads[key]
    # A misspelled key is the usual cause: name the keys that match no
    # parameter, the likeliest typos of this one first.
    stray = [k for k in keys_of(grads)
             if not (k in params or (isinstance(k, str) and k[:1] == "d" and k[1:] in params))]
    close = difflib.get_close_matches(name, [k for k in stray if isinstance(k, str)], n=3)
    stray = close + [k for k in stray if k not in close]
    extra = (f"; grads has {', '.join(map(repr, stray[:3]))}, which name"
             f"{'s' if len(stray) == 1 else ''} no parameter") if stray else ""
    raise KeyError(f"grads has no {name!r} or {dkey!r} (gradient of parameter {name!r}){extra}")


def gather(params, grads, states, mode):
    """Check a whole step; return one tuple ``(p, g, *state_arrays)`` per
    parameter, in ``params`` order.

    ``states`` is a tuple of ``(label, dict or None)``; a ``None`` dict gives
    ``None`` in that position of every tuple.  Raises ``TypeError``,
    ``ValueError`` or ``KeyError`` naming the offending key; writes nothing.
    Accepted array subclasses come back as plain ndarray views.
    """
    _check_dict(params, "parameters")
    _check_dict(grads, "grads")
    for label, st in states:
        if st is not None:
            _check_dict(st, label)
    out = []
    items = []
    exact = type(params) is dict  # its iterated keys are all there
    for name in keys_of(params):
        if not isinstance(name, str):
            raise bad_name(name)
        plabel = f"parameters[{name!r}]"
        p = params[name] if exact else lookup(params, name)
        if p is _MISSING:
            raise param_vanished(name)
        _check_array(p, plabel)
        _check_writeable(p, plabel)
        if not _is_dense(p):
            raise not_contiguous(plabel)
        gkey, g = _grad_of(grads, name, mode, params)
        glabel = f"grads[{gkey!r}]"
        _check_array(g, glabel)
        _check_like(g, glabel, p, plabel)
        # An accepted subclass (memmap, recarray) is stepped as the plain
        # ndarray over its memory, so the reference's arithmetic is ndarray's.
        if type(p) is not np.ndarray:
            p = p.view(np.ndarray)
        if type(g) is not np.ndarray:
            g = g.view(np.ndarray)
        items.append((plabel, p, True))
        items.append((glabel, g, False))
        group = [p, g if _same_layout(g, p) else _relayout(g, p)]
        skey = "d" + name if mode == COURSE else name
        for label, st in states:
            if st is None:
                group.append(None)
                continue
            a = st.get(skey, _MISSING) if type(st) is dict else lookup(st, skey)
            if a is _MISSING:
                raise missing_state(label, skey, name)
            alabel = f"{label}[{skey!r}]"
            _check_array(a, alabel)
            _check_like(a, alabel, p, plabel)
            _check_writeable(a, alabel)
            if not (_is_dense(a) and _same_layout(a, p)):
                raise layout_mismatch(alabel, plabel)
            if type(a) is not np.ndarray:
                a = a.view(np.ndarray)
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
    bools, ``ValueError`` for NaN, infinity and numbers beyond float range.
    ``-0.0`` becomes ``+0.0`` (``x + 0.0``) here and in the checks built on
    this one, so no backend sees a negative zero hyperparameter (which
    could flip the sign of an infinite or zero result on some but not
    others)."""
    if type(x) is float and -_FMAX <= x <= _FMAX:
        return x + 0.0
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_type_name(x)}")
    try:
        x = float(x)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got a number too large for "
                         f"a float") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x + 0.0


def nonneg(x, name):
    if type(x) is float and 0.0 <= x <= _FMAX:
        return x + 0.0
    x = real(x, name)
    if x < 0.0:
        raise ValueError(f"{name} must be >= 0, got {x}")
    return x


def beta(x, name):
    if type(x) is float and 0.0 <= x < 1.0:
        return x + 0.0
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


def scaled_step(gscale, norm, skip):
    """``Optimizer.step_scaled``'s decision, checked: ``(gscale, norm,
    skip)`` with ``gscale`` in [0, 1] or NaN (the clipping factor of a NaN
    norm), ``norm`` ``None`` or a real >= 0 (NaN and infinity allowed: the
    norm of a non-finite gradient)."""
    if isinstance(gscale, (float, np.floating)) and math.isnan(gscale):
        gscale = math.nan
    else:
        gscale = real(gscale, "gscale")
        if not 0.0 <= gscale <= 1.0:
            raise ValueError(f"gscale must be in [0, 1] or NaN, got {gscale}")
    if norm is not None:
        if isinstance(norm, (bool, np.bool_)) or not isinstance(norm, numbers.Real):
            raise TypeError(f"norm must be a real number or None, got {_type_name(norm)}")
        norm = float(norm)
        if norm < 0.0:
            raise ValueError(f"norm must be >= 0, got {norm}")
    return gscale, norm, flag(skip, "skip")


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
