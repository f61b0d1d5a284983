"""The Keras-shaped schedules against Keras itself (the compare extra
installs it; skipped where it is not installed; Keras 3 needs a backend and
torch's is used)."""

import inspect
import os

import numpy as np
import pytest

import fusedoptim as fo

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")
KS = keras.optimizers.schedules

# Keras's positional arguments, exactly (the last value is for ``name``).
CASES = [
    ("InverseTimeDecay", (0.1, 100, 0.5)),
    ("InverseTimeDecay", (0.1, 30, 2.0, True)),
    ("ExponentialDecay", (0.1, 100, 0.5)),
    ("ExponentialDecay", (0.2, 25, 0.9, True)),
    ("PiecewiseConstantDecay", ([50, 120], [0.1, 0.05, 0.01])),
    ("CosineDecay", (0.1, 150)),
    ("CosineDecay", (0.1, 150, 0.2)),
    ("CosineDecay", (0.0, 150, 0.1, "c", 0.3, 20)),
    ("CosineDecayRestarts", (0.1, 20)),
    ("CosineDecayRestarts", (0.1, 15, 1.0, 0.8, 0.05)),
    ("CosineDecayRestarts", (0.1, 10, 3.0, 0.5)),
    ("PolynomialDecay", (0.1, 150)),
    ("PolynomialDecay", (0.1, 40, 0.01, 2.0, True)),
]


@pytest.mark.parametrize("name", sorted({c[0] for c in CASES}))
def test_same_signature(name):
    ours = list(inspect.signature(getattr(fo, name)).parameters.values())
    theirs = list(inspect.signature(getattr(KS, name)).parameters.values())
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default) for p in theirs]


@pytest.mark.parametrize("name, args", CASES)
def test_same_values(name, args):
    ours, theirs = getattr(fo, name)(*args), getattr(KS, name)(*args)
    peak = max(ours(s) for s in range(400))
    for step in range(400):
        want = float(np.asarray(theirs(step)))
        # Keras computes in float32: agree to float32 precision (of the peak
        # near a zero crossing).
        assert ours(step) == pytest.approx(want, rel=2e-6, abs=2e-7 * peak), (name, step)


def test_restarts_with_a_fractional_t_mul():
    """Periods 100, 110, 121: Keras's float32 lands some of the restarts 100,
    210, 331 at the end of the previous period (210 with the torch backend);
    ours give each restart its peak, and agree with Keras at every other step."""
    ours, theirs = fo.CosineDecayRestarts(1.0, 100, 1.1), KS.CosineDecayRestarts(1.0, 100, 1.1)
    for step in range(500):
        want = float(np.asarray(theirs(step)))
        if step in (0, 100, 210, 331):
            assert ours(step) == 1.0 and (want == 1.0 or want < 1e-6), step
        else:  # Keras's float32 period starts put its values up to about 1e-6 off
            assert ours(step) == pytest.approx(want, rel=2e-6, abs=5e-6), step
