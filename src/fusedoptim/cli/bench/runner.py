"""Running a benchmark: which implementations load, warm-ups, the timings of
every case interleaved, and the derived columns.

Every case is built and timed through :mod:`.workloads` (``Case``,
``make_step``, ``interleave``), which the scripts in ``benchmarks/`` use
too, so they never disagree about what they measure.

The implementations of a case are timed interleaved: each is built (all
their arrays live at once, and are freed before the next case), its first
call timed, warmed up and its batch sized; then each of ``repeat`` rounds
runs one timed batch of every implementation in turn (copy, cython, numba,
numpy, torch).  The memory bandwidth of a shared VM swings by 10-40% from
minute to minute; timed one after another, the implementations would be
compared at different moments.  Interleaved, every ratio is the median
of per-round ratios, which such a swing cancels out of:

- speedup vs numpy = numpy time / time, vs torch = torch time / time,
- % of limit       = copy time / time * 100,

each taken round by round and the median quoted; bandwidth = bytes moved /
median time.  ``copy`` is a kernel that reads and writes exactly the arrays
of the step and computes nothing: the machine's practical limit for this
traffic.  For a reduced ``--state`` it is the float32-state step's copy
(``W.STATES``), and its record counts the bytes it moves (``_bytes_moved``).

A step slower than ``QUICK_SLOW_CALL`` (a plain-NumPy step on GPT-2 takes
seconds) runs once per batch and joins every k-th round only, so that the
run stays within its budget (``_schedule``); its ratios are taken over the
rounds it joined, each still paired with the other implementations' batches
of that round.  The result is one JSON-ready document (:data:`SCHEMA`).
"""

import dataclasses
import datetime
import gc
import statistics
import time

from .. import CLIError
from . import peers
from . import workloads as W
from .machine import loadavg, machine_info
from .report import format_time
from .workloads import BASELINE, LIMIT

#: Implementations compared against the baseline, in table order.
COMPARED = ("cython", "numba", "numpy", "torch") + tuple(peers.PEERS)
#: Measured only when asked for with ``--backend``: DeepSpeed's first use
#: compiles its kernel (about a minute), torchao's first step compiles
#: (tens of seconds), and their imports take seconds.
OPT_IN = tuple(peers.PEERS)
#: Peers whose time every other implementation of a case is compared with
#: (``speedup_vs_<peer>`` = the peer's time / this time), in column order.
PEERS = ("torch",) + tuple(peers.PEERS)

#: A step whose first call takes longer than this runs once per batch and,
#: with ``slow_repeat`` (``--quick``) or past the budget, joins every k-th
#: round only (big steps are stable; their calls are what eats a run's time).
QUICK_SLOW_CALL = 0.02

#: Without ``slow_repeat``: the seconds a slow step's warm-up and timed
#: batches should take at most (``budget`` of ``run``), and the fewest timed
#: batches it gets whatever the budget.
SLOW_BUDGET_S = 10.0
SLOW_MIN_REPEAT = 5

#: 3: interleaved rounds; per record ``rounds``, ``every``,
#: ``calls_per_batch``, ``speedup_vs_torch``, ``round_ratios`` and
#: ``of_medians``; the ratios are medians of per-round ratios.
SCHEMA = "fusedoptim-bench/3"


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
            elif name in peers.PEERS:
                peers.load(name)
            else:
                _load(name)
        except Exception as exc:  # BackendUnavailable is an ImportError
            if isinstance(exc, BackendUnavailable):
                why = str(exc)
            elif isinstance(exc, ImportError):
                why = f"{name} is not installed ({exc})"
            elif name in peers.PEERS:
                why = str(exc)
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


