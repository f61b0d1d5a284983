"""``copy.copy``, ``copy.deepcopy`` and ``pickle`` of an optimizer, for every
registered class (``optimizers_common.CONFIGS``) and every class that takes
reduced-precision state, on every backend: the copy continues bit for bit
as the original does and as an uninterrupted run does, over several groups,
a group added by ``add_param_group``, clipping, a skipped step and a schedule
as ``lr``; deepcopy and pickle detach the copy (the caller's copied
``params`` dict holds the arrays it steps), ``copy.copy`` shares the
parameters and not the state.  Also: schedules and ``ReduceLROnPlateau``
copied with the optimizer, a copy refused while a step runs, and the
distributed optimizers' refusal."""

import copy
import inspect
import pickle
import threading

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import lr_scheduler, schedules
from fusedoptim.lr_scheduler import ReduceLROnPlateau
from helpers import assert_bitwise, assert_unchanged, snapshot
from optimizers_common import CONFIG_IDS, CONFIGS, assert_same_run, copy_params, make_params


def _lowp_settings():
    """The configurations that take reduced-precision state (found by
    trying: the registry decides), the first of each class (its defaults
    when none of its configurations does), in both formats with
    stochastic rounding."""
    out, seen = [], set()
    for cls, kw in CONFIGS + [(cls, {"lr": 0.01}) for cls in fo.OPTIMIZERS.values()]:
        if cls in seen:
            continue
        try:
            cls({"w": np.ones(3, np.float32)}, **kw, state_dtype="int8")
        except ValueError:
            continue
        seen.add(cls)
        for dtype in ("bfloat16", "int8"):
            out.append((cls, kw, {"state_dtype": dtype, "state_rounding": "stochastic",
                                  "state_seed": 2**40 + 3}))
    return out


SETTINGS = [(cls, kw, {}) for cls, kw in CONFIGS] + _lowp_settings()
SETTING_IDS = CONFIG_IDS + [f"{cls.__name__}-{lp['state_dtype']}"
                            for cls, _kw, lp in SETTINGS[len(CONFIGS):]]
assert any(lp for _c, _k, lp in SETTINGS), "no class takes state_dtype?"


def _deep_copies(obj):
    """``(how, copy)`` of ``obj`` by deepcopy and pickle (protocol 2 and
    the highest)."""
    yield "deepcopy", copy.deepcopy(obj)
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        yield f"pickle-{protocol}", pickle.loads(pickle.dumps(obj, protocol=protocol))


def _default_lr(cls, kw):
    return kw.get("lr", inspect.signature(cls).parameters["lr"].default)


def _model(rng, lowp):
    """Parameters (C and Fortran order, 0-d, empty; with reduced-precision
    state, float32 and tensors above int8's smallest quantized size)."""
    if not lowp:
        params = make_params(rng, np.float64)
        params["v"] = rng.standard_normal(50)
        return params
    params = make_params(rng, np.float32)
    params["Q"] = np.asfortranarray(rng.standard_normal((67, 131)).astype(np.float32))
    params["v"] = rng.standard_normal(5000).astype(np.float32)
    return params


def _grads(rng, params, steps, nan_at=None):
    out = []
    for i in range(steps):
        g = {"d" + k: rng.standard_normal(a.shape).astype(a.dtype) for k, a in params.items()}
        if i == nan_at and g["dW1"].size:
            g["dW1"].flat[0] = np.nan  # skip_nonfinite: a skipped step to carry
        out.append(g)
    return out


class _Run:
    """A training run of one setting: two groups (the second's lr a
    schedule), clipping, non-finite skipping, a skipped step, then a third
    group added by ``add_param_group``; ``steps(opt, a, b)`` runs steps
    ``a`` to ``b - 1`` of it (the group added before step ``ADD``)."""

    ADD, COPY, END = 3, 5, 8

    def __init__(self, cls, kw, lowp, seed=0):
        rng = np.random.default_rng(seed)
        self.cls, self.kw, self.lowp = cls, kw, lowp
        self.init = _model(rng, lowp)
        self.grads = _grads(rng, self.init, self.END, nan_at=1)
        self.lr = _default_lr(cls, kw)

    def start(self, params):
        names = list(params)
        groups = [{"params": {n: params[n] for n in names[:3]}},
                  {"params": {n: params[n] for n in names[3:-1]},
                   "lr": schedules.ExponentialDecay(self.lr, 2, 0.5)}]
        return self.cls(groups, **self.kw, max_grad_norm=1.0, skip_nonfinite=True, **self.lowp)

    def steps(self, params, opt, a, b):
        for i in range(a, b):
            if i == self.ADD:
                last = list(params)[-1]
                opt.add_param_group({"params": {last: params[last]}, "lr": self.lr * 2})
            opt.step(self.grads[i])


