"""Step times under CPU contention: 1 and 2 threads, with and without a
competing busy process.

Runs ``fusedoptim.Adam`` (float32) on the ``mlp`` workload (50 x [(256, 256),
(256,)]) on the active backend, timing single ``step`` calls back to back,
and prints the median, 90th and 10th percentile of each configuration, the
2-thread / 1-thread ratios with bootstrap intervals, and PASS / FAIL /
INCONCLUSIVE for issue #16's busy goals (2-thread median and p90 <= 1.10x the
1-thread ones)::

    python benchmarks/contention.py [--rounds 8] [--steps 600] [--json out.json]

Setup.  The script, its pool's workers and the competitor are pinned to the
first 2 CPUs of the affinity mask, so "busy" means three runnable threads on
two CPUs on any machine.  The competitor (a Python loop, a fresh process per
busy configuration) reports through a pipe once it spins; the warm-up starts
then and lasts until the pool policy's level has held 150 steps (at most
1000).  With the policy, 2 threads run twice: "2" (policy on, reset before
each configuration) and "2 fixed" (off: every large step parallel, spinning).

Statistics.  Interleaved rounds, reversed every other one (an even count
balances the orders).  A ratio is the median of per-round ratios (drifts
cancel); its 90% interval resamples whole rounds, pairs kept, fixed seed.  A
goal PASSes when the interval's top is <= 1.10, FAILs when its bottom is
above, else is INCONCLUSIVE.  "tail": steps slower than 1.5x the quiet
1-thread median (a p90 near a 10% tail sits between two modes: noisy).

Machine record, per configuration over its timed steps: busy and steal CPU
of the pinned CPUs (/proc/stat), "foreign" CPU (busy minus this process's
and the competitor's: other processes; flagged above 0.05 CPU when quiet),
CPU pressure (/proc/pressure/cpu), the competitor's CPU share.  --json adds
the machine (``fusedoptim.cli.bench.machine``), settings, and each round.

Private hooks (guarded: other builds and backends run with fewer columns):
``_ext._step._pool_policy``, ``_pool_workers``, ``_set_spin_ns``, ``cli.bench.machine``.
"""

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time

import numpy as np

import fusedoptim

SHAPES = [(256, 256), (256,)] * 50
GOAL = 1.10             # issue #16: busy 2t / 1t, median and p90
TAIL = 1.5              # a "slow" step: > 1.5x the quiet 1-thread median
FOREIGN_MAX = 0.05      # CPUs of other processes tolerated in a quiet configuration
STABLE, WARMUP_MAX = 150, 1000   # warm-up: level held this many steps; cap
BOOT, SEED, MIN_ROUNDS = 2000, 16, 4
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# The competitor signals once it spins (its start, ~80 ms, is not contention)
# and exits once its parent is gone (SIGKILL, a crash, a timeout; checked ~20 ms).
BUSY = ("import os, sys\nparent, ready = int(sys.argv[1]), int(sys.argv[2])\n"
        "while os.getppid() == parent:\n"
        "    if ready >= 0:\n        os.write(ready, b'r'); os.close(ready); ready = -1\n"
        "    for _ in range(1_000_000): pass\n")


def make_step():
    rng = np.random.default_rng(0)
    params = {f"W{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)}
    grads = {f"d{k}": rng.standard_normal(a.shape).astype(np.float32) * 1e-3
             for k, a in params.items()}
    opt = fusedoptim.Adam(params, lr=1e-4)
    return lambda: opt.step(grads)


def _hook(name):
    """A hook of the compiled pool, or None (older builds, other backends)."""
    if fusedoptim.get_backend() != "cython":
        return None
    try:
        from fusedoptim._ext import _step
    except ImportError:
        return None
    return getattr(_step, name, None)


def pin():
    """Pin every thread of this process to the first 2 CPUs of its affinity
    mask; returns (CPUs, mask, pool workers that already existed)."""
    try:
        mask = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None, None, None
    cpus = set(mask[:2])
    workers = _hook("_pool_workers")
    existed = workers()[0] if workers is not None else None
    # Threads created later inherit the mask (the pool's start from the main
    # thread); existing ones (a pool started at import, BLAS's) are pinned by id.
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # ended meanwhile
    return cpus, mask, existed


def _threads_off(cpus):
    """Threads of this process allowed outside ``cpus`` now, and of how many."""
    off = tids = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            off, tids = off + (os.sched_getaffinity(int(tid)) != cpus), tids + 1
        except OSError:
            pass  # ended meanwhile
    return off, tids


def _cpu_stat(cpus):
    """(busy, steal) seconds since boot of ``cpus`` (None: all), or None."""
    busy = steal = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *v = line.split()
                if not name.startswith("cpu"):
                    break
                n = int(name[3:]) if name[3:].isdigit() else None
                if (name == "cpu") if cpus is None else n in cpus:
                    v = [int(x) for x in v] + [0] * 8
                    busy += v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
                    steal += v[7]
    except (OSError, ValueError):
        return None
    return busy / TICK, steal / TICK


def _proc_cpu(pid):
    """User + system CPU seconds of a process (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def _psi_some():
    """Seconds some task has waited for a CPU (/proc/pressure/cpu), or None."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some"):
                    return int(line.rsplit("total=", 1)[1]) / 1e6
    except (OSError, IndexError, ValueError):
        pass
    return None


