"""Reduced-precision state of the one-state families (Momentum, SGD with
momentum, RMSProp, Adagrad, Lion): bitwise agreement of every backend with
the NumPy reference at 1 and 2 threads and with the SIMD loops off, the
states' layout and bytes, checkpoints, refusals."""

import functools

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim.families import adam_lowp as L
from fusedoptim.families import lowp_onestate as S
from conftest import backend_variant, BACKEND_PARAMS
from helpers import assert_unchanged, snapshot
from lowp_common import check_failing_step_changes_nothing, lowp_model

FORMATS = [("bfloat16", "nearest"), ("bfloat16", "stochastic"),
           ("int8", "nearest"), ("int8", "stochastic")]
FORMAT_IDS = [f"{d}-{r}" for d, r in FORMATS]
#: Class, keywords, state label: each family's paths (Nesterov, dampening, L2,
#: maximize, clipping (gscale < 1), eps inside/outside, Lion's decay).
SETTINGS = {
    "momentum": (fo.Momentum, {"beta": 0.9}, "velocity"),
    "sgd-nesterov-l2-max": (fo.SGD, {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01,
                                     "maximize": True}, "momentum_buffer"),
    "sgd-damp-clip": (fo.SGD, {"momentum": 0.8, "dampening": 0.1, "max_grad_norm": 1.0},
                      "momentum_buffer"),
    "rmsprop": (fo.RMSProp, {}, "square_avg"),
    "rmsprop-torch-l2-clip": (fo.RMSProp, {"beta": 0.99, "eps_inside_sqrt": False,
                                           "weight_decay": 0.01, "max_grad_norm": 1.0},
                              "square_avg"),
    # maximize: the negated gradient is squared and divided, and the loops
    # take eps_inside as a literal (a compiler must not fold the negation
    # into either formula: a NaN gradient's sign reaches the parameter)
    "rmsprop-l2-max": (fo.RMSProp, {"weight_decay": 0.01, "maximize": True}, "square_avg"),
    "rmsprop-torch-max": (fo.RMSProp, {"eps_inside_sqrt": False, "maximize": True},
                          "square_avg"),
    "adagrad": (fo.Adagrad, {"lr_decay": 0.01, "weight_decay": 0.01,
                             "initial_accumulator_value": 0.1}, "sum"),
    "lion-wd-max": (fo.Lion, {"weight_decay": 0.1, "maximize": True}, "exp_avg"),
    "lion-clip": (fo.Lion, {"max_grad_norm": 1.0}, "exp_avg"),
}




def _make(setting, params, fmt, seed=11):
    cls, kw, _label = SETTINGS[setting]
    return cls(params, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1],
               state_seed=seed, **kw)


def _run(variant, fmt, setting, threads, steps=4):
    params, grads = lowp_model(steps=steps)
    fo.set_num_threads(threads)
    try:
        with backend_variant(variant):
            opt = _make(setting, params, fmt)
            for g in grads:
                opt.step(g)
    finally:
        fo.set_num_threads(1)
    return params, opt.state


@functools.lru_cache(maxsize=None)
def _reference(fmt, setting):
    return _run("numpy", fmt, setting, 1)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", [b for b in BACKEND_PARAMS if b != "numpy"])
def test_backends_bitwise_equal_reference(variant, fmt, setting, threads):
    ref_p, ref_s = _reference(fmt, setting)
    p, s = _run(variant, fmt, setting, threads)
    assert ref_s.keys() == s.keys()
    # the parameters and every state array, byte for byte
    assert_unchanged([ref_p, *ref_s.values()], p, *(s[label] for label in ref_s))


