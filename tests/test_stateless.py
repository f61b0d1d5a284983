"""fusedoptim.stateless: every optimizer of the registry as a function over
caller-held state, stepping the bits of its class.  Every stepping test runs
on every available backend (the ``backend`` fixture)."""

import ast
import inspect
import pathlib
import re

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import OPTIMIZERS, stateless
from fusedoptim._alloc import SKEW_MIN_BYTES
from helpers import assert_bitwise, assert_unchanged, snapshot
from optimizers_common import CONFIGS, DTYPES, copy_params, make_grads, make_params

# The class tests' configurations (every class; amsgrad, SGD momentum and
# Nesterov, RMSProp centered with momentum, NAdam and RAdam decoupled, weight
# decay, maximize), and some that switch one slot or option on alone.
CASES = CONFIGS + [
    (fo.SGD, dict(lr=0.05, momentum=0.9)),
    (fo.RMSProp, dict(centered=True)),
    (fo.RMSProp, dict(momentum=0.5, eps_inside_sqrt=False)),
    (fo.Adam, dict(lr=0.01, amsgrad=True)),
    (fo.AdamW, dict(lr=0.01, weight_decay=0.1, maximize=True)),
    (fo.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (fo.Lion, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, maximize=True)),
    (fo.LAMB, dict(lr=0.01, eps=1e-4, weight_decay=0.1)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _kw) in enumerate(CASES)]
STEPS = 5


def fn_of(cls):
    return getattr(stateless, cls.__name__.lower())


def slots(state):
    """The state's arrays by slot (``step`` left out)."""
    return {label: d for label, d in state.items() if label != "step"}


def assert_same_as_class(params, state, ref_params, opt):
    for k in ref_params:
        assert_bitwise(params[k], ref_params[k])
    assert slots(state).keys() == opt.state.keys()
    for label, d in opt.state.items():
        assert state[label].keys() == d.keys()
        for k in d:
            assert_bitwise(state[label][k], d[k])
    assert state["step"] == opt.t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_steps_equal_the_class(backend, cls, kw, dtype):
    rng = np.random.default_rng(1)
    params = make_params(rng, dtype)
    ref = copy_params(params)
    opt = cls(ref, **kw)
    state = stateless.init_state(cls, params, **kw)
    assert_same_as_class(params, state, ref, opt)
    for i in range(STEPS):
        grads = make_grads(params, rng, prefix="d" if i % 2 else "")  # both key styles
        assert fn_of(cls)(params, grads, state, **kw) is params
        opt.step(grads)
        assert state["step"] == i + 1
        assert_same_as_class(params, state, ref, opt)


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_max_grad_norm_equals_the_class(backend, cls, kw):
    rng = np.random.default_rng(2)
    params = make_params(rng, np.float32)
    ref = copy_params(params)
    opt = cls(ref, **kw, max_grad_norm=1.0)
    state = stateless.init_state(cls, params, **kw)
    for _ in range(3):
        grads = make_grads(params, rng)
        fn_of(cls)(params, grads, state, **kw, max_grad_norm=1.0)
        opt.step(grads)
        assert 1.0 / (opt.last_grad_norm + 1e-6) < 1.0  # the gradients were clipped
    assert_same_as_class(params, state, ref, opt)


def test_nadam_states_at_different_steps_share_nothing(backend):
    # NAdam's cache of mu products is per thread, shared by every state of
    # the thread: two runs interleaved, at different step counts, each
    # step the bits of its own class.
    rng = np.random.default_rng(3)
    a, b = make_params(rng), make_params(rng)
    ref_a, ref_b = copy_params(a), copy_params(b)
    opt_a, opt_b = fo.NAdam(ref_a, lr=0.01), fo.NAdam(ref_b, lr=0.01)
    sa, sb = stateless.init_state("NAdam", a), stateless.init_state("NAdam", b)
    for i in range(6):
        g = make_grads(a, rng)
        stateless.nadam(a, g, sa, lr=0.01)
        opt_a.step(g)
        if i % 2:
            stateless.nadam(b, g, sb, lr=0.01)
            opt_b.step(g)
    assert_same_as_class(a, sa, ref_a, opt_a)
    assert_same_as_class(b, sb, ref_b, opt_b)