def _sample(cpus, pid):
    return (time.perf_counter(), _cpu_stat(cpus), _proc_cpu("self"),
            _proc_cpu(pid) if pid else 0.0, _psi_some())


def _machine_deltas(a, b, busy):
    """CPUs (per second of wall time) busy, stolen, of other processes, and
    of the competitor, and the CPU pressure, between two samples."""
    wall = b[0] - a[0]
    d = {"wall_s": wall}
    rate = (lambda x, y: (y - x) / wall if x is not None and y is not None else None)
    d["busy_cpu"] = rate(a[1][0], b[1][0]) if a[1] and b[1] else None
    d["steal_cpu"] = rate(a[1][1], b[1][1]) if a[1] and b[1] else None
    d["own_cpu"] = rate(a[2], b[2])
    comp = rate(a[3], b[3])
    d["competitor_share"] = comp if busy else None
    d["foreign_cpu"] = (d["busy_cpu"] - d["own_cpu"] - comp
                        if None not in (d["busy_cpu"], d["own_cpu"], comp) else None)
    d["psi_some"] = rate(a[4], b[4])
    return d


def start_competitor(cpus):
    """The busy process, pinned to ``cpus``, once it spins; and its start (s)."""
    t0 = time.perf_counter()
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", BUSY, str(os.getpid()), str(w)],
                                pass_fds=(w,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    try:
        if cpus is not None:  # inherited from this thread already; made explicit
            try:
                os.sched_setaffinity(proc.pid, cpus)
            except OSError:
                pass
        if not select.select([r], [], [], 30)[0] or os.read(r, 1) != b"r":
            raise RuntimeError("the competing process did not start")
    except BaseException:  # SIGTERM included: measure() does not know it yet
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(r)
    return proc, time.perf_counter() - t0


def warm_up(step, policy):
    """Steps until the policy's level has held ``STABLE`` steps (just
    ``STABLE`` without the policy), at most ``WARMUP_MAX``; and whether it held."""
    level, held = None, 0
    for n in range(1, WARMUP_MAX + 1):
        step()
        now = policy()["level"] if policy is not None else 0
        held = held + 1 if now == level else 1
        level = now
        if held >= STABLE:
            return n, True
    return WARMUP_MAX, False


def measure(step, threads, busy, steps, cpus, adaptive=True):
    """Seconds of ``steps`` single steps at ``threads`` threads, with a busy
    competing process when ``busy``, and a record of the configuration: the
    policy's counts over the timed steps, the warm-up, the machine."""
    proc = None
    before = fusedoptim.get_num_threads()
    policy = _hook("_pool_policy")
    rec = {}
    try:
        if busy:
            proc, rec["competitor_start_s"] = start_competitor(cpus)
        fusedoptim.set_num_threads(threads)
        if policy is not None:
            # A fresh policy per configuration: a stretch on the caller alone
            # (up to 256 steps) begun under the previous configuration's
            # competitor would otherwise spill into this one's timed steps.
            policy(adaptive=adaptive, reset=True)
        rec["warmup_steps"], rec["warmup_stable"] = warm_up(step, policy)
        state0 = policy() if policy is not None else {}
        m0 = _sample(cpus, proc and proc.pid)
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            out.append(time.perf_counter() - t0)
        m1 = _sample(cpus, proc and proc.pid)  # before the competitor stops
        state = policy() if policy is not None else {}
        rec.update(_machine_deltas(m0, m1, busy))
        for k in ("serial_jobs", "stretch_jobs", "descheduled_jobs", "nospin_jobs"):
            if k in state:
                rec[k] = state[k] - state0[k]
        return out, rec
    finally:
        if policy is not None:
            policy(adaptive=True)
        fusedoptim.set_num_threads(before)
        if proc is not None:
            proc.kill()
            proc.wait()


def p90(xs):
    return statistics.quantiles(xs, n=10)[-1]


def ratio(num, den, stat):
    """Median of the per-round ratios ``stat(num[r]) / stat(den[r])``, its
    bootstrap 90% interval (rounds resampled, the pair of a round kept
    together), and the per-round ratios."""
    r = np.array([stat(a) / stat(b) for a, b in zip(num, den)])
    # One seed for every ratio: the same resampled rounds for each.
    idx = np.random.default_rng(SEED).integers(0, len(r), (BOOT, len(r)))
    lo, hi = np.percentile(np.median(r[idx], axis=1), [5, 95])
    return float(np.median(r)), [float(lo), float(hi)], r.tolist()


def verdict(ci, rounds, cpus):
    if cpus is None or len(cpus) < 2:
        return "INCONCLUSIVE (fewer than 2 usable CPUs)"
    if rounds < MIN_ROUNDS:
        return f"INCONCLUSIVE (fewer than {MIN_ROUNDS} rounds)"
    return "PASS" if ci[1] <= GOAL else "FAIL" if ci[0] > GOAL else "INCONCLUSIVE"


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def _commit():
    """The git commit of the imported fusedoptim, '+' if modified, or None."""
    here = os.path.dirname(os.path.abspath(fusedoptim.__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def _machine():
    try:
        from fusedoptim.cli.bench.machine import machine_info
    except ImportError:  # older builds
        return {"fusedoptim": getattr(fusedoptim, "__version__", None),
                "numpy": np.__version__, "python": sys.version.split()[0],
                "logical_cpus": os.cpu_count()}
    return machine_info(2)


def _fmt(x, spec, width):
    return f"{'' if x is None else format(x, spec):>{width}}"


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The defaults (8 rounds x 600 steps: 4800 timed steps per configuration, "
               "600 a round, two cycles of the policy's back-off) take about 2 minutes on "
               "the 2-core development machine when quiet, about 3 (184 s) while another "
               "process uses one of its CPUs.")
    ap.add_argument("--rounds", type=int, default=8,
                    help="interleaved rounds; even, so both orders occur equally (default 8)")
    ap.add_argument("--steps", type=int, default=600,
                    help="timed steps per configuration and round (default 600)")
    ap.add_argument("--json", help="also write the run's record here")
    ap.add_argument("--spin-us", type=float,
                    help="how long idle pool workers spin before sleeping (tuning; "
                         "builds with fusedoptim's own pool only)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.steps < 10:
        ap.error("--rounds must be >= 1 and --steps >= 10")
    if args.spin_us is not None:
        from fusedoptim._ext import _step
        _step._set_spin_ns(int(args.spin_us * 1e3))
    machine = _machine()  # before pinning: its usable CPUs are the machine's
    # Before the first step: the pool's workers do not exist yet, and inherit.
    cpus, mask, existed = pin()
    load0 = os.getloadavg()[0]
    started = time.time()
    step = make_step()
    # (threads, busy, policy on)
    kinds = [(1, True), (2, True)] + ([(2, False)] if _hook("_pool_policy") is not None else [])
    configs = [(t, b, a) for b in (False, True) for t, a in kinds]
    rounds = {c: [] for c in configs}      # each round's step times
    recs = {c: [] for c in configs}        # each round's record
    for r in range(args.rounds):
        for c in (configs if r % 2 == 0 else configs[::-1]):
            t, rec = measure(step, c[0], c[1], args.steps, cpus, adaptive=c[2])
            rounds[c].append(t)
            recs[c].append(rec)
    elapsed = time.time() - started
    off, nthreads = _threads_off(cpus) if cpus is not None else (None, None)
    workers = _hook("_pool_workers")
    commit = _commit()

    def name(c):
        return f"{c[0]}t{'' if c[2] else '-fixed'}{'-busy' if c[1] else ''}"

    print(f"fusedoptim {machine.get('fusedoptim')} ({fusedoptim.__file__}, commit "
          f"{commit}), backend {fusedoptim.get_backend()}, kernels "
          f"{machine.get('kernel_isa')}; numpy {machine.get('numpy')}, Python "
          f"{machine.get('python')}")
    print(f"machine: {machine.get('cpu')}, {machine.get('logical_cpus')} logical CPUs "
          f"({machine.get('physical_cores')} cores), {machine.get('usable_cpus')} usable; "
          f"{machine.get('os')}")
    if cpus is None:
        print("affinity: cannot be set here; the busy rows may not be contended")
    else:
        print(f"affinity: script, pool workers and competitor pinned to CPUs {sorted(cpus)} "
              f"(of {mask}); pool workers before pinning: {existed}, after the run: "
              f"{workers()[0] if workers else None}; threads outside the pin: "
              f"{off} of {nthreads}")
        if len(cpus) < 2:
            print(f"WARNING: only {len(cpus)} usable CPU: 2 threads share one CPU, "
                  "and the busy goals cannot be judged here")
    if args.rounds % 2:
        print(f"WARNING: odd --rounds ({args.rounds}): one order runs once more")
    warm = [x for c in configs for x in recs[c]]
    print(f"Adam float32, mlp (50 x [(256,256),(256,)]), {args.rounds} rounds x "
          f"{args.steps} steps; warm-up until the policy level held {STABLE} steps: "
          f"mean {statistics.mean(x['warmup_steps'] for x in warm):.0f} steps, cap "
          f"({WARMUP_MAX}) hit {sum(not x['warmup_stable'] for x in warm)} of {len(warm)}; "
          f"{elapsed:.0f} s; load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    quiet1 = statistics.median(x for t in rounds[(1, False, True)] for x in t)
    print(f"tail: share of steps > {TAIL}x the quiet 1-thread median ({quiet1 * 1e3:.3f} ms);"
          " serial, stretch: shares of all steps (caller alone; stretch: after a fallback);\n"
          "desched, nospin: shares of the parallel steps (a pool thread descheduled; no "
          "spinning); busy, foreign\n(other processes), steal: CPUs of the pinned CPUs; psi: "
          "share of time a task waited for a CPU; comp: the\ncompetitor's CPU share; the "
          "machine columns are means over rounds")
    print(f"{'competitor':>10} {'threads':>8} {'median ms':>10} {'p90 ms':>8} {'p10 ms':>8} "
          f"{'tail':>6} {'serial':>6} {'stretch':>7} {'desched':>7} {'nospin':>6} "
          f"{'busy':>5} {'foreign':>8} {'steal':>5} {'psi':>5} {'comp':>5}")
    def stats(t):
        q = statistics.quantiles(t, n=10)
        return {"median_ms": statistics.median(t) * 1e3, "p90_ms": q[-1] * 1e3,
                "p10_ms": q[0] * 1e3, "tail": sum(x > TAIL * quiet1 for x in t) / len(t)}

    confs, flagged = {}, []
    for c in configs:
        allt = [x for t in rounds[c] for x in t]
        per_round = [{**stats(t), **rec} for t, rec in zip(rounds[c], recs[c])]
        jobs = {k: sum(x.get(k, 0) for x in recs[c])
                for k in ("serial_jobs", "stretch_jobs", "descheduled_jobs", "nospin_jobs")}
        total = args.steps * args.rounds
        parallel = total - jobs["serial_jobs"]
        pol = c[0] > 1 and "serial_jobs" in recs[c][0]
        s = {**stats(allt), "serial_share": jobs["serial_jobs"] / total if pol else None,
               "stretch_share": jobs["stretch_jobs"] / total if pol and c[2] else None,
               "descheduled_of_parallel": (jobs["descheduled_jobs"] / parallel
                                           if pol and c[2] and parallel else None),
               "nospin_of_parallel": (jobs["nospin_jobs"] / parallel
                                      if pol and c[2] and parallel else None),
               **{k: _mean(x[k] for x in recs[c]) for k in
                  ("busy_cpu", "foreign_cpu", "steal_cpu", "psi_some", "competitor_share")}}
        over = sum((x["foreign_cpu"] or 0) > FOREIGN_MAX for x in recs[c])
        s["foreign_flag"] = not c[1] and (s["foreign_cpu"] or 0) > FOREIGN_MAX
        if s["foreign_flag"]:
            flagged.append((name(c), s["foreign_cpu"], over))
        confs[name(c)] = {**s, "rounds": per_round}
        label = f"{c[0]}{'' if c[2] else ' fixed'}"
        print(f"{'busy' if c[1] else 'none':>10} {label:>8} {s['median_ms']:>10.3f} "
              f"{s['p90_ms']:>8.3f} {s['p10_ms']:>8.3f} {_fmt(s['tail'], '.1%', 6)} "
              f"{_fmt(s['serial_share'], '.0%', 6)} {_fmt(s['stretch_share'], '.0%', 7)} "
              f"{_fmt(s['descheduled_of_parallel'], '.0%', 7)} "
              f"{_fmt(s['nospin_of_parallel'], '.0%', 6)} {_fmt(s['busy_cpu'], '.2f', 5)} "
              f"{_fmt(s['foreign_cpu'], '.2f', 7)}{'!' if s['foreign_flag'] else ' '} "
              f"{_fmt(s['steal_cpu'], '.2f', 5)} {_fmt(s['psi_some'], '.0%', 5)} "
              f"{_fmt(s['competitor_share'], '.0%', 5)}")
    for n, f, over in flagged:
        print(f"WARNING: quiet configuration {n} was not quiet: other processes used "
              f"{f:.2f} CPU on average (> {FOREIGN_MAX}; {over} of {args.rounds} rounds over)")
    ratios, verdicts = {}, []
    by = {name(c): rounds[c] for c in configs}
    for b in ("", "-busy"):
        for num, den in ((f"2t{b}", f"1t{b}"), (f"2t-fixed{b}", f"1t{b}"),
                         (f"2t{b}", f"2t-fixed{b}")):
            if num not in by or den not in by:
                continue
            entry, text = {}, []
            for key, stat in (("median", statistics.median), ("p90", p90)):
                point, ci, per = ratio(by[num], by[den], stat)
                entry.update({key: point, f"{key}_ci90": ci, f"{key}_rounds": per})
                text.append(f"{key} {point:.3f}x [{ci[0]:.3f}-{ci[1]:.3f}] "
                            f"(rounds {min(per):.2f}-{max(per):.2f})")
            ratios[f"{num} / {den}"] = entry
            print(f"{'busy' if b else 'quiet':>5}: {num.removesuffix(b):>8} / "
                  f"{den.removesuffix(b):<8} " + ", ".join(text))
    print(f"ratios: median over rounds of each round's ratio [bootstrap 90% interval, "
          f"{BOOT} resamples of the rounds, seed {SEED}] (range of the per-round ratios)")
    main_ratio = ratios.get("2t-busy / 1t-busy")
    comp = _mean(x["competitor_share"] for c in configs if c[1] for x in recs[c])
    for key in ("median", "p90"):
        ci = main_ratio[f"{key}_ci90"]
        v = verdict(ci, args.rounds, cpus)
        verdicts.append({"goal": f"busy 2t / 1t {key} <= {GOAL}", "verdict": v,
                         "ratio": main_ratio[key], "ci90": ci})
        print(f"issue #16, busy: 2t / 1t {key:<6} <= {GOAL:.2f}: {v}  "
              f"({main_ratio[key]:.3f}x, 90% interval {ci[0]:.3f}-{ci[1]:.3f}; competitor "
              f"{comp:.0%} of a CPU)")
    print("issue #16, quiet (<= 1.03x of the pre-issue build): not judged here; "
          "'2 fixed' is this build with the policy off, not the pre-issue build")
    if args.json:
        doc = {"meta": {
            "rounds": args.rounds, "steps": args.steps, "backend": fusedoptim.get_backend(),
            "workload": "Adam float32, mlp: 50 x [(256,256),(256,)]", "commit": commit,
            "fusedoptim_file": fusedoptim.__file__, "machine": machine, "affinity_mask": mask,
            "pinned_cpus": sorted(cpus) if cpus is not None else None,
            "pool_workers_before_pinning": existed, "threads_outside_pin": off,
            "spin_us": args.spin_us, "elapsed_s": elapsed,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "load_average": [load0, os.getloadavg()[0]], "order": [name(c) for c in configs],
            "warmup": {"stable_steps": STABLE, "max_steps": WARMUP_MAX},
            "tail_threshold_ms": TAIL * quiet1 * 1e3, "foreign_max_cpu": FOREIGN_MAX,
            "bootstrap": {"resamples": BOOT, "seed": SEED, "interval": 0.9}},
               "configurations": confs, "ratios": ratios, "verdicts": verdicts}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)


def _exit_on(signum, frame):
    # SystemExit runs measure()'s finally (by default these end Python at once).
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    import signal
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _exit_on)
    main()
