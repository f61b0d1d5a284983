"""A trainer-style loop: an optimizer object over two parameter groups (no
weight decay on the biases) with a warm-up then cosine schedule, clipping
and a safetensors checkpoint, training a small NumPy MLP (2-32-1, ReLU,
sigmoid) on two interleaved half-moons.

Run from the repository root:  python examples/trainer.py
"""

import os
import sys
import tempfile
from typing import Any

import numpy as np

import fusedoptim as fo

# The model and data beside this file (also when it is run with runpy,
# which does not put its folder on sys.path).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp import accuracy, forward_backward, init, moons  # noqa: E402

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
