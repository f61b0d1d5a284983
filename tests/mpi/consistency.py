"""Cases of check_distributed.py on what must be the same everywhere: a
sharded checkpoint against the model it loads into, the checkpoints and
initial parameters of the ranks, the wrapper kind, a schedule's one call per
step, checkpoint files, and ranks in different collective methods."""

import os
import shutil
import tempfile

import numpy as np

import fusedoptim as fo
from fusedoptim.distributed import DataParallelOptimizer, DistributedError, ShardedOptimizer
from helpers import (COMM, RANK, W, assert_bitwise, check_params, expect_error, mean_of,
                     same_everywhere)

KINDS = (ShardedOptimizer, DataParallelOptimizer)


def model(shape=(70, 90), extra=False, drop_b=False):
    rng = np.random.default_rng(0)
    p = {"a": rng.standard_normal(shape).astype(np.float32),
         "b": rng.standard_normal(300).astype(np.float32)}
    if extra:
        p["c"] = np.ones(10, np.float32)
    if drop_b:
        del p["b"]
    return p


def model_grads(p, rank, step):
    rng = np.random.default_rng([rank, step, 3])
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in p.items()}


def ordered_mean(p, step, ranks=W):
    return mean_of([model_grads(p, r, step) for r in range(ranks)], ranks)


def expect_all(kind, fn, *needles):
    """``expect_error`` with several needles, all in the one message."""
    try:
        fn()
    except kind as exc:
        for needle in needles:
            assert needle in str(exc), f"{kind.__name__} without {needle!r}: {exc}"
        return
    raise AssertionError(f"no {kind.__name__} ({needles})")


def unchanged(opt, t):
    assert opt.t == t, f"t is {opt.t} after a refused load, not {t}"


def case_shard_checks():
    """Shards record the model's shapes: a reshaped, added or removed
    parameter, a shard with a key of another model, shards of the old
    format, a missing rank and another state_dtype are refused on every
    rank with the single-process optimizer's message (a (60, 90) model used
    to load the first 5400 entries of a (70, 90) tensor's state)."""
    src = model()
    opt = ShardedOptimizer(fo.Adam, src, lr=1e-2)
    for step in range(2):
        opt.step(model_grads(src, RANK, step))
    shards = COMM.allgather(opt.state_dict())
    full = COMM.bcast(opt.full_state_dict(), root=0)
    for shape in ((90, 70), (60, 90), (80, 90)):
        o = ShardedOptimizer(fo.Adam, model(shape), lr=1e-2)
        want = (f"state_dict['state/exp_avg/a'] has shape (70, 90) but this optimizer's "
                f"state array has shape {shape}")
        for sd in (shards, full):
            expect_error(ValueError, lambda: o.load_state_dict(sd), want)
            unchanged(o, 0)
    o = ShardedOptimizer(fo.Adam, model(drop_b=True), lr=1e-2)
    for sd in (shards, full):
        expect_error(ValueError, lambda: o.load_state_dict(sd),
                     "state_dict has an unexpected key 'state/exp_avg/b'")
    o = ShardedOptimizer(fo.Adam, model(extra=True), lr=1e-2)
    for sd in (shards, full):
        expect_error(KeyError, lambda: o.load_state_dict(sd),
                     "state_dict has no 'state/exp_avg/c'")
    o = ShardedOptimizer(fo.Adam, model(), lr=1e-2)
    stray = [dict(s) for s in shards]
    stray[-1]["state/exp_avg/zz"] = np.zeros(3, np.float32)  # the last shard only
    expect_error(ValueError, lambda: o.load_state_dict(stray),
                 "unexpected key 'state/exp_avg/zz'")
    old = [{k: v for k, v in s.items() if k != "shard/format" and not k.startswith("shard/shape/")}
           for s in shards]
    expect_error(ValueError, lambda: o.load_state_dict(old), "shards of format 1")
    if W > 1:
        expect_error(ValueError, lambda: o.load_state_dict(shards[RANK]),
                     "rank 0: state_dict holds shards of ranks [0], not every rank of one "
                     "checkpoint: pass the list of every rank's state_dict()")
    unchanged(o, 0)
    o.load_state_dict(shards)
    assert o.t == 2
    # Another state format: named first, as on one process, not by a dtype.
    bf = ShardedOptimizer(fo.Adam, model(), lr=1e-2, state_dtype="bfloat16")
    bf.step(model_grads(src, RANK, 0))
    bshards = COMM.allgather(bf.state_dict())
    bfull = COMM.bcast(bf.full_state_dict(), root=0)
    for sd in (bshards, bfull):
        expect_error(ValueError, lambda: o.load_state_dict(sd),
                     "state_dtype is 'bfloat16' in state_dict but None here")
    for sd in (shards, full):
        expect_error(ValueError, lambda: bf.load_state_dict(sd),
                     "state_dtype is None in state_dict but 'bfloat16' here")
    unchanged(o, 2)
    unchanged(bf, 1)


