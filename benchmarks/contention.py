"""Step times under CPU contention: 1 and 2 threads, with and without a
competing busy process.

Runs ``fusedoptim.Adam`` (float32) on the ``mlp`` workload (50 x [(256, 256),
(256,)]) on the active backend, timing single ``step`` calls back to back,
and prints the median and 90th percentile of each configuration, and the
2-thread / 1-thread ratios.  On builds with the pool's contention policy
(``_step._pool_policy``), 2 threads are measured twice: with the policy
("2") and with it off ("2 fixed": every large step parallel, the pool as it
was before the policy), and the shares of steps the policy ran on the caller
alone ("serial"; of them "stretch": after a fallback, the rest are the
periodic samples of the serial cost), saw a thread of the pool descheduled
in ("desched") and ran without spinning ("nospin": the threads then sleep at
once) are printed.  "busy" starts one
subprocess spinning in a Python loop for the duration of the configuration
(on the 2-core development machine: three runnable threads for two cores;
more when other processes run: the load average is printed).  Configurations are measured
in interleaved rounds (every configuration once per round, in reversed order
every other round), and the ratios are medians of per-round ratios, each of
two configurations timed moments apart, so that slow drifts of the machine
(its memory bandwidth swings by tens of percent from minute to minute) cancel
out, as in bench's ``interleave`` and ``round_ratios``; the table's medians
and percentiles pool every step of every round::

    python benchmarks/contention.py [--rounds 15] [--steps 150] [--json out.json]

Only the public API is used, so the script also measures older builds (run it
with another environment's python).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import fusedoptim

SHAPES = [(256, 256), (256,)] * 50
# The competitor exits by itself once the script is gone (SIGKILL, a crash, a
# parent harness's timeout): it checks about every 20 ms that its parent is
# still the script whose pid it was given.
BUSY = ("import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n"
        "    for _ in range(1_000_000): pass\n")


def make_step():
    rng = np.random.default_rng(0)
    params = {f"W{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)}
    grads = {f"d{k}": rng.standard_normal(a.shape).astype(np.float32) * 1e-3
             for k, a in params.items()}
    opt = fusedoptim.Adam(params, lr=1e-4)
    return lambda: opt.step(grads)


def _policy():
    """The compiled pool's policy hook, or None (older builds, other backends)."""
    if fusedoptim.get_backend() != "cython":
        return None
    try:
        from fusedoptim._ext import _step
    except ImportError:
        return None
    return getattr(_step, "_pool_policy", None)


def measure(step, threads, busy, steps, warmup_s=0.3, adaptive=True):
    """Seconds of ``steps`` single steps at ``threads`` threads, with a busy
    competing process when ``busy``, and the shares of the timed steps the
    pool's policy ran on the caller alone and saw descheduled (None, None
    without the policy; the second None on builds without that count)."""
    proc = None
    before = fusedoptim.get_num_threads()
    policy = _policy()
    try:
        if busy:
            proc = subprocess.Popen([sys.executable, "-c", BUSY, str(os.getpid())])
        fusedoptim.set_num_threads(threads)
        if policy is not None:
            # A fresh policy per configuration: a stretch on the caller alone
            # (up to 256 steps) begun under the previous configuration's
            # competitor would otherwise spill into this one's timed steps.
            policy(adaptive=adaptive, reset=True)
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            step()
        state0 = policy() if policy is not None else {}
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            out.append(time.perf_counter() - t0)
        state = policy() if policy is not None else {}
        serial = ((state["serial_jobs"] - state0["serial_jobs"]) / steps
                  if policy is not None else None)
        desched = ((state["descheduled_jobs"] - state0["descheduled_jobs"]) / steps
                   if "descheduled_jobs" in state else None)
        # Why (builds that count it): stretches after a fallback, as opposed
        # to the periodic serial samples, and parallel steps without spinning.
        why = ({k: (state[k] - state0[k]) / steps for k in ("stretch_jobs", "nospin_jobs")}
               if "stretch_jobs" in state else None)
        return out, serial, desched, why
    finally:
        if policy is not None:
            policy(adaptive=True)
        fusedoptim.set_num_threads(before)
        if proc is not None:
            proc.kill()
            proc.wait()


def p90(xs):
    return statistics.quantiles(xs, n=10)[-1]


def p10(xs):
    return statistics.quantiles(xs, n=10)[0]


def round_ratios(rounds, configs, name, num, den):
    """Medians of the per-round ratios of configuration ``num``'s median and
    90th percentile to ``den``'s (names as ``name`` gives them): each
    ratio of two batches timed in the same round."""
    by = {name(c): rounds[c] for c in configs}
    out = {}
    for key, stat in (("median", statistics.median), ("p90", p90)):
        out[key] = [stat(a) / stat(b) for a, b in zip(by[num], by[den])]
    return out


