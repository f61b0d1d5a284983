"""The small NumPy MLP the examples train (2-32-1, ReLU, sigmoid) and its
data, two interleaved half-moons: one copy, imported by ``trainer.py`` and
``mpi_train.py``."""

import numpy as np

__all__ = ["moons", "init", "forward_backward", "accuracy"]


def moons(m, rng):
    """``m`` points of two noisy interleaved half circles, labels 0/1."""
    t = rng.uniform(0.0, np.pi, m)
    y = rng.integers(0, 2, m)
    x = np.where(y == 0, np.cos(t), 1.0 - np.cos(t))
    z = np.where(y == 0, np.sin(t), 0.5 - np.sin(t))
    X = np.stack([x, z]) + 0.1 * rng.standard_normal((2, m))
    return X, y.reshape(1, m).astype(np.float64)


def init(dims, rng):
    params = {}
    for l in range(1, len(dims)):
        params[f"W{l}"] = rng.standard_normal((dims[l], dims[l - 1])) * np.sqrt(2 / dims[l - 1])
        params[f"b{l}"] = np.zeros((dims[l], 1))
    return params


def forward_backward(params, X, Y):
    """Cross-entropy loss and its gradients, keyed like the course notes."""
    m = X.shape[1]
    Z1 = params["W1"] @ X + params["b1"]
    A1 = np.maximum(Z1, 0.0)
    Z2 = params["W2"] @ A1 + params["b2"]
    A2 = 1.0 / (1.0 + np.exp(-Z2))
    eps = 1e-12
    loss = -np.mean(Y * np.log(A2 + eps) + (1 - Y) * np.log(1 - A2 + eps))
    dZ2 = (A2 - Y) / m
    dZ1 = (params["W2"].T @ dZ2) * (Z1 > 0)
    grads = {"dW2": dZ2 @ A1.T, "db2": dZ2.sum(axis=1, keepdims=True),
             "dW1": dZ1 @ X.T, "db1": dZ1.sum(axis=1, keepdims=True)}
    return loss, grads


def accuracy(params, X, Y):
    A1 = np.maximum(params["W1"] @ X + params["b1"], 0.0)
    return float(np.mean(((params["W2"] @ A1 + params["b2"]) > 0) == (Y > 0.5)))
