"""Reduced-precision optimizer state (``state_dtype``): bitwise agreement of
every backend with the NumPy reference, codecs, checkpoints, memory, errors."""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import adam_lowp as L
from conftest import backend_variant, BACKEND_PARAMS
from helpers import assert_unchanged, snapshot
from lowp_common import check_failing_step_changes_nothing, lowp_model

FORMATS = [("bfloat16", "nearest"), ("bfloat16", "stochastic"),
           ("int8", "nearest"), ("int8", "stochastic")]
FORMAT_IDS = [f"{d}-{r}" for d, r in FORMATS]
#: Class and keywords: AdamW's decay, Adam's L2, maximize, clipping (gscale < 1).
SETTINGS = {
    "adam": (fo.Adam, {}),
    "adamw": (fo.AdamW, {"weight_decay": 0.05}),
    "adam-l2-max": (fo.Adam, {"weight_decay": 0.01, "maximize": True}),
    "adamw-clip": (fo.AdamW, {"max_grad_norm": 1.0}),
}




def _run(variant, fmt, setting, threads, steps=4):
    cls, kw = SETTINGS[setting]
    params, grads = lowp_model(steps=steps)
    fo.set_num_threads(threads)
    try:
        with backend_variant(variant):
            opt = cls(params, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1],
                      state_seed=11, **kw)
            for g in grads:
                opt.step(g)
    finally:
        fo.set_num_threads(1)
    return params, opt.state


_ref_cache = {}


def _reference(fmt, setting):
    key = (fmt, setting)
    if key not in _ref_cache:
        _ref_cache[key] = _run("numpy", fmt, setting, 1)
    return _ref_cache[key]


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", [b for b in BACKEND_PARAMS if b != "numpy"])
def test_backends_bitwise_equal_reference(variant, fmt, setting, threads):
    ref_p, ref_s = _reference(fmt, setting)
    p, s = _run(variant, fmt, setting, threads)
    for k in ref_p:
        assert ref_p[k].tobytes() == p[k].tobytes(), k
    assert ref_s.keys() == s.keys()
    for label in ref_s:
        for k in ref_s[label]:
            assert ref_s[label][k].tobytes() == s[label][k].tobytes(), (label, k)


def test_states_are_what_the_format_says():
    params, _ = lowp_model()
    opt = fo.Adam(params, state_dtype="int8")
    st = opt.state
    assert set(st) == {"exp_avg", "exp_avg_sq", "exp_avg_scale", "exp_avg_sq_scale"}
    for k, p in params.items():
        if p.size >= L.QMIN_ELEMENTS:
            assert st["exp_avg"][k].dtype == np.uint8
            assert st["exp_avg_scale"][k].shape == (-(-p.size // L.QBLOCK),)
        else:
            assert st["exp_avg"][k].dtype == np.float32 and k not in st["exp_avg_scale"]
    opt = fo.AdamW(params, state_dtype="bfloat16")
    assert all(a.dtype == np.uint16 for d in opt.state.values() for a in d.values())


def test_state_nbytes():
    p = {"w": np.zeros(1 << 20, np.float32), "b": np.zeros(1000, np.float32)}
    n = 1 << 20
    assert fo.Adam(p).state_nbytes == 8 * (n + 1000)
    assert fo.Adam(p, state_dtype="bfloat16").state_nbytes == 4 * (n + 1000)
    q8 = fo.Adam(p, state_dtype="int8").state_nbytes
    assert q8 == 2 * n + 2 * 4 * (n // 256) + 8 * 1000
    assert q8 / (n + 1000) <= 2.05


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_checkpoint_resumes_bit_identically(fmt, tmp_path):
    params, grads = lowp_model(steps=6)
    start = {k: v.copy(order="K") for k, v in params.items()}
    opt = fo.AdamW(params, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1], state_seed=5)
    for g in grads:
        opt.step(g)
    whole = {k: v.copy(order="K") for k, v in params.items()}

    params2 = {k: v.copy(order="K") for k, v in start.items()}
    opt2 = fo.AdamW(params2, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1], state_seed=5)
    for g in grads[:3]:
        opt2.step(g)
    np.savez(tmp_path / "ck.npz", **opt2.state_dict())
    saved = {k: v.copy(order="K") for k, v in params2.items()}
    opt3 = fo.AdamW(saved, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1], state_seed=5)
    opt3.load_state_dict(np.load(tmp_path / "ck.npz", allow_pickle=False))
    for g in grads[3:]:
        opt3.step(g)
    for k in whole:
        assert whole[k].tobytes() == saved[k].tobytes(), k


