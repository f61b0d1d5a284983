"""Run under ``mpiexec -n N python tests/mpi/check_distributed.py``: every
distributed case at world size N in one launch (tests/test_mpi.py drives it).

Each rank checks its own results; rank 0 prints ``PASS <case>`` lines and
the process exits 1 if any rank saw a failure.  An unexpected exception
aborts the whole job (MPI_Abort), so a bug shows as a failure, never a hang.
"""

import os
import shutil
import sys
import tempfile
import traceback

import numpy as np
from mpi4py import MPI

import fusedoptim as fo
from fusedoptim.distributed import DataParallelOptimizer, ShardedOptimizer, flat_parameters

from agreement import case_arguments, case_load_agreement, case_schedules
from consistency import (case_construction_agreement, case_files, case_load_digest,
                         case_mixed_calls, case_schedule_once, case_shard_checks,
                         case_toggled_slot)
from helpers import (COMM, RANK, W, assert_bitwise, check_params, expect_error, mean_of,
                     same_float, same_everywhere)

# Several dtypes and layouts; W1 straddles ranks, W2 is Fortran-ordered, z is empty.
SHAPES = {"W1": ((37, 300), np.float32, "C"), "b1": ((37, 1), np.float32, "C"),
          "W2": ((300, 5), np.float32, "F"), "emb": ((9000,), np.float64, "C"),
          "z": ((0,), np.float32, "C"), "b2": ((5,), np.float64, "C")}

CASES = {
    "Adam": (fo.Adam, dict(lr=1e-2)),
    "AdamW-amsgrad-schedule": (fo.AdamW, dict(lr=fo.CosineDecay(1e-2, 10), amsgrad=True)),
    "SGD-momentum-nesterov": (fo.SGD, dict(lr=0.05, momentum=0.9, nesterov=True,
                                           weight_decay=1e-3)),
    "RMSProp-centered": (fo.RMSProp, dict(lr=1e-3, centered=True, momentum=0.5)),
    "Adagrad": (fo.Adagrad, dict(lr=0.1, initial_accumulator_value=0.1)),
    "Adam-clip-skip": (fo.Adam, dict(lr=1e-2, max_grad_norm=0.5, skip_nonfinite=True)),
    # Not skipped: clipped as clip_grad_norm_ clips (by 0 for inf, NaN for NaN).
    "Adam-clip-nonfinite": (fo.Adam, dict(lr=1e-2, max_grad_norm=0.5)),
}


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dt, order) in SHAPES.items():
        out[name] = np.asarray(rng.standard_normal(shape), dtype=dt, order=order)
    return out


def grads_of(rank, step, case=""):
    """Rank ``rank``'s gradients at ``step`` (every rank can compute any rank's)."""
    rng = np.random.default_rng([rank, step, len(case)])
    g = {name: rng.standard_normal(shape).astype(dt)
         for name, (shape, dt, _o) in SHAPES.items()}
    if case == "Adam-clip-nonfinite" and rank == W - 1:
        if step == 2:
            g["W1"][3, 4] = np.inf
        if step == 3:
            g["emb"][7] = np.nan
    if case == "Adam-clip-skip":
        if step == 2 and rank == W - 1:
            g["W1"][3, 4] = np.nan  # every rank must skip
        if step == 3:
            g["emb"] *= 1e160  # float64 squares overflow: the rescaled norm path
    return g


def ordered_mean(step, world, case="", ranks=None):
    """The rank-ordered mean, as the docs define it."""
    ranks = range(world) if ranks is None else ranks
    return mean_of([grads_of(r, step, case) for r in ranks], world)


# --- cases -----------------------------------------------------------------------

