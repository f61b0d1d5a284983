"""Fuzzing (issue #18): random dicts (plain, OrderedDict, defaultdict, lying
subclasses), dtypes, layouts, aliasing, hyperparameters, special values and
failure points, through every family's multi-tensor step on every backend.

Each example checks the two promises of "Failing loudly, failing whole": a
call that raises on one backend raises the same exception with the same
message on every backend and changes nothing (arrays and dict keys); a call
that succeeds gives the reference's bits everywhere, NaN payload and sign
excepted.  The example count is bounded to keep CI cheap."""

from collections import OrderedDict, defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fusedoptim import _validate as V
from fusedoptim.families import FAMILIES
from conftest import BACKEND_PARAMS, backend_variant
from helpers import assert_same_or_both_nan, keywords


class HugeLen(dict):
    def __len__(self):
        return 2 ** 61


class Reversed(dict):
    def __iter__(self):
        return iter(list(dict.__iter__(self))[::-1])


def _defaultdict(items):
    d = defaultdict(float)
    d.update(items)
    return d


DICT_TYPES = [dict, dict, OrderedDict, _defaultdict, HugeLen, Reversed]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30]
FAILURES = [None, None, None, "missing-grad", "missing-state", "grad-dtype", "grad-shape",
            "readonly-state", "strided-param", "matrix-grad", "state-aliases-param",
            "state-aliases-state", "grad-aliases-param", "bad-name"]


@st.composite
def cases(draw):
    """A plain description of one call; ``build`` turns it into fresh arrays."""
    fam = draw(st.sampled_from(sorted(FAMILIES)))
    family = FAMILIES[fam]
    flags = {f: draw(st.booleans()) for f in family.flags}
    scalars = {"lr": draw(st.sampled_from([0.0, 0.01, 0.5, 2.0])),
               "weight_decay": draw(st.sampled_from([0.0, 0.1])),
               "gscale": draw(st.sampled_from([1.0, 0.37]))}
    tensors = []
    for i in range(draw(st.integers(1, 4))):
        shape = draw(st.sampled_from([(), (0,), (1,), (5,), (3, 4), (2, 1, 3), (37,)]))
        tensors.append(dict(shape=shape, dtype=draw(st.sampled_from(["float32", "float64"])),
                            order=draw(st.sampled_from("CF")),
                            gview=draw(st.sampled_from(["same", "F", "strided"])),
                            special=draw(st.sampled_from([None, None] + SPECIALS))))
    return dict(family=fam, flags=flags, scalars=scalars, tensors=tensors,
                mode=draw(st.sampled_from([V.COURSE, V.NAMED])),
                dict_type=draw(st.integers(0, len(DICT_TYPES) - 1)),
                dict_role=draw(st.sampled_from(["p", "g", "s"])),
                failure=draw(st.sampled_from(FAILURES)),
                victim=draw(st.integers(0, 3)),
                seed=draw(st.integers(0, 2 ** 31 - 1)),
                t=draw(st.integers(1, 3)))


def build(case):
    """Fresh ``(params, grads, states, kw)`` for ``case``; deterministic."""
    family = FAMILIES[case["family"]]
    rng = np.random.default_rng(case["seed"])
    kw = keywords(family, case["flags"], case["scalars"], case["t"])
    course = case["mode"] == V.COURSE
    params, grads = {}, {}
    slots = list(family.active_slots(kw))
    state_dicts = [{} if on else None for on in slots]
    for i, t in enumerate(case["tensors"]):
        name = f"w{i}"
        p = np.asarray(rng.standard_normal(t["shape"]), dtype=t["dtype"], order=t["order"])
        g = rng.standard_normal(t["shape"]).astype(t["dtype"])
        if t["special"] is not None and g.size:
            g.flat[rng.integers(g.size)] = t["special"]
        if t["gview"] == "F":
            g = np.asfortranarray(g)
        elif t["gview"] == "strided" and g.ndim:
            big = np.zeros(g.shape[:-1] + (2 * g.shape[-1],), g.dtype)
            big[..., ::2] = g
            g = big[..., ::2]
        params[name] = p
        grads[("d" + name) if course or i % 2 else name] = g
        for d in state_dicts:
            if d is not None:
                a = np.zeros_like(p)
                a[...] = np.abs(rng.standard_normal(t["shape"]))
                d[("d" + name) if course else name] = a
    _inject(case, params, grads, state_dicts, course)
    make = DICT_TYPES[case["dict_type"]]
    role = case["dict_role"]
    if role == "p":
        params = make(params)
    elif role == "g":
        grads = make(grads)
    else:
        state_dicts = [None if d is None else make(d) for d in state_dicts]
    states = tuple(V.ABSENT if d is None else (f"s{j}", d) for j, d in enumerate(state_dicts))
    return params, grads, states, kw


