"""Optimizer classes: checkpoints (resume bit for bit through dicts and ``.npz``
files, a tampered state dict refused before anything changes, learning-rate
restore rules) and Adagrad's own options and checkpoints."""

import pathlib
import runpy

import numpy as np
import pytest

import fusedoptim as fo
from helpers import assert_bitwise, assert_unchanged, snapshot
from optimizers_common import (
    CONFIGS, CONFIG_IDS, DTYPES, assert_same_run, copy_params, make_grads, make_params, run)


# --- checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("k", [0, 5])
@pytest.mark.parametrize("via_file", [False, True], ids=["dict", "npz"])
@pytest.mark.parametrize("schedule", [False, True], ids=["float", "schedule"])
def test_resume_is_bit_identical(backend, tmp_path, cls, kw, k, via_file, schedule):
    rng = np.random.default_rng(9)
    p0 = make_params(rng, np.float32)
    grads = [make_grads(p0, rng) for _ in range(12)]
    grads[7]["dW1"][0, 0] = np.nan  # one skipped step on each side of k
    grads[2]["ds"][()] = np.inf
    if schedule:
        kw = dict(kw, lr=fo.CosineDecay(0.05, 10, alpha=0.1, warmup_target=0.1,
                                       warmup_steps=3))
    extra = dict(max_grad_norm=3.0, skip_nonfinite=True)

    pa = copy_params(p0)
    a = run(cls, kw, pa, grads, **extra)

    pb = copy_params(p0)
    b = run(cls, kw, pb, grads[:k], **extra)
    sd = b.state_dict()
    saved_params = copy_params(pb)
    if via_file:
        np.savez(tmp_path / "opt.npz", **sd)
        np.savez(tmp_path / "params.npz", **pb)
        sd = np.load(tmp_path / "opt.npz", allow_pickle=False)
        saved_params = dict(np.load(tmp_path / "params.npz", allow_pickle=False))
    b.step(grads[k])  # the checkpoint is a snapshot: later steps do not change it

    pc = {name: np.array(saved_params[name], order="K") for name in p0}
    pc["F"] = np.asfortranarray(pc["F"])
    c = cls(pc, **dict(kw, lr=0.123 if not schedule else kw["lr"]), **extra)
    c.load_state_dict(sd)
    assert (c.lr == a.lr) if not schedule else (c.lr is kw["lr"])
    for g in grads[k:]:
        c.step(g)
    assert_same_run(pa, a, pc, c)
    assert c.skipped_steps == a.skipped_steps == 2


def test_state_dict_contents():
    p = {"W1": np.ones((2, 3), np.float32), "b/1": np.ones(2, np.float32)}
    opt = fo.Adam(p, lr=0.01, amsgrad=True, max_grad_norm=1.0)
    opt.step({"W1": np.ones((2, 3), np.float32), "b/1": np.ones(2, np.float32)})
    sd = opt.state_dict()
    assert sd["optimizer"] == "Adam" and sd["t"] == 1 and sd["skipped_steps"] == 0
    assert sd["lr"] == 0.01 and sd["hp/beta1"] == 0.9 and sd["hp/amsgrad"] is True
    assert sd["hp/max_grad_norm"] == 1.0 and sd["hp/skip_nonfinite"] is False
    assert sd["state/max_exp_avg_sq/b/1"].dtype == np.float32
    assert sum(key.startswith("state/") for key in sd) == 6
    for v in sd.values():
        assert isinstance(v, (np.ndarray, str, bool, int, float))
    sd["state/exp_avg/W1"][...] = 7.0
    assert not np.any(opt.state["exp_avg"]["W1"] == 7.0)
    assert "lr" not in fo.GD(p, lr=fo.ExponentialDecay(0.1, 1, 0.5)).state_dict()
    assert "hp/max_grad_norm" not in fo.GD(p, lr=0.1).state_dict()


def _tamper(sd, how):
    sd = dict(sd)
    if how == "missing":
        del sd["state/exp_avg_sq/b1"]
    elif how == "extra":
        sd["state/exp_avg/zzz"] = np.zeros(2)
    elif how == "shape":
        sd["state/exp_avg/W1"] = np.zeros((3, 4))
    elif how == "dtype":
        sd["state/exp_avg/W1"] = sd["state/exp_avg/W1"].astype(np.float32)
    elif how == "not_array":
        sd["state/exp_avg/W1"] = 1.0
    elif how == "kind":
        sd["optimizer"] = "AdamW"
    elif how == "hp":
        sd["hp/beta2"] = 0.99
    elif how == "flag":
        sd["hp/amsgrad"] = False
    elif how == "no_clip":
        del sd["hp/max_grad_norm"]
    elif how == "t_negative":
        sd["t"] = -1
    elif how == "t_float":
        sd["t"] = np.float64(3.0)
    elif how == "lr":
        sd["lr"] = -0.5
    elif how == "not_mapping":
        sd = list(sd.items())
    return sd