def case_exact(label, kind, steps=4):
    cls, hp = CASES[label]
    params, ref_params = make_params(), make_params()
    opt = kind(cls, params, **hp)
    ref = cls(ref_params, **hp)
    for step in range(steps):
        applied = opt.step(grads_of(RANK, step, label))
        want = ref.step(ordered_mean(step, W, label))
        assert applied == want, f"step {step}: applied {applied} vs {want}"
        assert same_float(opt.last_grad_norm, ref.last_grad_norm), \
            f"step {step}: norm {opt.last_grad_norm!r} vs {ref.last_grad_norm!r}"
        check_params(params, ref_params, f"step {step}")
    assert opt.t == ref.t and opt.skipped_steps == ref.skipped_steps
    assert same_everywhere(params)
    if label == "Adam-clip-skip":
        assert ref.skipped_steps == 1, "the NaN step was not skipped"
    if kind is ShardedOptimizer:
        full = opt.full_state_dict()
        if RANK == 0:
            want = ref.state_dict()
            assert sorted(full) == sorted(want), sorted(set(full) ^ set(want))
            for k, v in want.items():
                if isinstance(v, np.ndarray):
                    assert_bitwise(full[k], v, k)
                    assert full[k].flags.f_contiguous == v.flags.f_contiguous, k
                else:
                    assert full[k] == v, k
    # State per rank: the sharded one holds about 1/W of the replicated one.
    total = COMM.allreduce(opt.state_nbytes)
    assert total == (ref.state_nbytes if hasattr(ref, "state_nbytes") else
                     sum(a.nbytes for d in ref.state.values() for a in d.values())) * (
                         1 if kind is ShardedOptimizer else W)


def case_flat_buffers():
    """Parameters laid end to end (no staging copy) give the same result."""
    cls, hp = CASES["Adam"]
    params = flat_parameters(make_params())
    ref_params = make_params()
    opt, ref = ShardedOptimizer(cls, params, **hp), cls(ref_params, **hp)
    assert all(g.flat is not None for g in opt._groups), "flat_parameters not detected"
    for step in range(3):
        opt.step(grads_of(RANK, step))
        ref.step(ordered_mean(step, W))
    check_params(params, ref_params, "flat")


def case_equal_slices():
    """One tensor of 12 blocks: equal slices at 1-4 ranks (the Allgather path)."""
    n = 4096 * 12
    params = {"w": np.linspace(-1, 1, n, dtype=np.float32)}
    ref_params = {"w": params["w"].copy()}
    opt = ShardedOptimizer(fo.Adam, params, lr=1e-2, max_grad_norm=10.0)
    ref = fo.Adam(ref_params, lr=1e-2, max_grad_norm=10.0)
    assert len(set(opt._groups[0].counts)) == 1
    for step in range(3):
        gs = [np.random.default_rng([r, step]).standard_normal(n).astype(np.float32)
              for r in range(W)]
        acc = gs[0].copy()
        for g in gs[1:]:
            acc = acc + g
        opt.step({"w": gs[RANK]})
        ref.step({"w": acc / np.float32(W)})
        assert opt.last_grad_norm == ref.last_grad_norm
    check_params(params, ref_params, "equal slices")
    assert same_everywhere(params)


def case_tiny():
    """Fewer elements than ranks can share: most ranks own nothing."""
    shapes = {"a": ((10,), np.float32), "b": ((3,), np.float64)}
    params = {k: np.arange(s[0], dtype=dt) / 7 for k, (s, dt) in shapes.items()}
    ref_params = {k: v.copy() for k, v in params.items()}
    hp = dict(lr=0.1, max_grad_norm=0.3, skip_nonfinite=True)
    opt, ref = ShardedOptimizer(fo.Adam, params, **hp), fo.Adam(ref_params, **hp)
    for step in range(3):
        gs = [{k: np.random.default_rng([r, step]).standard_normal(s).astype(dt)
               for k, (s, dt) in shapes.items()} for r in range(W)]
        mean = {}
        for k in shapes:
            acc = gs[0][k].copy()
            for g in gs[1:]:
                acc = acc + g[k]
            mean[k] = acc / acc.dtype.type(W)
        opt.step(gs[RANK])
        ref.step(mean)
        assert opt.last_grad_norm == ref.last_grad_norm
    check_params(params, ref_params, "tiny")
    full = opt.full_state_dict()
    if RANK == 0:
        for k, v in ref.state_dict().items():
            if isinstance(v, np.ndarray):
                assert_bitwise(full[k], v, k)
    again = ShardedOptimizer(fo.Adam, {k: v.copy() for k, v in params.items()}, **hp)
    again.load_state_dict(COMM.allgather(opt.state_dict()))
    assert again.t == 3 and COMM.allreduce(again.state_nbytes) == COMM.allreduce(opt.state_nbytes)