@pytest.mark.parametrize("setting", ["momentum", "rmsprop", "adagrad", "lion-wd-max"])
def test_small_tensors_take_the_float32_update(setting):
    # int8 mode keeps float32 state under QMIN_ELEMENTS: bit for bit the
    # float32-state optimizer there.
    params, grads = lowp_model(steps=3)
    cls, kw, label = SETTINGS[setting]
    small = {k: v for k, v in params.items() if v.size < L.QMIN_ELEMENTS}
    a = {k: v.copy(order="K") for k, v in small.items()}
    b = {k: v.copy(order="K") for k, v in small.items()}
    oa = cls(a, lr=1e-2, state_dtype="int8", **kw)
    ob = cls(b, lr=1e-2, **kw)
    for g in grads:
        oa.step({k: g[k] for k in small})
        ob.step({k: g[k] for k in small})
    for k in small:
        assert a[k].tobytes() == b[k].tobytes(), k
        assert oa.state[label][k].tobytes() == ob.state[label][k].ravel(order="K").tobytes()


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_states_are_what_the_format_says(setting):
    params, _ = lowp_model()
    label = SETTINGS[setting][2]
    st = _make(setting, params, ("int8", None)).state
    assert set(st) == {label, label + "_scale"}
    for k, p in params.items():
        if p.size >= L.QMIN_ELEMENTS:
            assert st[label][k].dtype == np.uint8
            assert st[label + "_scale"][k].shape == (-(-p.size // L.QBLOCK),)
        else:
            assert st[label][k].dtype == np.float32 and k not in st[label + "_scale"]
    st = _make(setting, params, ("bfloat16", None)).state
    assert set(st) == {label} and all(a.dtype == np.uint16 for a in st[label].values())


@pytest.mark.parametrize("setting", ["momentum", "rmsprop", "adagrad", "lion-clip"])
def test_state_nbytes(setting):
    cls, kw, _label = SETTINGS[setting]
    kw = dict(kw, lr=0.1)
    p = {"w": np.zeros(1 << 20, np.float32), "b": np.zeros(1000, np.float32)}
    n = 1 << 20
    assert cls(p, **kw).state_nbytes == 4 * (n + 1000)
    assert cls(p, state_dtype="bfloat16", **kw).state_nbytes == 2 * (n + 1000)
    q8 = cls(p, state_dtype="int8", **kw).state_nbytes
    assert q8 == n + 4 * (n // 256) + 4 * 1000
    assert q8 / (n + 1000) <= 1.03


def test_adagrad_initial_value_is_encoded():
    p = {"w": np.zeros(5000, np.float32), "b": np.zeros(10, np.float32)}
    for fmt, tol in (("bfloat16", 2.0 ** -8), ("int8", 2.0 ** -20)):
        opt = fo.Adagrad(p, initial_accumulator_value=0.3, state_dtype=fmt)
        st = opt.state
        decl = S.DECLS["adagrad"]
        for k in p:
            x = S.decode(decl, st["sum"][k], st.get("sum_scale", {}).get(k))
            assert np.all(np.abs(x - 0.3) <= 0.3 * tol), (fmt, k)


@pytest.mark.parametrize("setting", ["sgd-nesterov-l2-max", "rmsprop", "adagrad", "lion-wd-max"])
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_checkpoint_resumes_bit_identically(fmt, setting, tmp_path):
    params, grads = lowp_model(steps=6)
    start = {k: v.copy(order="K") for k, v in params.items()}
    opt = _make(setting, params, fmt, seed=5)
    for g in grads:
        opt.step(g)
    whole = {k: v.copy(order="K") for k, v in params.items()}

    params2 = {k: v.copy(order="K") for k, v in start.items()}
    opt2 = _make(setting, params2, fmt, seed=5)
    for g in grads[:3]:
        opt2.step(g)
    np.savez(tmp_path / "ck.npz", **opt2.state_dict())
    saved = {k: v.copy(order="K") for k, v in params2.items()}
    opt3 = _make(setting, saved, fmt, seed=5)
    opt3.load_state_dict(np.load(tmp_path / "ck.npz", allow_pickle=False))
    for g in grads[3:]:
        opt3.step(g)
    for k in whole:
        assert whole[k].tobytes() == saved[k].tobytes(), k
    for label, d in opt.state.items():
        for k in d:
            assert d[k].tobytes() == opt3.state[label][k].tobytes(), (label, k)


def test_checkpoint_of_another_precision_is_refused():
    params, _ = lowp_model()
    sd = fo.Momentum(params, lr=0.1, state_dtype="bfloat16").state_dict()
    opt = fo.Momentum(params, lr=0.1, state_dtype="int8")
    before = snapshot(*opt.state.values())
    with pytest.raises((TypeError, ValueError, KeyError)):
        opt.load_state_dict(sd)
    assert_unchanged(before, *opt.state.values())


def test_refusals():
    p = {"w": np.zeros(10, np.float32)}
    with pytest.raises(ValueError, match="momentum > 0"):
        fo.SGD(p, lr=0.1, state_dtype="int8")
    with pytest.raises(ValueError, match="momentum > 0"):
        fo.GD(p, lr=0.1, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="centered=False"):
        fo.RMSProp(p, centered=True, state_dtype="int8")
    with pytest.raises(ValueError, match="momentum=0"):
        fo.RMSProp(p, momentum=0.9, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="not Adadelta"):
        fo.Adadelta(p, state_dtype="int8")
    with pytest.raises(TypeError, match="float32"):
        fo.Momentum({"w": np.zeros(10)}, lr=0.1, state_dtype="int8")
    # every group's settings (several groups: tests/test_lowp_groups.py)
    with pytest.raises(ValueError, match="momentum > 0"):
        fo.SGD([{"params": {"a": np.zeros(3, np.float32)}, "momentum": 0.9},
                {"params": {"b": np.zeros(3, np.float32)}}], lr=0.1, state_dtype="int8")
    opt = fo.SGD(dict(p), lr=0.1, momentum=0.9, state_dtype="int8")
    with pytest.raises(ValueError, match="momentum > 0"):
        opt.add_param_group({"params": {"c": np.zeros(3, np.float32)}, "momentum": 0.0})


@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_setting_changed_to_unsupported_fails_cleanly(variant):
    # A group setting changed after construction to one without a
    # reduced-precision form: the step raises and changes nothing.
    params, grads = lowp_model(steps=2)
    with backend_variant(variant):
        opt = fo.SGD(params, lr=0.1, momentum=0.9, state_dtype="int8")
        opt.step(grads[0])
        before = snapshot(params, *opt.state.values())
        opt.param_groups[0]["momentum"] = 0.0
        with pytest.raises(ValueError, match="momentum > 0"):
            opt.step(grads[1])
    assert_unchanged(before, params, *opt.state.values())
    assert opt.t == 1


@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_failing_step_changes_nothing(variant):
    check_failing_step_changes_nothing(variant, lambda p: fo.RMSProp(p, state_dtype="int8"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("setting", ["sgd-nesterov-l2-max", "rmsprop", "rmsprop-torch-l2-clip",
                                     "rmsprop-l2-max", "rmsprop-torch-max", "adagrad",
                                     "lion-wd-max"])
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_nonfinite_gradients_bitwise(fmt, setting):
    # NaN, infinities, the largest floats, -0.0 and an all-zero block: the
    # codecs' edge cases (a NaN poisons its block, as in float32 state).
    cls, kw, _label = SETTINGS[setting]
    kw = {k: v for k, v in kw.items() if k != "max_grad_norm"}
    out = {}
    # The reference first, whichever backends this run tests.
    for variant in dict.fromkeys(("numpy", *BACKEND_PARAMS)):
        rng = np.random.default_rng(0)
        p = {"w": rng.standard_normal(9000).astype(np.float32)}
        with backend_variant(variant):
            opt = cls(p, lr=0.01, state_dtype=fmt[0], state_rounding=fmt[1], **kw)
            for _ in range(3):
                g = rng.standard_normal(9000).astype(np.float32)
                g[[5, 300, 7000, 10, 600]] = [np.nan, np.inf, -np.inf, 3e38, -0.0]
                g[1024:1280] = 0
                opt.step({"w": g})
        out[variant] = [p["w"].tobytes()] + [a.tobytes() for d in opt.state.values()
                                             for a in d.values()]
    for variant in out:
        assert out[variant] == out["numpy"], variant


@pytest.mark.parametrize("fmt", [("bfloat16", "stochastic"), ("int8", "stochastic")],
                         ids=["bfloat16", "int8"])
@pytest.mark.parametrize("cls", [fo.Adam, fo.Lion, fo.Momentum], ids=lambda c: c.__name__)
@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_shard_pieces_step_as_the_whole(variant, fmt, cls):
    # distributed.ShardedOptimizer steps pieces of the whole step's tensors
    # (cut 4096 elements in): as_shard (the kernels' index_base, int8 by the
    # whole tensor's size) makes every piece round and code as the whole does.
    rng = np.random.default_rng(3)
    whole = {"a": rng.standard_normal(300).astype(np.float32),
             "w": rng.standard_normal(6000).astype(np.float32)}
    cuts = [("a", 0, 300, 0), ("w", 0, 4096, 0), ("w", 4096, 6000, 1)]
    parts = [{n: whole[n][a:b].copy() for n, a, b, r in cuts if r == rank} for rank in (0, 1)]
    with backend_variant(variant):
        ref = cls(whole, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1], state_seed=4)
        opts = [cls(p, lr=1e-2, state_dtype=fmt[0], state_rounding=fmt[1], state_seed=4)
                for p in parts]
        for o, base in zip(opts, (0, 4396)):
            o._lowp.as_shard(o, base, {n: whole[n].size for n in o.parameters})
        for t in range(3):
            g = {n: np.random.default_rng([t]).standard_normal(p.size).astype(np.float32)
                 for n, p in whole.items()}
            for rank, o in enumerate(opts):
                o.step({n: g[n][a:b] for n, a, b, r in cuts if r == rank})
            ref.step(g)
    for label, d in ref.state.items():
        for n, want in d.items():
            got = np.concatenate([o.state[label][n] for o in opts if n in o.state[label]])
            assert got.tobytes() == want.tobytes(), (label, n)
    for n, want in whole.items():
        got = np.concatenate([p[n] for p in parts if n in p])
        assert got.tobytes() == want.tobytes(), n
