"""Pieces shared by the ``bench`` and ``train`` commands: one-line argument
errors, comma-or-repeat list options, output-path checks and the progress
display."""

import argparse
import os
import shutil
import sys
import time


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


def positive_int_list(text):
    """An argparse ``type``: comma-separated integers ``>= 1``."""
    out = []
    for t in text.split(","):
        t = t.strip()
        if t:
            out.append(positive_int(t))
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def positive_int(text):
    """An argparse ``type``: an integer ``>= 1``."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def unique(items):
    """``items`` without repeats, first occurrence first."""
    return list(dict.fromkeys(items))


def check_writable(path, option):
    """Fail now, not after a long run, if ``path`` cannot be written.

    Opens it for appending (which creates nothing new if it exists) and
    removes it again if this call created it."""
    existed = os.path.exists(path)
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a directory")
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise CLIError(f"{option} {path}: cannot write ({exc.strerror or exc})") from None
    if not existed:
        os.unlink(path)


def require_matplotlib(option="--plot"):
    """Import matplotlib with a non-interactive backend, or fail with a hint."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        raise CLIError(f"{option} needs matplotlib, which is not installed: "
                       f"pip install 'fusedoptim[plot]' (or pip install matplotlib)") from None


class Progress:
    """Progress on a stream (stderr): one line rewritten in place when the
    stream is a terminal, nothing but the permanent lines otherwise (so that
    logs stay readable)."""

    def __init__(self, stream=None, enabled=True):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        try:
            self.tty = enabled and self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.start = time.perf_counter()
        self._transient = False

    def elapsed(self):
        return time.perf_counter() - self.start

    def status(self, text):
        """Show ``text`` on the live line (terminals only)."""
        if not self.tty:
            return
        # One character short of the width: a full line would wrap and
        # the carriage return would then rewrite only its second half.
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self._transient = True

    def line(self, text, always=False):
        """Print ``text`` as a permanent line (``always``: even when the
        progress display is off, e.g. a warning)."""
        if not (self.enabled or always):
            return
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self):
        if self._transient:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._transient = False