def _schedule(first, warmup, repeat, slow_repeat=None, budget=None):
    """``(warm-up calls, calls per batch or None, every, rewarm)`` of a step
    whose call takes ``first`` seconds: it joins rounds 0, every, 2*every,
    ..., each batch after ``rewarm`` untimed calls (``W.interleave``).

    A step slower than ``QUICK_SLOW_CALL`` runs once per batch and joins
    every k-th round only: about ``slow_repeat`` of the ``repeat`` rounds
    when given (``--quick``), else, with ``budget`` (seconds), as many as
    fit in it with its warm-up, at least ``SLOW_MIN_REPEAT``.  A
    plain-NumPy step on GPT-2's shapes takes seconds, a fused one a
    fraction of a second: the fast ones keep a batch in every round, and
    the slow one still has each of its batches paired with the copy
    yardstick's batch of the same round (joining the first rounds only
    would pair as well, but every k-th samples the whole run).  The steps
    that join fewer rounds (and every slow one under ``--quick``) get no
    untimed call before their batches: beside a call of tens of
    milliseconds or more, waking the worker threads is small, and the calls
    are what the budget counts.
    """
    if first <= QUICK_SLOW_CALL:
        return warmup, None, 1, 1
    if slow_repeat is not None:
        return warmup, 1, -(-repeat // min(repeat, slow_repeat)), 0
    if budget is not None and first * (warmup + 2 * repeat) > budget:
        # Its first call took the page faults: one more warm-up call is enough.
        warmup = min(warmup, 2)
        fit = max(SLOW_MIN_REPEAT, min(repeat, int(budget / first) - warmup))
        # At most `fit` batches (ceil), at least SLOW_MIN_REPEAT (floor).
        return warmup, 1, max(1, min(-(-repeat // fit), repeat // SLOW_MIN_REPEAT)), 0
    return warmup, 1, 1, 1


def _prepare(case, impl, threads, warmup, repeat, slow_repeat=None, budget=None):
    """``(step, first_call_s, warm-up calls, calls per batch, every,
    rewarm)``: the
    step built, its first call timed on its own (it holds first-touch page
    faults or a JIT compile), the rest of its warm-up run and its batch
    sized (``_schedule``, from the time of a call after the first)."""
    fn = W.make_step(case, impl, threads=threads)
    first = W.time_batch(fn, impl, 1)
    call, done = first, 1
    if first > QUICK_SLOW_CALL:
        # The first call of a big step takes the page faults of its fresh
        # arrays (a 2^24-element Adam: ~0.3 s for ~10 ms steps): judge its
        # speed by a second call, one of its warm-up calls.
        call, done = W.time_batch(fn, impl, 1), 2
    warmup, number, every, rewarm = _schedule(call, max(warmup, done), repeat, slow_repeat,
                                              budget)
    number = W.warm_up(fn, impl, warmup - done, number)
    return fn, first, warmup, number, every, rewarm


def _ratio(times, other):
    """The median over the rounds timed in both of ``other``'s time /
    this time, and those per-round ratios; ``(None, [])`` without a
    common round."""
    ratios = W.round_ratios(other, times)
    return (statistics.median(ratios) if ratios else None), ratios


def _derive(records):
    """Fill the derived columns of one run's records.

    The ratios are medians of per-round ratios (``W.round_ratios``): in
    each round every implementation's batch is timed moments after the
    others', so a drift of the machine's bandwidth between rounds cancels
    out of it; the ratio of the medians (``of_medians``) does not and is
    kept for comparison.

    - speedup_vs_numpy = numpy time / time, speedup_vs_torch = torch time / time
      (and speedup_vs_<peer> where a peer of :mod:`.peers` ran);
    - percent_of_limit = 100 * copy time / time;
    - bandwidth = bytes moved / median time;
    - per_tensor_ns = median time / tensors, per_tensor_above_limit_ns =
      the median over rounds of (time - copy time) / tensors.
    """
    by_key = {}
    for r in records:
        by_key.setdefault((r["case"], r["threads"]), {})[r["impl"]] = r
    for group in by_key.values():
        by_round = {impl: dict(zip(r.get("rounds") or range(len(r["times_s"])), r["times_s"]))
                    for impl, r in group.items() if r["median_s"]}
        for r in group.values():
            med = r["median_s"]
            ok = med is not None and med > 0
            mine = by_round.get(r["impl"], {})
            r["bandwidth_gb_s"] = r["bytes_moved"] / med / 1e9 if ok else None
            r["per_tensor_ns"] = 1e9 * med / r["tensors"] if ok else None
            r["round_ratios"], r["of_medians"] = {}, {}
            compared = [("speedup_vs_numpy", BASELINE, 1.0)]
            compared += [(f"speedup_vs_{peer}", peer, 1.0) for peer in PEERS
                         if peer == "torch" or peer in group]
            for field, other, scale in compared + [("percent_of_limit", LIMIT, 100.0)]:
                o = group.get(other)
                if not ok or o is None or not o["median_s"] or (
                        r["impl"] == LIMIT and other != LIMIT):
                    r[field] = r["of_medians"][field] = None
                    continue
                ratio, ratios = _ratio(mine, by_round[other])
                r[field] = None if ratio is None else scale * ratio
                r["round_ratios"][other] = ratios
                r["of_medians"][field] = scale * o["median_s"] / med
            # What each tensor costs above moving its bytes (the copy
            # kernel moves them in one go), per round.
            diffs = ([1e9 * (mine[k] - by_round[LIMIT][k]) / r["tensors"]
                      for k in sorted(mine.keys() & by_round[LIMIT].keys())]
                     if ok and LIMIT in by_round and r["impl"] != LIMIT else [])
            r["per_tensor_above_limit_ns"] = statistics.median(diffs) if diffs else None


def _case_impls(case, impls, skipped):
    """The implementations that have a step for ``case``; the others are
    noted in ``skipped``, once per row and reason."""
    out = []
    for impl in impls:
        why = case.unmeasurable(impl)
        if why is None:
            out.append(impl)
            continue
        # The reason may name the state (torch has no bfloat16 state, a peer
        # keeps int8): a key per reduced state, so that an int8 case does not
        # get the bfloat16 case's reason; a reason the row already has (Lion
        # is no Adam, whatever its state) is not repeated.
        row = f"{impl} for {case.optimizer}"
        if why not in (v for k, v in skipped.items() if k.split(" --state ")[0] == row):
            skipped.setdefault(row if case.state == "float32" else f"{row} --state {case.state}",
                               why)
    return out


def _bytes_moved(case, impl):
    """The bytes one call of ``impl``'s step moves: the case's, but for the
    copy of a reduced-state case.  That copy is the float32-state step's
    (``W.STATES``): it moves float32 states, so its GB/s must count them."""
    if impl == LIMIT and case.state != "float32":
        return dataclasses.replace(case, state="float32").bytes_moved
    return case.bytes_moved


def _record(case, n, impl, warmup):
    return {"case": case.name, "optimizer": case.optimizer, "class": case.cls.__name__,
            "size": case.size, "dtype": case.dtype, "state": case.state,
            "tensors": len(case.shapes),
            "elements": case.elements, "arrays_moved": case.arrays_moved,
            "bytes_moved": _bytes_moved(case, impl), "threads": n, "impl": impl,
            "warmup_calls": warmup, "first_call_s": None, "calls_per_batch": None,
            "every": None, "rounds": [], "times_s": [], "median_s": None, "error": None}


def _failed(rec, exc, label, progress):
    rec["error"] = f"{type(exc).__name__}: {exc}"
    progress.line(f"{label}: FAILED ({rec['error']})", always=True)


def _measure_case(case, n, impls, timing, progress, where):
    """The records of one (case, thread count), its implementations timed
    interleaved (``W.interleave``); all their arrays live at once and are
    freed on return.  Returns ``(records, failures)``."""
    warmup, repeat, slow_repeat, budget = timing
    recs = {impl: _record(case, n, impl, warmup) for impl in impls}
    steps, number, every, rewarm, failures = {}, {}, {}, {}, 0
    try:
        for impl in impls:
            progress.status(f"[{where} {progress.elapsed():5.1f} s] {case.name} {n} thr: "
                            f"warming up {impl} ...")
            rec = recs[impl]
            try:
                fn, first, warm, number[impl], every[impl], rewarm[impl] = _prepare(
                    case, impl, n, warmup, repeat, slow_repeat, budget)
            except Exception as exc:  # reported in the table, the run goes on
                failures += 1
                _failed(rec, exc, f"{case.name} {n} thr {impl}", progress)
                continue
            steps[impl] = fn
            rec.update(first_call_s=first, warmup_calls=warm, calls_per_batch=number[impl],
                       every=every[impl])
        errors = {}
        times = W.interleave(
            steps, repeat, warmup=0, number=number, every=every, errors=errors, rewarm=rewarm,
            on_round=lambda r: progress.status(
                f"[{where} {progress.elapsed():5.1f} s] {case.name} {n} thr: "
                f"round {r + 1}/{repeat} ..."))
    finally:
        # GPT-2 holds ~2 GB of arrays per implementation: free them before
        # the next case builds its own.
        steps.clear()
        gc.collect()
    for impl, err in errors.items():
        failures += 1
        _failed(recs[impl], err, f"{case.name} {n} thr {impl}", progress)
    for impl, by_round in times.items():
        rec = recs[impl]
        if rec["error"] is None and by_round:
            rec.update(rounds=sorted(by_round), times_s=[by_round[r] for r in sorted(by_round)])
            rec["median_s"] = statistics.median(rec["times_s"])
            msg = (f"[{where} {progress.elapsed():5.1f} s] {case.name} {n} thr {impl}: "
                   f"{format_time(rec['median_s'])}")
            if progress.tty:
                progress.status(msg)
            else:
                progress.line(msg)
    return list(recs.values()), failures


def _measure_all(cases, threads, impls, timing, progress, skipped):
    """Time every (case, thread count), its implementations interleaved;
    returns the records and the number of failed measurements (reported,
    the run goes on)."""
    import fusedoptim

    plan = [(case, n) for case in cases for n in threads]
    records, failures = [], 0
    before = fusedoptim.get_num_threads()
    try:
        for k, (case, n) in enumerate(plan, 1):
            fusedoptim.set_num_threads(n)
            recs, failed = _measure_case(case, n, _case_impls(case, impls, skipped), timing,
                                         progress, f"{k}/{len(plan)}")
            records += recs
            failures += failed
    finally:
        fusedoptim.set_num_threads(before)
        progress.clear()
    return records, failures


def _nothing_to_measure(optimizers, dtypes, states):
    """Why no case is left (``W.cases``): only a reduced ``--state`` leaves
    cases out."""
    asked = ",".join(s for s in states if s != "float32")
    if not set(optimizers) & set(W.STATE_ROWS):
        why = (f"only the {', '.join(W.STATE_ROWS)} rows take it, not --optimizer "
               f"{','.join(optimizers)}")
    else:
        why = f"it needs float32 parameters, not --dtype {','.join(dtypes)}"
    return f"--state {asked}: nothing to measure: {why}"


def run(optimizers, sizes, dtypes, threads, backends, explicit, warmup, repeat, progress,
        slow_repeat=None, started=None, budget=None, states=("float32",)):
    """Run the benchmark; returns the JSON document (see ``SCHEMA``).

    ``repeat`` is the number of rounds; ``started`` (a
    ``time.perf_counter()`` value) is when the command started, for
    ``elapsed_s``; ``slow_repeat`` and ``budget``: the rounds slow steps
    join (``_schedule``).  Raises :class:`CLIError`, before loading
    anything, when ``--state`` leaves no case to measure."""
    started = time.perf_counter() if started is None else started
    left_out: dict = {}
    todo = W.cases(optimizers, sizes, dtypes, states, skipped=left_out)
    if not todo:  # the options alone are at fault: say so before loading anything
        raise CLIError(_nothing_to_measure(optimizers, dtypes, states))
    load0 = loadavg()
    impls, load_s, skipped = _resolve(backends, explicit, optimizers, progress)
    skipped.update(left_out)
    jit_s = jit_cpu_s = None
    if "numba" in impls:
        jit_s, jit_cpu_s = _jit_warmup(optimizers, sizes, dtypes, progress)
        progress.line(f"numba JIT warm-up: {jit_s:.1f} s ({jit_cpu_s:.1f} s of CPU)")
    records, failures = _measure_all(todo, threads, impls,
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
                     "warmup_calls": warmup, "timed_batches": repeat, "rounds": repeat,
                     "timed_batches_slow": slow_repeat, "slow_call_s": QUICK_SLOW_CALL
                     if slow_repeat is not None or budget is not None else None,
                     "slow_budget_s": budget if slow_repeat is None else None,
                     "batch": "each timed batch repeats the step to last about 2 ms; "
                              "times_s are seconds per step, one per batch",
                     "interleaved": "each round times one batch of every implementation of "
                                    "a case in turn; an implementation with every = k joins "
                                    "rounds 0, k, 2k, ... (rounds: the round of each batch); "
                                    "the ratios are medians of per-round ratios"},
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
