"""Re-run the commands whose output README.md quotes, and write it back.

The README quotes two runs, each as a ```text block under its heading:

* ``## What `bench` shows``: ``python -m fusedoptim bench --quick --size
  course,mlp,big`` (its table carries the machine, the date and the load
  average; a busy machine is flagged), and its chart ``docs/bench.png``;
* ``## Train the course network``: ``python -m fusedoptim train`` (the
  table), and its chart ``docs/train.png``.

Run from the repository root, on a quiet machine, before a release::

    python docs/update_readme.py            # both
    python docs/update_readme.py --only train
    python docs/update_readme.py --dry-run  # print the new blocks, write nothing
    python docs/update_readme.py --no-charts  # the tables only (no matplotlib)

``--bench-args`` and ``--train-args`` replace the commands' arguments (the
tests use them for a short run on a copy of the README).
"""

import argparse
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

BENCH_HEADING = "## What `bench` shows"
TRAIN_HEADING = "## Train the course network"
BENCH_ARGS = "--quick --size course,mlp,big"
TRAIN_ARGS = ""


def replace_block(text: str, heading: str, content: str) -> str:
    """``text`` with the first ```text block after ``heading`` holding
    ``content``; ``ValueError`` when there is no such heading or block."""
    start = text.find(heading)
    if start < 0:
        raise ValueError(f"no heading {heading!r}")
    m = re.compile(r"^```text\n(.*?)^```", re.S | re.M).search(text, start)
    if m is None:
        raise ValueError(f"no ```text block after {heading!r}")
    body = content if content.endswith("\n") else content + "\n"
    return text[:m.start(1)] + body + text[m.end(1):]


def run_cli(args: list[str]) -> str:
    """stdout of ``python -m fusedoptim ARGS``; raises on a failed run."""
    p = subprocess.run([sys.executable, "-m", "fusedoptim", *args], capture_output=True,
                       text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"python -m fusedoptim {' '.join(args)} failed ({p.returncode}):\n"
                         f"{p.stderr}")
    return p.stdout


def train_table(stdout: str) -> str:
    """The results table of ``train``'s output (from its header line on)."""
    i = stdout.find("\noptimizer ")
    if i < 0:
        raise ValueError("train printed no results table")
    return stdout[i + 1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    ap.add_argument("--only", choices=("bench", "train"))
    ap.add_argument("--bench-args", default=BENCH_ARGS)
    ap.add_argument("--train-args", default=TRAIN_ARGS)
    ap.add_argument("--charts", type=pathlib.Path, default=ROOT / "docs",
                    help="directory of bench.png and train.png (default: docs/)")
    ap.add_argument("--no-charts", action="store_true",
                    help="leave the charts alone (they need matplotlib)")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    text = a.readme.read_text()
    plot = [] if a.dry_run or a.no_charts else ["--plot"]
    if a.only in (None, "bench"):
        args = ["bench", *shlex.split(a.bench_args), "-q"]
        args += plot + [str(a.charts / "bench.png")] if plot else []
        out = run_cli(args)
        print(out)
        text = replace_block(text, BENCH_HEADING, out)
    if a.only in (None, "train"):
        args = ["train", *shlex.split(a.train_args), "-q"]
        args += plot + [str(a.charts / "train.png")] if plot else []
        out = train_table(run_cli(args))
        print(out)
        text = replace_block(text, TRAIN_HEADING, out)
    if not a.dry_run:
        a.readme.write_text(text)
        print(f"wrote {a.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
