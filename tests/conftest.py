import contextlib
import os

import numpy as np
import pytest

import fusedoptim
from fusedoptim.backend import BACKENDS, BackendUnavailable, _load

# Backends that load here.  FUSEDOPTIM_TEST_BACKENDS (comma-separated) narrows
# the list, e.g. for a CI job per backend.
_wanted = [b for b in os.environ.get("FUSEDOPTIM_TEST_BACKENDS", ",".join(BACKENDS)).split(",") if b]
AVAILABLE = []
for _name in _wanted:
    try:
        _load(_name)
    except BackendUnavailable:
        continue
    AVAILABLE.append(_name)

# The compiled pool's contention policy may run a 2-thread step on the
# calling thread alone when the machine is busy: off in the tests, so that
# every 2-thread test runs the parallel path (test_pool_policy.py turns it on).
if "cython" in AVAILABLE:
    from fusedoptim._ext import _step as _ext_step
    if hasattr(_ext_step, "_pool_policy"):
        _ext_step._pool_policy(adaptive=False)


def pytest_report_header(config):
    return (f"fusedoptim backends under test: {', '.join(AVAILABLE)} "
            f"(default {fusedoptim.get_backend()}, {fusedoptim.get_num_threads()} threads)")


def _simd_loops():
    """The SIMD builds of the compiled loops this machine runs (best first)."""
    if "cython" not in AVAILABLE:
        return []
    from fusedoptim import _ext
    return {"avx512": ["avx512", "avx2"], "avx2": ["avx2"]}.get(_ext.simd(), [])


# "cython-baseline" is the compiled backend with its SIMD loops turned off, and
# "cython-avx2" with its AVX2 loops where the CPU also has AVX-512 (plain
# "cython" then runs the AVX-512 ones), so that every build of the loops is
# checked on a machine that has it.
BACKEND_PARAMS = (AVAILABLE + (["cython-baseline"] if _simd_loops() else [])
                  + (["cython-avx2"] if len(_simd_loops()) > 1 else []))


@contextlib.contextmanager
def backend_variant(name):
    """The backend module of a ``BACKEND_PARAMS`` entry, made active; for
    ``"cython-baseline"`` with the SIMD loops off, for ``"cython-avx2"`` with
    the AVX2 ones, until the block ends."""
    base = name.split("-")[0]
    with fusedoptim.use_backend(base):
        if name not in ("cython-baseline", "cython-avx2"):
            yield _load(base)
            return
        from fusedoptim import _ext
        before = _ext._set_simd_isa(name.split("-")[1])
        try:
            yield _ext
        finally:
            _ext._set_simd_isa(before)


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Run the test once per backend variant, with that backend active."""
    with backend_variant(request.param):
        yield request.param


@pytest.fixture(params=[1, 2])
def threads(request):
    """Run the test at 1 and 2 threads, restoring the previous count."""
    before = fusedoptim.get_num_threads()
    fusedoptim.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        fusedoptim.set_num_threads(before)


@pytest.fixture
def low_threshold():
    """Make the compiled kernels go parallel on small test models, so that
    2-thread runs split tensors, and tensor boundaries, between threads.
    (Numba reads ``_tuning.PARALLEL_MIN_ELEMENTS``; tests that need its
    parallel path use models above it.)"""
    if "cython" not in AVAILABLE:
        yield
        return
    from fusedoptim import _ext
    old = _ext._set_parallel_min(64)
    try:
        yield
    finally:
        _ext._set_parallel_min(old)
