"""Output shared by the ``bench`` and ``train`` commands: output-path checks,
the optional matplotlib and the progress display."""

import os
import shutil
import sys
import time

from . import CLIError


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


def plot_format(path):
    """The format a chart is saved in at ``path``: its extension,
    lower-cased, or png without one.  Passed to ``savefig`` as ``format``:
    left to itself, ``savefig`` would write ``<path>.png`` instead of the
    path checked and reported as written."""
    return os.path.splitext(path)[1][1:].lower() or "png"


def check_plot_format(path, option="--plot"):
    """Fail now, not when the chart is saved after the run, if matplotlib
    cannot write ``path``'s format (:func:`plot_format`).  Call after
    :func:`require_matplotlib`."""
    from matplotlib.backend_bases import FigureCanvasBase

    ext = plot_format(path)
    supported = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in supported:
        raise CLIError(f"{option} {path}: matplotlib cannot write {ext!r} files "
                       f"(extensions: {', '.join(sorted(supported))})")


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
