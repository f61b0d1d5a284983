"""The ``bench`` command: how much faster than plain NumPy, and how close to
the memory-bandwidth limit.

Every case is built and timed through :mod:`fusedoptim.bench` (``Case``,
``make_step``, ``measure``), the registry the pytest-benchmark suite uses,
so the two never disagree about what they measure.  For each case this
module times every implementation side by side, then derives

- speedup      = median time of ``numpy`` / median time,
- bandwidth    = ``case.bytes_moved`` / median time,
- % of limit   = median time of ``copy`` / median time * 100,

where ``copy`` is a kernel that reads and writes exactly the arrays of the
step and computes nothing: the machine's practical limit for this traffic.
"""

import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

from . import bench as B
from ._cli import CLIError, Progress, check_writable, choice_list, positive_int, \
    positive_int_list, require_matplotlib, unique

#: Implementations compared against the baseline, in table order.
COMPARED = ("cython", "numba", "numpy", "torch")
BASELINE = "numpy"
LIMIT = "copy"

#: (untimed calls, timed batches): the first untimed call is timed on its
#: own and reported (it holds a JIT compile or first-touch page faults).
FULL = (3, 15)
QUICK = (1, 5)
#: --quick: a step whose first call takes longer than this gets only
#: QUICK_SLOW_REPEAT timed batches of one call each, without the batch-sizing
#: call (big steps are stable; their calls are what eats the time budget).
QUICK_SLOW_CALL = 0.02
QUICK_SLOW_REPEAT = 3

SCHEMA = "fusedoptim-bench/1"

DESCRIPTION = ("Time one optimizer step per backend against plain NumPy and the "
               "memory-bandwidth limit.")

EPILOG = """\
how to read the table:
  time/step   median over the timed batches, after warm-up (a batch runs the
              step enough times to last ~2 ms; under --quick a step slower
              than 20 ms runs once per batch); 'spread' is
              (slowest - fastest batch) / median: above ~10% the machine was busy.
  vs numpy    speedup: time of the plain-NumPy backend / this time.
  GB/s        effective bandwidth: the bytes the step must move at the least
              (Adam reads p, g, m, v and writes p, m, v: 7 arrays) / time.
  % of limit  time of 'copy' / this time.  'copy' is a compiled kernel that
              reads and writes the same arrays as the step and computes
              nothing, measured in the same run: the practical memory limit
              of this machine for this traffic.  100% means the update costs
              no more than moving its data; an optimizer step cannot go much
              faster than that, whatever the arithmetic.  For the tiny
              'course' size the times are call overheads, not memory
              traffic, so there the percentage compares overheads; it can
              exceed 100% within noise, or when a library moves the bytes
              better than the yardstick.

sizes: course = the 2-5-2-1 network ({course}); mlp = an MLP of 50 layers of
256x256 ({mlp}); big = {big}.
examples:
  python -m fusedoptim bench --quick
  python -m fusedoptim bench --size big --optimizer adam,gd --threads 1,2 --json out.json
"""



def _size_text(name):
    c = B.Case("gd", name, "float32")
    n = len(c.shapes)
    return f"{n} tensor{'s' if n > 1 else ''}, {c.elements:,} elements"


EPILOG = EPILOG.format(**{name: _size_text(name) for name in ("course", "mlp", "big")})


