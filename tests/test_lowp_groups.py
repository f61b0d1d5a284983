"""Reduced-precision state (``state_dtype``) over several parameter groups:
one kernel call per group, each counting its elements from the groups
before it, so that equal groups give the one-group optimizer's bits on every
backend; each group's own settings and step count; one check of the whole
step before any write; checkpoints; refusals."""

import os
import signal
import sys
import time

import numpy as np
import pytest

import fusedoptim as fo
from conftest import backend_variant, BACKEND_PARAMS
from helpers import assert_unchanged, snapshot
from lowp_common import check_failing_step_changes_nothing, lowp_model

FORMATS = [("bfloat16", "nearest"), ("bfloat16", "stochastic"),
           ("int8", "nearest"), ("int8", "stochastic")]
FORMAT_IDS = [f"{d}-{r}" for d, r in FORMATS]
#: Class and keywords: Adam's L2, AdamW's decay, a one-state family of each
#: codec (signed, sqrt) with clipping, so gscale < 1 reaches every group.
SETTINGS = {
    "adam": (fo.Adam, {"weight_decay": 0.01}),
    "adamw-clip": (fo.AdamW, {"weight_decay": 0.05, "max_grad_norm": 1.0}),
    "momentum-nesterov": (fo.SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop-clip": (fo.RMSProp, {"weight_decay": 0.01, "max_grad_norm": 1.0}),
}
#: Where lowp_model's ten parameters are split: three groups, the first
#: above Numba's parallel threshold (2 threads split it), the second
#: starting at element 33451 (stochastic rounding's count), the third one
#: small tensor (float32 state in the int8 format).
SPLITS = (7, 9)


def _groups(params, splits=SPLITS, extra=({}, {}, {})):
    names = list(params)
    bounds = (0, *splits, len(names))
    return [{"params": {n: params[n] for n in names[a:b]}, **x}
            for a, b, x in zip(bounds, bounds[1:], extra)]


def _copy(params):
    return {k: v.copy(order="K") for k, v in params.items()}


def _size(group):
    return sum(p.size for p in group["params"].values())


def _alone(cls, group, fmt, index_base=0, seed=11, **kw):
    """A one-group optimizer over ``group`` (its own settings) whose first
    element is element ``index_base`` of the step: a ZeRO shard's means
    (``LowpState.as_shard``), an independent count of the groups before."""
    kw = {**kw, **{k: v for k, v in group.items() if k != "params"}}
    opt = cls(group["params"], state_dtype=fmt[0], state_rounding=fmt[1], state_seed=seed,
              **kw)
    opt._lowp.as_shard(opt, index_base, {n: p.size for n, p in group["params"].items()})
    return opt


def _assert_same(a, b):
    """Parameters and every state array of two runs, byte for byte."""
    (pa, sa), (pb, sb) = a, b
    assert sa.keys() == sb.keys()
    assert_unchanged([pa, *sa.values()], pb, *(sb[label] for label in sa))


def _assert_group(alone, opt):
    """One-group run ``alone`` (parameters, state) equals the same
    parameters' part of optimizer ``opt``'s run, byte for byte."""
    params, state = alone
    mine = opt.parameters
    for n, p in params.items():
        assert p.tobytes() == mine[n].tobytes(), n
    full = opt.state
    for label, d in state.items():
        for n, a in d.items():
            assert a.tobytes() == full[label][n].tobytes(), (label, n)
    assert all(full[label].keys() & params.keys() == d.keys() for label, d in state.items())


def _run(variant, fmt, setting, threads, several, steps=4):
    cls, kw = SETTINGS[setting]
    params, grads = lowp_model(steps=steps)
    fo.set_num_threads(threads)
    try:
        with backend_variant(variant):
            opt = cls(_groups(params) if several else params, lr=1e-2, state_dtype=fmt[0],
                      state_rounding=fmt[1], state_seed=11, **kw)
            for g in grads:
                opt.step(g)
    finally:
        fo.set_num_threads(1)
    return params, opt.state


_ref_cache: dict = {}


def _reference(fmt, setting):
    key = (fmt, setting)
    if key not in _ref_cache:
        _ref_cache[key] = _run("numpy", fmt, setting, 1, several=False)
    return _ref_cache[key]


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_equal_groups_give_the_one_group_bits(variant, fmt, setting, threads, low_threshold):
    # Three groups of the same settings: the one-group reference's bits on
    # every backend and thread count (stochastic rounding counts elements
    # across the groups, the int8 format keeps small tensors in float32;
    # low_threshold: the compiled backend splits every group's call).
    _assert_same(_reference(fmt, setting),
                 _run(variant, fmt, setting, threads, several=True))


def test_equal_groups_state_nbytes_and_repr():
    params, _ = lowp_model()
    one = fo.AdamW(params, state_dtype="int8")
    several = fo.AdamW(_groups(params), state_dtype="int8")
    assert several.state_nbytes == one.state_nbytes
    assert repr(several) == ("AdamW(10 parameters in 3 groups, state_dtype='int8', "
                             "state_rounding='stochastic', state_seed=0, t=0)")


# --- each group's settings ------------------------------------------------------

#: Class, constructor keywords, each group's overrides: weight decay on the
#: matrices only (exclude_from_weight_decay), another lr, Adagrad's initial
#: value (encoded per group), Lion's decoupled decay.
DIFFERENT = {
    "adamw-exclude": (fo.AdamW, {"weight_decay": 0.05}, None),
    "adam-lr-betas": (fo.Adam, {}, ({"lr": 3e-2, "betas": (0.8, 0.99)}, {"eps": 1e-6}, {})),
    "rmsprop-lr": (fo.RMSProp, {}, ({"lr": 3e-3}, {"weight_decay": 0.01}, {"beta": 0.99})),
    "adagrad-init": (fo.Adagrad, {"lr_decay": 0.01},
                     ({"initial_accumulator_value": 0.1}, {}, {"lr": 0.1})),
    "lion-wd": (fo.Lion, {"lr": 1e-3}, ({"weight_decay": 0.1}, {}, {"lr": 3e-4})),
}


def _different_groups(setting, params):
    extra = DIFFERENT[setting][2]
    if extra is None:
        return fo.exclude_from_weight_decay(params)
    return _groups(params, extra=extra)


@pytest.mark.parametrize("setting", list(DIFFERENT))
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_each_group_steps_with_its_own_settings(variant, fmt, setting):
    # Against one one-group optimizer per group, each counting its elements
    # from the groups before it: each group's settings and rounding (a wrong
    # group's settings or element count changes the bits).
    cls, kw, _extra = DIFFERENT[setting]
    kw = {"lr": 1e-2, **kw}
    params, grads = lowp_model(steps=4)
    with backend_variant(variant):
        opt = cls(_different_groups(setting, _copy(params)), state_dtype=fmt[0],
                  state_rounding=fmt[1], state_seed=11, **kw)
        for g in grads:
            opt.step(g)
    base, alone = 0, []
    for group in _different_groups(setting, _copy(params)):
        with backend_variant("numpy"):
            o = _alone(cls, group, fmt, base, **kw)
            for g in grads:
                o.step(g)
        alone.append((group["params"], o.state))
        base += _size(group)
    for run in alone:
        _assert_group(run, opt)
    # not the settings of one group for all
    same = cls(_copy(params), state_dtype=fmt[0], state_rounding=fmt[1], state_seed=11, **kw)
    with backend_variant("numpy"):
        for g in grads:
            same.step(g)
    assert any(a.tobytes() != b.tobytes() for a, b in zip(same.parameters.values(),
                                                          opt.parameters.values()))


def test_stochastic_rounding_counts_elements_across_groups():
    # The second group's rounding continues the first group's count: the
    # same group stepped alone from element 0 differs.
    params, grads = lowp_model(steps=2)
    groups = _groups(params, splits=(5,))
    opt = fo.Adam(groups, state_dtype="bfloat16", state_rounding="stochastic")
    alone = fo.Adam(_copy(groups[1]["params"]), state_dtype="bfloat16",
                    state_rounding="stochastic")
    for g in grads:
        opt.step(g)
        alone.step(g)
    st = opt.state["exp_avg_sq"]
    assert any(st[n].tobytes() != a.tobytes() for n, a in alone.state["exp_avg_sq"].items())


# --- groups added later, checkpoints -------------------------------------------

ADDED = {
    "adamw": (fo.AdamW, {"weight_decay": 0.05}, {"weight_decay": 0.0, "lr": 3e-3}),
    "sgd-first": (fo.SGD, {"momentum": 0.9, "dampening": 0.5}, {"lr": 3e-3}),
    "adagrad": (fo.Adagrad, {"lr_decay": 0.01}, {"initial_accumulator_value": 0.2}),
}


def _added_run(setting, fmt, params, grads, cut=None, tmp_path=None):
    """Group 0 over p0..p4 for two steps, then a group over p5..p9 added
    (its own settings and step count), four more steps; with ``cut``, a
    checkpoint after ``cut`` steps, loaded into an optimizer rebuilt the same
    way, which takes the rest."""
    cls, kw, extra = ADDED[setting]
    names = list(params)

    def build(t_added):
        opt = cls({n: params[n] for n in names[:5]}, lr=1e-2, state_dtype=fmt[0],
                  state_rounding=fmt[1], state_seed=3, **kw)
        if t_added:
            opt.add_param_group({"params": {n: params[n] for n in names[5:]}, **extra})
        return opt

    opt = build(False)
    for t, g in enumerate(grads):
        if t == 2:
            opt.add_param_group({"params": {n: params[n] for n in names[5:]}, **extra})
        if t == cut:
            sd = opt.state_dict()
            np.savez(tmp_path / "ck.npz", **sd)
            opt = build(t >= 2)
            opt.load_state_dict(np.load(tmp_path / "ck.npz", allow_pickle=False))
        opt.step({n: g[n] for n in opt.parameters})
    return opt


@pytest.mark.parametrize("setting", list(ADDED))
@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_added_group_and_checkpoint_resume(variant, fmt, setting, tmp_path):
    params, grads = lowp_model(steps=6)
    start = _copy(params)
    with backend_variant("numpy"):
        ref = _added_run(setting, fmt, params, grads)
    assert ref.group_starts == [0, 2] and ref.t == 6
    for cut in (1, 4):  # before and after the group was added
        p = _copy(start)
        with backend_variant(variant):
            opt = _added_run(setting, fmt, p, grads, cut, tmp_path)
        assert opt.group_starts == [0, 2] and opt.t == 6
        _assert_same((params, ref.state), (p, opt.state))
    if fmt[1] == "nearest":
        # The added group on its own count (bias corrections, SGD's first
        # step): a one-group optimizer started when it was added (nearest
        # rounding: the step's key and the element count do not matter).
        cls, kw, extra = ADDED[setting]
        names = list(start)
        alone = {n: start[n].copy(order="K") for n in names[5:]}
        o = cls(alone, state_dtype=fmt[0], state_rounding=fmt[1],
                **{"lr": 1e-2, **kw, **extra})
        for g in grads[2:]:
            o.step({n: g[n] for n in alone})
        _assert_group((alone, o.state), ref)


def test_safetensors_checkpoint_of_several_groups(tmp_path):
    params, grads = lowp_model(steps=4)
    start = _copy(params)
    opt = fo.AdamW(fo.exclude_from_weight_decay(params), weight_decay=0.1, state_dtype="int8")
    for g in grads[:2]:
        opt.step(g)
    opt.save(tmp_path / "ck.safetensors", parameters=True)
    for g in grads[2:]:
        opt.step(g)
    again = _copy(start)
    opt2 = fo.AdamW(fo.exclude_from_weight_decay(again), weight_decay=0.1, state_dtype="int8")
    opt2.load(tmp_path / "ck.safetensors")
    for g in grads[2:]:
        opt2.step(g)
    _assert_same((params, opt.state), (again, opt2.state))


def test_checkpoint_records_the_order_of_every_group():
    params, grads = lowp_model(steps=1)
    opt = fo.Adam(_groups(params), state_dtype="int8")
    opt.step(grads[0])
    sd = opt.state_dict()
    assert sd["params"].tolist() == list(params)
    assert sd["groups"] == 3
    # other groups over the same parameters: refused, nothing changed
    other = fo.Adam(_groups(_copy(params), splits=(2, 7)), state_dtype="int8")
    before = snapshot(*other.state.values())
    with pytest.raises(ValueError, match="param_groups"):
        other.load_state_dict(sd)
    assert_unchanged(before, *other.state.values())
    assert other.t == 0


# --- failing steps, Ctrl-C --------------------------------------------------------


@pytest.mark.parametrize("cls, kw", [(fo.AdamW, {}), (fo.Momentum, {"lr": 0.1})])
@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_failing_step_in_a_later_group_changes_nothing(variant, cls, kw):
    # p9 (a wrong shape) and p5 (missing) are in later groups: the first
    # group's call must not have run.
    check_failing_step_changes_nothing(
        variant, lambda p: cls(_groups(p), state_dtype="int8", **kw))


@pytest.mark.parametrize("variant", BACKEND_PARAMS)
def test_gradients_are_looked_up_among_every_group(variant):
    # grads["decoder"] is decoder's gradient, never ecoder's "d" + name, even
    # though the two are in different groups.
    rng = np.random.default_rng(1)
    p = {"decoder": rng.standard_normal(300).astype(np.float32),
         "ecoder": rng.standard_normal(200).astype(np.float32)}
    g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p.items()}
    one, several = _copy(p), _copy(p)
    with backend_variant(variant):
        fo.Adam(one, state_dtype="bfloat16").step(g)
        fo.Adam([{"params": {"decoder": several["decoder"]}},
                 {"params": {"ecoder": several["ecoder"]}}], state_dtype="bfloat16").step(g)
    assert_unchanged([one], several)