@pytest.mark.parametrize("how,exc,match", [
    ("missing", KeyError, r"state_dict has no 'state/exp_avg_sq/b1'"),
    ("extra", ValueError, r"unexpected key 'state/exp_avg/zzz'"),
    ("shape", ValueError, r"state_dict\['state/exp_avg/W1'\] has shape \(3, 4\)"),
    ("dtype", TypeError, r"has dtype float32 but this optimizer's state array has float64"),
    ("not_array", TypeError, r"must be a numpy.ndarray"),
    ("kind", ValueError, r"state_dict is from 'AdamW', not 'Adam'"),
    ("hp", ValueError, r"beta2 is 0.99 in state_dict but 0.999 here"),
    ("flag", ValueError, r"amsgrad is False in state_dict but True here"),
    ("no_clip", ValueError, r"max_grad_norm is None in state_dict but 5.0 here"),
    ("t_negative", ValueError, r"state_dict\['t'\] must be >= 0"),
    ("t_float", TypeError, r"state_dict\['t'\] must be an integer"),
    ("lr", ValueError, r"lr'\] must be >= 0"),
    ("not_mapping", TypeError, r"state_dict must be a mapping"),
])
def test_load_state_dict_validates_first(backend, how, exc, match):
    rng = np.random.default_rng(10)
    src = fo.Adam(make_params(rng), lr=0.01, amsgrad=True, max_grad_norm=5.0)
    for _ in range(3):
        src.step(make_grads(src.parameters, rng))
    params = make_params(rng)
    opt = fo.Adam(params, lr=0.02, amsgrad=True, max_grad_norm=5.0)
    opt.step(make_grads(params, rng))
    before = snapshot(params, *opt.state.values())
    norm = opt.last_grad_norm
    with pytest.raises(exc, match=match):
        opt.load_state_dict(_tamper(src.state_dict(), how))
    assert_unchanged(before, params, *opt.state.values())
    assert (opt.t, opt.skipped_steps, opt.lr, opt.last_grad_norm) == (1, 0, 0.02, norm)


def _loaded_into(sd, opt):
    """Load ``sd`` into ``opt``, which must raise and change nothing; the
    error's message."""
    params = opt.parameters
    opt.step(make_grads(params, np.random.default_rng(1), prefix=""))
    before = snapshot(params, *opt.state.values())
    state = (opt.t, opt.skipped_steps, opt.last_grad_norm,
             [g["lr"] for g in opt.param_groups])
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    assert_unchanged(before, params, *opt.state.values())
    assert (opt.t, opt.skipped_steps, opt.last_grad_norm,
            [g["lr"] for g in opt.param_groups]) == state
    return str(info.value)


def _groups_of(params, n):
    names = list(params)
    return [{"params": {k: params[k] for k in names[i::n]}} for i in range(n)]


@pytest.mark.parametrize("saved, here", [(1, 2), (2, 1), (2, 3), (3, 2)])
def test_group_count_mismatch_is_one_sentence_both_ways(saved, here):
    rng = np.random.default_rng(11)
    sd = fo.Adam(_groups_of(make_params(rng), saved), lr=0.01).state_dict()
    opt = fo.Adam(_groups_of(make_params(rng), here), lr=0.02)
    plural = "" if saved == 1 else "s"
    assert _loaded_into(sd, opt) == (f"state_dict has {saved} parameter group{plural} "
                                     f"but this optimizer has {here}")


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("saved, here", [(None, 5.0), (5.0, None), (5.0, 0.5)])
def test_max_grad_norm_mismatch_is_one_sentence_both_ways(groups, saved, here):
    """state_dict leaves max_grad_norm out when it is None: a missing key
    reads as None, refused like any other difference."""
    rng = np.random.default_rng(12)
    sd = fo.Adam(_groups_of(make_params(rng), groups), lr=0.01,
                 max_grad_norm=saved).state_dict()
    assert ("hp/max_grad_norm" in sd) is (saved is not None)
    opt = fo.Adam(_groups_of(make_params(rng), groups), lr=0.02, max_grad_norm=here)
    assert _loaded_into(sd, opt) == f"max_grad_norm is {saved!r} in state_dict but {here!r} here"


def test_a_missing_hyperparameter_is_still_a_missing_key():
    # Only the settings state_dict leaves out when None may be absent.
    sd = fo.Adam({"w": np.ones(2)}).state_dict()
    del sd["hp/beta2"]
    with pytest.raises(KeyError, match="state_dict has no 'hp/beta2'"):
        fo.Adam({"w": np.ones(2)}).load_state_dict(sd)


