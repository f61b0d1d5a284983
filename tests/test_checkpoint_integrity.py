"""Checkpoints that used to load silently into the wrong optimizer, or not
load at all: reduced-precision state over another shape, memory order or
parameter order; snapshots taken while another thread steps; a schedule
counted from an added group's start; state slots switched through
``param_groups``; error messages about state arrays."""

import threading

import numpy as np
import pytest

import fusedoptim as fo
from helpers import assert_unchanged, snapshot

LOWP = [("Adam", dict(state_dtype="bfloat16")),
        ("Adam", dict(state_dtype="int8")),
        ("Momentum", dict(state_dtype="bfloat16")),
        ("Momentum", dict(state_dtype="int8"))]
LOWP_IDS = [f"{c}-{kw['state_dtype']}" for c, kw in LOWP]


def _grads(params, rng, n):
    return [{k: np.asarray(rng.standard_normal(p.shape) * (1.0 + np.arange(p.size).reshape(
        p.shape) % 7), np.float32, order="K") for k, p in params.items()} for _ in range(n)]


def _unchanged_after_refusal(opt, sd, exc, match):
    """``opt.load_state_dict(sd)`` raises ``exc`` matching ``match`` and
    changes neither parameters, state nor counts."""
    before = snapshot(opt.parameters, *opt.state.values())
    t = opt.t
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt.parameters, *opt.state.values())
    assert opt.t == t


# --- 1. reduced-precision state: shape and memory order ------------------------------


@pytest.mark.parametrize("cls,kw", LOWP, ids=LOWP_IDS)
def test_lowp_state_over_another_memory_order_is_refused(cls, kw):
    rng = np.random.default_rng(0)
    w = np.asfortranarray(rng.standard_normal((96, 64)).astype(np.float32))
    src = fo.OPTIMIZERS[cls]({"W": w}, lr=1e-2, **kw)
    for g in _grads(src.parameters, rng, 2):
        src.step(g)
    sd = src.state_dict()
    assert sd["order/W"] == "F" and sd["shape/W"].tolist() == [96, 64]
    c_ordered = fo.OPTIMIZERS[cls]({"W": np.ascontiguousarray(w)}, lr=1e-2, **kw)
    _unchanged_after_refusal(
        c_ordered, sd, ValueError,
        r"^state_dict\['order/W'\] is 'F' but parameters\['W'\] is in C order.*"
        r"np\.asfortranarray")
    # and the other way round
    sd_c = fo.OPTIMIZERS[cls]({"W": np.ascontiguousarray(w)}, lr=1e-2, **kw).state_dict()
    f_ordered = fo.OPTIMIZERS[cls]({"W": w.copy(order="F")}, lr=1e-2, **kw)
    _unchanged_after_refusal(f_ordered, sd_c, ValueError,
                             r"is 'C' but parameters\['W'\] is in F order.*np\.ascontiguousarray")


@pytest.mark.parametrize("cls,kw", LOWP, ids=LOWP_IDS)
def test_lowp_state_over_another_shape_is_refused(cls, kw):
    src = fo.OPTIMIZERS[cls]({"W": np.ones((64, 160), np.float32)}, lr=0.1, **kw)
    src.step({"W": np.ones((64, 160), np.float32)})
    dst = fo.OPTIMIZERS[cls]({"W": np.ones((160, 64), np.float32)}, lr=0.1, **kw)
    _unchanged_after_refusal(dst, src.state_dict(), ValueError,
                             r"^state_dict\['shape/W'\] is \(64, 160\) but parameters\['W'\] "
                             r"has shape \(160, 64\)")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_lowp_resume_through_safetensors_rebuilt_in_the_saved_layout(state_dtype, tmp_path):
    """A Fortran-ordered parameter resumes bit for bit when rebuilt with
    np.asfortranarray from what safetensors gives back (C order)."""
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file
    rng = np.random.default_rng(1)
    w0 = np.asfortranarray(rng.standard_normal((96, 64)).astype(np.float32))
    grads = _grads({"W": w0}, rng, 8)
    kw = dict(lr=1e-2, state_dtype=state_dtype)
    pa = {"W": w0.copy(order="F")}
    a = fo.Adam(pa, **kw)
    for g in grads:
        a.step(g)
    pb = {"W": w0.copy(order="F")}
    b = fo.Adam(pb, **kw)
    for g in grads[:4]:
        b.step(g)
    b.save(tmp_path / "ck.safetensors", parameters=True)
    saved = load_file(tmp_path / "ck.safetensors")["parameters/W"]
    with pytest.raises(ValueError, match="np.asfortranarray"):
        fo.Adam({"W": saved.copy()}, **kw).load(tmp_path / "ck.safetensors")
    pc = {"W": np.asfortranarray(saved)}
    c = fo.Adam(pc, **kw)
    c.load(tmp_path / "ck.safetensors")
    for g in grads[4:]:
        c.step(g)
    assert pa["W"].tobytes(order="A") == pc["W"].tobytes(order="A")


