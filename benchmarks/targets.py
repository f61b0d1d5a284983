"""Print the issue's target table from one side-by-side run.

Every implementation of a row is measured in the same run, interleaved round
by round (so machine-load drift hits all of them alike), with
``fusedoptim.bench.measure``; the table quotes medians and the ratios the
issue's goals are stated in::

    PYTHONPATH=src python benchmarks/targets.py [--threads 2] [--rounds 5]

Check ``uptime`` first: on a loaded 2-core machine the 2-thread rows measure
the scheduler, not the kernels.
"""

import argparse
import gc
import os
import statistics
import tracemalloc

import numpy as np

import fusedoptim
from fusedoptim import bench


def _interleaved(steps, rounds, repeat):
    """Median seconds per step of each implementation."""
    times = {impl: [] for impl in steps}
    for _ in range(rounds):
        for impl, fn in steps.items():
            times[impl] += bench.measure(fn, impl, warmup=1, repeat=repeat)
    return {impl: statistics.median(t) for impl, t in times.items()}


def _steps(case, impls, threads):
    out = {}
    for impl in impls:
        try:
            out[impl] = bench.make_step(case, impl, threads=threads)
        except ImportError:
            pass
    return out


def _fmt(seconds):
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} us"


def _ratio_row(label, num, den, goal, ok):
    return f"| {label} | {num / den:.3f} | {goal} | {'met' if ok(num / den) else 'NOT MET'} |"


def _memory_row(threads):
    """Peak traced allocation of one fused step on the big model, against the
    parameter's size."""
    case = bench.Case("adam", "big", "float32")
    step = bench.make_step(case, "cython", threads=threads)
    with fusedoptim.use_backend("cython"):
        step()
        tracemalloc.start()
        step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    size = case.elements * 4
    return (f"| memory: adam big step peak allocation | {peak} B = {peak / size:.2e} x "
            f"param size | no array-sized temporary | {'met' if peak < size / 100 else 'NOT MET'} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    fusedoptim.set_num_threads(args.threads)
    print(f"fusedoptim targets: {args.threads} threads, {args.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.2f} (start)")
    medians, rows = [], []

    def run(case, impls, repeat):
        steps = _steps(case, impls, args.threads)
        med = _interleaved(steps, args.rounds, repeat)
        del steps
        gc.collect()
        for impl, t in med.items():
            medians.append(f"| {case.name} | {impl} | {_fmt(t)} |")
        return med

    c = bench.Case("adam", "big", "float32")
    m = run(c, ("cython", "torch", "copy", "numpy"), 3)
    if "torch" in m:
        rows.append(_ratio_row("adam big f32: cython / torch fused", m["cython"], m["torch"],
                               "<= 1.0", lambda r: r <= 1.0))
    rows.append(_ratio_row("adam big f32: cython / copy", m["cython"], m["copy"],
                           "<= 1.05", lambda r: r <= 1.05))
    rows.append(_ratio_row("adam big f32: numpy / cython", m["numpy"], m["cython"],
                           ">= 10", lambda r: r >= 10))
    for opt in ("momentum", "rmsprop"):
        c = bench.Case(opt, "big", "float32")
        m = run(c, ("cython", "copy", "torch"), 3)
        rows.append(_ratio_row(f"{opt} big f32: cython / copy", m["cython"], m["copy"],
                               "<= 1.05", lambda r: r <= 1.05))
    c = bench.Case("adam", "mlp", "float32")
    m = run(c, ("cython", "torch", "copy"), 5)
    if "torch" in m:
        rows.append(_ratio_row("adam mlp f32: cython / torch fused", m["cython"], m["torch"],
                               "<= 0.8", lambda r: r <= 0.8))
    rows.append(_ratio_row("adam mlp f32: cython / copy", m["cython"], m["copy"], "<= 1.1",
                           lambda r: r <= 1.1))
    c = bench.Case("adam", "course", "float64")
    m = run(c, ("cython", "numpy", "torch"), 15)
    rows.append(f"| adam course f64: cython per step | {_fmt(m['cython'])} | <= 8 us | "
                f"{'met' if m['cython'] <= 8e-6 else 'NOT MET'} |")
    rows.append(_memory_row(args.threads))
    print("\n| case | impl | median |\n|---|---|---|")
    print("\n".join(medians))
    print("\n| goal | measured | target | status |\n|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nload average {os.getloadavg()[0]:.2f} (end)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
