"""Build of the compiled kernels (``fusedoptim._kernels``).

Environment switches, read at build time:

``FUSEDOPTIM_DEBUG=1``
    Bounds and wraparound checks on, ``-O0 -g``: the debug build the test
    suite also runs under.
``FUSEDOPTIM_NO_OPENMP=1``
    Build the serial version even where the compiler has OpenMP.

Floating-point flags are chosen for bit-for-bit agreement with the NumPy
reference: ``-ffp-contract=off`` (no fused multiply-add), never
``-ffast-math``; ``-fno-math-errno`` lets ``sqrt`` vectorize without changing
its result.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


DEBUG = _flag("FUSEDOPTIM_DEBUG")
NO_OPENMP = _flag("FUSEDOPTIM_NO_OPENMP")


def _compiler():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def _compiles(code, flags):
    """True if the C compiler builds and links ``code`` with ``flags``."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        cmd = _compiler() + flags + [src, "-o", os.path.join(tmp, "probe")]
        return subprocess.run(cmd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _openmp_flags():
    if NO_OPENMP:
        print("fusedoptim: FUSEDOPTIM_NO_OPENMP set; building the serial kernels")
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    probe = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    if _compiles(probe, ["-fopenmp"]):
        return ["-fopenmp"], ["-fopenmp"]
    warnings.warn("fusedoptim: the C compiler has no OpenMP; building the serial "
                  "kernels (correct, but one thread only)")
    return [], []


def _compile_flags():
    if sys.platform == "win32":
        return ["/O2", "/fp:precise"]
    flags = ["-O0", "-g"] if DEBUG else ["-O3"]
    flags += ["-fno-math-errno", "-ffp-contract=off", "-fno-trapping-math"]
    return flags


omp_compile, omp_link = _openmp_flags()

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

ext = Extension(
    "fusedoptim._kernels",
    ["src/fusedoptim/_kernels.pyx"],
    include_dirs=[np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=_compile_flags() + omp_compile,
    extra_link_args=omp_link,
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives=directives,
        force=DEBUG,
    ),
)