def test_lowp_records_and_older_checkpoints():
    """Vectors need no shape or order (any array of their size takes their
    flat state); a matrix's checkpoint without them is refused by name."""
    params = {"W": np.ones((70, 64), np.float32), "b": np.ones(5000, np.float32),
              "s": np.ones((1, 4096, 1), np.float32, order="F")}
    opt = fo.Adam(params, state_dtype="int8", state_rounding="nearest")
    sd = opt.state_dict()
    assert sd["params"].tolist() == ["W", "b", "s"]
    assert (sd["order/W"], sd["order/b"], sd["order/s"]) == ("C", "C", "C")
    assert sd["shape/s"].dtype == np.int64 and sd["shape/s"].tolist() == [1, 4096, 1]
    assert not any(k.startswith(("shape/", "order/")) or k == "params"
                   for k in fo.Adam(params).state_dict())
    old = {k: v for k, v in sd.items() if not k.startswith(("shape/", "order/", "params"))}
    fo.Adam({"b": params["b"], "s": params["s"]}, state_dtype="int8",
            state_rounding="nearest").load_state_dict(
        {k: v for k, v in old.items() if not k.endswith("/W")})
    _unchanged_after_refusal(fo.Adam(params, state_dtype="int8", state_rounding="nearest"),
                             old, KeyError, r"state_dict has no 'shape/W' \(an older")
    for key, value, exc, match in [
            ("shape/W", np.array([70.0, 64.0]), TypeError, "must be a 1-d integer array"),
            ("order/W", "K", ValueError, r"'order/W'\] must be 'C' or 'F'"),
            ("params", np.array(["W", "b", "x"]), ValueError, "does not name")]:
        bad = dict(sd, **{key: value})
        _unchanged_after_refusal(fo.Adam(params, state_dtype="int8", state_rounding="nearest"),
                                 bad, exc, match)
    del sd["order/b"]
    _unchanged_after_refusal(fo.Adam(params, state_dtype="int8", state_rounding="nearest"),
                             sd, KeyError, "state_dict has no 'order/b'")


# --- 2. parameter order with stochastic rounding -------------------------------------


def _order_run(extra, reverse_on_resume):
    rng = np.random.default_rng(3)
    p0 = {"W1": rng.standard_normal((64, 80)).astype(np.float32),
          "b1": rng.standard_normal(64).astype(np.float32),
          "E": rng.standard_normal((50, 100)).astype(np.float32)}
    grads = _grads(p0, rng, 8)
    pa = {k: v.copy() for k, v in p0.items()}
    a = fo.Adam(pa, lr=1e-2, **extra)
    for g in grads:
        a.step(g)
    pb = {k: v.copy() for k, v in p0.items()}
    b = fo.Adam(pb, lr=1e-2, **extra)
    for g in grads[:4]:
        b.step(g)
    names = list(p0)[::-1] if reverse_on_resume else list(p0)
    pc = {k: pb[k].copy() for k in names}
    c = fo.Adam(pc, lr=1e-2, **extra)
    return pa, c, pc, b.state_dict(), grads[4:]


@pytest.mark.parametrize("extra", [dict(state_dtype="int8"),
                                   dict(state_dtype="bfloat16", state_rounding="stochastic")],
                         ids=["int8", "bfloat16-stochastic"])
def test_stochastic_rounding_refuses_another_parameter_order(extra):
    _pa, c, _pc, sd, _g = _order_run(extra, reverse_on_resume=True)
    _unchanged_after_refusal(c, sd, ValueError,
                             r"^state_dict\['params'\] is \['W1', 'b1', 'E'\]: stochastic")
    old = {k: v for k, v in sd.items() if k != "params"}
    _unchanged_after_refusal(c, old, KeyError, "state_dict has no 'params'")


@pytest.mark.parametrize("extra", [dict(), dict(max_grad_norm=1.0),
                                   dict(state_dtype="bfloat16"),
                                   dict(state_dtype="int8", state_rounding="nearest")],
                         ids=["float32", "float32-clip", "bfloat16-nearest", "int8-nearest"])
def test_order_free_state_loads_in_any_parameter_order(extra):
    pa, c, pc, sd, rest = _order_run(extra, reverse_on_resume=True)
    c.load_state_dict(sd)
    for g in rest:
        c.step(g)
    for k in pa:
        assert pa[k].tobytes() == pc[k].tobytes(), k


