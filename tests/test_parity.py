"""Every backend against the NumPy reference, bit for bit, generated from the
registry (``fusedoptim.families.FAMILIES``), in the manner of bottleneck's
and numbagg's suites: nothing here names a family.

For each family: every combination of its ``flags``, with ``gscale`` 1 and
not 1 and ``weight_decay`` 0 and not 0 (other keywords take one value from
``helpers.VALUES``, keyed by keyword name; a keyword it does not know gets
``helpers.GENERIC``), float32 and float64, C and Fortran layouts, 1 and 2
threads, every backend variant (``conftest.BACKEND_PARAMS``), ``STEPS`` steps, on two
models: a small one with 0-d, empty and odd-sized tensors (course keys; the
compiled backend made parallel by ``low_threshold``) and one just above
``_tuning.PARALLEL_MIN_ELEMENTS`` whose thread ranges straddle tensors (named
keys; the real parallel path of every backend).  Plus: states that do not
match the flags, and missing, unknown or positional keywords, raise the same
error on every backend and write nothing.
"""

import hashlib
import itertools

import numpy as np
import pytest

from fusedoptim import _reference as R
from fusedoptim import _tuning
from fusedoptim import _validate as V
from fusedoptim.backend import active
from fusedoptim.families import FAMILIES
from helpers import (GENERIC, VALUES, assert_same_or_both_nan, assert_unchanged, keywords,
                     snapshot)

STEPS = 3
DTYPES = [np.float32, np.float64]

#: Keywords run at two values each.
VARIED = {"gscale": (1.0, 0.37), "weight_decay": (0.0, 0.0125)}
#: State slots that hold second moments (non-negative), or a mean that must stay
#: small next to one (so the centered variance is positive); others are signed.
NONNEG_SLOTS = {"sq", "v", "vmax", "sum", "u", "acc"}
SMALL_SLOTS = {"gavg"}


def _flag_combinations():
    for fam in FAMILIES.values():
        for values in itertools.product((False, True), repeat=len(fam.flags)):
            yield fam.name, dict(zip(fam.flags, values))


CASES = list(_flag_combinations())
CASE_IDS = [f"{name}-" + ("+".join(k for k, v in flags.items() if v) or "plain")
            for name, flags in CASES]
SCALARS = [dict(zip(VARIED, values)) for values in itertools.product(*VARIED.values())]
SCALAR_IDS = ["-".join(f"{k}{v}" for k, v in s.items()) for s in SCALARS]


# --- models ---------------------------------------------------------------------

def _small_shapes():
    # 0-d and empty tensors sit between others, so the concatenated index space
    # has zero-length pieces; odd sizes leave SIMD tails.
    return [(), (0,), (1,), (7,), (3, 0), (33, 5), (4099,), (61, 67), (100, 17), (5, 1)]


