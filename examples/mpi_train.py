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
    """The mini-batch cut into ``world`` column blocks (one per rank), as
    equal as can be: 64 examples at 3 ranks are 22, 21 and 21."""
    return [(x, y) for x, y in zip(np.array_split(Xb, world, axis=1),
                                    np.array_split(Yb, world, axis=1))]


def local_grads(p, x, y, m):
    """The gradients of a rank's block ``x, y`` of a mini-batch of ``m``
    examples, weighted so that the rank-ordered mean of the ranks' gradients
    is the gradient of the whole mini-batch: the mean over the ranks weighs
    every rank alike, so a block of n examples counts ``n * world / m``
    (1.0, exactly, when the blocks are equal)."""
    _loss, g = forward_backward(p, x, y)
    weight = x.shape[1] * world / m
    return g if weight == 1.0 else {k: v * weight for k, v in g.items()}


rng = np.random.default_rng(0)
X, Y = moons(512, rng)
start = init([2, 32, 1], rng)
epochs, batch = 40, 64   # 64 examples per step: about 64 / world on each rank
if world > batch:
    raise SystemExit(f"mpi_train.py: {world} ranks for mini-batches of {batch} examples; "
                     f"run at most {batch} ranks (each needs an example)")
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
        m = Xb.shape[1]  # the last mini-batch of an epoch may be smaller
        opt.step(local_grads(params, *parts[rank], m))
        if rank == 0:
            all_grads = [local_grads(ref_params, *p, m) for p in parts]
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
    # Averaging per-rank means instead of taking one mean over the mini-batch
    # only rounds differently: anything larger is a wrongly weighted mean.
    if diff > 1e-9:
        raise SystemExit(f"the sharded run is {diff:.2e} away from full-batch training, more "
                         f"than rounding: the ranks' gradients are not the mini-batch's mean")
