"""Shared test helpers (pytest puts tests/ on sys.path)."""

import inspect

import numpy as np


def snapshot(*dicts):
    """Deep copies of dicts of arrays, to check later that nothing changed."""
    return [{k: np.array(a, copy=True) if isinstance(a, np.ndarray) else a
             for k, a in d.items()} for d in dicts]


def assert_unchanged(before, *dicts):
    for snap, d in zip(before, dicts):
        assert snap.keys() == d.keys()
        for k in snap:
            if isinstance(snap[k], np.ndarray):
                assert snap[k].tobytes() == np.asarray(d[k]).tobytes(), k


def placed(rng, n, dtype, offset):
    """``n`` standard-normal values of ``dtype`` whose first element lies
    ``offset`` elements past a 64-byte boundary (a view into a larger
    buffer): the compiled loops run the elements before a parameter's first
    64-byte boundary apart, and each offset moves that split."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.empty(n + 2 * 64 // itemsize, dtype)
    start = (-buf.ctypes.data % 64) // itemsize + offset
    x = buf[start:start + n]
    x[...] = rng.standard_normal(n)
    return x


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"max |diff| {np.nanmax(np.abs(a - b))}"


def assert_same_or_both_nan(a, b, what=""):
    """Bitwise equal except that NaNs only need to sit at the same places:
    when two different NaNs meet, IEEE leaves which one survives to the
    implementation (NumPy's own SIMD loops choose differently by path)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert np.array_equal(nan_a, nan_b), f"{what}: NaNs at different places"
    assert a[~nan_a].tobytes() == b[~nan_b].tobytes(), \
        f"{what}: max |diff| {np.max(np.abs(a[~nan_a] - b[~nan_b]), initial=0)}"


# --- step keywords of a registered family, by keyword name --------------------------

# Keyword name -> value; a callable ``(t, kw) -> value`` is evaluated at each
# step t (from 1), after the plain values (Adam's bias corrections).
VALUES = {
    "lr": 0.01,
    "momentum": 0.9,
    "dampening": 0.1,
    "alpha": 0.9,
    "eps": 1e-6,
    "beta1": 0.9,
    "beta2": 0.999,
    "bc1": lambda t, kw: 1.0 - kw["beta1"] ** t,
    "bc2": lambda t, kw: 1.0 - kw["beta2"] ** t,
    "weight_decay": 0.0,
    "gscale": 1.0,
    # adadelta, nadam, radam (typical values at an early step)
    "rho": 0.9,
    "lr_g": 0.0011,
    "lr_m": 0.0093,
    "bc2_sqrt": lambda t, kw: (1.0 - kw["beta2"] ** t) ** 0.5,
    "rect": 0.37,
}
#: A scalar keyword missing from VALUES: in [0, 1), so a valid decay, rate or eps.
GENERIC = 0.25
#: Flags that describe one step of a run: when the combination sets them, they
#: hold on the steps named here only (SGD's ``first``: the first step).
STEP_FLAGS = {"first": lambda t: t == 1}


def keywords(family, flags, scalars, t):
    """The step keywords of registered ``family`` at step ``t`` (from 1):
    ``flags`` gives every flag (see ``STEP_FLAGS``), ``scalars`` overrides
    the ``VALUES`` of some scalar keywords; in the family's keyword order."""
    kw = {}
    for k in family.scalars + ("gscale",):
        if k in scalars:
            kw[k] = scalars[k]
        else:
            v = VALUES.get(k, GENERIC)
            kw[k] = None if callable(v) else v
    for k in family.scalars:
        if callable(VALUES.get(k)):
            kw[k] = VALUES[k](t, kw)
    for k in family.flags:
        kw[k] = flags[k] and STEP_FLAGS.get(k, lambda t: True)(t)
    return kw


class Grouped:
    """An optimizer with torch's param_groups shape (a list of dicts)."""

    def __init__(self, lrs):
        self.param_groups = [{"params": {}, "lr": lr} for lr in lrs]


def from_torch(cls, kw):
    """Our constructor arguments for torch's keyword arguments ``kw`` of
    ``cls``'s counterpart (the registry's ``cls.torch``): each keyword
    renamed to the hyperparameter it maps to; an unmapped one fails."""
    unknown = set(kw) - set(cls.torch.keywords)
    assert not unknown, f"{cls.__name__}: torch keyword {sorted(unknown)[0]!r} has no mapping"
    return {cls.torch.keywords[k]: v for k, v in kw.items()}


def torch_defaults(cls):
    """torch's defaults of the keywords ``cls.torch`` maps (needs torch)."""
    import torch
    sig = inspect.signature(getattr(torch.optim, cls.torch.name)).parameters
    return {k: sig[k].default for k in cls.torch.keywords}


def ours_for_torch(cls, kw):
    """Our arguments for a case given in torch's keyword arguments ``kw``:
    torch's defaults for the mapped keywords the case leaves out, each
    handed to the hyperparameter the registry maps it to, plus the values
    under which the steps are the same (RMSProp: eps outside the root)."""
    spec = cls.torch
    from_torch(cls, kw)  # every keyword of the case is mapped
    full = {**torch_defaults(cls), **kw}
    ours = dict(spec.same_when)
    for key, name in spec.keywords.items():
        assert ours.setdefault(name, full[key]) == full[key], (cls.__name__, key)
    return ours
