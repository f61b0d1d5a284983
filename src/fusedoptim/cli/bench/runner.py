"""Running a benchmark: which implementations load, warm-ups, the timings of
every case side by side, and the derived columns.

Every case is built and timed through :mod:`.workloads` (``Case``,
``make_step``, ``measure``), which the pytest-benchmark suite uses too, so
the two never disagree about what they measure.  For each case this module
times every implementation side by side, then derives

- speedup      = median time of ``numpy`` / median time,
- bandwidth    = ``case.bytes_moved`` / median time,
- % of limit   = median time of ``copy`` / median time * 100,

where ``copy`` is a kernel that reads and writes exactly the arrays of the
step and computes nothing: the machine's practical limit for this traffic.
The result is one JSON-ready document (:data:`SCHEMA`).
"""

import datetime
import statistics
import time

from .. import CLIError
from . import workloads as W
from .machine import loadavg, machine_info
from .report import format_time
from .workloads import BASELINE, LIMIT

#: Implementations compared against the baseline, in table order.
COMPARED = ("cython", "numba", "numpy", "torch")

#: With ``slow_repeat``: a step whose first call takes longer than this gets
#: only that many timed batches of one call each (big steps are stable;
#: their calls are what eats a quick run's time).
QUICK_SLOW_CALL = 0.02

#: Without ``slow_repeat``: the seconds a slow step's warm-up and timed
#: batches should take at most (``budget`` of ``run``), and the fewest timed
#: batches it gets whatever the budget.
SLOW_BUDGET_S = 10.0
SLOW_MIN_REPEAT = 5

SCHEMA = "fusedoptim-bench/2"


def _resolve(requested, explicit, optimizers, progress):
    """The implementations to time, in table order, with their load times.

    A backend that cannot load is an error when asked for by name and a
    note otherwise."""
    from ...backend import BackendUnavailable, _load

    impls, load_s, skipped = [], {}, {}
    for name in COMPARED:
        if name not in requested and name != BASELINE:
            continue
        progress.status(f"[{progress.elapsed():5.1f} s] loading {name} ...")
        t0 = time.perf_counter()
        try:
            if name == "torch":
                _torch_warmup(optimizers)
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
        W.yardstick()
    except ImportError as exc:
        skipped[LIMIT] = (f"the copy yardstick needs the compiled extension "
                          f"fusedoptim._ext ({exc})")
        progress.line(f"note: no '% of limit': {skipped[LIMIT]}", always=True)
    else:
        impls.insert(0, LIMIT)
    return impls, load_s, skipped


def compiled_available():
    """Whether the compiled (``cython``) backend loads here."""
    from ...backend import BackendUnavailable, _load

    try:
        _load("cython")
    except BackendUnavailable:
        return False
    return True


def _torch_warmup(optimizers):
    """Import torch and build and run one step of each row once: the first
    ``torch.optim`` step imports a good deal more of torch, which belongs to
    set-up, not to the first timed case."""
    import torch  # noqa: F401

    for opt in optimizers:
        case = W.Case(opt, "course", "float32")
        if case.unmeasurable("torch") is None:
            W.make_step(case, "torch", threads=1)()


def _jit_warmup(optimizers, sizes, dtypes, progress):
    """Compile numba's kernels before any timing: one step of each row and
    dtype of the run, on the smallest selected size below the parallel
    threshold and on the smallest one above it (Numba compiles a serial and
    a parallel variant).  Returns the seconds spent (wall, CPU)."""
    from ..._tuning import PARALLEL_MIN_ELEMENTS
    from ...backend import use_backend

    by_regime = {}
    for size in sorted(sizes, key=W.size_elements):
        by_regime.setdefault(W.size_elements(size) >= PARALLEL_MIN_ELEMENTS, size)
    t0, c0 = time.perf_counter(), time.process_time()
    for size in by_regime.values():
        for dtype in dtypes:
            for opt in optimizers:
                progress.status(f"[{progress.elapsed():5.1f} s] numba JIT warm-up: "
                                f"{opt} {size} {dtype}")
                fn = W.make_step(W.Case(opt, size, dtype), "numba")
                with use_backend("numba"):
                    fn()
                del fn
    return time.perf_counter() - t0, time.process_time() - c0


def _time_one(case, impl, threads, warmup, repeat, slow_repeat=None, budget=None):
    """``(first_call_s, warm-up calls, [seconds per call, one per timed
    batch])``.

    A step whose first call exceeds ``QUICK_SLOW_CALL`` runs once per batch
    and gets fewer batches: ``slow_repeat`` of them when given (``--quick``),
    else, with ``budget`` (seconds), as many as fit in it with its warm-up
    (at least ``SLOW_MIN_REPEAT``, at most ``repeat``): a plain-NumPy step
    on GPT-2's shapes takes seconds, a fused one a fraction of a second.
    """
    from contextlib import nullcontext

    from ...backend import use_backend

    fn = W.make_step(case, impl, threads=threads)
    ctx = use_backend(impl) if impl in W.BACKENDS else nullcontext()
    with ctx:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    number = None
    if first > QUICK_SLOW_CALL:
        if slow_repeat is not None:
            repeat, number = min(repeat, slow_repeat), 1
        elif budget is not None and first * (warmup + repeat) > budget:
            # Its first call took the page faults: one more warm-up call is enough.
            warmup = min(warmup, 2)
            fit = int(budget / first) - warmup
            repeat, number = max(SLOW_MIN_REPEAT, min(repeat, fit)), 1
    times = W.measure(fn, impl, warmup=warmup - 1, repeat=repeat, number=number)
    return first, warmup, times


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
            # The cost per tensor: the whole step's, and what it costs
            # above moving its bytes (the copy kernel moves them in one go).
            r["per_tensor_ns"] = 1e9 * med / r["tensors"] if ok else None
            r["per_tensor_above_limit_ns"] = (
                1e9 * (med - limit["median_s"]) / r["tensors"]
                if ok and limit and limit["median_s"] and r["impl"] != LIMIT else None)