# (saved with, loaded into, the message): every setting of the state's format
# is checked by name, also where the state arrays alone could not tell (a
# model of small tensors keeps float32 state under int8; a seed or a rounding
# changes only the bits to come).
_FORMAT_MISMATCHES = [
    (dict(state_dtype="bfloat16"), dict(state_dtype="int8"),
     "state_dtype is 'bfloat16' in state_dict but 'int8' here"),
    (dict(state_dtype="int8"), dict(), "state_dtype is 'int8' in state_dict but None here"),
    (dict(), dict(state_dtype="int8"), "state_dtype is None in state_dict but 'int8' here"),
    (dict(state_dtype="int8", state_seed=1), dict(state_dtype="int8", state_seed=2),
     "state_seed is 1 in state_dict but 2 here"),
    (dict(state_dtype="int8"), dict(state_dtype="int8", state_rounding="nearest"),
     "state_rounding is 'stochastic' in state_dict but 'nearest' here"),
]


@pytest.mark.parametrize("small", [False, True], ids=["large", "small"])
@pytest.mark.parametrize("saved_with, loaded_into, message", _FORMAT_MISMATCHES)
def test_checkpoint_of_another_state_format_is_refused(saved_with, loaded_into, message, small):
    params, grads = lowp_model(steps=1)
    if small:  # every tensor under QMIN_ELEMENTS: float32 state either way
        params = {k: v.ravel()[:100].copy() for k, v in params.items()}
        grads = [{k: v.ravel()[:100].copy() for k, v in g.items()} for g in grads]
    saved = fo.Adam({k: v.copy() for k, v in params.items()}, **saved_with)
    saved.step(grads[0])
    opt = fo.Adam(params, **loaded_into)
    before = snapshot(*opt.state.values())
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(saved.state_dict())
    assert str(info.value) == message
    assert_unchanged(before, *opt.state.values())


def test_checkpoint_names_the_state_format():
    params, _ = lowp_model()
    sd = fo.Adam(params, state_dtype="int8", state_seed=2**32 + 7).state_dict()
    assert (sd["state_dtype"], sd["state_rounding"], sd["state_seed"]) == ("int8", "stochastic", 7)
    assert not any(k.startswith("state_") for k in fo.Adam(params).state_dict())
    # the seed is used modulo 2**32: an equivalent seed resumes
    fo.Adam(params, state_dtype="int8", state_seed=7).load_state_dict(sd)


def test_bad_arguments():
    p = {"w": np.zeros(10, np.float32)}
    with pytest.raises(ValueError, match="state_dtype"):
        fo.Adam(p, state_dtype="float16")
    with pytest.raises(ValueError, match="state_dtype"):
        fo.Adadelta(p, state_dtype="bfloat16")  # no reduced-precision form
    with pytest.raises(ValueError, match="amsgrad"):
        fo.Adam(p, amsgrad=True, state_dtype="int8")
    with pytest.raises(TypeError, match="float32"):
        fo.Adam({"w": np.zeros(10)}, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="state_rounding"):
        fo.Adam(p, state_dtype="int8", state_rounding="up")
    with pytest.raises(ValueError, match="state_rounding"):
        fo.Adam(p, state_rounding="stochastic")
    with pytest.raises(TypeError, match="state_seed"):
        fo.Adam(p, state_dtype="int8", state_seed=1.5)


@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_failing_step_changes_nothing(variant):
    check_failing_step_changes_nothing(variant, lambda p: fo.Adam(p, state_dtype="int8"))


# --- codecs -----------------------------------------------------------------------


