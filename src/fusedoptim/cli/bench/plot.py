"""The ``bench --plot`` chart: speedup vs NumPy and % of the copy limit."""

from .. import unique
from .._output import plot_format
from .report import busy
from .workloads import BASELINE, LIMIT

__all__ = ["plot"]


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
              "torch": "tab:red", "deepspeed": "tab:purple", "bitsandbytes": "tab:brown",
              "torchao": "tab:pink"}
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
    la = doc["load_average"]
    when = doc.get("created_utc", "")[:10]
    load = "" if la["start"] is None else f", load average {la['start']:.1f} / {la['end']:.1f}"
    fig.suptitle(f"fusedoptim {m['fusedoptim']} bench, {when}: {m['cpu']}, threads "
                 f"{','.join(map(str, doc['settings']['threads']))}{load}", fontsize=11)
    b = busy(doc)
    if b is not None:
        # A busy machine's numbers are noisy: say so on the chart itself.
        fig.text(0.5, 0.005, f"BUSY MACHINE: load average up to {b[0]:.1f} on {b[1]} CPUs; "
                 f"timings are noisy", ha="center", va="bottom", color="tab:red",
                 fontsize=10, fontweight="bold")
    fig.tight_layout(rect=(0, 0.03 if b is not None else 0, 1, 1))
    fig.savefig(path, dpi=110, format=plot_format(path))
    plt.close(fig)
