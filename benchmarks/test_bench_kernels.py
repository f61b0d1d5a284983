"""The issue's target cases, each implementation side by side in one group.

Cases come from ``fusedoptim.bench`` only (``Case``, ``make_step``), so this
suite, ``benchmarks/targets.py`` and the ``bench`` command measure the same
steps.  Implementations that are not available here (torch, numba) skip.
"""

import contextlib

import pytest

from fusedoptim import bench
from fusedoptim.backend import use_backend

# (case, implementations): the rows of the target table.
TARGETS = [
    (bench.Case("adam", "big", "float32"), ("cython", "torch", "copy", "numpy")),
    (bench.Case("momentum", "big", "float32"), ("cython", "torch", "copy", "numpy")),
    (bench.Case("rmsprop", "big", "float32"), ("cython", "torch", "copy", "numpy")),
    (bench.Case("adam", "mlp", "float32"), ("cython", "torch", "copy")),
    (bench.Case("adam", "course", "float64"), ("cython", "torch", "numpy")),
]

PARAMS = [pytest.param(case, impl, id=f"{case.name}-{impl}")
          for case, impls in TARGETS for impl in impls]


def _rounds(case, impl):
    """Fewer rounds for the slow plain-NumPy steps on big models."""
    if case.size == "course":
        return 200
    if impl == "numpy":
        return 3
    return 20 if case.size == "big" else 50


@pytest.mark.parametrize("case,impl", PARAMS)
def test_step(benchmark, bench_threads, case, impl):
    try:
        step = bench.make_step(case, impl, threads=bench_threads)
    except ImportError as exc:
        pytest.skip(f"{impl} is not available: {exc}")
    benchmark.group = f"{case.name} ({bench_threads} threads)"
    benchmark.extra_info.update(case=case.name, impl=impl, bytes_moved=case.bytes_moved)
    ctx = use_backend(impl) if impl in bench.IMPLS[:3] else contextlib.nullcontext()
    with ctx:
        benchmark.pedantic(step, rounds=_rounds(case, impl), warmup_rounds=2,
                           iterations=10 if case.size == "course" else 1)