def _interrupt_after(opt, group_index, run_it):
    """Make the call of group ``group_index`` raise KeyboardInterrupt, after
    (a compiled kernel's Ctrl-C) or instead of (an interpreted step's) its
    kernel."""
    lowp = opt._lowp
    real = type(lowp).group_call
    calls = []

    def group_call(*args):
        kernel, kargs = real(lowp, *args)
        index = len(calls)
        calls.append(index)

        def interrupted(*a):
            if index == group_index:
                if run_it:
                    kernel(*a)
                raise KeyboardInterrupt
            kernel(*a)
        return interrupted, kargs

    lowp.group_call = group_call


@pytest.mark.parametrize("variant", ["cython", "numba"])
def test_ctrl_c_in_a_compiled_step_lands_after_every_group(variant):
    if variant not in BACKEND_PARAMS:
        pytest.skip(f"{variant} not available")
    params, grads = lowp_model(steps=1)
    done = _copy(params)
    with backend_variant(variant):
        ref = fo.AdamW(_groups(done), state_dtype="int8")
        ref.step(grads[0])
        opt = fo.AdamW(_groups(params), state_dtype="int8")
        _interrupt_after(opt, 0, run_it=True)
        with pytest.raises(KeyboardInterrupt):
            opt.step(grads[0])
    assert opt.t == 1  # done and counted, every group
    _assert_same((done, ref.state), (params, opt.state))


