"""What the command-line tests share: the copy yardstick's NumPy stand-in, the
one-line error check, and whether torch and the compiled yardstick are here."""

from pathlib import Path

import numpy as np
import pytest

import fusedoptim
from fusedoptim.cli import main
from fusedoptim.cli.bench import workloads as B


SRC = str(Path(fusedoptim.__file__).resolve().parent.parent)
PNG = b"\x89PNG\r\n\x1a\n"

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False
try:
    B.yardstick()
    HAVE_COPY = True
except ImportError:
    HAVE_COPY = False


def _numpy_copy_like(rw, ro):
    """The yardstick's arithmetic in NumPy: each read-write array += ro[0]
    (+ ro[1])."""
    assert 1 <= len(rw) <= B.YARDSTICK_MAX_READ_WRITE and 1 <= len(ro) <= 2
    for a in rw:
        np.add(a, ro[0] if len(ro) == 1 else ro[0] + ro[1], out=a)


@pytest.fixture
def yardstick(monkeypatch):
    """The compiled copy yardstick, or a NumPy stand-in where the extension
    is not built, so that the bench's copy path runs either way."""
    if not HAVE_COPY:
        monkeypatch.setattr(B, "yardstick", lambda: _numpy_copy_like)


def _one_line_error(capsys, argv, needle=None):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]
    if needle:
        assert needle in lines[0]
    return lines[0]
