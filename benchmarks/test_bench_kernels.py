"""The issue's target cases, and every registered optimizer, each
implementation side by side in one group.

pytest-benchmark times one test (one implementation) after another, so its
groups compare times taken at different moments: on a machine whose memory
bandwidth drifts, take the ratios from ``python -m fusedoptim bench``,
which times the implementations of a case interleaved and quotes medians of
per-round ratios (``bench.interleave``, ``bench.round_ratios``).

Cases come from ``fusedoptim.cli.bench`` only (``Case``, ``make_step``), so
this suite, ``benchmarks/targets.py`` and the ``bench`` command measure the
same steps.  Implementations that are not available here (torch, DeepSpeed,
numba, the compiled extension), or that have no step for a row (a class
without a torch counterpart), skip.
"""

import contextlib

import pytest

from fusedoptim.backend import use_backend
from fusedoptim.cli import bench

# (case, implementations): the rows of the target table.
TARGETS = [
    (bench.Case("adam", "big", "float32"), ("cython", "torch", "deepspeed", "copy", "numpy")),
    (bench.Case("momentum", "big", "float32"), ("cython", "torch", "copy", "numpy")),
    (bench.Case("rmsprop", "big", "float32"), ("cython", "torch", "copy", "numpy")),
    (bench.Case("adam", "mlp", "float32"), ("cython", "torch", "deepspeed", "copy")),
    (bench.Case("adam", "course", "float64"), ("cython", "torch", "numpy")),
]
# Real models' shapes and the many-tiny-tensors case (issue 16): Adam against
# PyTorch's fused Adam, DeepSpeed's CPU Adam and the copy limit.
SHAPES = [(bench.Case("adam", size, "float32"), ("cython", "torch", "deepspeed", "copy"))
          for size in ("gpt2", "resnet50", "tiny")]
# Every registered optimizer (a new one included, with nothing to add here)
# on the MLP, against PyTorch and the copy limit.
REGISTERED = [(bench.Case(row, "mlp", "float32"), ("cython", "torch", "copy"))
              for row in bench.OPTIMIZERS]

PARAMS = [pytest.param(case, impl, id=f"{case.name}-{impl}")
          for case, impls in TARGETS + SHAPES + [t for t in REGISTERED
                                                 if t[0] not in dict(TARGETS)]
          for impl in impls]


def _rounds(case, impl):
    """Fewer rounds for the slow plain-NumPy steps on big models."""
    if case.size == "course":
        return 200
    if impl == "numpy":
        return 3
    if case.size in bench.MODEL_SIZES:
        return 10
    return 20 if case.size == "big" else 50


@pytest.mark.parametrize("case,impl", PARAMS)
def test_step(benchmark, bench_threads, case, impl):
    if benchmark.disabled and case.size in bench.MODEL_SIZES:
        # A smoke run (--benchmark-disable, as in CI) would spend seconds
        # drawing gigabytes of random values for one step.
        pytest.skip(f"{case.size}: measured only with the benchmarks enabled")
    try:
        step = bench.make_step(case, impl, threads=bench_threads)
    except (ImportError, bench.NotMeasurable) as exc:
        pytest.skip(f"{impl} has no step here: {exc}")
    benchmark.group = f"{case.name} ({bench_threads} threads)"
    benchmark.extra_info.update(case=case.name, impl=impl, bytes_moved=case.bytes_moved)
    ctx = use_backend(impl) if impl in bench.BACKENDS else contextlib.nullcontext()
    with ctx:
        benchmark.pedantic(step, rounds=_rounds(case, impl), warmup_rounds=2,
                           iterations=10 if case.size == "course" else 1)