def _assert_same(a_params, a, b_params, b):
    """Same parameters, state, counts, groups, options and last step."""
    assert_same_run(a_params, a, b_params, b)
    assert (a.skipped_steps, a.group_starts, a.last_grad_norm, a.last_lrs) == \
           (b.skipped_steps, b.group_starts, b.last_grad_norm, b.last_lrs)
    assert repr(a) == repr(b) and repr(a.get_config()) == repr(b.get_config())
    assert [{k: list(v) if k == "params" else repr(v) for k, v in g.items()}
            for g in a.param_groups] == \
           [{k: list(v) if k == "params" else repr(v) for k, v in g.items()}
            for g in b.param_groups]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], np.ndarray):
            assert_bitwise(sa[k], sb[k])
        else:
            assert repr(sa[k]) == repr(sb[k]), k


def _assert_detached(params, opt, c_params, c_opt):
    """The copy steps the arrays of its own ``params`` and shares no memory
    with the original's."""
    assert c_params.keys() == params.keys()
    for k in params:
        assert c_opt.parameters[k] is c_params[k]
        assert not np.shares_memory(c_params[k], params[k])
        assert c_params[k].flags.f_contiguous == params[k].flags.f_contiguous
    for label, d in opt.state.items():
        for k, a in d.items():
            assert not np.shares_memory(c_opt.state[label][k], a)


@pytest.mark.parametrize("cls, kw, lowp", SETTINGS, ids=SETTING_IDS)
def test_copies_continue_bit_for_bit(backend, cls, kw, lowp):
    """Copied mid-training (after a skipped step and an added group), the
    original and each deep copy go on alike, and as a run never copied; a
    copy's steps leave the original alone."""
    run = _Run(cls, kw, lowp)
    ref_params = copy_params(run.init)
    ref = run.start(ref_params)
    run.steps(ref_params, ref, 0, run.END)  # uninterrupted
    params = copy_params(run.init)
    opt = run.start(params)
    run.steps(params, opt, 0, run.COPY)
    assert opt.skipped_steps == 1 and len(opt.param_groups) == 3
    copies = list(_deep_copies((params, opt)))
    for how, (c_params, c_opt) in copies:
        assert type(c_opt) is cls, how
        _assert_detached(params, opt, c_params, c_opt)
        _assert_same(params, opt, c_params, c_opt)
        before = snapshot(params, *opt.state.values())
        run.steps(c_params, c_opt, run.COPY, run.COPY + 1)
        assert_unchanged(before, params, *opt.state.values())
        assert opt.t == run.COPY - 1
    run.steps(params, opt, run.COPY, run.END)
    _assert_same(ref_params, ref, params, opt)
    for how, (c_params, c_opt) in copies:
        run.steps(c_params, c_opt, run.COPY + 1, run.END)
        _assert_same(ref_params, ref, c_params, c_opt)


@pytest.mark.parametrize("cls, kw, lowp", SETTINGS, ids=SETTING_IDS)
def test_one_group_copy_and_copy_copy(backend, cls, kw, lowp):
    """One group (its own checkpoint layout) and a float lr: a deep copy
    continues alike; ``copy.copy`` steps the same arrays with its own copy
    of the state, as a deep copy would from there, leaving the original's
    state as it was."""
    rng = np.random.default_rng(1)
    params = _model(rng, lowp)
    grads = _grads(rng, params, 4)
    opt = cls(params, **kw, **lowp)
    for g in grads[:2]:
        opt.step(g)
    ref_params, ref = copy.deepcopy((params, opt))
    _assert_same(params, opt, ref_params, ref)
    shallow = copy.copy(opt)
    assert type(shallow) is cls and shallow is not opt
    _assert_same(params, opt, params, shallow)
    for k, p in params.items():
        assert shallow.parameters[k] is p
    for label, d in opt.state.items():
        for k, a in d.items():
            assert not np.shares_memory(shallow.state[label][k], a)
    state_before = snapshot(*opt.state.values())
    for g in grads[2:]:
        shallow.step(g)
        ref.step(g)
    _assert_same(ref_params, ref, params, shallow)
    assert_unchanged(state_before, *opt.state.values())
    assert opt.t == 2 and shallow.t == 4


