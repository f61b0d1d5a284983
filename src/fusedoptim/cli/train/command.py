"""The ``train`` command: its options, the runs and the results table."""

import argparse
import contextlib
import math

import numpy as np

from .. import CLIError, choice_list, integer, positive_int, unique
from .._output import Progress, check_plot_format, check_writable, require_matplotlib
from .network import LAYERS, OPTIMIZERS, make_moons, predict, train

__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "command"]

DESCRIPTION = ("Train the course's 2-5-2-1 network on two moons with GD, Momentum, RMSProp "
               "and Adam, with and without learning-rate decay.")

EPILOG = """\
Defaults are the course's: 300 points with noise 0.2, mini-batches of 64
reshuffled every epoch, He initialization, learning rate 0.0007, beta 0.9
(Momentum and RMSProp), beta1 0.9, beta2 0.999, epsilon 1e-8, 5000 epochs.
Each optimizer runs once at a constant rate and once with --decay:
  inverse-time  lr = lr0 / (1 + decay_rate * epoch)         (fusedoptim.update_lr)
  staircase     lr = lr0 / (1 + decay_rate * floor(epoch / decay_interval))
                                                            (fusedoptim.schedule_lr_decay)
decay_interval is the course's 1000 epochs when --epochs is above 1000; a
shorter run steps every --epochs / 5 epochs instead (the course's interval
would never fire and the decayed runs would equal the constant-rate ones).
'train acc' is measured on the --samples training points, 'test acc' on 1000
fresh points from the same distribution; 'in update' is the time spent in the
optimizer steps (the rest is forward and backward passes in NumPy).
examples:
  python -m fusedoptim train
  python -m fusedoptim train --epochs 1000 --optimizer adam,gd --decay inverse-time --plot moons.png
"""


def _float_in(lo, hi=None, hi_open=True, what="value", lo_open=False):
    """An argparse ``type``: a finite float ``>= lo`` (``> lo`` with
    ``lo_open``; and below ``hi``)."""
    def parse(text):
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        # float() takes "inf", "nan" and 1e309 (inf); the range check
        # alone would pass inf and call nan out of range.
        if not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text}")
        if not ((x > lo if lo_open else x >= lo)
                and (hi is None or (x < hi if hi_open else x <= hi))):
            rng = (f"{'>' if lo_open else '>='} {lo}" if hi is None
                   else f"in [{lo}, {hi}{')' if hi_open else ']'}")
            raise argparse.ArgumentTypeError(f"{what} must be {rng}, got {text}")
        return x
    return parse


#: The course's staircase interval, in epochs.
COURSE_INTERVAL = 1000
#: Staircase steps in a run too short for the course's interval.
SHORT_RUN_STEPS = 5


def decay_interval(epochs: int, asked: int | None = None) -> int:
    """The staircase interval for a run of ``epochs``: ``asked`` if given,
    else the course's 1000 when the run is long enough for it to fire, else
    ``epochs // 5`` (at least 1), so that the decayed run differs from the
    constant-rate one."""
    if asked is not None:
        return asked
    if epochs > COURSE_INTERVAL:
        return COURSE_INTERVAL
    return max(1, epochs // SHORT_RUN_STEPS)


#: The largest seed: the data and the initialization seed
#: ``np.random.RandomState``, which takes 0 to 2**32 - 1 (the test points:
#: the next seed, modulo 2**32).
SEED_MAX = 2**32 - 1


def _seed(text):
    n = integer(text)
    if not 0 <= n <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32 - 1], got {n}")
    return n


def _at_least_2(text):
    n = positive_int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {n}")
    return n


def add_arguments(p):
    """The ``train`` options."""
    p.add_argument("--optimizer", action="extend", type=choice_list(OPTIMIZERS, "optimizer"),
                   metavar="NAME[,NAME]", help="gd, momentum, rmsprop, adam (default: all)")
    p.add_argument("--decay", choices=("inverse-time", "staircase", "none"), default="staircase",
                   help="schedule of the decayed runs; 'none' skips them (default: staircase)")
    p.add_argument("--decay-rate", type=_float_in(0.0, what="decay rate"), default=1.0,
                   help="decay_rate of the schedule (default: 1, the course's)")
    p.add_argument("--decay-interval", "--time-interval", dest="time_interval",
                   type=positive_int, default=None, metavar="EPOCHS",
                   help=f"epochs per step of --decay staircase (default: the course's "
                        f"{COURSE_INTERVAL} when --epochs is above {COURSE_INTERVAL}; else "
                        f"--epochs / {SHORT_RUN_STEPS}, so that a short run still decays: "
                        f"with {COURSE_INTERVAL} it would never step)")
    p.add_argument("--epochs", type=positive_int, default=5000, help="default: 5000")
    p.add_argument("--lr", type=_float_in(0.0, what="learning rate"), default=0.0007,
                   help="initial learning rate (default: 0.0007)")
    p.add_argument("--beta", type=_float_in(0.0, 1.0, what="beta"), default=0.9,
                   help="Momentum's and RMSProp's beta (default: 0.9)")
    p.add_argument("--beta1", type=_float_in(0.0, 1.0, what="beta1"), default=0.9,
                   help="default: 0.9")
    p.add_argument("--beta2", type=_float_in(0.0, 1.0, what="beta2"), default=0.999,
                   help="default: 0.999")
    # > 0: a ReLU unit dead on a whole mini-batch has g = 0, and RMSProp's
    # and Adam's 0 / (sqrt(0) + 0) would turn the network into NaN
    p.add_argument("--epsilon", type=_float_in(0.0, what="epsilon", lo_open=True),
                   default=1e-8, help="> 0 (default: 1e-8)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    p.add_argument("--samples", type=_at_least_2, default=300,
                   help="training points, >= 2 (default: 300)")
    p.add_argument("--noise", type=_float_in(0.0, what="noise"), default=0.2,
                   help="standard deviation of the moons' noise (default: 0.2)")
    p.add_argument("--seed", type=_seed, default=3,
                   help="seed of the data and the initialization, 0 to 2**32 - 1 (default: 3)")
    p.add_argument("--print-every", type=positive_int, default=1000, metavar="EPOCHS",
                   help="print the cost every this many epochs (default: 1000)")
    p.add_argument("--backend", choices=("cython", "numba", "numpy"),
                   help="fusedoptim backend of the updates (default: the active one)")
    p.add_argument("--plot", metavar="PATH.png",
                   help="draw the cost curves and each run's decision boundary (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the settings line and the results table (no cost "
                        "lines, no progress display)")


