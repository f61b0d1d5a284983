"""Data-parallel training over MPI with the optimizer state sharded (ZeRO-1).

The small NumPy MLP of ``examples/trainer.py`` (2-32-1 on two half-moons):
each rank computes the gradients of its share of every mini-batch;
``ShardedOptimizer`` averages them in rank order, updates its slice of the
parameters with AdamW (clipped) and all-gathers the result.  At the end,
rank 0 checks that the parameters are bitwise those of the single-process
AdamW stepped with the same averaged gradients, and compares with ordinary
single-process training on the whole mini-batches.

Run from the repository root::

    pip install '.[mpi]'
    mpiexec -n 2 python examples/mpi_train.py
"""

import os
import sys

import numpy as np
from mpi4py import MPI

import fusedoptim as fo
from fusedoptim.distributed import ShardedOptimizer

# The model and data beside this file (also when it is run with runpy,
# which does not put its folder on sys.path).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp import accuracy, forward_backward, init, moons  # noqa: E402

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()


def shards(Xb, Yb):
    """The mini-batch cut into ``world`` equal column blocks (one per rank)."""
    return [(x, y) for x, y in zip(np.array_split(Xb, world, axis=1),
                                    np.array_split(Yb, world, axis=1))]


rng = np.random.default_rng(0)
X, Y = moons(512, rng)
start = init([2, 32, 1], rng)
epochs, batch = 40, 64   # 64 examples per step: 64 / world on each rank
hp = dict(lr=0.02, weight_decay=1e-4, max_grad_norm=1.0)

params = {k: v.copy() for k, v in start.items()}
opt = ShardedOptimizer(fo.AdamW, params, **hp)
# Rank 0 replays the run on one process: the same mean gradients (computed
# from every rank's share, added in rank order), and plain full-batch training.
if rank == 0:
    ref_params = {k: v.copy() for k, v in start.items()}
    ref = fo.AdamW(ref_params, **hp)
    plain_params = {k: v.copy() for k, v in start.items()}
    plain = fo.AdamW(plain_params, **hp)

for epoch in range(epochs):
    for Xb, Yb in fo.random_mini_batches(X, Y, batch, seed=epoch):
        parts = shards(Xb, Yb)
        loss, grads = forward_backward(params, *parts[rank])
        opt.step(grads)
        if rank == 0:
            all_grads = [forward_backward(ref_params, *p)[1] for p in parts]
            mean = {}
            for k in all_grads[0]:
                acc = all_grads[0][k].copy()
                for g in all_grads[1:]:
                    acc = acc + g[k]
                mean[k] = acc / world
            ref.step(mean)
            plain.step(forward_backward(plain_params, Xb, Yb)[1])
    if rank == 0 and (epoch % 10 == 0 or epoch == epochs - 1):
        full_loss = forward_backward(params, X, Y)[0]
        print(f"epoch {epoch:2d}  step {opt.t:3d}  loss {full_loss:.4f}  "
              f"acc {accuracy(params, X, Y):.3f}  ({world} ranks)")

state_bytes = comm.gather(opt.state_nbytes)
if rank == 0:
    exact = all(params[k].tobytes() == ref_params[k].tobytes() for k in params)
    diff = max(float(np.max(np.abs(params[k] - plain_params[k]))) for k in params)
    print(f"optimizer state per rank: {state_bytes} bytes "
          f"(unsharded {sum(a.nbytes for d in ref.state.values() for a in d.values())})")
    print(f"bitwise equal to single-process AdamW on the rank-ordered mean: {exact}")
    print(f"single-process full-batch training: loss {forward_backward(plain_params, X, Y)[0]:.4f}"
          f"  acc {accuracy(plain_params, X, Y):.3f}  max |param diff| {diff:.2e}")
    if not exact:
        raise SystemExit("the sharded run differs from the single-process reference")