def test_copy_of_a_fresh_optimizer_and_of_switched_slots():
    """Before any step, and with a state slot switched on since the last
    step (pending: at its initial value) or on and off again (kept)."""
    params = {"w": np.linspace(-1, 1, 6)}
    grads = [{"w": np.full(6, 0.1 * (i + 1))} for i in range(4)]
    for switches in ([], [True], [True, False]):
        opt = fo.Adam(params, lr=0.1)
        c_params, c_opt = copy.deepcopy((params, opt))
        _assert_same(params, opt, c_params, c_opt)
        for on in switches:
            opt.step(grads[0])
            opt.param_groups[0]["amsgrad"] = on
        for how, (c_params, c_opt) in _deep_copies((params, opt)):
            _assert_same(params, opt, c_params, c_opt)
            for g in grads[1:]:
                c_opt.step(g)
        for g in grads[1:]:
            opt.step(g)
        _assert_same(params, opt, c_params, c_opt)


def test_parameters_copied_alone_are_the_optimizers_own():
    """``copy.deepcopy(opt)`` alone: new arrays, reachable as
    ``copy.parameters``; the caller's arrays are not stepped."""
    params = {"w": np.ones(4)}
    opt = fo.SGD(params, lr=0.5)
    c = copy.deepcopy(opt)
    assert not np.shares_memory(c.parameters["w"], params["w"])
    c.step({"w": np.ones(4)})
    assert (params["w"] == 1.0).all() and (c.parameters["w"] == 0.5).all()


class _Starts:
    """A schedule counted from a group's own first step: it holds the
    optimizer (a cycle through the copy)."""

    def __init__(self, opt, i, base):
        self.opt, self.i, self.base = opt, i, base

    def __call__(self, t):
        return self.base / (1 + t - self.opt.group_starts[self.i])

    def __repr__(self):
        return f"_Starts({self.i}, {self.base})"


def test_schedule_holding_the_optimizer_follows_the_copy():
    params = {"a": np.ones(3), "b": np.ones(2)}
    opt = fo.Adam({"a": params["a"]}, lr=0.1)
    opt.step({"a": np.ones(3)})
    opt.add_param_group({"params": {"b": params["b"]}})
    opt.param_groups[1]["lr"] = _Starts(opt, 1, 0.2)
    for how, (c_params, c_opt) in _deep_copies((params, opt)):
        assert c_opt.param_groups[1]["lr"].opt is c_opt, how
        _assert_same(params, opt, c_params, c_opt)


def _lambda_free(step):
    return 0.9 ** step


#: One of every schedule class (the library's: they pickle).
SCHEDULES = [
    schedules.InverseTimeDecay(0.1, 10, 0.5), schedules.ExponentialDecay(0.1, 10, 0.9),
    schedules.PiecewiseConstantDecay([10], [0.1, 0.01]), schedules.CosineDecay(0.1, 100),
    schedules.CosineDecayRestarts(0.1, 10), schedules.PolynomialDecay(0.1, 100),
    lr_scheduler.StepLR(0.1, 3), lr_scheduler.MultiStepLR(0.1, [2, 5]),
    lr_scheduler.ExponentialLR(0.1, 0.9), lr_scheduler.LinearLR(0.1),
    lr_scheduler.CosineAnnealingLR(0.1, 10), lr_scheduler.LambdaLR(0.1, _lambda_free),
    lr_scheduler.MultiplicativeLR(0.1, _lambda_free), lr_scheduler.ConstantLR(0.1),
    lr_scheduler.PolynomialLR(0.1), lr_scheduler.CosineAnnealingWarmRestarts(0.1, 5),
    lr_scheduler.OneCycleLR(0.1, total_steps=100),
    lr_scheduler.SequentialLR([lr_scheduler.ConstantLR(0.1), 0.05], milestones=[5]),
]


