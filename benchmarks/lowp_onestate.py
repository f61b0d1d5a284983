"""Reduced-precision state of the one-state families, side by side in one
run: Momentum, RMSProp, Adagrad and Lion with float32, bfloat16 and int8
state at 2^24 float32 parameters (compiled backend)::

    python benchmarks/lowp_onestate.py [--threads 2] [--rounds 11] [--n 16777216]

Every configuration takes one step per round, in turn (interleaved, so load
drift hits all alike); the table gives the median step time, the ratio to
the float32-state step of the same class, the state's bytes per element
(``state_nbytes``) and the bytes a step must move per element (p read and
written, g read, state codes and scales read and written).  Check ``uptime``
first.
"""

import argparse
import statistics
import time

import numpy as np

import fusedoptim as fo

CLASSES = {
    "Momentum": (fo.Momentum, {"lr": 0.01}),
    "RMSProp": (fo.RMSProp, {"lr": 0.01}),
    "Adagrad": (fo.Adagrad, {"lr": 0.01}),
    "Lion": (fo.Lion, {"lr": 1e-4}),
}
#: (state_dtype, state_rounding); None: the class's default rounding.
FORMATS = ((None, None), ("bfloat16", None), ("int8", None), ("int8", "nearest"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--n", type=int, default=1 << 24)
    a = ap.parse_args()
    fo.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    g = {"w": rng.standard_normal(a.n, dtype=np.float32)}
    runs = {}
    for name, (cls, kw) in CLASSES.items():
        for fmt in FORMATS:
            p = {"w": rng.standard_normal(a.n, dtype=np.float32)}
            opt = cls(p, state_dtype=fmt[0], state_rounding=fmt[1], **kw)
            opt.step(g)  # warm: first-touch of the state
            runs[name, fmt] = (opt, [])
    with fo.use_backend("cython"):
        for _ in range(a.rounds):
            for opt, times in runs.values():
                t0 = time.perf_counter()
                opt.step(g)
                times.append(time.perf_counter() - t0)
    print(f"n = {a.n}, {a.threads} threads, {a.rounds} interleaved rounds, medians")
    print(f"{'class':10s} {'state':20s} {'ms':>8s} {'/ f32':>6s} {'state B/el':>10s} "
          f"{'moved B/el':>10s}")
    for (name, fmt), (opt, times) in runs.items():
        med = statistics.median(times) * 1e3
        base = statistics.median(runs[name, FORMATS[0]][1]) * 1e3
        sb = opt.state_nbytes / a.n
        label = "float32" if fmt[0] is None else f"{fmt[0]} ({opt._lowp.rounding})"
        print(f"{name:10s} {label:20s} {med:8.2f} {med / base:6.3f} {sb:10.3f} "
              f"{12 + 2 * sb:10.3f}")


if __name__ == "__main__":
    main()
