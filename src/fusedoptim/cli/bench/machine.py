"""The machine a benchmark ran on: CPU, cores, versions, the compiled build
and the load average (for the JSON document and the table's header)."""

import importlib.metadata
import os
import platform
import sys

import numpy as np

from .peers import PEERS

__all__ = ["machine_info", "loadavg"]


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _physical_cores():
    """Distinct (package, core) pairs of /proc/cpuinfo, or None."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores) or None


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads):
    """The machine, the versions and the build, as a JSON-ready dict."""
    from ... import __version__, get_backend

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    torch = sys.modules.get("torch")
    return {
        "cpu": _cpu_model(),
        "physical_cores": _physical_cores(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "fusedoptim": __version__,
        "numpy": np.__version__,
        "numba": _version("numba"),
        "torch": torch.__version__ if torch is not None else _version("torch"),
        # the peers, named only when a run imported them (``--backend``)
        **{peer: _version(peer) if peer in sys.modules else None for peer in PEERS},
        "default_backend": get_backend(),
        "kernel_isa": _kernel_isa(),
    }


def _kernel_isa():
    """``"avx2"`` or ``"baseline"``: which build of the compiled loops runs
    (None without the compiled backend)."""
    try:
        from ... import _ext
    except ImportError:
        return None
    return _ext.simd()


def loadavg():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
