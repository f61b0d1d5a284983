"""Lion and LAMB against the copy limit of their own traffic (issue 13).

One process, every implementation measured side by side, interleaved round
by round (as ``targets.py``), medians quoted::

    python benchmarks/lion_lamb.py [--threads 2] [--rounds 5] [--size big]   # installed fusedoptim

Lion moves 5 arrays per element (p, g, m read; p, m written), LAMB 10 (its
first pass reads p, g, m, v and writes m, v; its second reads p, m, v and
writes p); the ``copy`` yardstick of each row moves exactly those reads and
writes (``workloads._copy_step``: two passes for LAMB).  Adam is measured
alongside as the reference kernel.  Targets: Lion within 1.05x of its copy
limit, LAMB within 1.10x.  Neither has a torch counterpart.
"""

import argparse
import statistics

import fusedoptim
from fusedoptim.cli import bench

TARGETS = {"lion": 1.05, "lamb": 1.10, "adam": 1.05}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", default="big")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    fusedoptim.set_num_threads(args.threads)
    rows = ("adam", "lion", "lamb")
    steps = {}
    for row in rows:
        case = bench.Case(row, args.size, args.dtype)
        for impl in ("cython", "copy"):
            steps[(row, impl)] = bench.make_step(case, impl, threads=args.threads)
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for (row, impl), fn in steps.items():
            times[(row, impl)] += bench.measure(fn, impl, warmup=1, repeat=5)
    print(f"{args.size} {args.dtype}, {args.threads} threads, {args.rounds} interleaved rounds "
          f"of 5 batches; medians")
    print("| row | arrays/element | cython | copy (same traffic) | cython / copy | target |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        case = bench.Case(row, args.size, args.dtype)
        c = statistics.median(times[(row, "cython")])
        y = statistics.median(times[(row, "copy")])
        print(f"| {row} | {case.arrays_moved} | {c * 1e3:.2f} ms | {y * 1e3:.2f} ms | "
              f"{c / y:.3f} | <= {TARGETS[row]} |")


if __name__ == "__main__":
    main()
