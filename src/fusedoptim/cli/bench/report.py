"""The ``bench`` table: the human-readable report of a run's document."""

import math
import statistics

from .peers import PEERS
from .workloads import BASELINE, LIMIT, PER_TENSOR_SIZES

__all__ = ["format_time", "format_table", "format_markdown", "threads_text", "busy",
           "BUSY_LOAD_PER_CPU"]

#: A run is marked busy when the load average at its start or end is above
#: this many runnable processes per usable CPU: other work then competes
#: for the cores and the memory bus, and the timings are noisy.
BUSY_LOAD_PER_CPU = 0.5

HEAD = ("optimizer", "size", "dtype", "thr", "impl", "time/step", "spread", "vs numpy",
        "vs torch", "GB/s", "% of limit")
#: Peers with a column of their own after "vs torch" when a run measured
#: them (``bench --backend ...,deepspeed``).
OPTIONAL_PEERS = tuple(PEERS)
#: The packages whose versions the report names, where the machine record has them.
VERSIONS = ("numpy", "numba", "torch") + OPTIONAL_PEERS
#: Left-aligned columns of ``HEAD``.
_LEFT = {0, 1, 2, 4}


def format_time(s):
    """``s`` seconds as us, ms or s."""
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


def busy(doc: dict) -> tuple[float, int] | None:
    """``(load average, usable CPUs)`` when the run was on a busy machine
    (the load average at its start or end above ``BUSY_LOAD_PER_CPU`` per
    CPU), else ``None``."""
    m = doc["machine"]
    la = doc["load_average"]
    cpus = m.get("usable_cpus") or m.get("logical_cpus") or 1
    busiest = max((x for x in (la["start"], la["end"]) if x is not None), default=None)
    if busiest is not None and busiest > BUSY_LOAD_PER_CPU * cpus:
        return busiest, cpus
    return None


def _date(doc: dict) -> str:
    """The run's UTC date and time, ``2026-11-30 14:02 UTC``."""
    return doc.get("created_utc", "")[:16].replace("T", " ") + " UTC"


def _header(doc):
    m = doc["machine"]
    s = doc["settings"]
    cores = f"{m['physical_cores']} cores" if m["physical_cores"] else f"{m['logical_cpus']} CPUs"
    versions = ", ".join(f"{k} {m[k]}" for k in VERSIONS if m.get(k))
    if m.get("kernel_isa"):
        cores += f" (cython loops: {m['kernel_isa']})"
    batches = f"{s['timed_batches']} interleaved rounds"
    if s.get("timed_batches_slow") and s["timed_batches_slow"] < s["timed_batches"]:
        batches += (f" (about {s['timed_batches_slow']} for steps over "
                    f"{1e3 * s['slow_call_s']:.0f} ms)")
    return [
        f"fusedoptim {m['fusedoptim']} bench, {_date(doc)}: {m['cpu']}, {cores}, "
        f"{threads_text(m['threads'])}; {versions}; {m['os']}",
        f"median of {batches} after {s['warmup_calls']} warm-up call(s); ratios are medians "
        f"of per-round ratios: vs numpy = numpy time / time, vs torch = torch time / time, "
        + "".join(f"vs {p} = {p} time / time, " for p in _peers(doc["results"]))
        + "% of limit = copy time / time; GB/s = bytes the step moves / time (see --help)",
        "",
    ]


def _peers(results):
    """The optional peers measured in a run (their columns)."""
    return [p for p in OPTIONAL_PEERS if any(r["impl"] == p for r in results)]


def _head(results):
    """``HEAD`` with a "vs <peer>" column after "vs torch" per optional peer."""
    k = HEAD.index("vs torch") + 1
    return HEAD[:k] + tuple(f"vs {p}" for p in _peers(results)) + HEAD[k:]


def _x(ratio):
    return f"{ratio:.2f}x" if ratio is not None else ""


def _cells(r, peers=()):
    if r["error"]:
        return ["FAILED"] + [""] * (5 + len(peers))
    pct = r["percent_of_limit"]
    return ([format_time(r["median_s"]), _spread(r["times_s"]), _x(r["speedup_vs_numpy"]),
             _x(r.get("speedup_vs_torch"))] + [_x(r.get(f"speedup_vs_{p}")) for p in peers]
            + [_gbs(r["bandwidth_gb_s"]),
               "(limit)" if r["impl"] == LIMIT else (f"{pct:.0f}%" if pct is not None else "")])


#: How a reduced-precision state shows next to the row name (adam+bf16).
_STATE_TAG = {"bfloat16": "bf16", "int8": "int8"}


def _rows(results):
    """Table rows (``None``: a blank line between sizes); the case's cells
    appear on its first implementation only."""
    peers = _peers(results)
    rows, prev, prev_size = [], None, None
    for r in results:
        key = (r["case"], r["threads"])
        first = key != prev
        if first and prev is not None and r["size"] != prev_size:
            rows.append(None)
        prev, prev_size = key, r["size"]
        state = r.get("state", "float32")
        row = r["optimizer"] + ("" if state == "float32" else f"+{_STATE_TAG.get(state, state)}")
        case_cells = ([row, r["size"], r["dtype"], str(r["threads"])] if first
                      else ["", "", "", ""])
        rows.append(tuple(case_cells + [r["impl"]] + _cells(r, peers)))
    return rows


