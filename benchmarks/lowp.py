"""Issue 14's speed goals, side by side in one run: Adam with float32,
bfloat16 and int8 state at 2^24 float32 parameters, the float32 copy limit,
and (``--peers``, where installed) bitsandbytes' and torchao's CPU AdamW8bit
beside fusedoptim's int8 AdamW (the same update: the bench's AdamW row)::

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
from fusedoptim._ext import adam_lowp
from fusedoptim.cli.bench import peers
from fusedoptim.cli.bench import workloads as W

N = 1 << 24
assert N == W.size_elements("big")
#: What the peers are compared with: the bench's int8 AdamW row (``bench``
#: pairs its AdamW rows with their AdamW8bit), the same update as theirs.
PEER_CASE = W.Case("adamw", "big", "float32", "int8")


def _case(state):
    """The bench's Adam case with ``state`` (its step is Adam's here, its
    bytes the GB/s of the row)."""
    return W.Case("adam", "big", "float32", state or "float32")


def _fused(case, n, rounding=None):
    """A step of ``case``'s class with the bench's hyperparameters of the
    row (lr W.LR; AdamW's weight decay) and its state."""
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal(n, dtype=np.float32)}
    g = {"w": rng.standard_normal(n, dtype=np.float32)}
    opt = case.cls(p, **case.hyperparameters, state_rounding=rounding)
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
    params, grads = W.make_model(PEER_CASE)
    return peers.make_step(kind, PEER_CASE, params, grads, threads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--peers", action="store_true",
                    help="add bitsandbytes' and torchao's AdamW8bit where they import")
    args = ap.parse_args(argv)
    fo.set_num_threads(args.threads)
    # label -> (step, the bench case whose bytes it moves: its GB/s), so that
    # the bytes never hang on how a label is spelled.  The copy moves the
    # float32 Adam step's.
    rows = {"copy (f32 limit)": (_copy(N), _case(None))}
    for state in (None, "bfloat16", "int8"):
        rows[f"adam {state or 'float32'}"] = (_fused(_case(state), N), _case(state))
    # the other rounding of each format (bfloat16: nearest by default; int8: stochastic)
    rows["adam bfloat16 stoch."] = (_fused(_case("bfloat16"), N, "stochastic"),
                                    _case("bfloat16"))
    rows["adam int8 nearest"] = (_fused(_case("int8"), N, "nearest"), _case("int8"))
    first = {}
    if args.peers:
        # The peers run AdamW: they are compared with fusedoptim's AdamW.
        rows["adamw int8"] = (_fused(PEER_CASE, N), PEER_CASE)
        for kind in ("bitsandbytes", "torchao"):
            try:
                fn = _peer(kind, args.threads)
                t0 = time.perf_counter()
                fn()
                first[kind] = time.perf_counter() - t0
                # 8-bit blockwise state in blocks of 256: int8's bytes
                rows[f"{kind} AdamW8bit"] = (fn, PEER_CASE)
            except Exception as exc:  # not installed, or no CPU path
                print(f"note: {kind} skipped: {type(exc).__name__}: {exc}")
    steps = {k: fn for k, (fn, _) in rows.items()}
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
    print(f"2^24 float32 parameters, {args.threads} threads, {args.rounds} interleaved rounds, "
          f"loops: {adam_lowp.isa()}; load average {' '.join(load0)} -> {' '.join(load1)}")
    print(f"{'implementation':<24} {'median':>10} {'/ f32 Adam':>11} {'GB/s':>7} "
          f"{'% of f32 copy limit':>20} {'fastest':>10} {'/ f32 Adam':>11}")
    for k, m in med.items():
        nbytes = rows[k][1].bytes_moved
        print(f"{k:<24} {m * 1e3:>8.2f} ms {m / f32:>11.3f} {nbytes / m / 1e9:>7.1f} "
              f"{100 * limit / m:>19.0f}% {best[k] * 1e3:>7.2f} ms "
              f"{best[k] / best['adam float32']:>11.3f}")
    for kind, t in first.items():
        print(f"{kind}: first step {t:.2f} s; int8 fused AdamW is "
              f"{med[f'{kind} AdamW8bit'] / med['adamw int8']:.1f}x faster")
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