def case_reshard():
    """Shards saved at W ranks load at W' = max(1, W - 1) and at W + 0 (full
    checkpoint), and resume bit-identically."""
    cls, hp = CASES["AdamW-amsgrad-schedule"]
    params = make_params()
    opt = ShardedOptimizer(cls, params, **hp)
    ref_params = make_params()
    ref = cls(ref_params, **hp)
    for step in range(3):
        opt.step(grads_of(RANK, step))
        ref.step(ordered_mean(step, W))
    shards = COMM.allgather(opt.state_dict())
    full = COMM.bcast(opt.full_state_dict(), root=0)
    # Each rank saves its shard to a file, as a training job would.
    tmp = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None, root=0)
    np.savez(os.path.join(tmp, f"shard{RANK}.npz"), **opt.state_dict())
    COMM.Barrier()
    snapshot = {k: v.copy() for k, v in ref_params.items()}
    ref_sd = ref.state_dict()
    sub_size = max(1, W - 1)
    for source in ("shards", "full", "npz files"):
        sub = COMM.Split(0 if RANK < sub_size else MPI.UNDEFINED, RANK)
        if sub != MPI.COMM_NULL:
            p2 = {k: v.copy() for k, v in snapshot.items()}
            opt2 = ShardedOptimizer(cls, p2, comm=sub, **hp)
            if source == "npz files":
                opt2.load_state_dict([np.load(os.path.join(tmp, f"shard{r}.npz"),
                                              allow_pickle=False) for r in range(W)])
            else:
                opt2.load_state_dict(shards if source == "shards" else full)
            assert opt2.t == 3
            r2p = {k: v.copy() for k, v in snapshot.items()}
            r2 = cls(r2p, **hp)
            r2.load_state_dict(ref_sd)
            for step in range(3, 6):
                opt2.step(grads_of(RANK, step))
                r2.step(ordered_mean(step, sub_size))
            check_params(p2, r2p, f"resumed from {source} at {sub_size} ranks")
            assert same_everywhere(p2, sub)
            sub.Free()
        COMM.Barrier()
    if RANK == 0:
        shutil.rmtree(tmp)
    # The full checkpoint loads into a plain single-process optimizer.
    plain = cls(make_params(), **hp)
    plain.load_state_dict(full)
    assert plain.t == 3


def case_faults():
    cls, hp = CASES["Adam"]
    last = W - 1

    def build(mutate):
        params = make_params()
        if RANK == last:
            mutate(params)
        return ShardedOptimizer(cls, params, **hp)

    if W > 1:
        def bad_shape(p):
            p["b1"] = np.zeros((1, 37), np.float32)

        def bad_name(p):
            p["b9"] = p.pop("b2")

        def bad_dtype(p):
            p["emb"] = p["emb"].astype(np.float32)
        expect_error(ValueError, lambda: build(bad_shape), "shape")
        expect_error(ValueError, lambda: build(bad_name), f"'b2' is on rank 0 but not on rank {last}")
        expect_error(ValueError, lambda: build(bad_dtype), "dtype")

        def bad_layout(p):
            p["W2"] = np.ascontiguousarray(p["W2"])
        expect_error(ValueError, lambda: build(bad_layout), "'W2' is C-ordered on rank")
        expect_error(ValueError, lambda: ShardedOptimizer(cls, make_params(),
                                                          lr=1e-2 if RANK else 2e-2),
                     "'lr'")
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        params = make_params()
        opt = kind(cls, params, **hp)
        opt.step(grads_of(RANK, 0))
        before = {k: v.copy() for k, v in params.items()}
        g = grads_of(RANK, 1)
        if RANK == last:
            del g["W2"]
        expect_error(KeyError, lambda: opt.step(g), f"rank {last}")
        g = grads_of(RANK, 1)
        if RANK == last:
            g["b1"] = g["b1"].astype(np.float64)
        expect_error(TypeError, lambda: opt.step(g), f"rank {last}")
        check_params(params, before, "after a failed step")
        assert opt.t == 1
        sd = opt.state_dict()
        shards = COMM.allgather(sd) if kind is ShardedOptimizer else [sd]
        bad = [dict(s) for s in shards]
        if RANK == last:  # this rank read a damaged checkpoint
            for s in bad:
                s.pop("t")
        state_before = {k: v.copy() for k, v in sd.items() if isinstance(v, np.ndarray)}
        expect_error(KeyError, lambda: opt.load_state_dict(
            bad if kind is ShardedOptimizer else bad[0]), f"rank {last}: state_dict has no 't'")
        if kind is ShardedOptimizer and W > 1:
            torn = [dict(s) for s in shards]
            torn[-1]["t"] = 7  # shards of different checkpoints
            expect_error(ValueError, lambda: opt.load_state_dict(torn), "differ in 't'")
        after = opt.state_dict()
        for k, v in state_before.items():
            assert_bitwise(after[k], v, f"state {k} after a failed load")
        if W > 1:
            opt.lr = 1e-2 if RANK else 2e-2
            expect_error(ValueError, lambda: opt.step(grads_of(RANK, 1)), "lr")
            opt.lr = 1e-2
        # The communicator still works and the ranks still agree.
        opt.step(grads_of(RANK, 1))
        assert opt.t == 2 and same_everywhere(params)


