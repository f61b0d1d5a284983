"""Real model shapes on N threads, interleaved: fusedoptim's compiled Adam
against ``torch.optim.Adam(fused=True)`` and the copy yardstick.

For each size (``gpt2``, ``resnet50``, ``tiny``: the bench's workloads,
``cli/bench/shapes.py``), float32 Adam steps the same random model on

- ``cython``: the compiled backend, its pool's contention policy on (the
  default);
- ``cython-fixed``: the same optimizer with the policy off (every step
  parallel, the pool spinning as before the policy);
- ``torch``: ``torch.optim.Adam(fused=True)`` on the same values;
- ``copy``: the bench's copy yardstick (``_ext._yardstick.copy_like``,
  moving the bytes Adam moves: the memory-bandwidth limit);

taking turns: each round times ``--steps`` single steps of every
implementation in a rotated order, so that the machine's drifts (other
processes, the memory bandwidth of a shared VM) hit all of them alike.  It
prints each implementation's median over all steps, and the per-round
ratios (round medians): ``cython / torch`` (goal <= 1.0) and the share of the
copy limit ``copy / cython`` (goal >= 95%), median and range over rounds;
and for ``cython`` the share of steps its policy ran on the caller alone
and saw descheduled::

    python benchmarks/shapes.py [--size gpt2,resnet50] [--threads 2] [--rounds 9]
"""

import argparse
import os
import statistics
import time

import fusedoptim
from fusedoptim.cli.bench import workloads as W

IMPLS = ("cython", "cython-fixed", "torch", "copy")


def _policy():
    from fusedoptim._ext import _step
    return _step._pool_policy


def make_steps(size, threads, impls):
    """``{impl: step}`` for float32 Adam on ``size`` (``cython-fixed``
    shares ``cython``'s optimizer)."""
    case = W.cases(optimizers=("adam",), sizes=(size,))[0]
    steps = {}
    for impl in impls:
        if impl == "cython-fixed":
            continue
        if impl == "cython":
            with fusedoptim.use_backend("cython"):
                steps[impl] = W.make_step(case, "cython", threads=threads)
        else:
            steps[impl] = W.make_step(case, impl, threads=threads)
    if "cython-fixed" in impls:
        steps["cython-fixed"] = steps["cython"]
    return case, steps


def time_turn(impl, step, n):
    """Per-step seconds of ``n`` steps of ``impl`` (one warm-up step first),
    and the policy's counts over them (cython only)."""
    policy = _policy()
    policy(adaptive=impl != "cython-fixed")
    try:
        if impl.startswith("cython"):
            with fusedoptim.use_backend("cython"):
                return _timed(step, n, policy if impl == "cython" else None)
        return _timed(step, n, None)
    finally:
        policy(adaptive=True)


def _timed(step, n, policy):
    step()
    s0 = policy() if policy else None
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    counts = None
    if policy:
        s1 = policy()
        counts = {k: s1[k] - s0[k] for k in ("serial_jobs", "descheduled_jobs", "fallbacks")}
    return out, counts


def _range(xs):
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}]"


def run(size, threads, rounds, nsteps, impls):
    case, steps = make_steps(size, threads, impls)
    times = {i: [] for i in impls}
    rmed = {i: [] for i in impls}
    serial = desched = jobs = 0
    for r in range(rounds):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl in order:
            t, counts = time_turn(impl, steps[impl], nsteps)
            # torch's OpenMP workers spin on after its steps: let them sleep
            # before the next implementation's turn (bench's settle).
            W.settle()
            times[impl] += t
            rmed[impl].append(statistics.median(t))
            if counts:
                serial += counts["serial_jobs"]
                desched += counts["descheduled_jobs"]
                jobs += nsteps
    print(f"\n{size}: {len(case.shapes)} tensors, {case.elements:,} elements, float32 Adam, "
          f"{threads} threads, {rounds} rounds x {nsteps} steps per implementation "
          f"(load average {os.getloadavg()[0]:.2f} at the end)")
    for impl in impls:
        print(f"  {impl:>13}: median {statistics.median(times[impl]) * 1e3:9.3f} ms  "
              f"p90 {statistics.quantiles(times[impl], n=10)[-1] * 1e3:9.3f} ms")
    summary = {"size": size, "median_ms": {i: statistics.median(times[i]) * 1e3 for i in impls}}
    pairs = [("cython", "torch", "cython / torch", False),
             ("cython-fixed", "torch", "cython-fixed / torch", False),
             ("cython", "cython-fixed", "cython / cython-fixed", False),
             ("cython", "copy", "copy limit share (copy / cython)", True),
             ("cython-fixed", "copy", "copy limit share (copy / cython-fixed)", True)]
    for a, b, label, inverse in pairs:
        if a in rmed and b in rmed:
            ratios = [(y / x if inverse else x / y) for x, y in zip(rmed[a], rmed[b])]
            summary[label] = statistics.median(ratios)
            print(f"  {label:>38}: per-round median [range] {_range(ratios)}")
    if jobs:
        # Step jobs (the Adam loop): one per step.
        print(f"  cython policy: {serial / jobs:.1%} of steps on the caller alone, "
              f"{desched / jobs:.1%} descheduled")
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="gpt2,resnet50")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=0,
                    help="steps per turn (0: about 0.3 s of the slowest implementation)")
    ap.add_argument("--impls", default=",".join(IMPLS))
    args = ap.parse_args(argv)
    fusedoptim.set_num_threads(args.threads)
    impls = tuple(args.impls.split(","))
    for size in args.size.split(","):
        n = args.steps or max(3, int(0.3 / max(2e-5, W.size_elements(size) * 4e-10)))
        run(size, args.threads, args.rounds, n, impls)


if __name__ == "__main__":
    main()