def _range(xs):
    return f"{statistics.median(xs):.3f}x [{min(xs):.2f}-{max(xs):.2f}]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=150, help="timed steps per round")
    ap.add_argument("--json", help="also write the raw summary here")
    ap.add_argument("--spin-us", type=float,
                    help="how long idle pool workers spin before sleeping (tuning; "
                         "builds with fusedoptim's own pool only)")
    args = ap.parse_args(argv)
    if args.spin_us is not None:
        from fusedoptim._ext import _step
        _step._set_spin_ns(int(args.spin_us * 1e3))
    load0 = os.getloadavg()[0]
    step = make_step()
    # (threads, busy, policy on)
    kinds = [(1, True), (2, True)] + ([(2, False)] if _policy() is not None else [])
    configs = [(t, b, a) for b in (False, True) for t, a in kinds]
    times = {c: [] for c in configs}
    rounds = {c: [] for c in configs}      # each round's steps
    serial = {c: [] for c in configs}
    desched = {c: [] for c in configs}
    why = {c: [] for c in configs}
    loads = {c: [] for c in configs}
    for r in range(args.rounds):
        for c in (configs if r % 2 == 0 else configs[::-1]):
            loads[c].append(os.getloadavg()[0])
            t, s, d, w = measure(step, c[0], c[1], args.steps, adaptive=c[2])
            times[c] += t
            rounds[c].append(t)
            if w is not None:
                why[c].append(w)
            if s is not None:
                serial[c].append(s)
            if d is not None:
                desched[c].append(d)
    print(f"fusedoptim {fusedoptim.__file__}, backend {fusedoptim.get_backend()}; "
          f"Adam float32, mlp (50 x [(256,256),(256,)]), {args.rounds} rounds x "
          f"{args.steps} steps; load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    print(f"{'competitor':>10} {'threads':>8} {'median ms':>10} {'p90 ms':>8} {'p10 ms':>8} "
          f"{'serial':>7} {'desched':>7} {'stretch':>7} {'nospin':>7} {'load avg':>10}")
    summary = {}

    def name(c):
        return f"{c[0]}t{'' if c[2] else '-fixed'}{'-busy' if c[1] else ''}"

    for c in configs:
        med, q, lo = (statistics.median(times[c]) * 1e3, p90(times[c]) * 1e3,
                      p10(times[c]) * 1e3)
        ser = statistics.mean(serial[c]) if serial[c] and c[0] > 1 else None
        des = statistics.mean(desched[c]) if desched[c] and c[0] > 1 and c[2] else None
        wy = ({k: statistics.mean(w[k] for w in why[c]) for k in why[c][0]}
              if why[c] and c[0] > 1 and c[2] else {})
        summary[name(c)] = {"median_ms": med, "p90_ms": q, "p10_ms": lo,
                            "serial_share": ser, "descheduled_share": des,
                            "stretch_share": wy.get("stretch_jobs"),
                            "nospin_share": wy.get("nospin_jobs"),
                            "load": [min(loads[c]), max(loads[c])]}
        label = f"{c[0]}{'' if c[2] else ' fixed'}"
        print(f"{'busy' if c[1] else 'none':>10} {label:>8} {med:>10.3f} {q:>8.3f} {lo:>8.3f} "
              f"{'' if ser is None else f'{ser:.0%}':>7} "
              f"{'' if des is None else f'{des:.0%}':>7} "
              + "".join(f"{'' if k not in wy else f'{wy[k]:.0%}':>8}"
                        for k in ("stretch_jobs", "nospin_jobs"))
              + f" {min(loads[c]):>4.1f}-{max(loads[c]):<4.1f}")
    for b in (False, True):
        busy = "-busy" if b else ""
        pairs = [(f"2t{busy}", f"1t{busy}")]
        pairs += [(f"2t-fixed{busy}", f"1t{busy}"), (f"2t{busy}", f"2t-fixed{busy}")]
        for num, den in pairs:
            if num in summary and den in summary:
                r = round_ratios(rounds, configs, name, num, den)
                summary[f"{num} / {den}"] = {k: statistics.median(v) for k, v in r.items()}
                print(f"{'busy' if b else 'quiet'}: {num.split('-busy')[0]} / "
                      f"{den.split('-busy')[0]}  per-round median {_range(r['median'])}, "
                      f"p90 {_range(r['p90'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


def _exit_on(signum, frame):
    # SIGTERM / SIGHUP end the script through SystemExit, so that measure()'s
    # finally stops the competitor (by default they end Python at once).
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    import signal
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _exit_on)
    main()
