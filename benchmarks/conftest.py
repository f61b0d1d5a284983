"""pytest-benchmark suite: every case is built by ``fusedoptim.bench``.

Run with ``PYTHONPATH=src python -m pytest benchmarks`` (``--benchmark-only``
to skip nothing, ``--benchmark-group-by=group`` is the default here: one
table per case, implementations side by side).  Cases run at 2 threads unless
``FUSEDOPTIM_BENCH_THREADS`` says otherwise.
"""

import os

import pytest

import fusedoptim

THREADS = int(os.environ.get("FUSEDOPTIM_BENCH_THREADS", "2"))


def pytest_configure(config):
    # One table per case (the benchmark's group), implementations side by side.
    if config.getoption("benchmark_group_by", None) in (None, "group"):
        config.option.benchmark_group_by = "group"


@pytest.fixture(autouse=True)
def bench_threads():
    before = fusedoptim.get_num_threads()
    fusedoptim.set_num_threads(THREADS)
    try:
        yield THREADS
    finally:
        fusedoptim.set_num_threads(before)
