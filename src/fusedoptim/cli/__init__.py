"""The command line: ``python -m fusedoptim`` and the ``fusedoptim`` console script.

Commands::

    fusedoptim bench [--quick] [--json PATH] [--plot PATH.png] ...
    fusedoptim train [--epochs N] [--decay inverse-time|staircase] [--plot PATH.png] ...

``bench`` (:mod:`fusedoptim.cli.bench`) times one step of every registered
optimizer class against plain NumPy and the machine's memory bandwidth;
``train`` (:mod:`fusedoptim.cli.train`) trains the course's 2-5-2-1 network
on two moons with the course functions.  ``fusedoptim COMMAND --help``
explains each.

This module holds the entry point and what both commands' arguments share:
one-line usage errors and comma-or-repeat list options.  The library never
imports it.
"""

import argparse
import sys

__all__ = ["main", "build_parser", "CLIError", "Parser", "choice_list", "integer", "positive_int",
           "positive_int_list", "unique"]


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block, no
    traceback): ``main`` prints them and returns 2."""

    def error(self, message):
        raise CLIError(f"{self.prog}: error: {message} (see --help)")


def choice_list(choices, what):
    """An argparse ``type`` for a comma-separated list of ``choices``; with
    ``action="extend"`` the option is also repeatable."""
    def parse(text):
        out = [t.strip().lower() for t in text.split(",") if t.strip()]
        if not out:
            raise argparse.ArgumentTypeError(f"empty {what} list")
        for t in out:
            if t not in choices:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {t!r} (choose from {', '.join(choices)})")
        return out
    return parse


def integer(text):
    """An argparse ``type``: an integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text, most=None):
    """An argparse ``type``: an integer ``>= 1`` (and ``<= most``)."""
    n = integer(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    if most is not None and n > most:
        raise argparse.ArgumentTypeError(f"must be <= {most}, got {n}")
    return n


def positive_int_list(text, most=None):
    """An argparse ``type``: comma-separated integers ``>= 1`` (and
    ``<= most``: wrap it to set ``most``)."""
    out = [positive_int(t.strip(), most) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def unique(items):
    """``items`` without repeats, first occurrence first."""
    return list(dict.fromkeys(items))


def _check_backend_environment() -> None:
    """A bad ``FUSEDOPTIM_BACKEND`` or ``FUSEDOPTIM_NUM_THREADS`` as one line:
    the import deferred it for the command line (``backend.init_error``), so
    that ``--help`` works whatever the environment; every command runs
    optimizer steps and needs a backend."""
    from ..backend import init_error
    if init_error is not None:
        raise CLIError(" ".join(str(init_error).split()))


def build_parser() -> "Parser":
    """The ``fusedoptim`` parser with its ``bench`` and ``train`` commands."""
    from .. import __version__
    from .bench import command as bench
    from .train import command as train

    parser = Parser(prog="fusedoptim",
                    description="Fused optimizer steps over NumPy arrays: benchmark them "
                                "(bench) or watch them train the course network (train).",
                    epilog="run 'fusedoptim COMMAND --help' for a command's options")
    parser.add_argument("--version", action="version", version=f"fusedoptim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in (("bench", bench), ("train", train)):
        p = sub.add_parser(name, help=mod.DESCRIPTION, description=mod.DESCRIPTION,
                           epilog=mod.EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(run=mod.command)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the
    exit status: 0 success, 1 a measurement or run failed, 2 a usage error
    (reported as one line on stderr), 130 interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "fusedoptim"
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            if extra:
                raise CLIError(f"fusedoptim: error: unknown command or option "
                               f"{extra[0]!r} (see --help)")
            raise CLIError("fusedoptim: error: choose a command: bench or train (see --help)")
        prog = f"fusedoptim {args.command}"
        if extra:  # argparse would name the top-level parser, not the command
            raise CLIError(f"{prog}: error: unrecognized arguments: {' '.join(extra)} "
                           f"(see fusedoptim {args.command} --help)")
        _check_backend_environment()
        args.argv = argv
        return args.run(args)
    except CLIError as exc:
        msg = " ".join(str(exc).split())  # one line, whatever the message holds
        if not msg.startswith("fusedoptim"):
            msg = f"{prog}: error: {msg}"
        print(msg, file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("\nfusedoptim: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        hint = {"fusedoptim bench": " (try a smaller --size)",
                "fusedoptim train": " (try fewer --samples)"}.get(prog, "")
        print(f"{prog}: error: out of memory{hint}", file=sys.stderr)
        return 1
