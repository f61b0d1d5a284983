"""One workload's step time under two builds of fusedoptim, side by side.

Each build runs in its own long-lived process (``PYTHONPATH=<src>``), both
set up alike; the parent asks them in turn for ``--steps`` timed single
steps, reversing the order every other round, so that a drift of the
machine hits both alike.  Printed: each build's median step time (over all
its timed steps), the median of the per-round ratios of the medians and its
90% bootstrap interval (whole rounds resampled, fixed seed)::

    python benchmarks/builds.py --other /path/to/old/checkout/src [--threads 2]

Built for issue #16's quiet-machine goal (2 threads within 1.03x of the
build before the thread pool); ``git worktree add`` an old commit, build it
in place (``python setup.py build_ext --inplace``) and pass its ``src``.
``--isa avx2`` forces both builds' family loops onto one instruction set
where the build knows ``_ext._step._set_simd_isa`` (older ones had AVX2
only).  The workload is ``contention.py``'s: Adam, float32, 50 x
[(256, 256), (256,)].
"""

import argparse
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import fusedoptim as fo
threads, isa = int(sys.argv[1]), sys.argv[2]
fo.set_num_threads(threads)
if isa:
    from fusedoptim._ext import _step
    if hasattr(_step, "_set_simd_isa"):
        _step._set_simd_isa(isa)
rng = np.random.default_rng(0)
shapes = [(256, 256), (256,)] * 50
params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
grads = {"d" + k: (rng.standard_normal(a.shape) * 1e-3).astype(np.float32)
         for k, a in params.items()}
opt = fo.Adam(params, lr=1e-3)
for _ in range(200):
    opt.step(grads)
print(json.dumps({"file": fo.__file__}), flush=True)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        t0 = time.perf_counter()
        opt.step(grads)
        times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
"""


def start(src, threads, isa):
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(threads), isa or ""], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    return proc, hello["file"]


def ask(proc, steps):
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def interval(ratios, boot=2000, seed=16):
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(boot))
    return meds[int(0.05 * boot)], meds[int(0.95 * boot) - 1]


def main(argv=None):
    here = pathlib.Path(__file__).resolve().parent.parent / "src"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--other", required=True, help="the other build's src directory")
    ap.add_argument("--this", default=str(here), help="this build's src (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", default="", help="force the family loops' ISA (avx2, avx512)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args(argv)
    builds = {"this": a.this, "other": a.other}
    procs = {}
    try:
        for name, src in builds.items():
            procs[name], where = start(src, a.threads, a.isa)
            print(f"{name}: {where}")
        rounds = []
        for r in range(a.rounds):
            order = list(builds) if r % 2 == 0 else list(builds)[::-1]
            rounds.append({name: ask(procs[name], a.steps) for name in order})
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    med = {n: statistics.median(t for rd in rounds for t in rd[n]) for n in builds}
    ratios = [statistics.median(rd["this"]) / statistics.median(rd["other"]) for rd in rounds]
    lo, hi = interval(ratios)
    print(f"Adam mlp float32, {a.threads} threads, {a.rounds} rounds x {a.steps} steps"
          + (f", ISA {a.isa}" if a.isa else ""))
    for n in builds:
        print(f"  {n:5s} median {med[n] * 1e3:.3f} ms")
    print(f"  this / other: {statistics.median(ratios):.3f} (90% interval {lo:.3f}-{hi:.3f}; "
          f"rounds {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