def test_trainer_example_runs(backend, capsys):
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "trainer.py"
    runpy.run_path(str(path), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    first, last = lines[0].split(), lines[-2].split()
    loss = {w: float(v) for w, v in zip(first[::2], first[1::2]) if w == "loss"}
    final = {w: float(v) for w, v in zip(last[::2], last[1::2]) if w in ("loss", "acc")}
    assert final["loss"] < loss["loss"] / 10 and final["acc"] > 0.95
    assert lines[-1].startswith(
        f"restored at step 320, skipped 0, 2 groups, backend {backend.split('-')[0]}")


def test_lr_restore_rules():
    p = {"w": np.ones(2)}
    schedule = fo.PiecewiseConstantDecay([3], [0.1, 0.01])
    saved_float = fo.SGD(p, lr=0.5).state_dict()
    saved_schedule = fo.SGD(p, lr=schedule).state_dict()
    opt = fo.SGD({"w": np.ones(2)}, lr=schedule)
    opt.load_state_dict(saved_float)  # a saved float replaces the schedule
    assert opt.lr == 0.5
    opt = fo.SGD({"w": np.ones(2)}, lr=0.25)
    opt.load_state_dict(saved_schedule)  # nothing saved: the current lr stays
    assert opt.lr == 0.25


# --- Adagrad ------------------------------------------------------------------


def test_adagrad_lr_decay_and_initial_accumulator(backend):
    """lr_t = lr / (1 + (t - 1) * lr_decay); s starts at initial_accumulator_value."""
    p = {"w": np.array([1.0, -2.0])}
    opt = fo.Adagrad(p, lr=1.0, lr_decay=1.0, initial_accumulator_value=5.0, eps=0.0)
    assert opt.lr_decay == 1.0 and opt.initial_accumulator_value == 5.0
    g = np.array([2.0, -1.0])
    want_p, want_s = p["w"].copy(), np.full(2, 5.0)
    for t in range(1, 4):
        opt.step({"w": g})
        lr_t = 1.0 / (1.0 + (t - 1) * 1.0)
        want_s = want_s + g * g
        want_p = want_p - lr_t * (g / (np.sqrt(want_s) + 0.0))
        assert_bitwise(opt.state["sum"]["w"], want_s)
        assert_bitwise(p["w"], want_p)
    assert_bitwise(opt.state["sum"]["w"], np.array([17.0, 8.0]))
    # step 1 moved by exactly lr * g / sqrt(5 + g^2): 2 / 3 and -1 / sqrt(6)
    q = {"w": np.array([1.0, -2.0])}
    fo.Adagrad(q, lr=1.0, initial_accumulator_value=5.0, eps=0.0).step({"w": g})
    assert_bitwise(q["w"], np.array([1.0 - 2.0 / 3.0, -2.0 - (-1.0 / np.sqrt(6.0))]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_lr_decay_with_schedule_uses_the_step_count(backend, dtype):
    """The decay divides the scheduled rate of each step."""
    rng = np.random.default_rng(12)
    p0 = make_params(rng, dtype)
    grads = [make_grads(p0, rng, prefix="") for _ in range(4)]
    schedule = fo.PiecewiseConstantDecay([2], [0.5, 0.1])
    pa, pb = copy_params(p0), copy_params(p0)
    a = fo.Adagrad(pa, lr=schedule, lr_decay=0.25)
    b = fo.Adagrad(pb, lr=0.5, lr_decay=0.25)
    for t, g in enumerate(grads, start=1):
        a.step(g)
        # the same rate, given as a float: schedule(t - 1), decayed by the step count
        b.lr = schedule(t - 1)
        b.step(g)
    assert_same_run(pa, a, pb, b)


def test_adagrad_state_dict_round_trip(backend, tmp_path):
    rng = np.random.default_rng(13)
    p0 = make_params(rng, np.float32)
    grads = [make_grads(p0, rng) for _ in range(6)]
    kw = dict(lr=0.2, lr_decay=0.1, weight_decay=0.01, initial_accumulator_value=0.4, eps=1e-6)
    pa = copy_params(p0)
    a = run(fo.Adagrad, kw, pa, grads)
    pb = copy_params(p0)
    b = run(fo.Adagrad, kw, pb, grads[:3])
    sd = b.state_dict()
    assert sd["optimizer"] == "Adagrad" and sd["t"] == 3 and sd["lr"] == 0.2
    assert sd["hp/lr_decay"] == 0.1 and sd["hp/initial_accumulator_value"] == 0.4
    assert sd["hp/eps"] == 1e-6 and sd["hp/weight_decay"] == 0.01
    assert sd["hp/maximize"] is False
    assert sorted(k for k in sd if k.startswith("state/")) == sorted(
        f"state/sum/{name}" for name in p0)
    assert sd["state/sum/W1"].dtype == np.float32
    np.savez(tmp_path / "opt.npz", **sd)
    pc = copy_params(pb)
    c = fo.Adagrad(pc, **kw)
    assert_bitwise(c.state["sum"]["W1"], np.full((4, 3), 0.4, np.float32))
    c.load_state_dict(np.load(tmp_path / "opt.npz", allow_pickle=False))
    for g in grads[3:]:
        c.step(g)
    assert_same_run(pa, a, pc, c)


@pytest.mark.parametrize("name,value,saved", [
    ("initial_accumulator_value", 0.0, 0.4),
    ("lr_decay", 0.2, 0.1),
    ("eps", 1e-10, 1e-6),
])
def test_adagrad_checkpoint_hyperparameters_must_match(name, value, saved):
    kw = dict(lr=0.2, lr_decay=0.1, initial_accumulator_value=0.4, eps=1e-6)
    sd = fo.Adagrad({"w": np.ones(2)}, **kw).state_dict()
    params = {"w": np.ones(2)}
    opt = fo.Adagrad(params, **dict(kw, **{name: value}))
    before = snapshot(params, *opt.state.values())
    msg = f"{name} is {saved!r} in state_dict but {value!r} here"
    with pytest.raises(ValueError, match=msg):
        opt.load_state_dict(sd)
    assert_unchanged(before, params, *opt.state.values())
    assert opt.t == 0


def test_step_scaled_is_step_after_the_callers_norm(backend):
    # The hook of fusedoptim.distributed: the caller decides clipping and skipping.
    rng = np.random.default_rng(3)
    pa = {"w": rng.standard_normal(5), "b": rng.standard_normal(3)}
    pb = {k: v.copy() for k, v in pa.items()}
    a = fo.AdamW(pa, lr=0.01, max_grad_norm=0.5, skip_nonfinite=True)
    b = fo.AdamW(pb, lr=0.01, max_grad_norm=0.5, skip_nonfinite=True)
    g = {"w": rng.standard_normal(5), "b": rng.standard_normal(3)}
    assert a.step(g)
    norm = a.last_grad_norm
    assert b.step_scaled(g, 0.5 / (norm + 1e-6), norm)
    assert (b.t, b.last_grad_norm) == (1, norm)
    for k in pa:
        assert pa[k].tobytes() == pb[k].tobytes()
    before = {k: v.copy() for k, v in pb.items()}
    assert b.step_scaled(g, 1.0, float("nan"), skip=True) is False
    assert (b.t, b.skipped_steps) == (1, 1) and np.isnan(b.last_grad_norm)
    for k in pb:
        assert pb[k].tobytes() == before[k].tobytes()
    # A skipped step's gradients are checked as a step's: a typo is not a skip.
    with pytest.raises(KeyError, match="grads has no 'b' or 'db'"):
        b.step_scaled({"w": g["w"], "bb": g["b"]}, 1.0, None, skip=True)
    assert (b.t, b.skipped_steps) == (1, 1)
    # NaN: a NaN norm's clipping factor (clip_grad_norm_'s), every gradient NaN.
    with np.errstate(invalid="ignore"):
        assert b.step_scaled(g, float("nan"), float("nan"))
    assert b.t == 2 and all(np.isnan(pb[k]).all() for k in pb)


@pytest.mark.parametrize("args, error, message", [
    ((float("inf"), None), ValueError, "gscale must be finite"),
    ((2.0, None), ValueError, r"gscale must be in \[0, 1\] or NaN, got 2.0"),
    ((-1.0, None), ValueError, "gscale must be in"),
    (("0.5", None), TypeError, "gscale must be a real number"),
    ((0.5, "1.0"), TypeError, "norm must be a real number or None, got str"),
    ((0.5, -1.0), ValueError, "norm must be >= 0"),
    ((0.5, True), TypeError, "norm must be a real number"),
    ((0.5, 1.0, 1), TypeError, "skip must be True or False"),
])
def test_step_scaled_checks_the_callers_decision(args, error, message):
    params = {"w": np.ones(4)}
    opt = fo.Adam(params)
    with pytest.raises(error, match=message):
        opt.step_scaled({"w": np.ones(4)}, *args)
    assert opt.t == 0 and opt.last_grad_norm is None and (params["w"] == 1.0).all()


def test_step_count_stays_below_what_a_checkpoint_stores():
    params = {"w": np.ones(3)}
    opt = fo.Adam(params)
    sd = opt.state_dict()
    sd["t"] = 2**63 - 2
    opt.load_state_dict(sd)
    opt.step({"w": np.ones(3)})
    after = params["w"].copy()
    with pytest.raises(OverflowError, match="2\\*\\*63"):
        opt.step({"w": np.ones(3)})
    assert opt.t == 2**63 - 1 and (params["w"] == after).all()
    fo.Adam({"w": np.ones(3)}).load_state_dict(opt.state_dict())

