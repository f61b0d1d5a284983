"""Issue 14's speed goals, side by side in one run: Adam with float32,
bfloat16 and int8 state at 2^24 float32 parameters, the float32 copy limit,
and (``--peers``, where installed) bitsandbytes' and torchao's CPU AdamW8bit::

    python benchmarks/lowp.py [--threads 2] [--rounds 15] [--peers]

Every implementation takes one step per round, in turn (interleaved, so
load drift hits all alike); the table gives medians and the ratios the goals
are stated in (bfloat16 / float32 <= 0.76, int8 / float32 <= 0.65, int8 >=
20x faster than the peers), and the fastest round of each (on a machine
shared with other work, the round least disturbed).  Check ``uptime`` first.
"""

import argparse
import statistics
import time

import numpy as np

import fusedoptim as fo
from fusedoptim import _lowp
from fusedoptim._ext import adam_lowp
from fusedoptim.cli.bench import peers
from fusedoptim.cli.bench import workloads as W

N = 1 << 24


def _fused(state, n, lr, rounding=None):
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal(n, dtype=np.float32)}
    g = {"w": rng.standard_normal(n, dtype=np.float32)}
    opt = fo.Adam(p, lr=lr, state_dtype=state, state_rounding=rounding)
    return lambda: opt.step(g)


def _copy(n):
    from fusedoptim._alloc import zeros_like_state
    copy_like = W.yardstick()
    rw = [np.zeros(n, np.float32)]
    rw += [zeros_like_state(rw[0], k) for k in range(2)]
    ro = [np.random.default_rng(0).standard_normal(n, dtype=np.float32) * np.float32(1e-6)]
    return lambda: copy_like(rw, ro)


def _peer(kind, threads):
    """The step of a peer's 8-bit AdamW (fusedoptim.cli.bench.peers) on the
    bench's ``big`` AdamW row: 2^24 float32 parameters, lr W.LR."""
    case = W.Case("adamw", "big", "float32", "int8")
    params, grads = W.make_model(case)
    return peers.make_step(kind, case, params, grads, threads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--peers", action="store_true",
                    help="add bitsandbytes' and torchao's AdamW8bit where they import")
    args = ap.parse_args(argv)
    fo.set_num_threads(args.threads)
    lr = W.LR
    steps = {"copy (f32 limit)": _copy(N)}
    for state in (None, "bfloat16", "int8"):
        steps[f"adam {state or 'float32'}"] = _fused(state, N, lr)
    # the other rounding of each format (bfloat16: nearest by default; int8: stochastic)
    steps["adam bfloat16 stoch."] = _fused("bfloat16", N, lr, "stochastic")
    steps["adam int8 nearest"] = _fused("int8", N, lr, "nearest")
    first = {}
    if args.peers:
        for kind in ("bitsandbytes", "torchao"):
            try:
                fn = _peer(kind, args.threads)
                t0 = time.perf_counter()
                fn()
                first[kind] = time.perf_counter() - t0
                steps[f"{kind} AdamW8bit"] = fn
            except Exception as exc:  # not installed, or no CPU path
                print(f"note: {kind} skipped: {type(exc).__name__}: {exc}")
    for fn in steps.values():
        fn()
    times = {k: [] for k in steps}
    load0 = open("/proc/loadavg").read().split()[:3]
    for _ in range(args.rounds):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    load1 = open("/proc/loadavg").read().split()[:3]
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    f32 = med["adam float32"]
    limit = med["copy (f32 limit)"]
    bytes_f32 = 28 * N
    print(f"2^24 float32 parameters, {args.threads} threads, {args.rounds} interleaved rounds, "
          f"loops: {adam_lowp.isa()}; load average {' '.join(load0)} -> {' '.join(load1)}")
    print(f"{'implementation':<24} {'median':>10} {'/ f32 Adam':>11} {'GB/s':>7} "
          f"{'% of f32 copy limit':>20} {'fastest':>10} {'/ f32 Adam':>11}")
    for k, m in med.items():
        state = ("bfloat16" if "bfloat16" in k else "int8" if "int8" in k and "adam" in k
                 else None)
        nbytes = _lowp.bytes_moved([(N,)], state) if state else bytes_f32
        print(f"{k:<24} {m * 1e3:>8.2f} ms {m / f32:>11.3f} {nbytes / m / 1e9:>7.1f} "
              f"{100 * limit / m:>19.0f}% {best[k] * 1e3:>7.2f} ms "
              f"{best[k] / best['adam float32']:>11.3f}")
    for kind, t in first.items():
        print(f"{kind}: first step {t:.2f} s; int8 fused is "
              f"{med[f'{kind} AdamW8bit'] / med['adam int8']:.1f}x faster")
    print(f"bfloat16 / float32 = {med['adam bfloat16'] / f32:.3f} (goal <= 0.76), "
          f"int8 / float32 = {med['adam int8'] / f32:.3f} (goal <= 0.65)")
    # the same ratios round by round (each round's steps ran back to back, so a
    # load change between rounds cancels)
    per_round = {k: statistics.median(a / b for a, b in zip(times[k], times["adam float32"]))
                 for k in ("adam bfloat16", "adam int8")}
    print(f"medians of per-round ratios: bfloat16 {per_round['adam bfloat16']:.3f}, "
          f"int8 {per_round['adam int8']:.3f}")


if __name__ == "__main__":
    main()