def test_bf16_codec():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(100000) * 10.0 ** rng.uniform(-30, 30, 100000)).astype(np.float32)
    w = L.bf16_encode(x)
    y = L.bf16_decode(w)
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0 ** -8)  # 8 significant bits
    # nearest even: the decoded value is the nearest bfloat16 (ties even)
    assert np.array_equal(L.bf16_decode(L.bf16_encode(y)), y)
    assert np.isnan(L.bf16_decode(L.bf16_encode(np.array([np.nan], np.float32))))[0]
    # stochastic: unbiased in the mean (fixed counter bits, deterministic)
    v = np.full(1 << 16, 1.0 + 2.0 ** -12, np.float32)
    r = L.mix32(np.arange(v.size, dtype=np.uint32)) & np.uint32(0xFFFF)
    assert abs(float(L.bf16_decode(L.bf16_encode(v, r)).astype(np.float64).mean())
               - (1.0 + 2.0 ** -12)) < 2.0 ** -17


def _blocks(rng, nb=64):
    x = rng.standard_normal((nb, L.QBLOCK)) * 10.0 ** rng.uniform(-3, 3, (nb, L.QBLOCK))
    return x.astype(np.float32)


def test_q8_codec_error_bounds_per_block():
    rng = np.random.default_rng(2)
    m = _blocks(rng)
    scale, inv = L.block_absmax(m)
    assert np.array_equal(scale, np.abs(m).max(axis=1))
    dec = L.q8m_decode(L.q8m_encode(m, inv[:, None])).reshape(m.shape) * scale[:, None]
    big = np.abs(m) >= scale[:, None] * 2.0 ** -15
    # 3 mantissa bits, nearest: relative error <= 1/16 (+ rounding of y and
    # of the product); below the code range, absolute error < the smallest code
    assert np.all(np.abs(dec - m)[big] <= np.abs(m)[big] * (2.0 ** -4 + 2.0 ** -20))
    assert np.all(np.abs(dec - m)[~big] <= scale.repeat(L.QBLOCK).reshape(m.shape)[~big]
                  * 2.0 ** -15)
    assert np.array_equal(np.abs(dec).max(axis=1), scale)  # the block's max is exact
    s = np.abs(m)
    scale, inv = L.block_absmax(s)
    dec = L.q8v_decode(L.q8v_encode(s, inv[:, None])).reshape(s.shape) * scale[:, None]
    big = s >= scale[:, None] * 2.0 ** -15
    assert np.all(np.abs(dec - s)[big] <= s[big] * (2.0 ** -5 + 2.0 ** -20))
    assert np.all(dec > 0)  # code 0 of v is not 0


def test_q8_codes_zero_and_extremes():
    zero = np.zeros((1, L.QBLOCK), np.float32)
    scale, inv = L.block_absmax(zero)
    assert scale[0] == 0 and inv[0] == 0
    assert np.all(L.q8m_decode(L.q8m_encode(zero, inv[:, None])) * scale == 0)
    assert np.all(L.q8v_decode(L.q8v_encode(zero, inv[:, None])) * scale == 0)
    assert L.q8v_decode(np.array([0], np.uint8))[0] == np.float32(1.0625 * 2.0 ** -16)
    assert L.q8v_decode(np.array([255], np.uint8))[0] == 1.0
    assert L.q8m_decode(np.array([127, 255], np.uint8)).tolist() == [1.0, -1.0]


def test_q8_stochastic_rounding_is_unbiased():
    # The trap of round-to-nearest: a value between two codes always lands on
    # the same one.  Stochastic rounding lands on each with the right odds.
    x = np.full(1 << 16, 0.3, np.float32)
    inv = np.float32(1.0)
    rm, rv = L.q8_rounding_bits(12345, np.arange(x.size))
    m = L.q8m_decode(L.q8m_encode(x, inv, rm))
    s = L.q8v_decode(L.q8v_encode(x, inv, rv))
    assert abs(m.astype(np.float64).mean() - 0.3) < 2e-4
    assert abs(s.astype(np.float64).mean() - 0.3) < 2e-4
    near = L.q8m_decode(L.q8m_encode(x, inv))
    assert abs(near.astype(np.float64).mean() - 0.3) > 5e-3


def test_step_key_depends_on_seed_and_step():
    keys = {L.step_key(s, t) for s in range(4) for t in range(1, 5000)}
    assert len(keys) == 4 * 4999
    assert L.step_key(0, 1) == L.step_key(0, 1) and L.step_key(0, 2**40 + 1) != L.step_key(0, 1)