def test_ctrl_c_in_an_interpreted_step_writes_nothing():
    params, grads = lowp_model(steps=2)
    with backend_variant("numpy"):
        opt = fo.AdamW(_groups(params), state_dtype="bfloat16")
        opt.step(grads[0])
        before = snapshot(params, *opt.state.values())
        _interrupt_after(opt, 2, run_it=False)
        with pytest.raises(KeyboardInterrupt):
            opt.step(grads[1])
    assert opt.t == 1
    assert_unchanged(before, params, *opt.state.values())


# --- refusals ---------------------------------------------------------------------


def test_several_groups_are_accepted_and_refusals_stay():
    a = {"a": np.zeros(3, np.float32)}
    b = {"b": np.zeros(3, np.float32)}
    fo.Momentum([{"params": a}, {"params": b}], lr=0.1, state_dtype="int8")
    opt = fo.AdamW(fo.exclude_from_weight_decay({"W": np.zeros((4, 4), np.float32), **b}),
                   state_dtype="bfloat16")
    opt.add_param_group({"params": {"c": np.zeros(3, np.float32)}, "lr": 0.1})
    assert len(opt.param_groups) == 3 and set(opt.state["exp_avg"]) == {"W", "b", "c"}
    # what the format does not support is refused in any group, as before
    with pytest.raises(ValueError, match=r"^state_dtype='int8' does not support amsgrad=True$"):
        fo.Adam([{"params": a}, {"params": b, "amsgrad": True}], state_dtype="int8")
    with pytest.raises(TypeError, match=r"^state_dtype='int8' needs float32 parameters; "
                                        r"parameters\['b'\] is float64$"):
        fo.Adam([{"params": a}, {"params": {"b": np.zeros(3)}}], state_dtype="int8")
    with pytest.raises(ValueError, match="momentum > 0"):
        fo.SGD([{"params": a, "momentum": 0.9}, {"params": b}], lr=0.1, state_dtype="int8")
    # and by add_param_group, which then adds nothing
    before = snapshot(*opt.state.values())
    with pytest.raises(TypeError, match=r"^state_dtype='bfloat16' needs float32 parameters; "
                                        r"parameters\['d'\] is float64$"):
        opt.add_param_group({"params": {"d": np.zeros(3)}})
    with pytest.raises(ValueError, match=r"^state_dtype='bfloat16' does not support "
                                         r"amsgrad=True$"):
        opt.add_param_group({"params": {"d": np.zeros(3, np.float32)}, "amsgrad": True})
    m = fo.RMSProp(dict(a), state_dtype="bfloat16")
    with pytest.raises(ValueError, match="centered=False"):
        m.add_param_group({"params": dict(b), "centered": True})
    assert len(opt.param_groups) == 3 and len(m.param_groups) == 1
    assert "d" not in opt.parameters and "b" not in m.parameters
    assert_unchanged(before, *opt.state.values())
    assert set(m.state["square_avg"]) == {"a"}
    opt.step({n: np.ones_like(p) for n, p in opt.parameters.items()})


