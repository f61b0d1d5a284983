"""The sharded optimizer's step, split into its parts, beside raw mpi4py.

Run with ``mpiexec -n 1|2|4 python benchmarks/mpi_bench.py [--size 24]``.
Each rank holds ``2**size`` float32 parameters (one tensor) and its own
gradient.  One run interleaves, repetition by repetition:

* ``ShardedOptimizer(Adam)``: the ordered reduce-scatter of the mean
  (``Alltoallv`` + rank-ordered sum), the fused Adam update of the slice,
  the in-place ``Allgatherv`` of the parameters;
* raw mpi4py on the same bytes: ``Reduce_scatter_block`` (MPI's own sum,
  order unspecified) and ``Allgather``;
* ``DataParallelOptimizer(Adam)``: the same mean (reduce-scatter, then an
  all-gather of the mean gradient) and the unsharded update on every rank.

Each time is the slowest rank's for that repetition (a collective step is
as slow as its slowest rank); the table shows medians.  The state bytes are
the optimizer state each rank holds.
"""

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

import fusedoptim as fo
from fusedoptim.distributed import DataParallelOptimizer, ShardedOptimizer

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()


def slowest(seconds):
    return comm.allreduce(seconds, op=MPI.MAX)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=24, help="log2 of the parameter count")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1, help="fusedoptim threads per rank")
    args = ap.parse_args()
    fo.set_num_threads(args.threads)
    n = 2 ** args.size
    # the same parameters on every rank (the wrappers check it), each its own gradients
    start = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    grads = {"w": np.random.default_rng(1 + rank).standard_normal(n).astype(np.float32)}

    sharded = ShardedOptimizer(fo.Adam, {"w": start.copy()}, lr=1e-4)
    dp = DataParallelOptimizer(fo.Adam, {"w": start.copy()}, lr=1e-4)
    send = grads["w"][:n // world * world]  # Reduce_scatter_block needs equal blocks
    block = n // world
    recv = np.empty(block, np.float32)
    gathered = np.empty(block * world, np.float32)

    rows = {k: [] for k in ("rs", "up", "ag", "raw_rs", "raw_ag", "dp_rs", "dp_ag", "dp_up")}
    for rep in range(args.reps + 2):  # two warm-up repetitions are dropped
        comm.Barrier()
        sharded.step(grads)
        t = sharded.last_times
        got = [slowest(t["reduce_scatter"]), slowest(t["update"]), slowest(t["all_gather"])]

        comm.Barrier()
        t0 = time.perf_counter()
        comm.Reduce_scatter_block(send, recv, op=MPI.SUM)
        t1 = time.perf_counter()
        comm.Allgather(recv, gathered)
        t2 = time.perf_counter()
        got += [slowest(t1 - t0), slowest(t2 - t1)]

        comm.Barrier()
        dp.step(grads)
        t = dp.last_times
        got += [slowest(t["reduce_scatter"]), slowest(t["all_gather"]), slowest(t["update"])]
        if rep >= 2:
            for k, v in zip(rows, got):
                rows[k].append(v)

    state = comm.gather(sharded.state_nbytes)
    med = {k: statistics.median(v) * 1e3 for k, v in rows.items()}
    if rank != 0:
        return
    unsharded = dp.state_nbytes
    comm_ms = med["rs"] + med["ag"]
    raw_ms = med["raw_rs"] + med["raw_ag"]
    print(f"{world} rank(s), 2^{args.size} float32 Adam parameters, {args.threads} thread(s) "
          f"per rank, median of {args.reps} interleaved repetitions (ms)")
    print(f"  state per rank: max {max(state)} bytes = {max(state) / unsharded:.3f} x unsharded "
          f"({unsharded} bytes)")
    print(f"  sharded  reduce-scatter {med['rs']:8.2f}  update {med['up']:8.2f}  "
          f"all-gather {med['ag']:8.2f}")
    print(f"  raw mpi4py Reduce_scatter_block {med['raw_rs']:8.2f}  Allgather {med['raw_ag']:8.2f}")
    print(f"  data-parallel reduce-scatter {med['dp_rs']:8.2f}  all-gather {med['dp_ag']:8.2f}  "
          f"update {med['dp_up']:8.2f}")
    print(f"  communication sharded / raw: {comm_ms:.2f} / {raw_ms:.2f} = "
          f"{comm_ms / raw_ms:.3f}")
    print(f"  update sharded / unsharded: {med['up']:.2f} / {med['dp_up']:.2f} = "
          f"{med['up'] / med['dp_up']:.3f}")


if __name__ == "__main__":
    main()