# --- reduced-precision state (float32 parameters only) ------------------------------

# Wf (Fortran-ordered, 4680 elements) is cut 4096 elements in at 2 and 3
# ranks, so its last piece (584 elements) is under QMIN_ELEMENTS but must
# stay int8-coded; b and s stay float32 in int8 mode; z is empty.
LOWP_SHAPES = {"A": ((17, 257), "C"), "b": ((100,), "C"), "Wf": ((36, 130), "F"),
               "z": ((0,), "C"), "s": ((4095,), "C")}
LOWP_CASES = {
    "Adam-bf16-stochastic": (fo.Adam, dict(lr=1e-2, state_dtype="bfloat16",
                                           state_rounding="stochastic", state_seed=3)),
    "AdamW-int8": (fo.AdamW, dict(lr=1e-2, state_dtype="int8", max_grad_norm=1.0)),
    "Lion-int8": (fo.Lion, dict(lr=1e-3, state_dtype="int8", weight_decay=0.1)),
    "Momentum-bf16-stochastic": (fo.Momentum, dict(lr=1e-2, state_dtype="bfloat16",
                                                   state_rounding="stochastic")),
}


def lowp_params():
    rng = np.random.default_rng(5)
    return {k: np.asarray(rng.standard_normal(sh), np.float32, order=o)
            for k, (sh, o) in LOWP_SHAPES.items()}


def lowp_mean(step, ranks):
    """The rank-ordered mean over ``ranks`` of every rank's gradients."""
    gs = [{k: np.random.default_rng([r, step, 9]).standard_normal(sh).astype(np.float32)
           for k, (sh, _o) in LOWP_SHAPES.items()} for r in range(ranks)]
    out = {}
    for k in gs[0]:
        acc = gs[0][k].copy()
        for g in gs[1:]:
            acc = acc + g[k]
        out[k] = acc / np.float32(ranks)
    return out


def lowp_grads(rank, step):
    return {k: np.random.default_rng([rank, step, 9]).standard_normal(sh).astype(np.float32)
            for k, (sh, _o) in LOWP_SHAPES.items()}


def check_state_dict(got, want):
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            assert_bitwise(got[k], v, k)
        else:
            assert got[k] == v, k