def _large_shapes():
    n = _tuning.PARALLEL_MIN_ELEMENTS
    return [(n // 3 + 7,), (3, 5), (n // 3 + 1,), (0,), (n // 6 + 3, 2), (1,), (9, 11)]


MODELS = {"small": (_small_shapes, V.COURSE), "large": (_large_shapes, V.NAMED)}
_model_cache = {}


def _initial(model, dtype, layout, slots):
    """Cached start of a run: parameters, one gradient dict per step, and a
    state dict per slot (all slots; the caller drops the absent ones).  In
    the Fortran layout, tensors of 2 dimensions or more are Fortran-ordered
    and every other gradient is C-ordered (re-laid out by the backend)."""
    key = (model, np.dtype(dtype).name, layout, slots)
    if key not in _model_cache:
        shapes, mode = MODELS[model]
        rng = np.random.default_rng([np.dtype(dtype).itemsize, ord(layout),
                                     sum(map(ord, model + "".join(slots)))])
        params, grads, states = {}, [{} for _ in range(STEPS)], {s: {} for s in slots}
        gkey = (lambda k: "d" + k) if mode == V.COURSE else (lambda k: k)
        skey = gkey if mode == V.COURSE else (lambda k: k)
        for i, shape in enumerate(shapes()):
            name = f"w{i}"
            order = "F" if layout == "F" and len(shape) > 1 else "C"
            params[name] = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
            for step, g in enumerate(grads):
                gorder = "C" if (i + step) % 2 else order
                g[gkey(name)] = np.asarray(rng.standard_normal(shape), dtype=dtype,
                                           order=gorder)
            for slot, d in states.items():
                x = rng.standard_normal(shape)
                if slot in NONNEG_SLOTS:
                    x = np.abs(x) + 0.5
                elif slot in SMALL_SLOTS:
                    x = 0.1 * x
                d[skey(name)] = np.asarray(x, dtype=dtype, order=order)
        _model_cache[key] = (params, grads, states, mode)
    return _model_cache[key]


def _copy(d):
    return {k: a.copy(order="K") for k, a in d.items()}


def run(fn, family, flags, scalars, model, dtype, layout):
    """``STEPS`` steps of ``fn`` from the cached start; returns the final
    arrays, named, and checks that the gradients were only read."""
    params0, grads, states0, mode = _initial(model, dtype, layout, family.slots)
    params = _copy(params0)
    on = family.active_slots(keywords(family, flags, scalars, 1))
    states = tuple((slot, _copy(states0[slot])) if used else V.ABSENT
                   for slot, used in zip(family.slots, on))
    before = snapshot(*grads)
    with np.errstate(all="ignore"):
        for t in range(1, STEPS + 1):
            fn(params, grads[t - 1], states, mode, **keywords(family, flags, scalars, t))
    assert_unchanged(before, *grads)
    out = [(f"params[{k!r}]", a) for k, a in params.items()]
    out += [(f"{slot}[{k!r}]", a) for slot, d in states if d is not None for k, a in d.items()]
    return out


def digest(arrays):
    """A hash of the arrays' values with every NaN made the same NaN, so that
    equal digests mean :func:`assert_same_or_both_nan` holds for each."""
    h = hashlib.sha256()
    for _what, a in arrays:
        h.update(np.where(np.isnan(a), np.array(np.nan, a.dtype), a).tobytes(order="C"))
    return h.hexdigest()


# The reference's digest per case: it does not depend on the backend or the
# thread count, so it is computed once.
_want = {}


@pytest.mark.parametrize("layout", ["C", "F"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("scalars", SCALARS, ids=SCALAR_IDS)
@pytest.mark.parametrize("name,flags", CASES, ids=CASE_IDS)
def test_matches_reference(backend, threads, low_threshold, name, flags, scalars, dtype,
                           layout):
    family = FAMILIES[name]
    for model in MODELS:
        args = (family, flags, scalars, model, dtype, layout)
        got = run(getattr(active(), name), *args)
        key = (name, tuple(flags.items()), tuple(scalars.items()), model,
               np.dtype(dtype).name, layout)
        if key not in _want:
            _want[key] = digest(run(getattr(R, name), *args))
        if digest(got) != _want[key]:
            want = run(getattr(R, name), *args)
            for (what, a), (_, b) in zip(got, want):
                assert_same_or_both_nan(a, b, f"{model}: {what}")
            pytest.fail("digest differs but every array matches")  # pragma: no cover


def test_every_backend_has_every_family(backend):
    mod = active()
    for name in FAMILIES:
        assert callable(getattr(mod, name, None)), f"{backend} has no {name!r} step"
    assert callable(mod.grad_sumsq) and callable(mod.set_num_threads)


def test_generated_cases_cover_every_family_and_flag():
    assert {name for name, _flags in CASES} == set(FAMILIES)
    assert len(CASES) == sum(2 ** len(f.flags) for f in FAMILIES.values())
    for fam in FAMILIES.values():
        kw = keywords(fam, {f: True for f in fam.flags}, SCALARS[-1], 2)
        assert tuple(kw) == fam.scalars + ("gscale",) + fam.flags
        assert set(kw) == set(fam.keywords)


# --- calls that must be refused ------------------------------------------------------

def _bad_state_cases():
    """(family, case id, flags, states) whose states do not match the flags."""
    for fam in FAMILIES.values():
        on = {f: True for f in fam.flags}
        for i, slot in enumerate(fam.slots):
            present = [True] * len(fam.slots)
            present[i] = False
            yield fam.name, f"{slot}-absent", on, present
        for slot, flag in fam.optional.items():
            yield fam.name, f"{slot}-given-{flag}-false", dict(on, **{flag: False}), \
                [True] * len(fam.slots)
        yield fam.name, "one-slot-short", on, [True] * (len(fam.slots) - 1)
        yield fam.name, "one-slot-extra", on, [True] * (len(fam.slots) + 1)


BAD_STATES = list(_bad_state_cases())


def _small_step(family, present):
    rng = np.random.default_rng(3)
    params = {"a": rng.standard_normal((3, 2)), "b": rng.standard_normal(5)}
    grads = {"d" + k: rng.standard_normal(a.shape) for k, a in params.items()}
    labels = family.slots + ("extra",)
    states = tuple((labels[i], {"d" + k: np.abs(rng.standard_normal(a.shape))
                                for k, a in params.items()}) if p else V.ABSENT
                   for i, p in enumerate(present))
    return params, grads, states


def _outcome(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as exc:  # noqa: BLE001 - comparing whatever each raises
        return type(exc), str(exc)
    return None


@pytest.mark.parametrize("name,case,flags,present", BAD_STATES,
                         ids=[f"{c[0]}-{c[1]}" for c in BAD_STATES])
def test_states_inconsistent_with_flags_refused(backend, name, case, flags, present):
    family = FAMILIES[name]
    kw = keywords(family, flags, SCALARS[-1], 2)
    params, grads, states = _small_step(family, present)
    want = _outcome(getattr(R, name), params, grads, states, V.COURSE, **kw)
    assert want is not None and want[0] is ValueError, want
    if "-given-" in case or "-absent" in case:
        assert repr(case.split("-")[0]) in want[1], want
    before = snapshot(params, grads, *[d for _lab, d in states if d is not None])
    got = _outcome(getattr(active(), name), params, grads, states, V.COURSE, **kw)
    assert got == want
    assert_unchanged(before, params, grads, *[d for _lab, d in states if d is not None])


def _keyword_cases():
    for fam in FAMILIES.values():
        for k in fam.keywords:
            yield fam.name, f"missing-{k}", k
        yield fam.name, "unknown", "learning_rate_typo"


KEYWORD_CASES = list(_keyword_cases())


@pytest.mark.parametrize("name,case,keyword", KEYWORD_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in KEYWORD_CASES])
def test_missing_or_unknown_keyword_is_type_error(backend, name, case, keyword):
    family = FAMILIES[name]
    kw = keywords(family, {f: True for f in family.flags}, SCALARS[-1], 2)
    if keyword in kw:
        del kw[keyword]
    else:
        kw[keyword] = 0.5
    params, grads, states = _small_step(family, [True] * len(family.slots))
    before = snapshot(params, grads, *[d for _lab, d in states])
    with pytest.raises(TypeError, match=keyword):
        getattr(active(), name)(params, grads, states, V.COURSE, **kw)
    assert_unchanged(before, params, grads, *[d for _lab, d in states])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hyperparameters_are_keyword_only(backend, name):
    family = FAMILIES[name]
    kw = keywords(family, {f: True for f in family.flags}, SCALARS[-1], 2)
    first = family.scalars[0]
    value = kw.pop(first)
    params, grads, states = _small_step(family, [True] * len(family.slots))
    before = snapshot(params, grads, *[d for _lab, d in states])
    with pytest.raises(TypeError):
        getattr(active(), name)(params, grads, states, V.COURSE, value, **kw)
    assert_unchanged(before, params, grads, *[d for _lab, d in states])


# --- several parameter groups in one call ------------------------------------------
#
# ``<family>_groups``: three groups over consecutive tensors of each model, every
# group with its own flags (a rotation of the case's combination, so slot-switching
# flags differ between groups) and its own scalars; the shared gscale is not 1.
# Every backend matches the reference bit for bit, and the reference matches three
# one-group calls, one per group.

GROUP_CASES = [(fam.name, c) for fam in FAMILIES.values() for c in range(2 ** len(fam.flags))]
NGROUPS = 3


def _group_flags(family, case):
    n = 2 ** len(family.flags)
    out = []
    for k in range(NGROUPS):
        bits = (case + (0, 1, 3)[k]) % n
        out.append({f: bool((bits >> j) & 1) for j, f in enumerate(family.flags)})
    return out


def _group_scalars(family, k):
    s = {name: VALUES.get(name, GENERIC) * (1.0 - 0.1 * k) for name in family.scalars
         if not callable(VALUES.get(name)) and name != "weight_decay"}
    s["weight_decay"] = (0.0, 0.0125, 0.03)[k]
    return s


def _group_split(params):
    names = list(params)
    cut = [0, len(names) // 3, 2 * len(names) // 3, len(names)]
    return [names[cut[k]:cut[k + 1]] for k in range(NGROUPS)]


def _group_kw(family, flags, k, t):
    kw = keywords(family, flags[k], _group_scalars(family, k), t)
    del kw["gscale"]
    return kw


def run_groups(fn, family, case, model, dtype, layout, per_group=False):
    """``STEPS`` grouped steps (``fn`` a ``<family>_groups``; with
    ``per_group``, ``fn`` is the one-group step called once per group)."""
    params0, grads, states0, mode = _initial(model, dtype, layout, family.slots)
    params = _copy(params0)
    flags = _group_flags(family, case)
    split = _group_split(params)
    sizes = tuple(len(s) for s in split)
    on = [any(x) for x in zip(*(family.active_slots(_group_kw(family, flags, k, 1))
                                for k in range(NGROUPS)))]
    states = tuple((slot, _copy(states0[slot])) if used else V.ABSENT
                   for slot, used in zip(family.slots, on))
    key = (lambda n: "d" + n) if mode == V.COURSE else (lambda n: n)
    before = snapshot(*grads)
    with np.errstate(all="ignore"):
        for t in range(1, STEPS + 1):
            kws = tuple(_group_kw(family, flags, k, t) for k in range(NGROUPS))
            if not per_group:
                fn(params, grads[t - 1], states, mode, kws, sizes, gscale=0.37)
                continue
            for k, names in enumerate(split):
                mine = family.active_slots(kws[k])
                sub = tuple((lab, {key(n): d[key(n)] for n in names}) if d is not None and m
                            else V.ABSENT for (lab, d), m in zip(states, mine))
                fn({n: params[n] for n in names}, grads[t - 1], sub, mode, gscale=0.37,
                   **kws[k])
    assert_unchanged(before, *grads)
    out = [(f"params[{k!r}]", a) for k, a in params.items()]
    out += [(f"{slot}[{k!r}]", a) for slot, d in states if d is not None for k, a in d.items()]
    return out


_want_groups = {}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name,case", GROUP_CASES, ids=[f"{n}-{c}" for n, c in GROUP_CASES])
def test_groups_match_reference(backend, threads, low_threshold, name, case, dtype):
    family = FAMILIES[name]
    for model in MODELS:
        args = (family, case, model, dtype, "F")
        key = (name, case, model, np.dtype(dtype).name)
        if key not in _want_groups:
            want = run_groups(getattr(R, name + "_groups"), *args)
            # The grouped reference is the one-group reference, group by group.
            assert digest(want) == digest(run_groups(getattr(R, name), *args, per_group=True))
            _want_groups[key] = digest(want)
        got = run_groups(getattr(active(), name + "_groups"), *args)
        if digest(got) != _want_groups[key]:
            want = run_groups(getattr(R, name + "_groups"), *args)
            for (what, a), (_, b) in zip(got, want):
                assert_same_or_both_nan(a, b, f"{model}: {what}")
            pytest.fail("digest differs but every array matches")  # pragma: no cover


def test_group_cases_differ_between_groups():
    for name, case in GROUP_CASES:
        family = FAMILIES[name]
        flags = _group_flags(family, case)
        assert flags[0] != flags[1]
        kws = [_group_kw(family, flags, k, 2) for k in range(NGROUPS)]
        assert kws[0]["lr"] != kws[1]["lr"] and kws[1]["weight_decay"] != 0.0


@pytest.mark.parametrize("name", list(FAMILIES))
def test_groups_bad_calls_refused(backend, name):
    """Same error on every backend, nothing written: sizes not adding up,
    a group missing a keyword or with an unknown one, a slot no group uses."""
    family = FAMILIES[name]
    on = {f: True for f in family.flags}
    params, grads, states = _small_step(family, [True] * len(family.slots))
    kw = keywords(family, on, SCALARS[-1], 2)
    del kw["gscale"]
    bad = [((kw, kw), (1, 2), states),
           ((kw, kw), (1,), states),
           ((kw, {k: v for k, v in kw.items() if k != "lr"}), (1, 1), states),
           ((kw, dict(kw, typo=1.0)), (1, 1), states),
           ((), (), states)]
    for flag in family.optional.values():
        off = dict(kw, **{flag: False})
        bad.append(((off, off), (1, 1), states))
    before = snapshot(params, grads, *[d for _lab, d in states])
    for groups, sizes, st in bad:
        want = _outcome(getattr(R, name + "_groups"), params, grads, st, V.COURSE, groups,
                        sizes, gscale=1.0)
        assert want is not None and want[0] in (TypeError, ValueError), want
        got = _outcome(getattr(active(), name + "_groups"), params, grads, st, V.COURSE,
                       groups, sizes, gscale=1.0)
        assert got == want
        assert_unchanged(before, params, grads, *[d for _lab, d in states])
