"""The course demo behind ``fusedoptim train``.

The 3-layer network of the course notes (2-5-2-1: ReLU, ReLU, sigmoid; He
initialization; cross-entropy cost), trained on two moons with mini-batches
of 64 reshuffled every epoch, and updated through the course-compatible
functions (:func:`fusedoptim.update_parameters_with_adam` and friends).
Forward and backward passes are plain, vectorized NumPy; examples are
columns, as in the notes.
"""

import time

import numpy as np

from . import functional as F
from .data import random_mini_batches
from .schedules import schedule_lr_decay, update_lr

__all__ = ["make_moons", "initialize_parameters", "forward_propagation", "compute_cost",
           "backward_propagation", "predict", "train"]

#: Layer widths of the course network.
LAYERS = (2, 5, 2, 1)

OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")

#: ``--decay`` name -> the course function computing the epoch's rate.
DECAYS = {"inverse-time": update_lr, "staircase": schedule_lr_decay}


def make_moons(n_samples=300, noise=0.2, seed=3):
    """Two interleaving half circles (the "two moons"), with Gaussian noise.

    The upper moon is the half circle of radius 1 centred at (0, 0), label
    0; the lower one is centred at (1, 0.5) and opens upwards, label 1.
    Points are evenly spaced in angle, shuffled, then each coordinate gets
    ``N(0, noise**2)`` noise.  NumPy only; the same ``seed`` gives the same
    data.

    Returns
    -------
    X : ndarray, shape (2, n_samples)
        One example per column.
    Y : ndarray, shape (1, n_samples)
        Labels 0.0 / 1.0.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    rng = np.random.default_rng(seed)
    n_upper = n_samples // 2
    n_lower = n_samples - n_upper
    a = np.linspace(0.0, np.pi, n_upper)
    b = np.linspace(0.0, np.pi, n_lower)
    X = np.concatenate([np.stack([np.cos(a), np.sin(a)]),
                        np.stack([1.0 - np.cos(b), 0.5 - np.sin(b)])], axis=1)
    Y = np.concatenate([np.zeros(n_upper), np.ones(n_lower)])[None, :]
    order = rng.permutation(n_samples)
    X = X[:, order] + rng.normal(scale=noise, size=X.shape)
    return X, Y[:, order]


def initialize_parameters(layers=LAYERS, seed=3):
    r"""He initialization, as in the notes:
    :math:`W^{[l]} \sim \mathcal N(0, 2 / n^{[l-1]})`, :math:`b^{[l]} = 0`.

    Draws with ``RandomState(seed).randn`` in the notes' order, so the
    weights are those of ``np.random.seed(3)`` in the notes.
    """
    rng = np.random.RandomState(seed)
    params = {}
    for l in range(1, len(layers)):
        params[f"W{l}"] = rng.randn(layers[l], layers[l - 1]) * np.sqrt(2.0 / layers[l - 1])
        params[f"b{l}"] = np.zeros((layers[l], 1))
    return params


def forward_propagation(X, params):
    r"""LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

    .. math:: A^{[3]} = \sigma(W^{[3]} g(W^{[2]} g(W^{[1]} X + b^{[1]}) + b^{[2]}) + b^{[3]}),
              \quad g(z) = \max(z, 0)

    Returns
    -------
    A3 : ndarray, shape (1, m)
        The predicted probability of label 1.
    cache : tuple
        What :func:`backward_propagation` and :func:`compute_cost` need
        (``Z3`` is last).
    """
    Z1 = params["W1"] @ X + params["b1"]
    A1 = np.maximum(Z1, 0.0)
    Z2 = params["W2"] @ A1 + params["b2"]
    A2 = np.maximum(Z2, 0.0)
    Z3 = params["W3"] @ A2 + params["b3"]
    # sigma(z) = exp(-log(1 + exp(-z))): no overflow for any z.
    A3 = np.exp(-np.logaddexp(0.0, -Z3))
    return A3, (A1, A2, A3, params["W2"], params["W3"], Z3)


def compute_cost(Z3, Y):
    r"""Summed cross-entropy of the batch (the notes' ``compute_cost``;
    divide by the number of examples for the mean), from the logits:

    .. math:: \sum_i -y_i \log \sigma(z_i) - (1 - y_i) \log(1 - \sigma(z_i))
              = \sum_i \log(1 + e^{z_i}) - y_i z_i

    which stays finite when :math:`\sigma(z)` rounds to 0 or 1.
    """
    return float((np.logaddexp(0.0, Z3) - Y * Z3).sum())


def backward_propagation(X, Y, cache):
    r"""Gradients of the batch's mean cost :math:`J = \frac1m \sum_i L_i`.

    .. math::

        dZ^{[3]} &= (A^{[3]} - Y) / m \\
        dW^{[l]} &= dZ^{[l]} A^{[l-1]T}, \quad db^{[l]} = \textstyle\sum_i dZ^{[l]}_{:,i} \\
        dZ^{[l-1]} &= W^{[l]T} dZ^{[l]} \odot [A^{[l-1]} > 0]

    Returns
    -------
    grads : dict
        ``dW1``, ``db1``, ..., ``dW3``, ``db3`` (the keys the course
        functions read).
    """
    A1, A2, A3, W2, W3, _ = cache
    m = X.shape[1]
    dZ3 = (A3 - Y) / m
    # ndarray.sum rather than np.sum: on arrays this small the function's
    # dispatch costs more than the sum.
    dW3 = dZ3 @ A2.T
    db3 = dZ3.sum(axis=1, keepdims=True)
    dZ2 = (W3.T @ dZ3) * (A2 > 0)
    dW2 = dZ2 @ A1.T
    db2 = dZ2.sum(axis=1, keepdims=True)
    dZ1 = (W2.T @ dZ2) * (A1 > 0)
    dW1 = dZ1 @ X.T
    db1 = dZ1.sum(axis=1, keepdims=True)
    return {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2, "dW3": dW3, "db3": db3}


def predict(X, params):
    """Labels 0/1: probability above 1/2."""
    A3, _ = forward_propagation(X, params)
    return (A3 > 0.5).astype(float)


def _updater(optimizer, params, beta, beta1, beta2, epsilon):
    """A function ``(grads, lr)`` doing one step of ``optimizer`` in place."""
    if optimizer == "gd":
        return lambda grads, lr: F.update_parameters_with_gd(params, grads, lr)
    if optimizer == "momentum":
        v = F.initialize_velocity(params)
        return lambda grads, lr: F.update_parameters_with_momentum(params, grads, v, beta, lr)
    if optimizer == "rmsprop":
        s = F.initialize_rmsprop(params)
        return lambda grads, lr: F.update_parameters_with_rmsprop(params, grads, s, beta, lr,
                                                                  epsilon)
    if optimizer == "adam":
        v, s = F.initialize_adam(params)
        t = 0

        def adam(grads, lr):
            nonlocal t
            t += 1  # Adam's step count: mini-batches, not epochs
            F.update_parameters_with_adam(params, grads, v, s, t, lr, beta1, beta2, epsilon)
        return adam
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def train(X, Y, optimizer, learning_rate=0.0007, mini_batch_size=64, beta=0.9, beta1=0.9,
          beta2=0.999, epsilon=1e-8, num_epochs=5000, decay=None, decay_rate=1.0,
          time_interval=1000, on_epoch=None, layers=LAYERS, seed=3):
    """The notes' ``model()`` loop: per epoch, new mini-batches (seed 11,
    12, ...), forward, cost, backward and one optimizer step per batch; the
    average cost per example is recorded every 100 epochs and the decayed
    rate computed after each epoch.

    Parameters
    ----------
    optimizer : {"gd", "momentum", "rmsprop", "adam"}
    decay : None, "inverse-time" or "staircase"
        :func:`fusedoptim.update_lr` (every epoch) or
        :func:`fusedoptim.schedule_lr_decay` (every ``time_interval`` epochs).
    on_epoch : callable, optional
        ``on_epoch(epoch, cost, learning_rate)`` after each epoch.

    Returns
    -------
    dict
        ``parameters``, ``costs`` (every 100 epochs), ``final_cost`` (of
        the last epoch), ``learning_rate`` (the last one), ``seconds`` (the whole loop) and
        ``update_seconds`` (the optimizer steps alone).
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    if decay is not None and decay not in DECAYS:
        raise ValueError(f"unknown decay {decay!r}; choose one of {', '.join(DECAYS)}")
    params = initialize_parameters(layers, seed)
    step = _updater(optimizer, params, beta, beta1, beta2, epsilon)
    m = X.shape[1]
    lr0 = lr = learning_rate
    costs = []
    mb_seed = 10
    in_update = 0.0
    clock = time.perf_counter
    start = clock()
    for epoch in range(num_epochs):
        # A new shuffle every epoch, seeded as the notes do.
        mb_seed += 1
        cost_total = 0.0
        for mb_X, mb_Y in random_mini_batches(X, Y, mini_batch_size, mb_seed):
            A3, cache = forward_propagation(mb_X, params)
            cost_total += compute_cost(cache[-1], mb_Y)
            grads = backward_propagation(mb_X, mb_Y, cache)
            t0 = clock()
            step(grads, lr)
            in_update += clock() - t0
        cost_avg = cost_total / m
        if decay == "inverse-time":
            lr = update_lr(lr0, epoch, decay_rate)
        elif decay == "staircase":
            lr = schedule_lr_decay(lr0, epoch, decay_rate, time_interval)
        if epoch % 100 == 0:
            costs.append(cost_avg)
        if on_epoch is not None:
            on_epoch(epoch, cost_avg, lr)
    return {"parameters": params, "costs": costs, "final_cost": cost_avg, "learning_rate": lr,
            "seconds": clock() - start, "update_seconds": in_update}