@pytest.mark.skipif(sys.platform != "linux", reason="signals sent through libc (Linux)")
def test_interrupts_at_random_moments_leave_a_grouped_step_whole_or_absent():
    """Ctrl-C (SIGALRM whose handler raises, while a step runs) at random
    moments of steps of one call per group, on a compiled backend: the step
    is counted with every group written, or neither (an interrupt between
    two groups' calls, or before the first, left the step counted with some
    or none written: 86 of 2338 interrupted steps).  The signals come from a
    thread that waits and sends through ctypes, which releases the GIL: they
    then land where the interpreter checks for them, the windows at issue."""
    import ctypes
    import threading
    from conftest import AVAILABLE
    if "cython" not in AVAILABLE:
        pytest.skip("the cython backend is not under test")
    libc = ctypes.CDLL(None)
    p = {f"p{i}": np.zeros(64, np.float32) for i in range(3)}
    opt = fo.Adam([{"params": {k: v}} for k, v in p.items()], lr=1.0, state_dtype="bfloat16")
    g = {k: np.ones(64, np.float32) for k in p}
    stepping, stop, bad, hits = False, False, [], 0

    def interrupt(signum, frame):
        if stepping:
            raise KeyboardInterrupt

    def shooter():
        rng, pid = np.random.default_rng(3), os.getpid()
        while not stop:
            libc.usleep(int(rng.integers(20, 400)))
            libc.kill(pid, signal.SIGALRM)

    old = signal.signal(signal.SIGALRM, interrupt)
    thread = threading.Thread(target=shooter, daemon=True)
    try:
        with fo.use_backend("cython"):
            thread.start()
            end = time.perf_counter() + 3.0
            while time.perf_counter() < end:
                t0, before = opt.t, [a.copy() for a in p.values()]
                try:
                    stepping = True
                    opt.step(g)
                    stepping = False
                except KeyboardInterrupt:
                    stepping = False
                    hits += 1
                    wrote = [not np.array_equal(b, a) for b, a in zip(before, p.values())]
                    if wrote != [opt.t != t0] * len(p):
                        bad.append((opt.t != t0, wrote))
    finally:
        stop = True
        thread.join()
        signal.signal(signal.SIGALRM, old)
    assert not bad, f"{len(bad)} of {hits} interrupted steps: {bad[:5]}"