def add_arguments(p):
    p.add_argument("--quick", action="store_true",
                   help=f"a first look: {QUICK[1]} timed batches ({QUICK_SLOW_REPEAT} for steps "
                        f"over {QUICK_SLOW_CALL * 1e3:.0f} ms) after {QUICK[0]} warm-up call, "
                        f"instead of {FULL[1]} after {FULL[0]}")
    p.add_argument("--optimizer", action="extend", type=choice_list(B.OPTIMIZERS, "optimizer"),
                   metavar="NAME[,NAME]", help=f"{', '.join(B.OPTIMIZERS)} (default: all)")
    p.add_argument("--size", action="extend", type=choice_list(tuple(B.SIZES), "size"),
                   metavar="NAME[,NAME]", help=f"{', '.join(B.SIZES)} (default: all)")
    p.add_argument("--dtype", action="extend", type=choice_list(tuple(B.DTYPES), "dtype"),
                   metavar="NAME[,NAME]", help="float32, float64 (default: float32)")
    p.add_argument("--threads", action="extend", type=positive_int_list, metavar="N[,N]",
                   help="thread counts to run each case with (default: fusedoptim's, "
                        "FUSEDOPTIM_NUM_THREADS or the usable CPUs)")
    p.add_argument("--backend", action="extend", type=choice_list(COMPARED, "backend"),
                   metavar="NAME[,NAME]",
                   help="implementations to compare: cython, numba, numpy, torch (default: "
                        "those available here).  numpy (the baseline) and copy (the limit) "
                        "are always measured")
    p.add_argument("--repeat", type=positive_int, metavar="N",
                   help="timed batches per measurement (overrides --quick)")
    p.add_argument("--warmup", type=positive_int, metavar="N",
                   help="untimed calls before timing, >= 1 (overrides --quick)")
    p.add_argument("--json", metavar="PATH", help="write every measurement and the machine "
                                                  "description to PATH")
    p.add_argument("--plot", metavar="PATH.png", help="draw speedups vs numpy and %% of the "
                                                      "limit (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


# ---------------------------------------------------------------------------
# machine description

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _physical_cores():
    """Distinct (package, core) pairs of /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores) or None


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads):
    from . import __version__, get_backend
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    torch = sys.modules.get("torch")
    return {
        "cpu": _cpu_model(),
        "physical_cores": _physical_cores(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "fusedoptim": __version__,
        "numpy": np.__version__,
        "numba": _version("numba"),
        "torch": torch.__version__ if torch is not None else _version("torch"),
        "default_backend": get_backend(),
        "kernel_isa": _kernel_isa(),
    }


def _kernel_isa():
    """``"avx2"`` or ``"baseline"``: which build of the compiled loops runs
    (None without the compiled backend)."""
    try:
        from . import _ext
    except ImportError:
        return None
    return _ext.simd()


def _loadavg():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------
# running

def _resolve(requested, explicit, progress):
    """The implementations to time, in table order, with their load times.

    A backend that cannot load is an error when asked for by name and a
    note otherwise."""
    from .backend import BackendUnavailable, _load

    impls, load_s, skipped = [], {}, {}
    for name in COMPARED:
        if name not in requested and name != BASELINE:
            continue
        progress.status(f"[{progress.elapsed():5.1f} s] loading {name} ...")
        t0 = time.perf_counter()
        try:
            if name == "torch":
                _torch_warmup()
            else:
                _load(name)
        except Exception as exc:  # BackendUnavailable is an ImportError
            if isinstance(exc, BackendUnavailable):
                why = str(exc)
            elif isinstance(exc, ImportError):
                why = f"torch is not installed ({exc})"
            else:
                why = f"torch failed to run a step ({type(exc).__name__}: {exc})"
            if explicit and name in requested:
                raise CLIError(f"--backend {name}: unavailable: {why}") from None
            skipped[name] = why
            progress.line(f"note: skipping {name}: {why}", always=True)
            continue
        load_s[name] = time.perf_counter() - t0
        impls.append(name)
    try:
        from ._ext._yardstick import copy_like  # noqa: F401
    except ImportError as exc:
        skipped[LIMIT] = f"the copy yardstick needs the compiled extension ({exc})"
        progress.line(f"note: no '% of limit': {skipped[LIMIT]}", always=True)
    else:
        impls.insert(0, LIMIT)
    return impls, load_s, skipped


def _compiled_available():
    from .backend import BackendUnavailable, _load

    try:
        _load("cython")
    except BackendUnavailable:
        return False
    return True


def _torch_warmup():
    """Import torch and build and run one step of each optimizer once: the
    first ``torch.optim`` step imports a good deal more of torch, which
    belongs to set-up, not to the first timed case."""
    import torch  # noqa: F401

    for opt in B.OPTIMIZERS:
        B.make_step(B.Case(opt, "course", "float32"), "torch", threads=1)()


def _jit_warmup(optimizers, sizes, dtypes, progress):
    """Compile numba's kernels before any timing: one step of each optimizer
    and dtype of the run, on the smallest selected size below the parallel
    threshold and on the smallest one above it (Numba compiles a serial and
    a parallel variant).  Returns the seconds spent."""
    from ._tuning import PARALLEL_MIN_ELEMENTS
    from .backend import use_backend

    by_regime = {}
    for size in sorted(sizes, key=lambda s: B.Case("gd", s, "float32").elements):
        big = B.Case("gd", size, "float32").elements >= PARALLEL_MIN_ELEMENTS
        by_regime.setdefault(big, size)
    t0, c0 = time.perf_counter(), time.process_time()
    for size in by_regime.values():
        for dtype in dtypes:
            for opt in optimizers:
                progress.status(f"[{progress.elapsed():5.1f} s] numba JIT warm-up: "
                                f"{opt} {size} {dtype}")
                fn = B.make_step(B.Case(opt, size, dtype), "numba")
                with use_backend("numba"):
                    fn()
                del fn
    return time.perf_counter() - t0, time.process_time() - c0


def _time_one(case, impl, threads, warmup, repeat, slow_repeat=None):
    """``(first_call_s, [seconds per call, one per timed batch])``; with
    ``slow_repeat``, a step whose first call exceeds ``QUICK_SLOW_CALL``
    gets that many timed batches instead of ``repeat``."""
    from contextlib import nullcontext
    from .backend import use_backend

    fn = B.make_step(case, impl, threads=threads)
    ctx = use_backend(impl) if impl in ("cython", "numba", "numpy") else nullcontext()
    with ctx:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    number = None
    if slow_repeat is not None and first > QUICK_SLOW_CALL:
        # Ten times the batch target: one call is a batch anyway.
        repeat, number = min(repeat, slow_repeat), 1
    times = B.measure(fn, impl, warmup=warmup - 1, repeat=repeat, number=number)
    return first, times


def _derive(records):
    """Fill speedup, bandwidth and % of limit from the medians of one run."""
    by_key = {}
    for r in records:
        by_key.setdefault((r["case"], r["threads"]), {})[r["impl"]] = r
    for group in by_key.values():
        base = group.get(BASELINE)
        limit = group.get(LIMIT)
        for r in group.values():
            med = r["median_s"]
            ok = med is not None and med > 0
            r["bandwidth_gb_s"] = r["bytes_moved"] / med / 1e9 if ok else None
            r["speedup_vs_numpy"] = (base["median_s"] / med
                                     if ok and base and base["median_s"] and r["impl"] != LIMIT
                                     else None)
            r["percent_of_limit"] = (100.0 * limit["median_s"] / med
                                     if ok and limit and limit["median_s"] else None)


def run(optimizers, sizes, dtypes, threads, backends, explicit, warmup, repeat, progress,
        slow_repeat=None, started=None):
    """Run the benchmark; returns the JSON document (see ``SCHEMA``).

    ``started`` (a ``time.perf_counter()`` value) is when the command
    started, for ``elapsed_s``."""
    import fusedoptim

    started = time.perf_counter() if started is None else started
    load0 = _loadavg()
    impls, load_s, skipped = _resolve(backends, explicit, progress)
    jit_s = jit_cpu_s = None
    if "numba" in impls:
        jit_s, jit_cpu_s = _jit_warmup(optimizers, sizes, dtypes, progress)
        progress.line(f"numba JIT warm-up: {jit_s:.1f} s ({jit_cpu_s:.1f} s of CPU)")

    cases = B.cases(optimizers, sizes, dtypes)
    total = len(cases) * len(threads) * len(impls)
    records, failures, k = [], 0, 0
    before = fusedoptim.get_num_threads()
    try:
        for case in cases:
            for n in threads:
                fusedoptim.set_num_threads(n)
                for impl in impls:
                    k += 1
                    label = f"{case.name} {n} thr {impl}"
                    progress.status(f"[{k}/{total} {progress.elapsed():5.1f} s] {label} ...")
                    rec = {"case": case.name, "optimizer": case.optimizer, "size": case.size,
                           "dtype": case.dtype, "tensors": len(case.shapes),
                           "elements": case.elements, "bytes_moved": case.bytes_moved,
                           "threads": n, "impl": impl, "warmup_calls": warmup,
                           "first_call_s": None, "times_s": [], "median_s": None,
                           "error": None}
                    try:
                        first, times = _time_one(case, impl, n, warmup, repeat, slow_repeat)
                    except Exception as exc:  # reported in the table, the run goes on
                        failures += 1
                        rec["error"] = f"{type(exc).__name__}: {exc}"
                        progress.line(f"{label}: FAILED ({rec['error']})", always=True)
                    else:
                        rec.update(first_call_s=first, times_s=times,
                                   median_s=statistics.median(times))
                        msg = (f"[{k}/{total} {progress.elapsed():5.1f} s] {label}: "
                               f"{format_time(rec['median_s'])}")
                        if progress.tty:
                            progress.status(msg)
                        else:
                            progress.line(msg)
                    records.append(rec)
    finally:
        fusedoptim.set_num_threads(before)
        progress.clear()
    _derive(records)
    return {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"optimizers": optimizers, "sizes": sizes, "dtypes": dtypes,
                     "threads": threads, "implementations": impls, "baseline": BASELINE,
                     "limit": LIMIT if LIMIT in impls else None,
                     "warmup_calls": warmup, "timed_batches": repeat,
                     "timed_batches_slow": slow_repeat, "slow_call_s": QUICK_SLOW_CALL
                     if slow_repeat is not None else None,
                     "batch": "each timed batch repeats the step to last about 2 ms; "
                              "times_s are seconds per step, one per batch"},
        "machine": machine_info(threads),
        "skipped": skipped,
        "load_s": load_s,
        "numba_jit_s": jit_s,
        "numba_jit_cpu_s": jit_cpu_s,
        "load_average": {"start": load0, "end": _loadavg()},
        "elapsed_s": time.perf_counter() - started,
        "process_cpu_s": time.process_time(),
        "failures": failures,
        "results": records,
    }


# ---------------------------------------------------------------------------
# output

def format_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.3f} s"


def _gbs(x):
    if x is None:
        return ""
    return f"{x:.2f}" if x >= 0.1 else f"{x:.2g}"


def threads_text(threads):
    return f"{'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}"


def _spread(times):
    if len(times) < 2:
        return "-"
    med = statistics.median(times)
    return f"{100 * (max(times) - min(times)) / med:.0f}%" if med > 0 else "-"


def format_table(doc):
    """The human-readable report of a run (the stdout of ``bench``)."""
    m = doc["machine"]
    s = doc["settings"]
    cores = f"{m['physical_cores']} cores" if m["physical_cores"] else f"{m['logical_cpus']} CPUs"
    versions = ", ".join(f"{k} {m[k]}" for k in ("numpy", "numba", "torch") if m.get(k))
    if m.get("kernel_isa"):
        cores += f" (cython loops: {m['kernel_isa']})"
    batches = str(s["timed_batches"])
    if s.get("timed_batches_slow") and s["timed_batches_slow"] < s["timed_batches"]:
        batches = (f"{batches} timed batches ({s['timed_batches_slow']} for steps over "
                   f"{1e3 * s['slow_call_s']:.0f} ms)")
    else:
        batches += " timed batches"
    lines = [
        f"fusedoptim {m['fusedoptim']} bench: {m['cpu']}, {cores}, {threads_text(m['threads'])}; "
        f"{versions}; {m['os']}",
        f"median of {batches} after {s['warmup_calls']} warm-up call(s); vs numpy = numpy "
        f"time / time; GB/s = bytes the step moves / time; % of limit = copy time / time "
        f"(see --help)",
        "",
    ]
    head = ("optimizer", "size", "dtype", "thr", "impl", "time/step", "spread",
            "vs numpy", "GB/s", "% of limit")
    rows, prev = [], None
    for r in doc["results"]:
        key = (r["case"], r["threads"])
        first = key != prev
        if first and prev is not None and r["size"] != rows[-1][-1]:
            rows.append(None)  # a blank line between sizes
        prev = key
        if r["error"]:
            cells = ["FAILED", "", "", "", ""]
        else:
            sp = r["speedup_vs_numpy"]
            pct = r["percent_of_limit"]
            cells = [format_time(r["median_s"]), _spread(r["times_s"]),
                     f"{sp:.2f}x" if sp is not None else "",
                     _gbs(r["bandwidth_gb_s"]),
                     "(limit)" if r["impl"] == LIMIT else
                     (f"{pct:.0f}%" if pct is not None else "")]
        case_cells = ([r["optimizer"], r["size"], r["dtype"], str(r["threads"])] if first
                      else ["", "", "", ""])
        rows.append(tuple(case_cells + [r["impl"]] + cells) + (r["size"],))
    body = [row[:-1] for row in rows if row is not None]
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h)
              for i, h in enumerate(head)]
    left = {0, 1, 2, 4}

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines.append(fmt(head))
    lines.append(fmt(["-" * w for w in widths]))
    for row in rows:
        lines.append("" if row is None else fmt(row[:-1]))
    lines.append("")
    lines.extend(_summary(doc))
    took = f"took {doc['elapsed_s']:.1f} s"
    extra = []
    if doc.get("numba_jit_s") is not None:
        extra.append(f"numba import and JIT warm-up "
                     f"{doc['load_s'].get('numba', 0.0) + doc['numba_jit_s']:.1f} s")
    if doc["load_s"].get("torch") is not None:
        extra.append(f"torch import and first steps {doc['load_s']['torch']:.1f} s")
    if extra:
        took += f" (of which {', '.join(extra)})"
    la = doc["load_average"]
    if la["start"] is not None:
        took += f"; load average {la['start']:.2f} at start, {la['end']:.2f} at end"
    lines.append(took)
    cpus = m.get("usable_cpus") or m.get("logical_cpus") or 1
    busiest = max((x for x in (la["start"], la["end"]) if x is not None), default=None)
    if busiest is not None and busiest > 0.5 * cpus:
        lines.append(f"warning: the machine was busy (load average up to {busiest:.1f} on "
                     f"{cpus} CPUs): timings are noisy; re-run on a quiet machine")
    for name, why in doc["skipped"].items():
        lines.append(f"not measured: {name}: {why}")
    return "\n".join(lines)


def _summary(doc):
    """Per implementation and size: geometric-mean speedup and median % of
    limit over the optimizers."""
    agg = {}
    for r in doc["results"]:
        if r["impl"] in (BASELINE, LIMIT) or r["speedup_vs_numpy"] is None:
            continue
        a = agg.setdefault(r["impl"], {}).setdefault(r["size"], ([], []))
        a[0].append(r["speedup_vs_numpy"])
        if r["percent_of_limit"] is not None:
            a[1].append(r["percent_of_limit"])
    out = []
    for impl, by_size in agg.items():
        parts = []
        for size, (sp, pct) in by_size.items():
            g = math.exp(sum(math.log(x) for x in sp) / len(sp))
            part = f"{size} {g:.2f}x"
            if pct:
                part += f" ({statistics.median(pct):.0f}% of limit)"
            parts.append(part)
        out.append(f"{impl}: speedup vs numpy (geometric mean over optimizers): "
                   + ", ".join(parts))
    return out


def plot(doc, path):
    """Two panels: speedup vs numpy (log scale) and % of the copy limit,
    one group of bars per case."""
    import matplotlib.pyplot as plt

    results = [r for r in doc["results"] if r["median_s"] is not None]
    keys = unique((r["case"], r["threads"]) for r in results)
    multi = len(set(doc["settings"]["threads"])) > 1
    labels = [f"{c} ({t} thr)" if multi else c for c, t in keys]
    impls = [i for i in doc["settings"]["implementations"] if i != LIMIT]
    colors = {"cython": "tab:blue", "numba": "tab:orange", "numpy": "tab:gray",
              "torch": "tab:red"}
    val = {(r["case"], r["threads"], r["impl"]): r for r in results}
    height = 0.8 / max(1, len(impls))
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 + 0.45 * len(keys) * max(1, len(impls)) / 2),
                             sharey=True)
    panels = ((axes[0], "speedup_vs_numpy", [i for i in impls if i != BASELINE],
               "speedup vs plain NumPy (x, log scale)", 1.0),
              (axes[1], "percent_of_limit", impls, "% of the copy limit (memory bandwidth)", 100.0))
    for ax, field, shown, title, ref in panels:
        for j, impl in enumerate(shown):
            ys, xs = [], []
            for y, (c, t) in enumerate(keys):
                r = val.get((c, t, impl))
                if r is not None and r[field] is not None:
                    ys.append(y + (j - (len(shown) - 1) / 2) * height)
                    xs.append(r[field])
            ax.barh(ys, xs, height=height, color=colors.get(impl), label=impl)
            fmt = "{:.2g}x" if field == "speedup_vs_numpy" else "{:.0f}%"
            for y, x in zip(ys, xs):
                ax.annotate(fmt.format(x), (x, y), xytext=(2, 0), textcoords="offset points",
                            va="center", fontsize=6)
        ax.axvline(ref, color="black", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if shown:
            ax.legend(loc="lower right", fontsize=8)
    if any(r["speedup_vs_numpy"] for r in results if r["impl"] not in (BASELINE, LIMIT)):
        axes[0].set_xscale("log")
    axes[0].set_yticks(range(len(keys)))
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    m = doc["machine"]
    fig.suptitle(f"fusedoptim {m['fusedoptim']} bench: {m['cpu']}, threads "
                 f"{','.join(map(str, doc['settings']['threads']))}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# command

def command(args):
    import fusedoptim

    started = time.perf_counter()
    if args.plot:
        require_matplotlib()
        check_writable(args.plot, "--plot")
    if args.json:
        check_writable(args.json, "--json")
    warmup, repeat = QUICK if args.quick else FULL
    slow_repeat = QUICK_SLOW_REPEAT if args.quick and not args.repeat else None
    if args.warmup:
        warmup = args.warmup
    if args.repeat:
        repeat = args.repeat
    progress = Progress(enabled=not args.quiet)
    backends = unique(args.backend or COMPARED)
    if args.quick and not args.backend and _compiled_available():
        # numba is the fallback for installs without the compiled extension;
        # its JIT warm-up alone (~15 s of CPU) would eat half the budget.
        backends = [b for b in backends if b != "numba"]
        progress.line("note: --quick leaves out the numba fallback backend (its JIT "
                      "warm-up takes ~15 s); ask for it with --backend", always=True)
    doc = run(optimizers=unique(args.optimizer or B.OPTIMIZERS),
              sizes=unique(args.size or B.SIZES),
              dtypes=unique(args.dtype or ["float32"]),
              threads=unique(args.threads or [fusedoptim.get_num_threads()]),
              backends=backends,
              explicit=bool(args.backend), warmup=warmup, repeat=repeat, progress=progress,
              slow_repeat=slow_repeat, started=started)
    doc["settings"]["quick"] = bool(args.quick)
    doc["command"] = ["fusedoptim"] + list(args.argv)
    print(format_table(doc), flush=True)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
        except OSError as exc:
            raise CLIError(f"--json {args.json}: cannot write ({exc.strerror or exc})") from None
        progress.line(f"wrote {args.json}", always=True)
    if args.plot:
        plot(doc, args.plot)
        progress.line(f"wrote {args.plot}", always=True)
    return 1 if doc["failures"] else 0
