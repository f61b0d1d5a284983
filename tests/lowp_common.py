"""Models shared by the reduced-precision state tests (Adam's and the
one-state families')."""

import numpy as np
import pytest

from fusedoptim import _tuning
from conftest import backend_variant
from helpers import assert_unchanged, snapshot


def lowp_shapes():
    # Above the parallel threshold in all, so 2 threads split it; thread blocks
    # (BLOCK_ELEMENTS) straddle tensors; sizes below and above QMIN_ELEMENTS,
    # partial last quantization blocks, empty and 0-d tensors, Fortran order.
    n = _tuning.PARALLEL_MIN_ELEMENTS
    return [(n // 2 + 77,), (), (0,), (3, 7), (4096,), (4095,), (67, 131), (n // 3 + 1,),
            (1,), (257,)]


def lowp_model(seed=0, steps=4):
    rng = np.random.default_rng(seed)
    params = {}
    for i, s in enumerate(lowp_shapes()):
        a = rng.standard_normal(s).astype(np.float32)
        params[f"p{i}"] = np.asfortranarray(a) if len(s) == 2 else a
    grads = []
    for _ in range(steps):
        # Gradient scales spread over decades, per element (the codecs' hard case).
        grads.append({k: np.asarray(rng.standard_normal(v.shape)
                                    * 10.0 ** rng.uniform(-4, 1, v.shape), np.float32)
                      for k, v in params.items()})
    return params, grads


def check_failing_step_changes_nothing(variant, make):
    """A step whose gradients fail validation (a wrong shape in the last
    parameter, a missing one) raises and leaves the parameters, the state
    and the step count as they were; ``make(params)`` builds the
    optimizer."""
    params, grads = lowp_model(steps=1)
    with backend_variant(variant):
        opt = make(params)
        opt.step(grads[0])
        before = snapshot(params, *opt.state.values())
        bad = dict(grads[0])
        bad["p9"] = np.zeros(3, np.float32)  # wrong shape, last parameter
        with pytest.raises(ValueError, match="p9"):
            opt.step(bad)
        bad = dict(grads[0])
        del bad["p5"]
        with pytest.raises(KeyError, match="p5"):
            opt.step(bad)
    assert_unchanged(before, params, *opt.state.values())
    assert opt.t == 1
