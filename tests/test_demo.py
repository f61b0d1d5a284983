"""The course demo network behind ``fusedoptim train``."""

import numpy as np
import pytest

import fusedoptim
from fusedoptim.cli import train as demo


def _mean_cost(X, Y, params):
    A3, cache = demo.forward_propagation(X, params)
    return demo.compute_cost(cache[-1], Y) / X.shape[1]


def _random_params(rng):
    params = demo.initialize_parameters(seed=5)
    # Non-zero biases, so that their gradients are exercised too.
    for k in params:
        if k.startswith("b"):
            params[k] = rng.normal(scale=0.5, size=params[k].shape)
    return params


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    X, Y = demo.make_moons(40, 0.2, seed=seed)
    params = _random_params(rng)
    _, cache = demo.forward_propagation(X, params)
    grads = demo.backward_propagation(X, Y, cache)
    assert set(grads) == {"d" + k for k in params}
    h = 1e-6
    for name, p in params.items():
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = _mean_cost(X, Y, params)
            p[idx] = old - h
            down = _mean_cost(X, Y, params)
            p[idx] = old
            num[idx] = (up - down) / (2 * h)
        g = grads["d" + name]
        assert g.shape == p.shape
        # Relative difference of the whole gradient, as in the course's check.
        diff = np.linalg.norm(g - num) / max(np.linalg.norm(g) + np.linalg.norm(num), 1e-12)
        assert diff < 1e-6, (name, diff)


def test_compute_cost_is_cross_entropy():
    rng = np.random.default_rng(0)
    Z = rng.normal(scale=3, size=(1, 50))
    Y = (rng.random((1, 50)) > 0.5).astype(float)
    A = 1 / (1 + np.exp(-Z))
    naive = np.sum(-Y * np.log(A) - (1 - Y) * np.log(1 - A))
    assert demo.compute_cost(Z, Y) == pytest.approx(naive, rel=1e-12)
    # Saturated logits stay finite (the naive form gives inf).
    assert np.isfinite(demo.compute_cost(np.array([[800.0, -800.0]]), np.array([[0.0, 1.0]])))


def test_forward_shapes_and_sigmoid():
    X, _ = demo.make_moons(10)
    params = demo.initialize_parameters()
    A3, cache = demo.forward_propagation(X, params)
    assert A3.shape == (1, 10)
    assert np.allclose(A3, 1 / (1 + np.exp(-cache[-1])))
    assert set(np.unique(demo.predict(X, params))) <= {0.0, 1.0}


def test_make_moons_geometry_and_seed():
    X, Y = demo.make_moons(300, noise=0.0, seed=1)
    assert X.shape == (2, 300) and Y.shape == (1, 300)
    assert Y.sum() == 150
    up, low = X[:, Y[0] == 0], X[:, Y[0] == 1]
    assert np.allclose(up[0] ** 2 + up[1] ** 2, 1)
    assert np.all(up[1] >= -1e-12)
    assert np.allclose((low[0] - 1) ** 2 + (low[1] - 0.5) ** 2, 1)
    assert np.all(low[1] <= 0.5 + 1e-12)
    # Shuffled: the labels are not in two blocks.
    assert np.count_nonzero(np.diff(Y[0])) > 10
    a, b = demo.make_moons(300, 0.2, seed=3), demo.make_moons(300, 0.2, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = demo.make_moons(300, 0.2, seed=4)
    assert not np.array_equal(a[0], c[0])
    # Noise of the requested size around the noiseless points.
    Xn, Yn = demo.make_moons(4000, 0.2, seed=0)
    Xc, Yc = demo.make_moons(4000, 0.0, seed=0)
    assert np.array_equal(Yn, Yc)
    assert np.std(Xn - Xc) == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("n, noise, seed", [(300, 0.2, 3), (1000, 0.2, 4), (301, 0.1, 7),
                                             (2, 0.2, 0), (300, 0.0, 3)])
def test_make_moons_is_the_notes_data_set(n, noise, seed):
    """The notes' load_dataset: ``np.random.seed(3)`` then scikit-learn's
    ``make_moons(300, noise=.2)``, examples as columns; bit for bit."""
    datasets = pytest.importorskip("sklearn.datasets")
    np.random.seed(seed)
    want_x, want_y = datasets.make_moons(n_samples=n, noise=noise)
    X, Y = demo.make_moons(n, noise, seed)
    assert np.array_equal(X, want_x.T) and np.array_equal(Y, want_y[None, :])
    assert X.flags.c_contiguous and X.dtype == Y.dtype == np.float64


def test_he_initialization():
    params = demo.initialize_parameters((2, 5, 2, 1), seed=3)
    rng = np.random.RandomState(3)
    W1 = rng.randn(5, 2) * np.sqrt(2 / 2)
    assert np.array_equal(params["W1"], W1)
    assert params["W2"].shape == (2, 5) and params["W3"].shape == (1, 2)
    assert all(not params[f"b{l}"].any() and params[f"b{l}"].shape == (n, 1)
               for l, n in ((1, 5), (2, 2), (3, 1)))
    big = demo.initialize_parameters((400, 300), seed=0)["W1"]
    assert np.std(big) == pytest.approx(np.sqrt(2 / 400), rel=0.05)


@pytest.mark.parametrize("optimizer", demo.OPTIMIZERS)
def test_training_lowers_the_cost(optimizer):
    X, Y = demo.make_moons(300, 0.2, seed=3)
    r = demo.train(X, Y, optimizer, learning_rate=0.01, num_epochs=201)
    assert len(r["costs"]) == 3
    assert r["costs"][-1] < r["costs"][0]
    assert r["final_cost"] < r["costs"][0]
    again = demo.train(X, Y, optimizer, learning_rate=0.01, num_epochs=201)
    for k in r["parameters"]:
        assert np.array_equal(r["parameters"][k], again["parameters"][k])


def test_adam_learns_the_moons():
    X, Y = demo.make_moons(300, 0.2, seed=3)
    r = demo.train(X, Y, "adam", learning_rate=0.01, num_epochs=300)
    assert np.mean(demo.predict(X, r["parameters"]) == Y) > 0.85


@pytest.mark.parametrize("decay, expected", [
    ("inverse-time", lambda e: fusedoptim.update_lr(0.1, e - 1, 0.5)),
    ("staircase", lambda e: fusedoptim.schedule_lr_decay(0.1, e - 1, 0.5, 10)),
])
def test_decay_schedules(decay, expected):
    X, Y = demo.make_moons(100, 0.2)
    seen = []
    r = demo.train(X, Y, "gd", learning_rate=0.1, num_epochs=25, decay=decay, decay_rate=0.5,
                   time_interval=10, on_epoch=lambda e, c, lr: seen.append(lr))
    assert r["learning_rate"] == expected(25)
    assert seen == [expected(e + 1) for e in range(25)]


def test_train_rejects_bad_arguments():
    X, Y = demo.make_moons(20)
    with pytest.raises(ValueError, match="optimizer"):
        demo.train(X, Y, "lion", num_epochs=1)
    with pytest.raises(ValueError, match="decay"):
        demo.train(X, Y, "gd", num_epochs=1, decay="cosine")