def test_every_schedule_class_is_listed():
    classes = {getattr(m, n) for m in (schedules, lr_scheduler) for n in m.__all__}
    classes = {c for c in classes if isinstance(c, type) and c is not ReduceLROnPlateau}
    assert classes == {type(s) for s in SCHEDULES}


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_optimizer_with_a_schedule_pickles(schedule):
    params = {"w": np.ones(3)}
    opt = fo.AdamW(params, lr=schedule)
    opt.step({"w": np.ones(3)})
    for how, (c_params, c_opt) in _deep_copies((params, opt)):
        assert type(c_opt.lr) is type(schedule) and c_opt.lr is not schedule
        for t in (0, 1, 7, 50):
            assert c_opt.lr(t) == schedule(t), (how, t)
        c_opt.step({"w": np.ones(3)})
    opt.step({"w": np.ones(3)})
    assert_bitwise(params["w"], c_params["w"])


def test_a_lambda_deepcopies_but_does_not_pickle():
    opt = fo.Adam({"w": np.ones(3)}, lr=lambda t: 0.1)
    assert copy.deepcopy(opt).lr is opt.lr  # functions are not copied
    with pytest.raises((pickle.PicklingError, AttributeError), match="lambda"):
        pickle.dumps(opt)


def test_plateau_scheduler_copied_with_its_optimizer():
    """``ReduceLROnPlateau`` holds its optimizer: copied together, the
    copy's scheduler drives the copied optimizer only."""
    opt = fo.SGD([{"params": {"a": np.ones(2)}}, {"params": {"b": np.ones(2)}, "lr": 0.2}],
                 lr=0.1)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    sched.step(1.0)
    for how, (c_opt, c_sched) in _deep_copies((opt, sched)):
        assert c_sched.optimizer is c_opt, how
        c_sched.step(2.0)
        assert [g["lr"] for g in c_opt.param_groups] == [0.05, 0.1]
        assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
        assert c_sched.last_epoch == 2 and sched.last_epoch == 1


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy, pickle.dumps])
def test_no_copy_of_half_a_step(how):
    """A copy taken while another thread steps, or from within the step (a
    schedule), raises as ``state_dict`` does; nothing changes."""
    params = {"w": np.ones(3)}
    entered, release = threading.Event(), threading.Event()
    inside = []

    def schedule(t):
        if t == 0:
            entered.set()
            release.wait(10)
        else:
            with pytest.raises(RuntimeError, match="from within this optimizer's own step"):
                how(opt)
            inside.append(t)
        return 0.1

    opt = fo.Adam(params, lr=schedule)
    worker = threading.Thread(target=opt.step, args=({"w": np.ones(3)},))
    worker.start()
    try:
        assert entered.wait(10)
        with pytest.raises(RuntimeError, match="in use in another thread"):
            how(opt)
    finally:
        release.set()
        worker.join(10)
    assert opt.t == 1
    opt.step({"w": np.ones(3)})
    assert inside == [1] and opt.t == 2
    if how is not pickle.dumps:  # (a local function does not pickle)
        how(opt)  # between steps: fine


def test_distributed_wrappers_refuse_without_mpi():
    """The refusal itself, on a wrapper never constructed (no MPI here)."""
    from fusedoptim.distributed import DataParallelOptimizer, ShardedOptimizer
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        opt = kind.__new__(kind)
        for how in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match=f"{kind.__name__} objects cannot be copied or "
                                                f"pickled .*opt.save"):
                how(opt)


def test_distributed_wrappers_refuse_in_an_mpi_singleton():
    """World size 1 in-process: the wrappers refuse (with an inner
    optimizer that could be copied), and so does a sharded inner optimizer
    with reduced-precision state, whose rounding counts from its place in
    the whole step."""
    pytest.importorskip("mpi4py")
    from fusedoptim.distributed import DataParallelOptimizer, ShardedOptimizer
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        for lowp in ({}, {"state_dtype": "bfloat16"}):
            opt = kind(fo.Adam, {"w": np.ones(5, np.float32)}, lr=0.1, **lowp)
            for how in (copy.copy, copy.deepcopy, pickle.dumps):
                with pytest.raises(TypeError, match=f"{kind.__name__} objects cannot be"):
                    how(opt)
            if lowp and kind is ShardedOptimizer:
                with pytest.raises(TypeError, match="Adam holding a shard of a "
                                                    "ShardedOptimizer cannot be copied"):
                    copy.deepcopy(opt.inner)
            else:
                copy.deepcopy(opt.inner)  # an ordinary optimizer
