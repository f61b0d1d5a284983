"""Shared test helpers (pytest puts tests/ on sys.path)."""

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
