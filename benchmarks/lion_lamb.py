"""Lion and LAMB against the copy limit of their own traffic (issue 13).

One process; each row's implementations (cython and its ``copy``) timed
interleaved, round by round (``fusedoptim.cli.bench.interleave``), the ratio
quoted as the median of per-round ratios (a swing of the machine's memory
bandwidth between rounds cancels out of it), beside the medians::

    python benchmarks/lion_lamb.py [--threads 2] [--rounds 15] [--size big]   # installed fusedoptim

Lion moves 5 arrays per element (p, g, m read; p, m written), LAMB 10 (its
first pass reads p, g, m, v and writes m, v; its second reads p, m, v and
writes p); the ``copy`` yardstick of each row moves exactly those reads and
writes (``workloads._copy_step``: two passes for LAMB).  Adam is measured
alongside as the reference kernel.  Targets: Lion within 1.05x of its copy
limit, LAMB within 1.10x.  Neither has a torch counterpart.
"""

import argparse
import gc
import statistics

import fusedoptim
from fusedoptim.cli import bench

TARGETS = {"lion": 1.05, "lamb": 1.10, "adam": 1.05}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--size", default="big")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    fusedoptim.set_num_threads(args.threads)
    rows = ("adam", "lion", "lamb")
    print(f"{args.size} {args.dtype}, {args.threads} threads, {args.rounds} interleaved rounds "
          f"(copy, cython) per row; medians, and the median of the per-round ratios")
    print("| row | arrays/element | cython | copy (same traffic) | cython / copy, per round "
          "| of medians | target | status |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        case = bench.Case(row, args.size, args.dtype)
        steps = {impl: bench.make_step(case, impl, threads=args.threads)
                 for impl in ("copy", "cython")}
        t = bench.interleave(steps, args.rounds, warmup=3)
        del steps
        gc.collect()
        c, y = (statistics.median(t[i].values()) for i in ("cython", "copy"))
        ratio = statistics.median(bench.round_ratios(t["cython"], t["copy"]))
        status = "met" if ratio <= TARGETS[row] else "NOT MET"
        print(f"| {row} | {case.arrays_moved} | {c * 1e3:.2f} ms | {y * 1e3:.2f} ms | "
              f"{ratio:.3f} | {c / y:.3f} | <= {TARGETS[row]} | {status} |", flush=True)


if __name__ == "__main__":
    main()