# --- 3. snapshots while another thread steps -----------------------------------------


def test_state_dict_and_save_refuse_an_optimizer_busy_in_another_thread(tmp_path):
    opt = fo.Adagrad({"w": np.zeros(10, np.float32)}, lr=0.1)
    held, release = threading.Event(), threading.Event()

    def hold():  # what a step in another thread does for its length
        with opt._busy:
            held.set()
            release.wait(10)

    th = threading.Thread(target=hold)
    th.start()
    try:
        assert held.wait(10)
        with pytest.raises(RuntimeError, match="in another thread"):
            opt.state_dict()
        with pytest.raises(RuntimeError, match="in another thread"):
            opt.save(tmp_path / "ck.safetensors")
        assert not (tmp_path / "ck.safetensors").exists()
    finally:
        release.set()
        th.join()
    assert opt.state_dict()["t"] == 0  # released after a refusal and after a snapshot
    opt.step({"w": np.ones(10, np.float32)})
    assert opt.state_dict()["t"] == 1


# --- 4. a schedule counted from an added group's start -------------------------------


def test_readme_idiom_for_an_added_groups_schedule_resumes_bit_identically():
    s = fo.LinearLR(0.05, start_factor=0.1, total_iters=10)
    rng = np.random.default_rng(0)
    body0 = rng.standard_normal((32, 8)).astype(np.float32)
    head0 = rng.standard_normal((4, 8)).astype(np.float32)
    grads = [{"body": rng.standard_normal((32, 8)).astype(np.float32),
              "head": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(20)]

    def add_head(opt, head):  # the README's idiom
        opt.add_param_group({"params": {"head": head},
                             "lr": lambda t, i=len(opt.param_groups): s(t - opt.group_starts[i])})

    def run(opt, params, gs, t_add=5):
        for g in gs:
            if opt.t == t_add and "head" not in opt.parameters:
                add_head(opt, params["head"])
            opt.step({k: v for k, v in g.items() if k in opt.parameters})

    pa = {"body": body0.copy(), "head": head0.copy()}
    a = fo.Adam({"body": pa["body"]}, lr=0.01)
    run(a, pa, grads)
    assert a.group_starts == [0, 5]
    pb = {"body": body0.copy(), "head": head0.copy()}
    b = fo.Adam({"body": pb["body"]}, lr=0.01)
    run(b, pb, grads[:12])
    sd, lrs = b.state_dict(), b.current_lrs
    pc = {k: v.copy() for k, v in pb.items()}
    c = fo.Adam({"body": pc["body"]}, lr=0.01)
    add_head(c, pc["head"])  # rebuilt the same way: added at t = 0 here
    assert c.group_starts == [0, 0]
    c.load_state_dict(sd)
    assert c.group_starts == [0, 5] and c.current_lrs == lrs
    run(c, pc, grads[12:])
    for k in pa:
        assert pa[k].tobytes() == pc[k].tobytes(), k
    with pytest.raises(AttributeError):
        c.group_starts = [0, 0]  # type: ignore[misc]


# --- 5. state slots switched on or off through param_groups --------------------------

TOGGLES = [("Adam", "amsgrad", True, False), ("SGD", "momentum", 0.9, 0.0),
           ("RMSProp", "centered", True, False), ("RMSProp", "momentum", 0.5, 0.0)]


def _toggle_grads(n):
    rng = np.random.default_rng(7)
    return [{"w": rng.standard_normal(8).astype(np.float32),
             "v": rng.standard_normal((3, 4)).astype(np.float32)} for _ in range(n)]


def _toggle_params():
    return {"w": np.linspace(-1, 1, 8, dtype=np.float32),
            "v": np.asfortranarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4))}