def _grid(rows, head=HEAD):
    body = [row for row in rows if row is not None]
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h)
              for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i in _LEFT else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths])] + [
        "" if row is None else fmt(row) for row in rows]


def _footer(doc):
    m = doc["machine"]
    took = f"took {doc['elapsed_s']:.1f} s"
    extra = []
    if doc.get("numba_jit_s") is not None:
        extra.append(f"numba import and JIT warm-up "
                     f"{doc['load_s'].get('numba', 0.0) + doc['numba_jit_s']:.1f} s")
    if doc["load_s"].get("torch") is not None:
        extra.append(f"torch import and first steps {doc['load_s']['torch']:.1f} s")
    for peer in OPTIONAL_PEERS:
        if doc["load_s"].get(peer) is not None:
            extra.append(f"{peer} import {doc['load_s'][peer]:.1f} s")
    if extra:
        took += f" (of which {', '.join(extra)})"
    la = doc["load_average"]
    if la["start"] is not None:
        took += f"; load average {la['start']:.2f} at start, {la['end']:.2f} at end"
    lines = [took]
    b = busy(doc)
    if b is not None:
        lines.append(f"warning: the machine was busy (load average up to {b[0]:.1f} on "
                     f"{b[1]} CPUs): timings are noisy; re-run on a quiet machine")
    for name, why in doc["skipped"].items():
        lines.append(f"not measured: {name}: {why}")
    return lines


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
            if pct:  # a median, not a mean: the label says so
                part += f" (median {statistics.median(pct):.0f}% of limit)"
            parts.append(part)
        out.append(f"{impl}: speedup vs numpy (geometric mean over optimizers): "
                   + ", ".join(parts))
    return out


def _ns(x):
    return f"{x:.0f} ns" if abs(x) >= 10 else f"{x:.1f} ns"


def _per_tensor(doc):
    """One line per case of the sizes that measure per-tensor overhead
    (``PER_TENSOR_SIZES``): time / tensors of each implementation, and how
    much of it is above the copy limit."""
    groups = {}
    for r in doc["results"]:
        if r["size"] in PER_TENSOR_SIZES and r.get("per_tensor_ns") is not None:
            groups.setdefault((r["case"], r["threads"]), []).append(r)
    out = []
    for (_, threads), recs in groups.items():
        r0 = recs[0]
        parts = []
        for r in recs:
            part = f"{r['impl']} {_ns(r['per_tensor_ns'])}"
            above = r.get("per_tensor_above_limit_ns")
            if above is not None:
                part += f" ({_ns(abs(above))} {'above' if above >= 0 else 'below'} copy)"
            parts.append(part)
        out.append(f"per tensor, {r0['optimizer']} {r0['size']} {r0['dtype']} {threads} thr "
                   f"(time / {r0['tensors']} tensors): " + ", ".join(parts))
    return out


def format_table(doc):
    """The human-readable report of a run (the stdout of ``bench``)."""
    return "\n".join(_header(doc) + _grid(_rows(doc["results"]), _head(doc["results"])) + [""]
                     + _summary(doc)
                     + _per_tensor(doc) + _footer(doc))


def format_markdown(doc: dict) -> str:
    """The report as Markdown (``bench --markdown``): the machine, the date
    and the load average above a table of every measurement, then the
    summary lines."""
    m = doc["machine"]
    la = doc["load_average"]
    cores = f"{m['physical_cores']} cores" if m["physical_cores"] else f"{m['logical_cpus']} CPUs"
    versions = ", ".join(f"{k} {m[k]}" for k in VERSIONS if m.get(k))
    load = ("load average not available" if la["start"] is None else
            f"load average {la['start']:.2f} at start, {la['end']:.2f} at end")
    b = busy(doc)
    lines = [f"Measured on {_date(doc)} with `{' '.join(doc.get('command', ['fusedoptim', 'bench']))}`: "
             f"{m['cpu']}, {cores} (cython loops: {m.get('kernel_isa') or 'not built'}), "
             f"{threads_text(m['threads'])}; fusedoptim {m['fusedoptim']}, {versions}; "
             f"{m['os']}; {load}.",
             ""]
    if b is not None:
        lines += [f"**Busy machine** (load average up to {b[0]:.1f} on {b[1]} CPUs): the "
                  f"timings are noisy.", ""]
    head = list(_head(doc["results"]))
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" if i in _LEFT else "---:" for i in range(len(head))) + "|")
    for row in _rows(doc["results"]):
        if row is not None:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines.append("")
    lines += [f"- {line}" for line in _summary(doc) + _per_tensor(doc)]
    return "\n".join(lines)