# --- init_state -------------------------------------------------------------


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_init_state_has_the_slots_of_the_class(cls, kw):
    params = make_params(np.random.default_rng(4))
    state = stateless.init_state(cls, params, **kw)
    opt = cls(copy_params(params), **kw)
    assert list(state) == ["step", *opt.state] and state["step"] == 0
    for label, d in slots(state).items():
        for k, a in d.items():
            assert_bitwise(a, opt.state[label][k])
            assert a.flags.f_contiguous == params[k].flags.f_contiguous
            assert not np.shares_memory(a, params[k])


@pytest.mark.parametrize("cls,kw,expected", [
    (fo.GD, {}, []),
    (fo.SGD, {}, []),
    (fo.SGD, dict(momentum=0.9, nesterov=True), ["momentum_buffer"]),
    (fo.RMSProp, {}, ["square_avg"]),
    (fo.RMSProp, dict(centered=True, momentum=0.9), ["square_avg", "grad_avg", "momentum_buffer"]),
    (fo.Adam, {}, ["exp_avg", "exp_avg_sq"]),
    (fo.AdamW, dict(amsgrad=True), ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]),
])
def test_init_state_slots_by_hand(cls, kw, expected):
    state = stateless.init_state(cls.__name__, {"w": np.ones(3)}, lr=0.1, **kw)
    assert list(state) == ["step", *expected]