def _case_impls(case, impls, skipped):
    """The implementations that have a step for ``case``; the others are
    noted once per row in ``skipped``."""
    out = []
    for impl in impls:
        why = case.unmeasurable(impl)
        if why is None:
            out.append(impl)
        else:
            skipped.setdefault(f"{impl} for {case.optimizer}", why)
    return out


def _record(case, n, impl, warmup):
    return {"case": case.name, "optimizer": case.optimizer, "class": case.cls.__name__,
            "size": case.size, "dtype": case.dtype, "state": case.state,
            "tensors": len(case.shapes),
            "elements": case.elements, "arrays_moved": case.arrays_moved,
            "bytes_moved": case.bytes_moved, "threads": n, "impl": impl,
            "warmup_calls": warmup, "first_call_s": None, "times_s": [], "median_s": None,
            "error": None}


def _measure_all(cases, threads, impls, timing, progress, skipped):
    """Time every (case, thread count, implementation); returns the records
    and the number of failed measurements (reported, the run goes on)."""
    import fusedoptim

    warmup, repeat, slow_repeat, budget = timing
    plan = [(case, n, impl) for case in cases for n in threads
            for impl in _case_impls(case, impls, skipped)]
    records, failures = [], 0
    before = fusedoptim.get_num_threads()
    try:
        for k, (case, n, impl) in enumerate(plan, 1):
            fusedoptim.set_num_threads(n)
            label = f"{case.name} {n} thr {impl}"
            progress.status(f"[{k}/{len(plan)} {progress.elapsed():5.1f} s] {label} ...")
            rec = _record(case, n, impl, warmup)
            try:
                first, rec["warmup_calls"], times = _time_one(case, impl, n, warmup, repeat,
                                                              slow_repeat, budget)
            except Exception as exc:  # reported in the table, the run goes on
                failures += 1
                rec["error"] = f"{type(exc).__name__}: {exc}"
                progress.line(f"{label}: FAILED ({rec['error']})", always=True)
            else:
                rec.update(first_call_s=first, times_s=times, median_s=statistics.median(times))
                msg = (f"[{k}/{len(plan)} {progress.elapsed():5.1f} s] {label}: "
                       f"{format_time(rec['median_s'])}")
                if progress.tty:
                    progress.status(msg)
                else:
                    progress.line(msg)
            records.append(rec)
    finally:
        fusedoptim.set_num_threads(before)
        progress.clear()
    return records, failures


def run(optimizers, sizes, dtypes, threads, backends, explicit, warmup, repeat, progress,
        slow_repeat=None, started=None, budget=None, states=("float32",)):
    """Run the benchmark; returns the JSON document (see ``SCHEMA``).

    ``started`` (a ``time.perf_counter()`` value) is when the command
    started, for ``elapsed_s``; ``slow_repeat`` and ``budget``: the timed
    batches of slow steps (``_time_one``)."""
    started = time.perf_counter() if started is None else started
    load0 = loadavg()
    impls, load_s, skipped = _resolve(backends, explicit, optimizers, progress)
    jit_s = jit_cpu_s = None
    if "numba" in impls:
        jit_s, jit_cpu_s = _jit_warmup(optimizers, sizes, dtypes, progress)
        progress.line(f"numba JIT warm-up: {jit_s:.1f} s ({jit_cpu_s:.1f} s of CPU)")
    records, failures = _measure_all(W.cases(optimizers, sizes, dtypes, states), threads, impls,
                                     (warmup, repeat, slow_repeat, budget), progress, skipped)
    _derive(records)
    rows = {o: {"class": W.ROWS[o].__name__, "family": W.ROWS[o].family.name,
                "hyperparameters": W.hyperparameters(W.ROWS[o])} for o in optimizers}
    return {
        "schema": SCHEMA,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"optimizers": optimizers, "rows": rows, "sizes": sizes, "dtypes": dtypes,
                     "states": list(states),
                     "threads": threads, "implementations": impls, "baseline": BASELINE,
                     "limit": LIMIT if LIMIT in impls else None,
                     "warmup_calls": warmup, "timed_batches": repeat,
                     "timed_batches_slow": slow_repeat, "slow_call_s": QUICK_SLOW_CALL
                     if slow_repeat is not None or budget is not None else None,
                     "slow_budget_s": budget if slow_repeat is None else None,
                     "batch": "each timed batch repeats the step to last about 2 ms; "
                              "times_s are seconds per step, one per batch"},
        "machine": machine_info(threads),
        "skipped": skipped,
        "load_s": load_s,
        "numba_jit_s": jit_s,
        "numba_jit_cpu_s": jit_cpu_s,
        "load_average": {"start": load0, "end": loadavg()},
        "elapsed_s": time.perf_counter() - started,
        "process_cpu_s": time.process_time(),
        "failures": failures,
        "results": records,
    }
