"""In-cache throughput of each family's loop against the copy kernel (issue 13).

With the data in L2 (2^12 and 2^15 elements, one tensor, one thread) a loop
that runs at the copy kernel's rate there is memory-bound at 2^24 elements;
one that is several times slower is compute-bound.  Each row is stepped
through ``opt.step`` at both sizes, interleaved, and the time per element is
the slope between the two fastest single calls (on a
shared machine the minimum is the robust statistic of an in-cache loop), so that the call's fixed cost (about a
microsecond) cancels::

    python benchmarks/simd_profile.py [--isa avx512,avx2,baseline] [--rounds 7]

Prints G elements/s of each loop under each instruction set the CPU has and
of the copy kernel moving the same arrays (``copy``, whose width follows
the same switch).  ``--big`` instead times each row at the bench's ``big``
size (2^24 float32 elements, ``--threads`` threads, default 2) under each
instruction set and its copy limit, interleaved round by round, and prints
the medians and % of the limit::

    python benchmarks/simd_profile.py --big [--isa avx512,avx2] [--rounds 5]

Measured 2026-11-30 16:35 UTC on the development VM (AMD EPYC Zen4, 2 cores,
shared: load average 5.7-7.2), float32, 1 thread, in L2, ns per element of
the loop (two runs of 5 rounds agreed within 3%; the copy's slope, a few
microseconds at these sizes, was too noisy to quote), AVX-512 / AVX2 /
baseline: SGD 0.108 / 0.091 / 0.165, RMSProp 0.29 / 0.31 / 0.57, Adagrad
0.27 / 0.28 / 0.56, Adam 0.40 / 0.49 / 0.86, AdamW 0.41 / 0.51 / 0.87,
Adamax 0.19-0.24 / 0.25 / 0.47, NAdam 0.49 / 0.54 / 1.02, RAdam 0.26-0.27 /
0.45 / 0.83, Adadelta 0.48 / 0.49 / 0.95, Lion 0.16-0.18 / 0.21 / 0.61, LAMB
(both passes) 1.03 / 1.15 / 1.94.  At 2^24 elements and 2 threads the copy
limit of a quiet run (14.2 ms for LAMB's 10 arrays) is 0.17 ns per element,
per thread and per array moved: Adam's 7 arrays 1.18 ns, Lion's 5 0.85 ns,
LAMB's 10 1.69 ns.  Every loop's arithmetic therefore takes less than the
memory time (Adam 34%, NAdam 42%, Adadelta 41%, Lion 20%, LAMB 61% with
AVX-512): none is compute-bound; the shortfall to the copy limit at 2^24 is
how well the arithmetic overlaps the memory traffic, which is largest for
LAMB.  The divisions and square roots set the in-cache time (Zen4 executes
512-bit divisions in two halves, so AVX-512 gains there only the loop
overhead), hence Adadelta's unchanged time.
"""

import argparse
import statistics
import time

import fusedoptim
from fusedoptim import _ext
from fusedoptim.cli import bench
from fusedoptim.cli.bench import workloads

ROWS = ("sgd", "rmsprop", "adagrad", "adam", "adamw", "adamax", "nadam", "radam",
        "adadelta", "lion", "lamb")
SIZES = {"l2a": 1 << 12, "l2b": 1 << 15}


def _set_isa(name):
    if hasattr(_ext, "_set_simd_isa"):
        return _ext._set_simd_isa(name)
    before = _ext.simd()
    _ext._set_simd(name != "baseline")
    return before


def _fastest(fn, calls):
    """The fastest of ``calls`` single calls, in seconds: on a shared machine
    a call of tens of microseconds often runs whole, a batch seldom does."""
    fn()
    best = float("inf")
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _big(rows, isas, rounds, threads):
    fusedoptim.set_num_threads(threads)
    steps = {}
    for row in rows:
        case = bench.Case(row, "big", "float32")
        steps[(row, "copy")] = bench.make_step(case, "copy", threads=threads)
        steps[(row, "cython")] = bench.make_step(case, "cython", threads=threads)
    best = _ext.simd()
    times = {(k, isa): [] for k in steps for isa in isas}
    for _ in range(rounds):
        for row in rows:
            for isa in isas:
                _set_isa(isa)
                for impl in ("copy", "cython"):
                    k = (row, impl)
                    times[(k, isa)] += bench.measure(steps[k], impl, warmup=1, repeat=3)
    _set_isa(best)
    print(f"big (2^24 float32), {threads} threads, {rounds} interleaved rounds of 3 batches; "
          "medians in ms, % of limit = copy / loop")
    print("| row | " + " | ".join(f"{i} loop | {i} copy | % of limit" for i in isas) + " |")
    print("|---" * (1 + 3 * len(isas)) + "|")
    for row in rows:
        cells = [row]
        for isa in isas:
            loop = statistics.median(times[((row, "cython"), isa)])
            copy = statistics.median(times[((row, "copy"), isa)])
            cells += [f"{1e3 * loop:.2f}", f"{1e3 * copy:.2f}", f"{100 * copy / loop:.0f}%"]
        print("| " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default="avx512,avx2,baseline")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.big:
        _big(args.rows.split(","), [i for i in args.isa.split(",") if i], args.rounds,
             args.threads)
        return
    fusedoptim.set_num_threads(1)
    for name, n in SIZES.items():
        workloads.SIZES[name] = [(n,)]
    best = _ext.simd()
    isas = [i for i in args.isa.split(",") if i]
    rows = args.rows.split(",")
    steps = {}
    for row in rows:
        for size in SIZES:
            case = bench.Case(row, size, "float32")
            for impl in ("cython", "copy"):
                steps[(row, size, impl)] = bench.make_step(case, impl, threads=1)
    times = {(k, isa): [] for k in steps for isa in isas}
    for _ in range(args.rounds):
        for isa in isas:
            _set_isa(isa)
            if _ext.simd() != isa:
                continue
            for k, fn in steps.items():
                times[(k, isa)].append(_fastest(fn, 100))
    _set_isa(best)
    n1, n2 = SIZES.values()
    print(f"float32, 1 thread, in L2 ({n1} and {n2} elements, slope of the minima), "
          f"{args.rounds} interleaved rounds; G elements/s (ns per element)")
    print("| row | arrays | " + " | ".join(f"{i} loop | {i} copy | loop/copy time" for i in isas)
          + " |")
    print("|---" * (2 + 3 * len(isas)) + "|")
    for row in rows:
        cells = [row, str(bench.Case(row, "l2a", "float32").arrays_moved)]
        for isa in isas:
            for impl in ("cython", "copy"):
                t1 = times[((row, "l2a", impl), isa)]
                t2 = times[((row, "l2b", impl), isa)]
                if not t1 or not t2:
                    cells.append("-")
                    continue
                ns = 1e9 * (min(t2) - min(t1)) / (n2 - n1)
                cells.append(f"{1 / ns:.2f} ({ns:.3f})")
                if impl == "cython":
                    loop_ns = ns
            if cells[-1] != "-":
                cells.append(f"{loop_ns / ns:.2f}x")
            else:
                cells.append("-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