# ---------------------------------------------------------------------------
# the ``train`` command

DESCRIPTION = ("Train the course's 2-5-2-1 network on two moons with GD, Momentum, RMSProp "
               "and Adam, with and without learning-rate decay.")

EPILOG = """\
Defaults are the course's: 300 points with noise 0.2, mini-batches of 64
reshuffled every epoch, He initialization, learning rate 0.0007, beta 0.9
(Momentum and RMSProp), beta1 0.9, beta2 0.999, epsilon 1e-8, 5000 epochs.
Each optimizer runs once at a constant rate and once with --decay:
  inverse-time  lr = lr0 / (1 + decay_rate * epoch)         (fusedoptim.update_lr)
  staircase     lr = lr0 / (1 + decay_rate * floor(epoch / time_interval))
                                                            (fusedoptim.schedule_lr_decay)
'train acc' is measured on the 300 training points, 'test acc' on 1000 fresh
points from the same distribution; 'in update' is the time spent in the
optimizer steps (the rest is forward and backward passes in NumPy).
examples:
  python -m fusedoptim train
  python -m fusedoptim train --epochs 1000 --optimizer adam,gd --decay inverse-time --plot moons.png
"""


def _float_in(lo, hi=None, hi_open=True, what="value"):
    import argparse

    def parse(text):
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (x >= lo and (hi is None or (x < hi if hi_open else x <= hi))):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"{what} must be {rng}, got {text}")
        return x
    return parse


