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


def pytest_report_header(config):
    return (f"fusedoptim backends under test: {', '.join(AVAILABLE)} "
            f"(default {fusedoptim.get_backend()}, {fusedoptim.get_num_threads()} threads)")


@pytest.fixture(params=AVAILABLE)
def backend(request):
    """Run the test once per available backend, with that backend active."""
    with fusedoptim.use_backend(request.param):
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