def case_load_digest():
    """Ranks given different checkpoints (same t and settings, other state)
    raise on every rank, naming the entry, with nothing loaded; the same
    checkpoint as a dict on one rank and an npz file on another, or shards
    listed in another order, loads."""
    def run(seed):
        o = fo.Adam(model(), lr=1e-2)
        for step in range(3):
            o.step(model_grads(o.parameters, seed, step))
        return o.state_dict()

    runs = [run(0), run(1)]
    tmp = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
    if RANK == 0:
        np.savez(os.path.join(tmp, "run0.npz"), **runs[0])
    COMM.Barrier()
    for kind in KINDS:
        o = kind(fo.Adam, model(), lr=1e-2)
        if W > 1:
            mine = runs[0] if RANK == 0 else runs[1]
            expect_error(ValueError, lambda: o.load_state_dict(mine),
                         "the ranks loaded different checkpoints: 'state/exp_avg/a' differs "
                         "between ranks 0 and 1")
            unchanged(o, 0)
        with np.load(os.path.join(tmp, "run0.npz"), allow_pickle=False) as npz:
            o.load_state_dict(runs[0] if RANK % 2 == 0 else npz)
        assert o.t == 3
    # Shards: one rank given another run's shards.
    src = [ShardedOptimizer(fo.Adam, model(), lr=1e-2) for _ in range(2)]
    for i, s in enumerate(src):
        for step in range(2):
            s.step(model_grads(model(), RANK + 10 * i, step))
    lists = [COMM.allgather(s.state_dict()) for s in src]
    o = ShardedOptimizer(fo.Adam, model(), lr=1e-2)
    if W > 1:
        # The first shard that holds a piece of the model names it (at 4
        # ranks, rank 0's slice is empty).
        expect_all(ValueError, lambda: o.load_state_dict(lists[0] if RANK else lists[1]),
                   "the ranks loaded different checkpoints: shard ", "'s 'state/exp_avg/",
                   "differs between ranks 0 and 1")
        unchanged(o, 0)
    o.load_state_dict(lists[0] if RANK % 2 else lists[0][::-1])
    assert o.t == 2
    COMM.Barrier()
    if RANK == 0:
        shutil.rmtree(tmp)


def case_construction_agreement():
    """The wrapper kind and the parameters' initial values are compared at
    construction: mixing the two wrappers (an MPI abort with clipping) or
    seeding the ranks differently (ranks that diverge for ever) raises on
    every rank; NaN in the same bytes everywhere is alike."""
    last = W - 1
    if W > 1:
        mixed = ShardedOptimizer if RANK < last else DataParallelOptimizer
        expect_error(ValueError, lambda: mixed(fo.Adam, model(), lr=1e-2, max_grad_norm=1.0),
                     f"the wrapper is DataParallelOptimizer on rank {last} but "
                     f"ShardedOptimizer on rank 0")
        for kind in KINDS:
            p = model()
            if RANK == last:
                p["b"][7] += 1.0
            expect_error(ValueError, lambda: kind(fo.Adam, p, lr=1e-2),
                         f"parameter 'b' differs between ranks 0 and {last}: initialize every "
                         f"rank from the same seed, or broadcast rank 0's values")
    for kind in KINDS:
        p = model()
        p["a"][0, 0] = np.nan
        kind(fo.Adam, p, lr=1e-2)