def test_init_state_starting_value_and_placement():
    big = np.ones(SKEW_MIN_BYTES // 8 + 1000)
    state = stateless.init_state("Adagrad", {"w": big}, initial_accumulator_value=0.25)
    assert_bitwise(state["sum"]["w"], np.full_like(big, 0.25))
    # placed in memory as the class places its state (fusedoptim._alloc)
    opt = fo.Adam({"w": big})
    state = stateless.init_state("Adam", {"w": big})
    for label in ("exp_avg", "exp_avg_sq"):
        offset = (state[label]["w"].ctypes.data - big.ctypes.data) % 4096
        assert offset == (opt.state[label]["w"].ctypes.data - big.ctypes.data) % 4096 != 0


def test_init_state_names_a_class_three_ways():
    params = {"w": np.ones(2)}
    assert (stateless.init_state("AdamW", params).keys()
            == stateless.init_state("adamw", params).keys()
            == stateless.init_state(fo.AdamW, params).keys())
    with pytest.raises(ValueError, match="no optimizer 'Adamw2'"):
        stateless.init_state("Adamw2", params)
    with pytest.raises(TypeError, match="optimizer must be"):
        stateless.init_state(fo.Optimizer, params)
    with pytest.raises(TypeError, match="'bettas'"):
        stateless.init_state("Adam", params, bettas=(0.9, 0.99))
    with pytest.raises(TypeError, match=r"params\['w'\] has dtype int64"):
        stateless.init_state("Adam", {"w": np.ones(2, np.int64)})


# --- errors change nothing ------------------------------------------------------


def after_one_step(cls, kw):
    """Parameters and state after one step, and the next step's gradients."""
    rng = np.random.default_rng(5)
    params = make_params(rng)
    state = stateless.init_state(cls, params, **kw)
    fn_of(cls)(params, make_grads(params, rng), state, **kw)
    return params, state, make_grads(params, rng)


def assert_refused(error, match, cls, params, grads, state, kw, stepped=None):
    """The call raises ``error`` matching ``match`` and changes nothing (the
    arrays of ``stepped``, the state a broken ``state`` was copied from)."""
    whole = state if stepped is None else stepped
    before = snapshot(params, *slots(whole).values())
    step = state.get("step")
    with pytest.raises(error, match=match):
        fn_of(cls)(params, grads, state, **kw)
    assert_unchanged(before, params, *slots(whole).values())
    assert state.get("step") is step and whole["step"] == 1


BAD_VALUES = {float: "1.0", bool: "yes", tuple: (1.5, 0.9)}


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_bad_keywords_and_values_change_nothing(backend, cls, kw):
    params, state, grads = after_one_step(cls, kw)
    assert_refused(TypeError, "unexpected keyword argument 'bettas'", cls, params, grads,
                   state, {**kw, "bettas": (0.9, 0.99)})
    assert_refused(TypeError, "not a schedule", cls, params, grads, state,
                   {**kw, "lr": lambda t: 0.1})
    assert_refused(ValueError, "lr must be >= 0", cls, params, grads, state, {**kw, "lr": -1.0})
    assert_refused(ValueError, "max_grad_norm must be >= 0", cls, params, grads, state,
                   {**kw, "max_grad_norm": -1.0})
    for h in cls.hyper:  # the class's own error for a bad value of each hyperparameter
        bad = {**kw, h.name: BAD_VALUES[type(h.default)]}
        with pytest.raises((TypeError, ValueError)) as by_class:
            cls(copy_params(params), **bad)
        assert_refused(type(by_class.value), re.escape(str(by_class.value)), cls, params,
                       grads, state, bad)


def test_checks_across_hyperparameters_are_the_class_s(backend):
    params, state, grads = after_one_step(fo.SGD, dict(lr=0.1))
    assert_refused(ValueError, "nesterov needs momentum > 0", fo.SGD, params, grads, state,
                   dict(lr=0.1, nesterov=True))
    assert_refused(TypeError, "missing required keyword argument 'lr'", fo.SGD, params, grads,
                   state, {})


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_bad_state_and_grads_change_nothing(backend, cls, kw):
    params, state, grads = after_one_step(cls, kw)
    for label in slots(state):
        broken = {k: v for k, v in state.items() if k != label}
        assert_refused(KeyError, f"state has no '{label}' \\(needed by {cls.__name__}",
                       cls, params, grads, broken, kw, stepped=state)
        broken = {**state, label: {k: a for k, a in state[label].items() if k != "W1"}}
        assert_refused(KeyError, f"state\\['{label}'\\] has no 'W1'", cls, params, grads,
                       broken, kw, stepped=state)
        broken = {**state, label: {**state[label], "b1": np.zeros((1, 4))}}
        assert_refused(ValueError, "shape", cls, params, grads, broken, kw, stepped=state)
    assert_refused(KeyError, "state has no 'step'", cls, params, grads,
                   slots(state), kw, stepped=state)
    missing = {k: g for k, g in grads.items() if k != "dW1"}
    assert_refused(KeyError, "grads has no 'W1' or 'dW1'", cls, params, missing, state, kw)
    assert_refused(KeyError, "grads has no 'W1' or 'dW1'", cls, params, missing, state,
                   {**kw, "max_grad_norm": 1.0})
    wrong = {**grads, "dW1": np.ones((3, 4))}
    assert_refused(ValueError, r"grads\['dW1'\] has shape \(3, 4\)", cls, params, wrong,
                   state, kw)
    wrong = {**grads, "dW1": grads["dW1"].astype(np.float32)}
    assert_refused(TypeError, "dtype float32", cls, params, wrong, state, kw)


@pytest.mark.parametrize("step,error", [(-1, ValueError), ("1", TypeError), (True, TypeError),
                                        (2**63 - 1, OverflowError)])
def test_bad_step_count_changes_nothing(step, error):
    params, state, grads = after_one_step(fo.Adam, {})
    broken = {**state, "step": step}
    assert_refused(error, "state\\['step'\\]", fo.Adam, params, grads, broken, {},
                   stepped=state)


def test_step_count_may_be_a_numpy_integer():
    params, state, grads = after_one_step(fo.Adam, {})
    state["step"] = np.int64(1)
    stateless.adam(params, grads, state)
    assert state["step"] == 2 and type(state["step"]) is int


def test_slots_the_settings_do_not_use_are_left_alone(backend):
    params, state, grads = after_one_step(fo.Adam, dict(amsgrad=True))
    before = snapshot(state["max_exp_avg_sq"])
    stateless.adam(params, grads, state, amsgrad=False)
    assert_unchanged(before, state["max_exp_avg_sq"])
    assert state["step"] == 2


# --- signatures, docs, types -------------------------------------------------------


def test_one_function_per_class():
    assert stateless.__all__ == ["init_state", *(n.lower() for n in OPTIMIZERS)]
    assert "stateless" in fo.__all__ and fo.stateless is stateless
    assert not hasattr(fo, "adamw")  # a submodule, not top-level names


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_signature_and_docstring_come_from_the_class(name):
    cls, fn = OPTIMIZERS[name], fn_of(OPTIMIZERS[name])
    P = inspect.Parameter
    sig = inspect.signature(fn)
    expected = ([("params", P.POSITIONAL_OR_KEYWORD, P.empty),
                 ("grads", P.POSITIONAL_OR_KEYWORD, P.empty),
                 ("state", P.POSITIONAL_OR_KEYWORD, P.empty),
                 ("lr", P.KEYWORD_ONLY, cls.lr_default)]
                + [(h.name, P.KEYWORD_ONLY, h.default) for h in cls.hyper]
                + [("max_grad_norm", P.KEYWORD_ONLY, None)])
    assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == expected
    assert fn.__name__ == name.lower() and fn.__module__ == "fusedoptim.stateless"
    doc = inspect.getdoc(fn)
    for section in ("Parameters", "Returns", "Raises", "Examples"):
        assert f"\n{section}\n{'-' * len(section)}\n" in doc
    for p in sig.parameters:
        assert f"\n{p} : " in doc, p
    if ".. math::" in (cls.__doc__ or ""):
        assert ".. math::" in doc and "In words" in doc


_ANNOTATIONS = {bool: "bool", float: "float", tuple: "tuple[float, float]"}


def test_type_checking_functions_match_the_signatures():
    """The ``if TYPE_CHECKING:`` block spells out each function for type
    checkers: the same parameters, kinds and defaults as at run time."""
    tree = ast.parse(pathlib.Path(stateless.__file__).read_text())
    block = next(n for n in tree.body
                 if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING")
    stubs = {f.name: f for f in block.body if isinstance(f, ast.FunctionDef)}
    assert sorted(stubs) == sorted(stateless.__all__[1:]), "add the new function's stub"
    P = inspect.Parameter
    for name, stub in stubs.items():
        a = stub.args
        kw_defaults = [P.empty if d is None else ast.literal_eval(d) for d in a.kw_defaults]
        got = ([(x.arg, P.POSITIONAL_OR_KEYWORD, P.empty) for x in a.args]
               + [(x.arg, P.KEYWORD_ONLY, d) for x, d in zip(a.kwonlyargs, kw_defaults)])
        sig = inspect.signature(getattr(stateless, name)).parameters.values()
        assert [(n, k, repr(d)) for n, k, d in got] == [(p.name, p.kind, repr(p.default))
                                                          for p in sig], name
        hints = {x.arg: ast.unparse(x.annotation) for x in a.args + a.kwonlyargs}
        assert [hints["params"], hints["grads"], hints["state"], hints["lr"],
                hints["max_grad_norm"], ast.unparse(stub.returns)] == \
            ["P", "Arrays", "State", "float", "float | None", "P"], name
        cls = OPTIMIZERS[next(n for n in OPTIMIZERS if n.lower() == name)]
        for h in cls.hyper:
            assert hints[h.name] == _ANNOTATIONS[type(h.default)], (name, h.name)
        runtime = {p.name: inspect.formatannotation(p.annotation) for p in sig}
        assert {k: runtime[k] for k in hints if k not in ("params", "grads", "state")} == \
            {k: v for k, v in hints.items() if k not in ("params", "grads", "state")}, name