def _at_least_2(text):
    import argparse

    from ._cli import positive_int
    n = positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {n}")
    return n


def add_arguments(p):
    from ._cli import choice_list, positive_int

    p.add_argument("--optimizer", action="extend", type=choice_list(OPTIMIZERS, "optimizer"),
                   metavar="NAME[,NAME]", help="gd, momentum, rmsprop, adam (default: all)")
    p.add_argument("--decay", choices=("inverse-time", "staircase", "none"), default="staircase",
                   help="schedule of the decayed runs; 'none' skips them (default: staircase)")
    p.add_argument("--decay-rate", type=_float_in(0.0, what="decay rate"), default=1.0,
                   help="decay_rate of the schedule (default: 1, the course's)")
    p.add_argument("--time-interval", type=positive_int, default=1000, metavar="EPOCHS",
                   help="epochs per step of the staircase schedule (default: 1000)")
    p.add_argument("--epochs", type=positive_int, default=5000, help="default: 5000")
    p.add_argument("--lr", type=_float_in(0.0, what="learning rate"), default=0.0007,
                   help="initial learning rate (default: 0.0007)")
    p.add_argument("--beta", type=_float_in(0.0, 1.0, what="beta"), default=0.9,
                   help="Momentum's and RMSProp's beta (default: 0.9)")
    p.add_argument("--beta1", type=_float_in(0.0, 1.0, what="beta1"), default=0.9,
                   help="default: 0.9")
    p.add_argument("--beta2", type=_float_in(0.0, 1.0, what="beta2"), default=0.999,
                   help="default: 0.999")
    p.add_argument("--epsilon", type=_float_in(0.0, what="epsilon"), default=1e-8,
                   help="default: 1e-8")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    p.add_argument("--samples", type=_at_least_2, default=300,
                   help="training points, >= 2 (default: 300)")
    p.add_argument("--noise", type=_float_in(0.0, what="noise"), default=0.2,
                   help="standard deviation of the moons' noise (default: 0.2)")
    p.add_argument("--seed", type=int, default=3, help="seed of the data and the "
                                                       "initialization (default: 3)")
    p.add_argument("--print-every", type=positive_int, default=1000, metavar="EPOCHS",
                   help="print the cost every this many epochs (default: 1000)")
    p.add_argument("--backend", choices=("cython", "numba", "numpy"),
                   help="fusedoptim backend of the updates (default: the active one)")
    p.add_argument("--plot", metavar="PATH.png",
                   help="draw the cost curves and each run's decision boundary (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")


