"""Training accuracy with reduced-precision state of the one-state families
(issue 14 item 6), fixed seeds: the tasks of ``test_lowp_accuracy.py`` (the
course's moons network, an MLP on scikit-learn's digits, a long linear
regression with a cosine-decayed rate) trained with float32, bfloat16 and
int8 state from the same start on the same batches.  The goal: within 0.5
accuracy points of the float32-state result (classification) or 2% relative
loss (regression).  Margins measured when this was written are given beside
each case.  And the stagnation trap of round-to-nearest on second moments
(``docs``: low-precision-state note), measured on RMSProp's and Adagrad's
state directly.
"""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import lowp_onestate as S
from test_lowp_accuracy import _forward, _grads, _mlp_init, demo, _one_blas_thread  # noqa: F401
from fusedoptim.families.adam_lowp import QMIN_ELEMENTS

FORMATS = (None, "bfloat16", "int8")

#: name: (class, keywords) per task.  Measured (float32 / bfloat16 / int8):
#: moons, test accuracy on 2000 points: Momentum 95.85 / 95.80 / 95.80,
#: RMSProp 95.45 / 95.50 / 95.50, Adagrad 95.60 / 95.60 / 95.65,
#: Lion 95.65 / 95.65 / 95.65.  Digits (597 held out): Momentum 96.65 all
#: three, RMSProp 97.49 all three, Adagrad 97.15 / 97.15 / 97.32,
#: Lion 94.81 / 94.64 / 94.81.
MOONS = {
    "momentum": (fo.Momentum, {"lr": 0.5, "beta": 0.9}),
    "rmsprop": (fo.RMSProp, {"lr": 0.002}),
    "adagrad": (fo.Adagrad, {"lr": 0.05}),
    "lion": (fo.Lion, {"lr": 0.001}),
}
DIGITS = dict(MOONS, lion=(fo.Lion, {"lr": 0.0005}))
#: Regression, mean squared error (noise floor 9.68e-05), relative to float32:
#: Momentum 9.741e-05, bfloat16 -0.04%, int8 -0.006%; RMSProp (beta 0.99)
#: 9.6955e-05, both +0.0000%; Adagrad 9.6955e-05, both -0.0000%.  (Lion at
#: lr 0.01 ends at 1.082e-04 with int8 2.3% lower: not in the goal, not here.)
REGRESSION = {
    "momentum": (fo.Momentum, 30.0, {"beta": 0.9}),
    "rmsprop": (fo.RMSProp, 0.02, {"beta": 0.99}),
    "adagrad": (fo.Adagrad, 0.5, {}),
}


def _train_classifier(make, fmt, sizes, Xtr, Ytr, Xte, yte, epochs, softmax):
    p = _mlp_init(sizes, 0)
    assert any(a.size >= QMIN_ELEMENTS for a in p.values())
    opt = make(p, fmt)
    for epoch in range(epochs):
        for Xb, Yb in fo.random_mini_batches(Xtr, Ytr, 64, seed=epoch):
            opt.step(_grads(p, Xb.astype(np.float32), Yb, softmax))
    Z = _forward(p, Xte)[-1]
    pred = Z.argmax(axis=0) if softmax else (Z[0] > 0).astype(int)
    return 100.0 * float(np.mean(pred == yte))


def _maker(cls, kw):
    return lambda p, fmt: cls(p, state_dtype=fmt, state_seed=1, **kw)


@pytest.mark.parametrize("name", list(MOONS))
def test_moons_network(name):
    Xtr, Ytr = demo.make_moons(300, 0.2, seed=3)
    Xte, Yte = demo.make_moons(2000, 0.2, seed=4)
    make = _maker(*MOONS[name])
    acc = {fmt: _train_classifier(make, fmt, (2, 64, 64, 1), Xtr.astype(np.float32),
                                  Ytr.astype(np.float32), Xte.astype(np.float32),
                                  Yte[0].astype(int), 150, False) for fmt in FORMATS}
    assert acc[None] > 90.0, acc
    for fmt in ("bfloat16", "int8"):
        assert abs(acc[fmt] - acc[None]) <= 0.5, acc