@pytest.mark.parametrize("cls,key,on,off", TOGGLES, ids=[f"{t[0]}-{t[1]}" for t in TOGGLES])
@pytest.mark.parametrize("pattern", ["on", "on-step-off", "on-step-off-on"])
def test_checkpoint_after_a_toggle_loads_into_an_optimizer_built_with_its_settings(
        cls, key, on, off, pattern):
    """``pattern``: the changes before the checkpoint (a step between);
    the optimizer it loads into is constructed with the last setting."""
    C = fo.OPTIMIZERS[cls]
    grads = _toggle_grads(9)
    settings = {"on": [on], "on-step-off": [on, off], "on-step-off-on": [on, off, on]}[pattern]

    def prefix(opt):
        opt.step(grads[0])
        for i, value in enumerate(settings):
            if i:
                opt.step(grads[i])
            opt.param_groups[0][key] = value

    pa = _toggle_params()
    a = C(pa, lr=0.05)
    prefix(a)
    sd = a.state_dict()
    pc = {k: np.array(v, order="K") for k, v in pa.items()}
    c = C(pc, lr=0.05, **{key: settings[-1]})
    c.load_state_dict(sd)
    assert sorted(c.state) == sorted(a.state) or pattern == "on"
    for g in grads[4:7]:
        a.step(g)
        c.step(g)
    for value in (on, off, on):  # a kept slot resumes as the saved optimizer's
        a.param_groups[0][key] = c.param_groups[0][key] = value
        a.step(grads[7])
        c.step(grads[7])
    for k in pa:
        assert pa[k].tobytes() == pc[k].tobytes(), k
    assert sorted(c.state) == sorted(a.state)


def test_a_kept_slot_the_checkpoint_lacks_is_dropped():
    """Loading into an optimizer that switched a slot on and off itself:
    the checkpoint, saved without the slot, decides."""
    grads = _toggle_grads(6)
    pa = _toggle_params()
    a = fo.Adam(pa, lr=0.05)
    a.step(grads[0])
    sd = a.state_dict()
    pc = _toggle_params()
    c = fo.Adam(pc, lr=0.05)
    c.param_groups[0]["amsgrad"] = True
    c.step(grads[1])
    c.param_groups[0]["amsgrad"] = False
    c.step(grads[2])
    assert "max_exp_avg_sq" in c.state
    c.load_state_dict(sd)
    for k in pa:
        pc[k][...] = pa[k]
    assert "max_exp_avg_sq" not in c.state
    for opt in (a, c):
        opt.param_groups[0]["amsgrad"] = True
        for g in grads[3:]:
            opt.step(g)
    for k in pa:
        assert pa[k].tobytes() == pc[k].tobytes(), k


def test_a_partial_slot_is_still_a_missing_key():
    a = fo.Adam(_toggle_params(), lr=0.05)
    a.param_groups[0]["amsgrad"] = True
    sd = a.state_dict()
    assert "state/max_exp_avg_sq/w" in sd
    del sd["state/max_exp_avg_sq/v"]
    _unchanged_after_refusal(fo.Adam(_toggle_params(), lr=0.05, amsgrad=True), sd, KeyError,
                             "state_dict has no 'state/max_exp_avg_sq/v'")
    _unchanged_after_refusal(fo.Adam(_toggle_params(), lr=0.05), sd, ValueError,
                             "amsgrad is True in state_dict but False here")


# --- 8. messages about state arrays --------------------------------------------------


def test_state_array_mismatches_name_the_state_array():
    p = {"W1": np.ones(10240, np.float32), "b": np.ones(40, np.float32)}
    sd = fo.Adam(p, state_dtype="bfloat16").state_dict()
    sd8 = fo.Adam(p, state_dtype="int8").state_dict()
    sd8["state/exp_avg/W1"] = sd["state/exp_avg/W1"]
    _unchanged_after_refusal(fo.Adam(p, state_dtype="int8"), sd8, TypeError,
                             r"^state_dict\['state/exp_avg/W1'\] has dtype uint16 but this "
                             r"optimizer's state array has uint8$")
    sd8 = fo.Adam(p, state_dtype="int8").state_dict()
    sd8["state/exp_avg_scale/W1"] = np.zeros(3, np.float32)
    _unchanged_after_refusal(fo.Adam(p, state_dtype="int8"), sd8, ValueError,
                             r"^state_dict\['state/exp_avg_scale/W1'\] has shape \(3,\) but this "
                             r"optimizer's state array has shape \(40,\)$")


def test_a_slot_switched_on_in_one_of_two_groups_resumes_bit_identically():
    grads = _toggle_grads(6)

    def build(params, second_amsgrad):
        return fo.Adam([{"params": {"w": params["w"]}},
                        {"params": {"v": params["v"]}, "amsgrad": second_amsgrad}], lr=0.05)

    pa = _toggle_params()
    a = build(pa, False)
    a.step(grads[0])
    a.param_groups[1]["amsgrad"] = True
    sd = a.state_dict()
    assert {"state/max_exp_avg_sq/w", "state/max_exp_avg_sq/v"} <= set(sd)
    pc = {k: np.array(v, order="K") for k, v in pa.items()}
    c = build(pc, True)
    c.load_state_dict(sd)
    for g in grads[1:]:
        a.step(g)
        c.step(g)
    for k in pa:
        assert pa[k].tobytes() == pc[k].tobytes(), k