def _accuracy(X, Y, params):
    return float(np.mean(predict(X, params) == Y))


def command(args):
    """Run ``fusedoptim train``; returns the exit status."""
    from ...backend import BackendUnavailable, use_backend

    # Only the staircase schedule has an interval: elsewhere it would be
    # silently ignored.
    if args.time_interval is not None and args.decay != "staircase":
        raise CLIError(f"--decay-interval is for --decay staircase, not --decay {args.decay}")
    if args.plot:
        require_matplotlib()
        check_plot_format(args.plot)
        check_writable(args.plot, "--plot")
    with contextlib.ExitStack() as stack:
        if args.backend:
            try:
                stack.enter_context(use_backend(args.backend))
            except BackendUnavailable as exc:
                raise CLIError(f"--backend {args.backend}: unavailable: {exc}") from None
        return _train_all(args)


def _one_run(args, opt, decay, data, k, total, progress):
    """Train once with ``opt`` (and ``decay``, or ``"none"``), printing the
    cost every ``--print-every`` epochs; returns ``train``'s result with the
    run's labels and accuracies."""
    X, Y, X_test, Y_test = data
    label = opt if decay == "none" else f"{opt} + {decay}"
    interval = decay_interval(args.epochs, args.time_interval)
    last = [0.0]

    def on_epoch(epoch, cost, lr):
        if not args.quiet and (epoch % args.print_every == 0 or epoch == args.epochs - 1):
            extra = "" if decay == "none" else f", learning rate {lr:.3g}"
            progress.clear()
            print(f"{label:<26} cost after epoch {epoch:>6}: {cost:.6f}{extra}", flush=True)
        now = progress.elapsed()
        if now - last[0] > 0.1:
            last[0] = now
            progress.status(f"[run {k}/{total} {now:5.1f} s] {label}: epoch "
                            f"{epoch + 1}/{args.epochs}, cost {cost:.4f}")

    r = train(X, Y, opt, learning_rate=args.lr, mini_batch_size=args.batch_size,
              beta=args.beta, beta1=args.beta1, beta2=args.beta2, epsilon=args.epsilon,
              num_epochs=args.epochs, decay=None if decay == "none" else decay,
              decay_rate=args.decay_rate, time_interval=interval,
              on_epoch=on_epoch, seed=args.seed)
    r.update(optimizer=opt, decay=decay, label=label,
             train_acc=_accuracy(X, Y, r["parameters"]),
             test_acc=_accuracy(X_test, Y_test, r["parameters"]))
    return r


def _table(runs):
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

    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(row) for row in rows]


def _train_all(args):
    from ...backend import get_backend

    progress = Progress(enabled=not args.quiet)
    optimizers = unique(args.optimizer or OPTIMIZERS)
    decays = ["none"] + ([] if args.decay == "none" else [args.decay])
    interval_note = ""
    if args.decay == "staircase":
        interval_note = (f", staircase decay every "
                         f"{decay_interval(args.epochs, args.time_interval)} epochs")
    X, Y = make_moons(args.samples, args.noise, args.seed)
    data = (X, Y) + make_moons(1000, args.noise, (args.seed + 1) % (SEED_MAX + 1))
    print(f"fusedoptim train: {X.shape[1]} two-moons points (noise {args.noise}), network "
          f"{'-'.join(map(str, LAYERS))}, {args.epochs} epochs, mini-batches of "
          f"{args.batch_size}, lr {args.lr:g}, backend {get_backend()}{interval_note}",
          flush=True)
    runs = []
    total = len(optimizers) * len(decays)
    try:
        for decay in decays:
            for opt in optimizers:
                runs.append(_one_run(args, opt, decay, data, len(runs) + 1, total, progress))
    finally:
        progress.clear()
    print()
    print("\n".join(_table(runs)))
    print("final cost: mean cross-entropy per example over the last epoch; a point is "
          "predicted 1 when the network's probability is > 0.5", flush=True)
    if args.plot:
        from .plot import plot
        plot(runs, X, Y, args.plot,
             f"two moons, {args.epochs} epochs, lr0 {args.lr:g}, decay {args.decay} "
             f"(rate {args.decay_rate:g})")
        progress.line(f"wrote {args.plot}", always=True)
    return 0
