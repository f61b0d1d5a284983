"""Measure the serial/parallel crossover behind ``PARALLEL_MIN_ELEMENTS``.

For one Adam step (the compiled kernel, float32 and float64) on models of n
elements, in tensors of 4096, times the serial path against the parallel one
at 2 threads, interleaved in one run, and prints the ratio.  The threshold is
the smallest n from which the parallel path is reliably faster::

    PYTHONPATH=src python benchmarks/threshold.py
"""

import statistics
import sys
import time

import numpy as np

import fusedoptim
from fusedoptim import _validate as V
from fusedoptim.backend import _load


def step_for(n, dtype):
    k = _load("cython")
    rng = np.random.default_rng(0)
    sizes = [4096] * (n // 4096) + ([n % 4096] if n % 4096 else [])
    p = {f"w{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(sizes)}
    g = {k_: rng.standard_normal(a.size).astype(dtype) for k_, a in p.items()}
    m = {k_: np.zeros_like(a) for k_, a in p.items()}
    v = {k_: np.zeros_like(a) for k_, a in p.items()}
    states = (("m", m), ("v", v), V.ABSENT)
    return lambda: k.adam(p, g, states, V.NAMED, lr=1e-4, beta1=0.9, beta2=0.999, eps=1e-8,
                          bc1=0.5, bc2=0.5, weight_decay=0.0, decoupled=False,
                          maximize=False, amsgrad=False, torch_order=False, gscale=1.0)


def _calls(fn, n=300):
    """Seconds of single calls: on a shared machine the lower quantiles show
    the cost when no other process holds a core, which batch means cannot
    (one 8 ms preemption of an OpenMP worker swamps a whole batch)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return sorted(out)


def main(threads=2):
    k = _load("cython")
    fusedoptim.set_num_threads(threads)
    print("us per step: median (10th percentile of single calls; the uncontended cost "
          "on a busy machine)")
    print(f"{'n':>9} {'dtype':>8} {'serial':>16} {'parallel':>18} {'par/ser':>8} {'p10 ratio':>9}")
    for e in range(10, 20):
        for dtype in ("float32", "float64"):
            n = 1 << e
            fn = step_for(n, dtype)
            ser, par = [], []
            for _ in range(5):
                old = k._set_parallel_min(1 << 62)
                ser += _calls(fn)
                k._set_parallel_min(0)
                par += _calls(fn)
                k._set_parallel_min(old)
            ser.sort()
            par.sort()
            s, p = statistics.median(ser), statistics.median(par)
            s0, p0 = ser[len(ser) // 10], par[len(par) // 10]
            print(f"{n:>9} {dtype:>8} {s * 1e6:>8.2f} ({s0 * 1e6:>6.2f}) {p * 1e6:>9.2f} "
                  f"({p0 * 1e6:>6.2f}) {p / s:>8.2f} {p0 / s0:>9.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
