"""The ``train --plot`` chart: cost curves and decision boundaries."""

import numpy as np

from .._output import plot_format
from .network import OPTIMIZERS, predict

__all__ = ["plot"]


def plot(runs, X, Y, path, title):
    """Cost curves on top, one decision boundary per run below (constant
    rate on the first row, decayed rate on the second)."""
    import matplotlib.pyplot as plt

    opts = list(dict.fromkeys(r["optimizer"] for r in runs))
    decays = list(dict.fromkeys(r["decay"] for r in runs))
    ncol = len(opts)
    fig = plt.figure(figsize=(3.2 * max(ncol, 2), 3.2 + 2.9 * len(decays)))
    gs = fig.add_gridspec(1 + len(decays), ncol, height_ratios=[1.2] + [1] * len(decays))
    ax = fig.add_subplot(gs[0, :])
    colors = dict(zip(OPTIMIZERS, ("tab:gray", "tab:blue", "tab:green", "tab:red")))
    for r in runs:
        epochs = np.arange(len(r["costs"])) * 100
        # GD and EMA momentum often coincide: draw GD wide and pale so that
        # both stay visible.
        wide = r["optimizer"] == "gd"
        ax.plot(epochs, r["costs"], color=colors[r["optimizer"]],
                ls="-" if r["decay"] == "none" else "--", label=r["label"],
                lw=4 if wide else 1.5, alpha=0.5 if wide else 1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost (mean cross-entropy)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)

    x0, x1 = X[0].min() - 1, X[0].max() + 1
    y0, y1 = X[1].min() - 1, X[1].max() + 1
    xx, yy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    grid = np.stack([xx.ravel(), yy.ravel()])
    for r in runs:
        a = fig.add_subplot(gs[1 + decays.index(r["decay"]), opts.index(r["optimizer"])])
        zz = predict(grid, r["parameters"]).reshape(xx.shape)
        a.contourf(xx, yy, zz, levels=[-0.5, 0.5, 1.5], colors=["#f4c7a1", "#a9c8e8"])
        a.scatter(X[0], X[1], c=Y[0], cmap="coolwarm_r", s=6, edgecolors="none")
        a.set_title(f"{r['label']}: {100 * r['train_acc']:.1f}%", fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100, format=plot_format(path))
    plt.close(fig)
