"""Build of the compiled backend (the package ``fusedoptim._ext``).

Every ``src/fusedoptim/_ext/*.pyx`` becomes the extension module
``fusedoptim._ext.<name>`` (found by glob: a new family's ``.pyx`` needs no
edit here), all with the same flags; ``EXTRA`` lists what one module needs
beyond them (only ``_pool``, the thread pool, links pthreads).

Environment switches, read at build time:

``FUSEDOPTIM_DEBUG=1``
    Bounds and wraparound checks on, ``-O0 -g``, and ``FUSEDOPTIM_DEBUG``
    defined for C: every chunk a thread runs is range-checked against its
    tensor (abort on a violation).  The debug build the test suite also runs
    under.
``FUSEDOPTIM_NO_THREADS=1`` (or its former name ``FUSEDOPTIM_NO_OPENMP=1``)
    Build the serial version, without the thread pool (``_ext/pool.h``, on
    POSIX threads; the module no longer uses OpenMP).  Windows builds are
    always serial.
``FUSEDOPTIM_NATIVE=1``
    Opt-in ``-march=native`` for a source build that only ever runs on the
    machine that compiles it.  Never the default (see below).
``FUSEDOPTIM_NO_SIMD=1``
    Leave out the AVX2 and AVX-512 builds of the fast-path loops (see
    below); the baseline loops then always run.
``FUSEDOPTIM_SANITIZE=address``
    Build with AddressSanitizer (``-fsanitize=address``): CI runs the kernel
    tests under it, with ``LD_PRELOAD`` of the compiler's ``libasan.so``, to
    catch any read or write outside the arrays a step was given.
``FUSEDOPTIM_VEC_REPORT=1``
    Print GCC's ``-fopt-info-vec-optimized`` report (which loops vectorized);
    ``FUSEDOPTIM_ANNOTATE=1`` writes Cython's ``.html`` annotation of each module.

Floating-point flags are chosen for bit-for-bit agreement with the NumPy
reference: ``-ffp-contract=off`` (no fused multiply-add), never
``-ffast-math``; ``-fno-math-errno`` lets ``sqrt`` vectorize without changing
its result.

Portable speed: AVX2 and AVX-512 loops chosen at run time
---------------------------------------------------------
The module is compiled for the compiler's baseline ISA (SSE2 on x86-64, NEON
on arm64), so it imports and runs on any CPU of the architecture; nothing is
ever built with ``-march=native`` unless asked.  The fast-path element loops
(every family's, and the copy yardstick) are also written once as scalar C in
``src/fusedoptim/_ext/<family>_avx2.h`` and compiled inside the family's
module twice, with GCC/Clang's ``target("avx2")`` and
``target("avx512f,avx512bw,avx512dq,avx512vl")`` attributes (``FO_SIMD_BUILD``
in ``avx2.h``); the widest build that ``__builtin_cpu_supports`` says the CPU
(and OS) have runs, ``fusedoptim._ext.simd()`` names it.  Not "fma": no
contraction can happen in the AVX2 build, and ``-ffp-contract=off`` (above)
forbids it in the AVX-512 one, whose instruction set includes FMA; every
operation is IEEE correctly rounded at any vector width, so all builds give
the same bits (the tests run each).
Measured on the development machine (AMD EPYC Zen1, 2 cores), float32 Adam:
in cache 1.47-1.52 ns per element with the SSE2 loop, 1.30-1.38 with the
AVX2 one; at 2^24 elements, 2 threads, Adam / copy 1.004-1.056 (SSE2)
against 0.995-1.023 (AVX2, which also prefetches), three processes.  On the
AVX-512 Zen4 VM, in L2, 1 thread: Adam 0.40 ns per element (AVX-512) against
0.49 (AVX2) and 0.86 (SSE2); ``benchmarks/simd_profile.py`` measures every
family.  ``FUSEDOPTIM_NO_SIMD=1`` builds without the SIMD loops;
``FUSEDOPTIM_NATIVE=1`` remains for source builds that stay on their machine.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


DEBUG = _flag("FUSEDOPTIM_DEBUG")
NO_THREADS = _flag("FUSEDOPTIM_NO_THREADS") or _flag("FUSEDOPTIM_NO_OPENMP")
NATIVE = _flag("FUSEDOPTIM_NATIVE")
NO_SIMD = _flag("FUSEDOPTIM_NO_SIMD")
VEC_REPORT = _flag("FUSEDOPTIM_VEC_REPORT")
SANITIZE = os.environ.get("FUSEDOPTIM_SANITIZE", "").strip()
SANITIZE_FLAGS = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"] if SANITIZE else []
ANNOTATE = _flag("FUSEDOPTIM_ANNOTATE")


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


def _thread_flags():
    if NO_THREADS:
        print("fusedoptim: FUSEDOPTIM_NO_THREADS set; building the serial kernels")
        return [], []
    if sys.platform == "win32":
        return [], []
    return ["-pthread"], ["-pthread"]


def _compile_flags():
    if sys.platform == "win32":
        return ["/O2", "/fp:precise"]
    # -g0: the interpreter's CFLAGS, which come first, often carry -g (pyenv's,
    # Debian's); its debug information was four fifths of the extension's size.
    flags = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
    flags += ["-fno-math-errno", "-ffp-contract=off", "-fno-trapping-math"]
    # GCC 12 at -O3 reports -Warray-bounds false positives inside CPython's own
    # headers as inlined into Cython's generated code (Py_True/Py_False seen as
    # 2-element arrays); they say nothing about this code and hide real warnings.
    if _compiles("int main(void){return 0;}\n", ["-Wno-array-bounds"]):
        flags.append("-Wno-array-bounds")
    if NATIVE:
        if _compiles("int main(void){return 0;}\n", ["-march=native"]):
            flags.append("-march=native")
        else:
            warnings.warn("fusedoptim: FUSEDOPTIM_NATIVE set but the compiler rejects "
                          "-march=native; building for the baseline ISA")
    if VEC_REPORT:
        flags.append("-fopt-info-vec-optimized")
    return flags + SANITIZE_FLAGS


thr_compile, thr_link = _thread_flags()

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

EXT_DIR = "src/fusedoptim/_ext"

#: What a module needs beyond the common flags (scikit-learn's table of
#: extensions): only the step machinery runs threads.
EXTRA = {"_pool": {"threads": True}}


def _extensions():
    # Every module is rebuilt when a shared declaration or a loop header
    # changes (inline helpers and struct layouts are compiled into each).
    depends = sorted(glob(f"{EXT_DIR}/*.h") + glob(f"{EXT_DIR}/*.pxd"))
    macros = ([("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
              + ([("FUSEDOPTIM_DEBUG", "1")] if DEBUG else [])
              + ([("FUSEDOPTIM_NO_SIMD", "1")] if NO_SIMD else [])
              + ([("FUSEDOPTIM_NO_THREADS", "1")] if NO_THREADS else []))
    cflags = _compile_flags()
    exts = []
    for src in sorted(glob(f"{EXT_DIR}/*.pyx")):
        name = os.path.splitext(os.path.basename(src))[0]
        thr = EXTRA.get(name, {}).get("threads", False)
        exts.append(Extension(
            f"fusedoptim._ext.{name}",
            [src],
            include_dirs=[np.get_include(), EXT_DIR],
            depends=depends,
            define_macros=macros,
            extra_compile_args=cflags + (thr_compile if thr else []),
            extra_link_args=(thr_link if thr else []) + SANITIZE_FLAGS,
        ))
    return exts


def _stale(exts):
    """Whether the last build used other directives or flags: then every
    module is cythonized and compiled again (a serial or debug build after a
    release one and back), not only those whose sources changed."""
    want = repr((sorted(directives.items()),
                 [(e.name, e.define_macros, e.extra_compile_args, e.extra_link_args)
                  for e in exts]))
    stamp = os.path.join("build", "fusedoptim-build-flags.txt")
    try:
        with open(stamp) as f:
            stale = f.read() != want
    except OSError:
        stale = True
    os.makedirs("build", exist_ok=True)
    with open(stamp, "w") as f:
        f.write(want)
    return stale


EXTENSIONS = _extensions()
_force = _stale(EXTENSIONS)

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives=directives,
        force=_force,
        annotate=ANNOTATE,
    ),
    options={"build_ext": {"force": _force}},
)