def case_lowp(label):
    """Sharded reduced-precision state: bitwise the single-process run (the
    stochastic rounding counts elements across the ranks' slices), and its
    full_state_dict is the single-process state_dict."""
    cls, hp = LOWP_CASES[label]
    params, ref_params = lowp_params(), lowp_params()
    opt, ref = ShardedOptimizer(cls, params, **hp), cls(ref_params, **hp)
    if W in (2, 3):  # Wf's last piece is under QMIN_ELEMENTS on rank 1 or 2
        assert any(n == "Wf" and b - a < 4096 and a for _i, n, _g, a, b, _o in opt._local) \
            == (RANK == W - 1), opt._local
    for step in range(3):
        opt.step(lowp_grads(RANK, step))
        ref.step(lowp_mean(step, W))
        check_params(params, ref_params, f"{label} step {step}")
    full = opt.full_state_dict()
    if RANK == 0:
        check_state_dict(full, ref.state_dict())
    assert COMM.allreduce(opt.state_nbytes) == ref.state_nbytes


def case_lowp_checkpoints():
    """int8 shards saved at W - 1 ranks load at W, saved at W load at 1; a
    single-process checkpoint loads at W; each resumes bitwise as the
    single-process run that was saved."""
    cls, hp = LOWP_CASES["AdamW-int8"]

    def run(world, sd=None, steps=range(3)):
        """Sharded at ``world`` ranks (None on the others): optimizer, params."""
        sub = COMM.Split(0 if RANK < world else MPI.UNDEFINED, RANK)
        if sub == MPI.COMM_NULL:
            return None
        params = lowp_params()
        opt = ShardedOptimizer(cls, params, comm=sub, **hp)
        if sd is not None:
            opt.load_state_dict(sd)
        for step in steps:
            opt.step(lowp_grads(RANK, step))
        out = opt.state_dict(), params
        sub.Free()
        return out

    def reference(saved_at, resumed_at):
        params = lowp_params()
        ref = cls(params, **hp)
        for step in range(3):
            ref.step(lowp_mean(step, saved_at))
        sd = ref.state_dict()
        p2 = lowp_params()  # the parameters are restored from their own file
        r2 = cls(p2, **hp)
        r2.load_state_dict(sd)
        for step in range(3, 6):
            r2.step(lowp_mean(step, resumed_at))
        return sd, p2

    for saved_at, resumed_at in ((W - 1, W), (W, 1)):
        if saved_at < 1:
            continue
        got = run(saved_at)
        shards = [s for s in COMM.allgather(got and got[0]) if s is not None]
        got = run(resumed_at, shards, range(3, 6))
        _sd, want = reference(saved_at, resumed_at)  # (its checkpoint is not needed)
        if got is not None:
            check_params(got[1], want, f"int8 shards {saved_at} -> {resumed_at} ranks")
    sd, want = reference(1, W)  # a single-process checkpoint, resumed at W ranks
    got = run(W, sd, range(3, 6))
    check_params(got[1], want, f"single-process int8 checkpoint at {W} ranks")


def main():
    cases = []
    for label in CASES:
        for kind in (ShardedOptimizer, DataParallelOptimizer):
            cases.append((f"{label} {kind.__name__}",
                          lambda label=label, kind=kind: case_exact(label, kind)))
    cases += [("flat_parameters", case_flat_buffers), ("equal slices", case_equal_slices),
              ("tiny", case_tiny),
              ("reshard", case_reshard),
              ("faults", case_faults), ("schedules", case_schedules),
              ("load agreement", case_load_agreement), ("arguments", case_arguments),
              ("shard checks", case_shard_checks), ("load digest", case_load_digest),
              ("construction agreement", case_construction_agreement),
              ("schedule once", case_schedule_once), ("files", case_files),
              ("toggled slot", case_toggled_slot), ("mixed calls", case_mixed_calls)]
    cases += [(f"lowp {label}", lambda label=label: case_lowp(label)) for label in LOWP_CASES]
    cases.append(("lowp checkpoints", case_lowp_checkpoints))
    only = sys.argv[1:]
    for name, fn in cases:
        if only and not any(o in name for o in only):
            continue
        try:
            fn()
        except BaseException:
            # A failed check can leave the other ranks inside a collective
            # that this rank will never join: stop the whole job instead.
            print(f"FAIL {name} (world size {W}) on rank {RANK}:", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            COMM.Abort(1)
        COMM.Barrier()
        if RANK == 0:
            print(f"PASS {name} (world size {W})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