def case_schedule_once():
    """A schedule is called once per step, as on one process (its value
    checked across the ranks is the one the step uses): a schedule that
    counts its calls stays bitwise the single-process run, on skipped steps
    too, and one that would fail on a second call never does."""
    def counting():
        calls = []

        def schedule(t):
            calls.append(t)
            return 1e-2 / len(calls)
        return schedule, calls

    for kind in KINDS:
        sched, calls = counting()
        ref_sched, ref_calls = counting()
        p, rp = model(), model()
        hp = dict(max_grad_norm=1.0, skip_nonfinite=True)
        opt, ref = kind(fo.Adam, p, lr=sched, **hp), fo.Adam(rp, lr=ref_sched, **hp)
        for step in range(4):
            g = model_grads(p, RANK, step)
            if step == 2:
                g["b"][5] = np.nan  # a skipped step: the schedule is called once too
            mean = ordered_mean(p, step)
            if step == 2:
                mean["b"][5] = np.nan
            assert opt.step(g) == ref.step(mean), f"{kind.__name__} step {step}"
        assert calls == ref_calls, f"{kind.__name__}: schedule called at {calls}, not {ref_calls}"
        assert opt.last_lr == ref.last_lr and opt.skipped_steps == ref.skipped_steps == 1
        check_params(p, rp, f"{kind.__name__} counting schedule")
        assert opt.lr is sched, "the schedule was not put back after the step"

        seen = []

        def flaky(t):
            seen.append(t)
            if RANK == W - 1 and len(seen) > 1:
                raise RuntimeError("called twice")
            return 1e-2

        opt = kind(fo.Adam, model(), lr=flaky)
        assert opt.step(model_grads(model(), RANK, 0)) and opt.t == 1


def case_files():
    """save writes one single-process checkpoint (rank 0 writes, every rank
    returns once it is complete); load reads it on every rank at any world
    size, into either wrapper, a plain optimizer too; a rank that cannot
    read it, or a differing path, raises on every rank (the others used to
    wait for ever)."""
    last = W - 1
    tmp = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
    path = os.path.join(tmp, "ckpt.safetensors")
    for kind in KINDS:
        p, rp = model(), model()
        opt, ref = kind(fo.AdamW, p, lr=1e-2), fo.AdamW(rp, lr=1e-2)
        for step in range(2):
            opt.step(model_grads(p, RANK, step))
            ref.step(ordered_mean(p, step))
        opt.save(path, parameters=True)
        want = ref.state_dict()
        for other in KINDS:
            q = {k: np.zeros_like(v) for k, v in model().items()}
            o = other(fo.AdamW, q, lr=1e-2)
            o.load(path)
            check_params(q, rp, f"{kind.__name__} file -> {other.__name__}")
            got = o.full_state_dict() if other is ShardedOptimizer else o.state_dict()
            if RANK == 0:
                for k, v in want.items():
                    if isinstance(v, np.ndarray):
                        assert_bitwise(got[k], v, f"{kind.__name__} file -> {other.__name__} {k}")
            o.step(model_grads(q, RANK, 2))
            assert o.t == 3 and same_everywhere(q)
        if RANK == 0:
            plain = fo.AdamW(model(), lr=1e-2)
            fo.load_checkpoint(plain, path)
            assert plain.t == 2
        o = kind(fo.AdamW, model(), lr=1e-2)
        missing = path if RANK != last else path + ".missing"
        expect_error(DistributedError, lambda: o.load(missing),
                     f"rank {last}: [Errno 2] No such file or directory")
        unchanged(o, 0)
        if W > 1:
            expect_error(ValueError, lambda: o.save(path + str(RANK)), "path is ")
    COMM.Barrier()
    if RANK == 0:
        shutil.rmtree(tmp)


