"""``python -m fusedoptim`` (also the ``fusedoptim`` console script).

Commands::

    fusedoptim bench [--quick] [--json PATH] [--plot PATH.png] ...
    fusedoptim train [--epochs N] [--decay inverse-time|staircase] [--plot PATH.png] ...

``bench`` times the fused steps against plain NumPy and the machine's memory
bandwidth; ``train`` trains the course's 2-5-2-1 network on two moons with
every optimizer.  ``fusedoptim COMMAND --help`` explains each.
"""

import sys


def build_parser():
    from . import __version__, _cli_bench, demo
    from ._cli import Parser

    parser = Parser(prog="fusedoptim",
                    description="Fused optimizer steps over NumPy arrays: benchmark them "
                                "(bench) or watch them train the course network (train).",
                    epilog="run 'fusedoptim COMMAND --help' for a command's options")
    parser.add_argument("--version", action="version", version=f"fusedoptim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from argparse import RawDescriptionHelpFormatter

    b = sub.add_parser("bench", help=_cli_bench.DESCRIPTION, description=_cli_bench.DESCRIPTION,
                       epilog=_cli_bench.EPILOG, formatter_class=RawDescriptionHelpFormatter)
    _cli_bench.add_arguments(b)
    b.set_defaults(run=_cli_bench.command)
    t = sub.add_parser("train", help=demo.DESCRIPTION, description=demo.DESCRIPTION,
                       epilog=demo.EPILOG, formatter_class=RawDescriptionHelpFormatter)
    demo.add_arguments(t)
    t.set_defaults(run=demo.command)
    return parser


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the
    exit status: 0 success, 1 a measurement or run failed, 2 a usage error
    (reported as one line on stderr), 130 interrupted."""
    from ._cli import CLIError

    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "fusedoptim"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            raise CLIError("fusedoptim: error: choose a command: bench or train (see --help)")
        prog = f"fusedoptim {args.command}"
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
        print("fusedoptim: error: out of memory (try a smaller --size)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
