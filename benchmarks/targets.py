"""Print the issue's target table from one side-by-side run.

Every implementation of a row is measured in the same run, interleaved round
by round (so machine-load drift hits all of them alike), with
``fusedoptim.cli.bench.interleave``; the table quotes medians, and the ratios
the issue's goals are stated in as medians of per-round ratios (``bench``'s
definition: a swing of the memory bandwidth between rounds cancels out)::

    PYTHONPATH=src python benchmarks/targets.py [--threads 2] [--rounds 5] [--processes 1]
    PYTHONPATH=src python benchmarks/targets.py --shapes   # issue 16: real models' shapes

Check ``uptime`` first: on a loaded 2-core machine the 2-thread rows measure
the scheduler, not the kernels.  On the shared development VM one process's
ratios for the 2^24-element rows vary by 5-15% from one process to the next
(where the arrays land in physical memory seems to matter as much as the
load), more than the differences being judged; ``--processes N`` repeats the
whole run in N fresh processes, prints every run's value and judges the
median.
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tracemalloc

import numpy as np

import fusedoptim
from fusedoptim.cli import bench


class Timed(dict):
    """Median seconds per step of each implementation (the dict), and
    ``ratio(a, b)``: the median over rounds of a's time / b's."""

    def __init__(self, times):
        super().__init__({impl: statistics.median(t.values()) for impl, t in times.items()})
        self.times = times

    def ratio(self, a, b):
        return statistics.median(bench.round_ratios(self.times[a], self.times[b]))


def _interleaved(steps, rounds, repeat):
    """``Timed``: ``rounds * repeat`` interleaved rounds of one batch each
    (``repeat`` kept from the older rounds-of-batches layout, so that the
    callers' batch counts stay as they were)."""
    return Timed(bench.interleave(steps, rounds * repeat, warmup=1))


def _steps(case, impls, threads):
    out = {}
    for impl in impls:
        try:
            out[impl] = bench.make_step(case, impl, threads=threads)
        except (ImportError, bench.NotMeasurable):
            pass
    return out


def _fmt(seconds):
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.2f} us"


# (label, target text, is the value within the target)
GOALS = [
    ("adam big f32: cython / torch fused", "<= 1.0", lambda r: r <= 1.0),
    ("adam big f32: cython / copy", "<= 1.05", lambda r: r <= 1.05),
    ("adam big f32: numpy / cython", ">= 10", lambda r: r >= 10),
    ("momentum big f32: cython / copy", "<= 1.05", lambda r: r <= 1.05),
    ("rmsprop big f32: cython / copy", "<= 1.05", lambda r: r <= 1.05),
    ("adam mlp f32: cython / torch fused", "<= 0.8", lambda r: r <= 0.8),
    ("adam mlp f32: cython / copy", "<= 1.1", lambda r: r <= 1.1),
    ("adam course f64: cython us per step", "<= 8", lambda r: r <= 8),
    ("memory: adam big step peak allocation / param bytes", "< 0.01", lambda r: r < 0.01),
]


# Issue 16: real models' shapes and the many-tiny-tensors case.
SHAPE_GOALS = [
    ("adam gpt2 f32: cython / torch fused", "<= 1.0", lambda r: r <= 1.0),
    ("adam gpt2 f32: % of copy limit", ">= 95", lambda r: r >= 95),
    ("adam resnet50 f32: cython / torch fused", "<= 1.0", lambda r: r <= 1.0),
    ("adam resnet50 f32: % of copy limit", ">= 95", lambda r: r >= 95),
    ("adam tiny f32: cython ns per tensor", "< torch's", None),
    ("adam tiny f32: torch fused ns per tensor", "", None),
    ("adam tiny f32: cython / torch fused per tensor", "< 1.0", lambda r: r < 1.0),
]


def measure_shape_goals(threads, rounds):
    """Issue 16's goals, one side-by-side run per size: ``({goal label:
    value}, [median rows])``."""
    medians, values = [], {}
    for size, repeat in (("gpt2", 1), ("resnet50", 3), ("tiny", 5)):
        case = bench.Case("adam", size, "float32")
        steps = _steps(case, ("cython", "torch", "copy"), threads)
        m = _interleaved(steps, rounds, repeat)
        del steps
        gc.collect()
        medians += [f"| {case.name} | {impl} | {_fmt(t)} |" for impl, t in m.items()]
        if size == "tiny":
            n = len(case.shapes)
            values["adam tiny f32: cython ns per tensor"] = 1e9 * m["cython"] / n
            if "torch" in m:
                values["adam tiny f32: torch fused ns per tensor"] = 1e9 * m["torch"] / n
                values["adam tiny f32: cython / torch fused per tensor"] = m.ratio("cython",
                                                                                  "torch")
            continue
        if "torch" in m:
            values[f"adam {size} f32: cython / torch fused"] = m.ratio("cython", "torch")
        values[f"adam {size} f32: % of copy limit"] = 100 * m.ratio("copy", "cython")
    return values, medians