def case_toggled_slot():
    """A slot switched through param_groups (AMSGrad's maximum) is in every
    checkpoint of both wrappers: switched on before the save (pending, at
    its initial value), or on for a step and off again (kept); shards,
    full_state_dict and a file load into a wrapper built with the saved
    setting and resume bit for bit, the kept maximum included when the
    setting comes back on.  (full_state_dict left a pending slot out, and a
    sharded load refused a kept one.)"""
    tmp = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
    path = os.path.join(tmp, "toggled.safetensors")
    # pattern: the amsgrad setting before each of steps 0-4 (None: unchanged); the save
    # comes after step 3's setting, before step 3, into an optimizer built with it
    patterns = {"pending": (False, None, None, True, None),
                "kept": (False, True, False, None, True)}
    for label, settings in patterns.items():
        rp = model()
        ref = fo.Adam(rp, lr=1e-2)
        for step, on in enumerate(settings):
            if on is not None:
                ref.param_groups[0]["amsgrad"] = on
            ref.step(ordered_mean(rp, step))
        for kind in KINDS:
            for how in ("state_dict", "full", "file"):
                p = model()
                opt = kind(fo.Adam, p, lr=1e-2)
                for step, on in enumerate(settings[:4]):
                    if on is not None:
                        opt.param_groups[0]["amsgrad"] = on
                    if step < 3:
                        opt.step(model_grads(p, RANK, step))
                saved_on = [x for x in settings[:4] if x is not None][-1]
                q = {k: v.copy() for k, v in p.items()}
                new = kind(fo.Adam, q, lr=1e-2, amsgrad=saved_on)
                if how == "file":
                    opt.save(path)
                    new.load(path)
                elif how == "full" and kind is ShardedOptimizer:
                    new.load_state_dict(COMM.bcast(opt.full_state_dict(), root=0))
                else:
                    sd = opt.state_dict()
                    new.load_state_dict(COMM.allgather(sd) if kind is ShardedOptimizer else sd)
                for step in range(3, 5):
                    if step > 3 and settings[step] is not None:
                        new.param_groups[0]["amsgrad"] = settings[step]
                    new.step(model_grads(q, RANK, step))
                check_params(q, rp, f"{kind.__name__} {how}, {label} slot")
    COMM.Barrier()
    if RANK == 0:
        shutil.rmtree(tmp)


def case_mixed_calls():
    """Ranks in different collective methods (the last rank saves, or takes
    a state_dict, while the others step) get one DistributedError naming
    both methods on every rank, with nothing changed: the same step then
    runs on every rank as on one process."""
    if W == 1:
        return
    last = W - 1
    tmp = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
    try:
        path = os.path.join(tmp, "ckpt.safetensors")
        for kind in KINDS:
            p, rp = model(), model()
            opt, ref = kind(fo.Adam, p, lr=1e-2), fo.Adam(rp, lr=1e-2)
            opt.save(path)
            g = model_grads(p, RANK, 0)
            other = {"save": lambda: opt.save(path), "load": lambda: opt.load(path),
                     "load_state_dict": lambda: opt.load_state_dict(opt.state_dict())}
            if kind is ShardedOptimizer:
                other["full_state_dict"] = opt.full_state_dict
            for name, call in other.items():
                expect_all(DistributedError, call if RANK == last else lambda: opt.step(g),
                           f"rank {last} called {name}() while rank 0 called step()")
                unchanged(opt, 0)
            assert opt.step(g) and ref.step(ordered_mean(p, 0))
            check_params(p, rp, f"{kind.__name__} after the mixed calls")
    finally:
        COMM.Barrier()
        if RANK == 0:
            shutil.rmtree(tmp, ignore_errors=True)