def _accuracy(X, Y, params):
    return float(np.mean(predict(X, params) == Y))


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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def command(args):
    import contextlib

    from ._cli import CLIError, check_writable, require_matplotlib
    from .backend import BackendUnavailable, use_backend

    if args.plot:
        require_matplotlib()
        check_writable(args.plot, "--plot")
    with contextlib.ExitStack() as stack:
        if args.backend:
            try:
                stack.enter_context(use_backend(args.backend))
            except BackendUnavailable as exc:
                raise CLIError(f"--backend {args.backend}: unavailable: {exc}") from None
        return _train_all(args)


def _train_all(args):
    from ._cli import Progress, unique
    from .backend import get_backend

    progress = Progress(enabled=not args.quiet)
    optimizers = unique(args.optimizer or OPTIMIZERS)
    decays = ["none"] + ([] if args.decay == "none" else [args.decay])
    X, Y = make_moons(args.samples, args.noise, args.seed)
    X_test, Y_test = make_moons(1000, args.noise, args.seed + 1)
    print(f"fusedoptim train: {X.shape[1]} two-moons points (noise {args.noise}), network "
          f"{'-'.join(map(str, LAYERS))}, {args.epochs} epochs, mini-batches of "
          f"{args.batch_size}, lr {args.lr:g}, backend {get_backend()}", flush=True)
    runs = []
    total = len(optimizers) * len(decays)
    try:
        for decay in decays:
            for opt in optimizers:
                label = opt if decay == "none" else f"{opt} + {decay}"
                k = len(runs) + 1
                last = [0.0]

                def on_epoch(epoch, cost, lr, label=label, k=k, last=last, decay=decay):
                    if epoch % args.print_every == 0 or epoch == args.epochs - 1:
                        extra = "" if decay == "none" else f", learning rate {lr:.3g}"
                        progress.clear()
                        print(f"{label:<26} cost after epoch {epoch:>6}: {cost:.6f}{extra}",
                              flush=True)
                    now = progress.elapsed()
                    if now - last[0] > 0.1:
                        last[0] = now
                        progress.status(f"[run {k}/{total} {now:5.1f} s] {label}: epoch "
                                        f"{epoch + 1}/{args.epochs}, cost {cost:.4f}")

                r = train(X, Y, opt, learning_rate=args.lr, mini_batch_size=args.batch_size,
                          beta=args.beta, beta1=args.beta1, beta2=args.beta2,
                          epsilon=args.epsilon, num_epochs=args.epochs,
                          decay=None if decay == "none" else decay, decay_rate=args.decay_rate,
                          time_interval=args.time_interval, on_epoch=on_epoch, seed=args.seed)
                r.update(optimizer=opt, decay=decay, label=label,
                         train_acc=_accuracy(X, Y, r["parameters"]),
                         test_acc=_accuracy(X_test, Y_test, r["parameters"]))
                runs.append(r)
    finally:
        progress.clear()

    head = ("optimizer", "decay", "final lr", "final cost", "train acc", "test acc", "time",
            "in update")
    rows = [(r["optimizer"], r["decay"], f"{r['learning_rate']:.3g}",
             f"{r['final_cost']:.4f}",
             f"{100 * r['train_acc']:.1f}%", f"{100 * r['test_acc']:.1f}%",
             f"{r['seconds']:.2f} s", f"{r['update_seconds']:.2f} s") for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print()
    print(fmt(head))
    print(fmt(["-" * w for w in widths]))
    for row in rows:
        print(fmt(row))
    print("final cost: mean cross-entropy per example over the last epoch; a point is "
          "predicted 1 when the network's probability is > 0.5", flush=True)
    if args.plot:
        plot(runs, X, Y, args.plot,
             f"two moons, {args.epochs} epochs, lr0 {args.lr:g}, decay {args.decay} "
             f"(rate {args.decay_rate:g})")
        progress.line(f"wrote {args.plot}", always=True)
    return 0