def _inject(case, params, grads, state_dicts, course):
    """Apply the case's failure point, if any, to tensor ``victim``."""
    names = list(params)
    name = names[case["victim"] % len(names)]
    gkey = next(k for k in (name, "d" + name) if k in grads)
    skey = "d" + name if course else name
    live = [d for d in state_dicts if d is not None]
    f = case["failure"]
    if f == "missing-grad":
        del grads[gkey]
    elif f == "missing-state" and live:
        del live[0][skey]
    elif f == "grad-dtype":
        grads[gkey] = grads[gkey].astype(np.float16)
    elif f == "grad-shape":
        grads[gkey] = np.zeros(grads[gkey].shape + (2,), grads[gkey].dtype)
    elif f == "readonly-state" and live:
        live[-1][skey].setflags(write=False)
    elif f == "strided-param" and params[name].size > 1:
        p = params[name]
        big = np.zeros(p.shape[:-1] + (2 * p.shape[-1],), p.dtype) if p.ndim else None
        if big is not None:
            params[name] = big[..., ::2]
    elif f == "matrix-grad" and grads[gkey].ndim == 2:
        grads[gkey] = np.asmatrix(grads[gkey])
    elif f == "state-aliases-param" and live:
        live[0][skey] = params[name]
    elif f == "state-aliases-state" and len(live) >= 2:
        live[1][skey] = live[0][skey]
    elif f == "grad-aliases-param":
        grads[gkey] = params[name]
    elif f == "bad-name":
        params[7] = params.pop(name)


def _run(variant, case):
    """``("raise", type, message)`` or ``("ok", arrays)``; checks that a
    raising call changed no array and no dict's keys."""
    params, grads, states, kw = build(case)
    dicts = [params, grads] + [d for _l, d in states if d is not None]
    keys = [set(dict.keys(d)) for d in dicts]
    before = [{k: np.array(a, copy=True) for k, a in dict.items(d)} for d in dicts]
    with backend_variant(variant) as mod:
        try:
            getattr(mod, case["family"])(params, grads, states, case["mode"], **kw)
        except Exception as exc:  # noqa: BLE001 - compared across backends
            assert [set(dict.keys(d)) for d in dicts] == keys, "keys changed"
            for snap, d in zip(before, dicts):
                for k, a in snap.items():
                    assert np.asarray(dict.__getitem__(d, k)).tobytes() == a.tobytes(), k
            return ("raise", type(exc), str(exc))
    return ("ok", [np.array(dict.__getitem__(d, k)) for d in [params] + dicts[2:]
                   for k in sorted(dict.keys(d), key=str)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_fuzz_atomic_and_same_bits_everywhere(case):
    want = _run("numpy", case)
    event(want[0] if want[0] == "ok" else want[1].__name__)
    for variant in BACKEND_PARAMS:
        if variant == "numpy":
            continue
        got = _run(variant, case)
        assert got[0] == want[0], (variant, got, want)
        if want[0] == "raise":
            assert got == want, variant
            continue
        for a, b in zip(got[1], want[1]):
            assert_same_or_both_nan(a, b, variant)