@pytest.mark.parametrize("name", list(DIGITS))
def test_digits_mlp(name):
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).T
    order = np.random.default_rng(0).permutation(X.shape[1])
    tr, te = order[:1200], order[1200:]
    Y = np.eye(10, dtype=np.float32)[y].T
    make = _maker(*DIGITS[name])
    acc = {fmt: _train_classifier(make, fmt, (64, 128, 10), X[:, tr], Y[:, tr], X[:, te],
                                  y[te], 15, True) for fmt in FORMATS}
    assert acc[None] > 94.0, acc
    for fmt in ("bfloat16", "int8"):
        assert abs(acc[fmt] - acc[None]) <= 0.5, acc


def _regression(cls, lr, kw, fmt, steps=1000, n=2000, k=64):
    # test_lowp_accuracy._regression's task: W is 64 x 64 (quantized), the
    # features scaled over a decade, the rate decayed to 1% (small last steps).
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((n, k)) * 10.0 ** rng.uniform(-1, 0, k)).astype(np.float32)
    W = rng.standard_normal((k, k)).astype(np.float32)
    Y = X @ W + np.float32(0.01) * rng.standard_normal((n, k)).astype(np.float32)
    w = {"W": np.zeros((k, k), np.float32)}
    sched = fo.CosineDecay(lr, decay_steps=steps, alpha=0.01)
    opt = cls(w, lr=sched, state_dtype=fmt, state_seed=2, **kw)
    for _ in range(steps):
        R = X @ w["W"] - Y
        opt.step({"W": (X.T @ R) * np.float32(2.0 / (n * k))})
    R = X @ w["W"] - Y
    return float(np.mean(R.astype(np.float64) ** 2))


@pytest.mark.parametrize("name", list(REGRESSION))
def test_long_linear_regression(name):
    cls, lr, kw = REGRESSION[name]
    loss = {fmt: _regression(cls, lr, kw, fmt) for fmt in FORMATS}
    assert loss[None] < 1.1e-4, loss
    for fmt in ("bfloat16", "int8"):
        assert abs(loss[fmt] - loss[None]) <= 0.02 * loss[None], loss


def _drifting(cls, kw, label, fmt, rounding, steps, n=1 << 14):
    """Decoded state after ``steps`` steps of gradients with per-element
    scales over 3 decades, a per-element mean and a 10x decay (the note's
    S1 case)."""
    rng = np.random.default_rng(0)
    scale = (10.0 ** rng.uniform(-3, 0, n)).astype(np.float32)
    mean = (rng.standard_normal(n) * 0.5).astype(np.float32)
    p = {"w": np.zeros(n, np.float32)}
    opt = cls(p, lr=1e-4, state_dtype=fmt, state_rounding=rounding, state_seed=3, **kw)
    for t in range(steps):
        decay = np.float32(10.0 ** (-t / steps))
        opt.step({"w": scale * (mean + rng.standard_normal(n).astype(np.float32)) * decay})
    st = opt.state
    return S.decode(S.DECLS[cls.family.name], st[label]["w"], st.get(label + "_scale", {}).get("w"))


@pytest.mark.parametrize("name", ["rmsprop", "adagrad"])
def test_second_moment_does_not_stagnate(name):
    # Median over elements of sqrt(state) / sqrt(float32 state).  Measured,
    # RMSProp (beta 0.99, 2000 steps): int8 nearest 1.107 (stagnated high),
    # stochastic 0.999; bfloat16 nearest 1.012, stochastic 1.000.  Adagrad
    # (3000 steps): bfloat16 nearest 0.788 (the sum stops growing), stochastic
    # 1.000; int8 nearest 1.024, stochastic 1.000.  The defaults are stochastic
    # where nearest stagnates.
    cls, kw, label, steps = {"rmsprop": (fo.RMSProp, {"beta": 0.99}, "square_avg", 2000),
                             "adagrad": (fo.Adagrad, {}, "sum", 3000)}[name]
    ref = _drifting(cls, kw, label, None, None, steps)
    ratio = {}
    for fmt in ("bfloat16", "int8"):
        for rounding in ("nearest", "stochastic", None):
            x = _drifting(cls, kw, label, fmt, rounding, steps)
            ratio[fmt, rounding] = float(np.median(np.sqrt(x) / np.sqrt(ref)))
    for fmt in ("bfloat16", "int8"):
        assert abs(ratio[fmt, "stochastic"] - 1.0) < 0.005, ratio
    assert ratio["int8", None] == ratio["int8", "stochastic"]
    if name == "rmsprop":
        assert ratio["int8", "nearest"] > 1.05, ratio  # the trap, for the record
    else:
        assert ratio["bfloat16", "nearest"] < 0.9, ratio
        assert ratio["bfloat16", None] == ratio["bfloat16", "stochastic"]
