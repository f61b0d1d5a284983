"""The course network behind ``fusedoptim train``.

The 3-layer network of the course notes (2-5-2-1: ReLU, ReLU, sigmoid; He
initialization; cross-entropy cost), trained on two moons with mini-batches
of 64 reshuffled every epoch, and updated through the course-compatible
functions (:func:`fusedoptim.update_parameters_with_adam` and friends).
Forward and backward passes are plain, vectorized NumPy; examples are
columns, as in the notes.
"""

import time

import numpy as np

from ... import functional as F
from ...data import random_mini_batches
from ...schedules import schedule_lr_decay, update_lr

__all__ = ["make_moons", "initialize_parameters", "forward_propagation", "compute_cost",
           "backward_propagation", "predict", "train"]

#: Layer widths of the course network.
LAYERS = (2, 5, 2, 1)

OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")

#: ``--decay`` name -> the course function computing the epoch's rate.
DECAYS = {"inverse-time": update_lr, "staircase": schedule_lr_decay}


def make_moons(n_samples=300, noise=0.2, seed=3):
    """Two interleaving half circles (the "two moons"), with Gaussian noise:
    the notes' data set.

    The upper moon is the half circle of radius 1 centred at (0, 0), label
    0; the lower one is centred at (1, 0.5) and opens upwards, label 1.
    Points are evenly spaced in angle, shuffled, then each coordinate gets
    ``N(0, noise**2)`` noise.  NumPy only, drawn as the notes'
    ``load_dataset`` draws it (``np.random.seed(3)`` then
    ``sklearn.datasets.make_moons(300, noise=.2)``): the same seed gives
    scikit-learn's points bit for bit, so the default data are the notes'.

    Returns
    -------
    X : ndarray, shape (2, n_samples)
        One example per column.
    Y : ndarray, shape (1, n_samples)
        Labels 0.0 / 1.0.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    rng = np.random.RandomState(seed)
    n_upper = n_samples // 2
    n_lower = n_samples - n_upper
    a = np.linspace(0.0, np.pi, n_upper)
    b = np.linspace(0.0, np.pi, n_lower)
    # scikit-learn's expressions and draws, in its order: a shuffle of the
    # indices, then the noise of the (n, 2) points in row-major order
    X = np.vstack([np.append(np.cos(a), 1 - np.cos(b)),
                   np.append(np.sin(a), 1 - np.sin(b) - 0.5)]).T
    Y = np.hstack([np.zeros(n_upper), np.ones(n_lower)])
    order = np.arange(n_samples)
    rng.shuffle(order)
    X = X[order] + rng.normal(scale=noise, size=X.shape)
    Y = Y[order]
    return np.ascontiguousarray(X.T), Y[None, :]


def initialize_parameters(layers=LAYERS, seed=3):
    r"""He initialization, as in the notes:
    :math:`W^{[l]} \sim \mathcal N(0, 2 / n^{[l-1]})`, :math:`b^{[l]} = 0`.

    Draws with ``RandomState(seed).randn`` in the notes' order, so the
    weights are those of ``np.random.seed(3)`` in the notes.
    """
    rng = np.random.RandomState(seed)
    params = {}
    for l in range(1, len(layers)):
        params[f"W{l}"] = rng.randn(layers[l], layers[l - 1]) * np.sqrt(2.0 / layers[l - 1])
        params[f"b{l}"] = np.zeros((layers[l], 1))
    return params


def forward_propagation(X, params):
    r"""LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

    .. math:: A^{[3]} = \sigma(W^{[3]} g(W^{[2]} g(W^{[1]} X + b^{[1]}) + b^{[2]}) + b^{[3]}),
              \quad g(z) = \max(z, 0)

    Returns
    -------
    A3 : ndarray, shape (1, m)
        The predicted probability of label 1.
    cache : tuple
        What :func:`backward_propagation` and :func:`compute_cost` need
        (``Z3`` is last).
    """
    Z1 = params["W1"] @ X + params["b1"]
    A1 = np.maximum(Z1, 0.0)
    Z2 = params["W2"] @ A1 + params["b2"]
    A2 = np.maximum(Z2, 0.0)
    Z3 = params["W3"] @ A2 + params["b3"]
    # sigma(z) = exp(-log(1 + exp(-z))): no overflow for any z.
    A3 = np.exp(-np.logaddexp(0.0, -Z3))
    return A3, (A1, A2, A3, params["W2"], params["W3"], Z3)


def compute_cost(Z3, Y):
    r"""Summed cross-entropy of the batch (the notes' ``compute_cost``;
    divide by the number of examples for the mean), from the logits:

    .. math:: \sum_i -y_i \log \sigma(z_i) - (1 - y_i) \log(1 - \sigma(z_i))
              = \sum_i \log(1 + e^{z_i}) - y_i z_i

    which stays finite when :math:`\sigma(z)` rounds to 0 or 1.
    """
    return float((np.logaddexp(0.0, Z3) - Y * Z3).sum())


def backward_propagation(X, Y, cache):
    r"""Gradients of the batch's mean cost :math:`J = \frac1m \sum_i L_i`.

    .. math::

        dZ^{[3]} &= (A^{[3]} - Y) / m \\
        dW^{[l]} &= dZ^{[l]} A^{[l-1]T}, \quad db^{[l]} = \textstyle\sum_i dZ^{[l]}_{:,i} \\
        dZ^{[l-1]} &= W^{[l]T} dZ^{[l]} \odot [A^{[l-1]} > 0]

    Returns
    -------
    grads : dict
        ``dW1``, ``db1``, ..., ``dW3``, ``db3`` (the keys the course
        functions read).
    """
    A1, A2, A3, W2, W3, _ = cache
    m = X.shape[1]
    dZ3 = (A3 - Y) / m
    # ndarray.sum rather than np.sum: on arrays this small the function's
    # dispatch costs more than the sum.
    dW3 = dZ3 @ A2.T
    db3 = dZ3.sum(axis=1, keepdims=True)
    dZ2 = (W3.T @ dZ3) * (A2 > 0)
    dW2 = dZ2 @ A1.T
    db2 = dZ2.sum(axis=1, keepdims=True)
    dZ1 = (W2.T @ dZ2) * (A1 > 0)
    dW1 = dZ1 @ X.T
    db1 = dZ1.sum(axis=1, keepdims=True)
    return {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2, "dW3": dW3, "db3": db3}


def predict(X, params):
    """Labels 0/1: probability above 1/2."""
    A3, _ = forward_propagation(X, params)
    return (A3 > 0.5).astype(float)


def _updater(optimizer, params, beta, beta1, beta2, epsilon):
    """A function ``(grads, lr)`` doing one step of ``optimizer`` in place."""
    if optimizer == "gd":
        return lambda grads, lr: F.update_parameters_with_gd(params, grads, lr)
    if optimizer == "momentum":
        v = F.initialize_velocity(params)
        return lambda grads, lr: F.update_parameters_with_momentum(params, grads, v, beta, lr)
    if optimizer == "rmsprop":
        s = F.initialize_rmsprop(params)
        return lambda grads, lr: F.update_parameters_with_rmsprop(params, grads, s, beta, lr,
                                                                  epsilon)
    if optimizer == "adam":
        v, s = F.initialize_adam(params)
        t = 0

        def adam(grads, lr):
            nonlocal t
            t += 1  # Adam's step count: mini-batches, not epochs
            F.update_parameters_with_adam(params, grads, v, s, t, lr, beta1, beta2, epsilon)
        return adam
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def train(X, Y, optimizer, learning_rate=0.0007, mini_batch_size=64, beta=0.9, beta1=0.9,
          beta2=0.999, epsilon=1e-8, num_epochs=5000, decay=None, decay_rate=1.0,
          time_interval=1000, on_epoch=None, layers=LAYERS, seed=3):
    """The notes' ``model()`` loop: per epoch, new mini-batches (seed 11,
    12, ...), forward, cost, backward and one optimizer step per batch; the
    average cost per example is recorded every 100 epochs and the decayed
    rate computed after each epoch.

    Parameters
    ----------
    optimizer : {"gd", "momentum", "rmsprop", "adam"}
    decay : None, "inverse-time" or "staircase"
        :func:`fusedoptim.update_lr` (every epoch) or
        :func:`fusedoptim.schedule_lr_decay` (every ``time_interval`` epochs).
    on_epoch : callable, optional
        ``on_epoch(epoch, cost, learning_rate)`` after each epoch.

    Returns
    -------
    dict
        ``parameters``, ``costs`` (every 100 epochs), ``final_cost`` (of
        the last epoch), ``learning_rate`` (the last one), ``seconds`` (the whole loop) and
        ``update_seconds`` (the optimizer steps alone).
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    if decay is not None and decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; choose one of {', '.join(DECAYS)}")
    params = initialize_parameters(layers, seed)
    step = _updater(optimizer, params, beta, beta1, beta2, epsilon)
    m = X.shape[1]
    lr0 = lr = learning_rate
    costs = []
    mb_seed = 10
    in_update = 0.0
    clock = time.perf_counter
    start = clock()
    for epoch in range(num_epochs):
        # A new shuffle every epoch, seeded as the notes do.
        mb_seed += 1
        cost_total = 0.0
        for mb_X, mb_Y in random_mini_batches(X, Y, mini_batch_size, mb_seed):
            A3, cache = forward_propagation(mb_X, params)
            cost_total += compute_cost(cache[-1], mb_Y)
            grads = backward_propagation(mb_X, mb_Y, cache)
            t0 = clock()
            step(grads, lr)
            in_update += clock() - t0
        cost_avg = cost_total / m
        if decay == "inverse-time":
            lr = update_lr(lr0, epoch, decay_rate)
        elif decay == "staircase":
            lr = schedule_lr_decay(lr0, epoch, decay_rate, time_interval)
        if epoch % 100 == 0:
            costs.append(cost_avg)
        if on_epoch is not None:
            on_epoch(epoch, cost_avg, lr)
    return {"parameters": params, "costs": costs, "final_cost": cost_avg, "learning_rate": lr,
            "seconds": clock() - start, "update_seconds": in_update}
