"""A trainer-style loop: an optimizer object over two parameter groups (no
weight decay on the biases) with a warm-up then cosine schedule, clipping
and a safetensors checkpoint, training a small NumPy MLP (2-32-1, ReLU,
sigmoid) on two interleaved half-moons.

Run from the repository root:  python examples/trainer.py
"""

import os
import tempfile
from typing import Any

import numpy as np

import fusedoptim as fo


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


rng = np.random.default_rng(0)
X, Y = moons(512, rng)
params = init([2, 32, 1], rng)

epochs, batch = 40, 64
steps = epochs * -(-X.shape[1] // batch)             # 320 optimizer steps
warmup = 20
schedule = fo.SequentialLR([fo.LinearLR(0.05, start_factor=0.1, total_iters=warmup),
                            fo.CosineAnnealingLR(0.05, T_max=steps - warmup, eta_min=0.0025)],
                           milestones=[warmup])


def make_optimizer(params: dict) -> Any:
    """AdamW over two groups: the weights decay, the ``(n, 1)`` biases do not."""
    groups = fo.exclude_from_weight_decay(params, var_names=[r"^b\d+$"])
    return fo.AdamW(groups, lr=schedule, weight_decay=1e-4,
                    max_grad_norm=1.0, skip_nonfinite=True)


opt = make_optimizer(params)

for epoch in range(epochs):
    for Xb, Yb in fo.random_mini_batches(X, Y, batch, seed=epoch):
        loss, grads = forward_backward(params, Xb, Yb)
        opt.step(grads)                  # one fused call for both groups, clipped
    if epoch % 5 == 0 or epoch == epochs - 1:
        print(f"epoch {epoch:2d}  step {opt.t:3d}  lr {opt.last_lr:.4f}  "
              f"loss {loss:.4f}  |g| {opt.last_grad_norm:.3f}  "
              f"acc {accuracy(params, X, Y):.3f}")

# Checkpoint: the optimizer state (every group's) and the parameters in one
# safetensors file, no pickle; a fresh optimizer resumes it bit for bit.
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "opt.safetensors")
    opt.save(path, parameters=True)
    opt2 = make_optimizer({k: np.zeros_like(p) for k, p in params.items()})
    opt2.load(path)
assert all(np.array_equal(opt2.parameters[k], p) for k, p in params.items())
print(f"restored at step {opt2.t}, skipped {opt2.skipped_steps}, "
      f"{len(opt2.param_groups)} groups, backend {fo.get_backend()}")
