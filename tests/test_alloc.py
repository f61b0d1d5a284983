"""State allocation (_alloc.zeros_like_state): what np.zeros_like gives, placed
apart from the parameter in memory from SKEW_MIN_BYTES up."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim._alloc import SKEW_MIN_BYTES, zeros_beside, zeros_like_state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 5), (300, 700), (1 << 17,)])
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("slot", [0, 1, 2])
def test_like_zeros_like(dtype, shape, order, slot):
    p = np.ones(shape, dtype=dtype, order=order)
    s = zeros_like_state(p, slot)
    z = np.zeros_like(p)
    assert s.shape == z.shape and s.dtype == z.dtype and s.strides == z.strides
    assert s.flags.c_contiguous == z.flags.c_contiguous
    assert s.flags.f_contiguous == z.flags.f_contiguous
    assert s.flags.writeable and s.flags.aligned
    assert not np.shares_memory(s, p)
    assert s.tobytes() == z.tobytes()


def test_large_states_start_at_distinct_page_offsets():
    p = np.ones(SKEW_MIN_BYTES // 4, np.float32)
    states = [zeros_like_state(p, k) for k in range(3)]
    offsets = {(a.ctypes.data - p.ctypes.data) % 4096 for a in states}
    assert offsets == {1088, 2176, 3264}
    small = np.ones(SKEW_MIN_BYTES // 8, np.float32)
    assert zeros_like_state(small, 0).base is None  # plain zeros_like


def test_library_states_use_it_and_stay_independent():
    params = {"W1": np.ones((512, 256), np.float32), "b1": np.ones((512, 1), np.float32)}
    v, s = fo.initialize_adam(params)
    assert (v["dW1"].ctypes.data - params["W1"].ctypes.data) % 4096 == 1088
    assert (s["dW1"].ctypes.data - params["W1"].ctypes.data) % 4096 == 2176
    opt = fo.Adam(params, amsgrad=True)
    offsets = {label: (d["W1"].ctypes.data - params["W1"].ctypes.data) % 4096
               for label, d in opt._state.items()}
    assert offsets == {"exp_avg": 1088, "exp_avg_sq": 2176, "max_exp_avg_sq": 3264}
    v["dW1"][0, 0] = 1.0
    assert s["dW1"][0, 0] == 0.0 and params["W1"][0, 0] == 1.0


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_reduced_precision_states_start_apart(state_dtype):
    """bfloat16 words and 8-bit codes are placed as float32 states are: each
    moment at its own offset in a page, apart from the parameter's."""
    p = np.ones(SKEW_MIN_BYTES, np.float32)  # its 8-bit codes: SKEW_MIN_BYTES
    for opt, want in [(fo.Adam({"W": p}, state_dtype=state_dtype), {1088, 2176}),
                      (fo.Lion({"W": p}, state_dtype=state_dtype), {1088})]:
        codes = [d["W"] for d in opt._state.values() if d["W"].size == p.size]
        assert {(a.ctypes.data - p.ctypes.data) % 4096 for a in codes} == want
        assert all(not a.any() and a.flags.c_contiguous and a.flags.writeable for a in codes)
    small = np.ones(1000, np.float32)
    opt = fo.Adam({"b": small}, state_dtype=state_dtype)
    small_states = [d["b"] for d in opt._state.values() if "b" in d]
    assert len(small_states) == 2 and all(a.base is None for a in small_states)


def test_zeros_beside_aligns_a_wider_dtype():
    buf = np.zeros(SKEW_MIN_BYTES + 64, np.uint8)
    off = (4 - buf.ctypes.data) % 8 + 8  # a float32 parameter at 4 mod 8
    p = buf[off:off + SKEW_MIN_BYTES].view(np.float32)
    s = zeros_beside(p, 0, SKEW_MIN_BYTES // 8, np.float64)
    assert s.flags.aligned and s.dtype == np.float64 and s.shape == (SKEW_MIN_BYTES // 8,)
    assert not s.any() and not np.shares_memory(s, p)