def _memory_ratio(threads):
    """Peak traced allocation of one fused step on the big model, over the
    parameter's size in bytes."""
    case = bench.Case("adam", "big", "float32")
    step = bench.make_step(case, "cython", threads=threads)
    with fusedoptim.use_backend("cython"):
        step()
        tracemalloc.start()
        step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak / (case.elements * 4)


def measure_goals(threads, rounds):
    """One side-by-side run: ``({goal label: value}, [median rows])``."""
    medians, values = [], {}

    def run(case, impls, repeat):
        steps = _steps(case, impls, threads)
        med = _interleaved(steps, rounds, repeat)
        del steps
        gc.collect()
        for impl, t in med.items():
            medians.append(f"| {case.name} | {impl} | {_fmt(t)} |")
        return med

    m = run(bench.Case("adam", "big", "float32"), ("cython", "torch", "copy", "numpy"), 3)
    if "torch" in m:
        values["adam big f32: cython / torch fused"] = m.ratio("cython", "torch")
    values["adam big f32: cython / copy"] = m.ratio("cython", "copy")
    values["adam big f32: numpy / cython"] = m.ratio("numpy", "cython")
    for opt in ("momentum", "rmsprop"):
        m = run(bench.Case(opt, "big", "float32"), ("cython", "copy", "torch"), 3)
        values[f"{opt} big f32: cython / copy"] = m.ratio("cython", "copy")
    m = run(bench.Case("adam", "mlp", "float32"), ("cython", "torch", "copy"), 5)
    if "torch" in m:
        values["adam mlp f32: cython / torch fused"] = m.ratio("cython", "torch")
    values["adam mlp f32: cython / copy"] = m.ratio("cython", "copy")
    m = run(bench.Case("adam", "course", "float64"), ("cython", "numpy", "torch"), 15)
    values["adam course f64: cython us per step"] = m["cython"] * 1e6
    values["memory: adam big step peak allocation / param bytes"] = _memory_ratio(threads)
    return values, medians


def _num(v):
    return f"{v:.3g}" if v < 0.01 else f"{v:.3f}"


def _goal_table(runs, goals=GOALS):
    """Markdown table: one column per run, then the median over runs."""
    multi = len(runs) > 1
    head = "| goal | " + ("".join(f"run {k + 1} | " for k in range(len(runs))) if multi else "")
    head += ("median | " if multi else "measured | ") + "target | status |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for label, target, ok in goals:
        vals = [r[label] for r in runs if label in r]
        if not vals:
            continue
        med = statistics.median(vals)
        cells = "".join(f"{_num(v)} | " for v in vals) if multi else ""
        status = "" if ok is None else "met" if ok(med) else "NOT MET"
        lines.append(f"| {label} | {cells}{_num(med)} | {target} | {status} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", type=int, default=1,
                    help="independent runs, one process each (default 1)")
    ap.add_argument("--shapes", action="store_true",
                    help="issue 16's goals: Adam on GPT-2, ResNet-50 and tiny tensors' shapes")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    goals, measure = (SHAPE_GOALS, measure_shape_goals) if args.shapes else (GOALS, measure_goals)
    if args.processes > 1:
        runs = []
        for k in range(args.processes):
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                                  "--rounds", str(args.rounds), "--json"]
                                 + (["--shapes"] if args.shapes else []),
                                 check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.splitlines()[-1]))
            print(f"run {k + 1} of {args.processes} done, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        print(f"\nfusedoptim targets: {args.threads} threads, {args.processes} processes of "
              f"{args.rounds} interleaved rounds; status is judged on the median\n")
        print(_goal_table(runs, goals))
        return
    fusedoptim.set_num_threads(args.threads)
    if not args.json:
        print(f"fusedoptim targets: {args.threads} threads, {args.rounds} interleaved rounds, "
              f"load average {os.getloadavg()[0]:.2f} (start)")
    values, medians = measure(args.threads, args.rounds)
    if args.json:
        print(json.dumps(values))
        return
    print("\n| case | impl | median |\n|---|---|---|")
    print("\n".join(medians))
    print()
    print(_goal_table([values], goals))
    print(f"\nload average {os.getloadavg()[0]:.2f} (end)")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
