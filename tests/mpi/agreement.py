"""Cases of check_distributed.py on what the ranks must agree on: each
step's lr and settings, a load's result, and the arguments' checks."""

import warnings

import numpy as np

import fusedoptim as fo
from fusedoptim.distributed import DataParallelOptimizer, DistributedError, ShardedOptimizer
from helpers import COMM, RANK, W, assert_bitwise, check_params, expect_error, same_everywhere


def small_params():
    return {"w": np.linspace(-1, 1, 9000, dtype=np.float32), "b": np.arange(7.0)}


def small_grads(rank, step):
    rng = np.random.default_rng([rank, step, 7])
    return {"w": rng.standard_normal(9000).astype(np.float32), "b": rng.standard_normal(7)}


def case_schedules():
    """The ranks agree on each step's lr before anything moves: a schedule
    whose value differs, or that fails, on one rank raises on every rank
    with nothing changed (sharded: was an MPI abort; data-parallel: the
    ranks diverged)."""
    last = W - 1

    def boom(t):
        raise ZeroDivisionError("schedule broke")

    for kind in (ShardedOptimizer, DataParallelOptimizer):
        params = small_params()
        before = {k: v.copy() for k, v in params.items()}
        g = small_grads(RANK, 0)
        if W > 1:
            opt = kind(fo.SGD, params, lr=fo.CosineDecay(1e-2 * (1 + RANK), 100))
            expect_error(ValueError, lambda: opt.step(g), "lr schedule value at step 0 is")
            check_params(params, before, "after differing schedules")
            assert opt.t == 0
        opt = kind(fo.Adam, params, lr=(lambda t: -1.0) if RANK == last else (lambda t: 1e-2))
        expect_error(ValueError, lambda: opt.step(g), f"rank {last}: lr schedule value at step 0")
        opt.lr = boom if RANK == last else fo.CosineDecay(1e-2, 100)
        expect_error(DistributedError, lambda: opt.step(g), f"rank {last}: schedule broke")
        if W > 1:
            opt.lr = fo.CosineDecay(1e-2, 100)
            opt.param_groups[0]["betas"] = (0.8, 0.99) if RANK == last else (0.9, 0.999)
            expect_error(ValueError, lambda: opt.step(g), "hyperparameter 'betas' is (0.8, 0.99)")
            opt.param_groups[0]["betas"] = (0.9, 0.999)
        check_params(params, before, "after failed steps")
        assert opt.t == 0 and opt.last_grad_norm is None
        opt.lr = fo.CosineDecay(1e-2, 100)
        assert opt.step(g) and opt.t == 1 and same_everywhere(params)


class _Broken(dict):
    """A checkpoint whose entries cannot be read (a damaged lazy file)."""

    def __getitem__(self, key):
        raise RuntimeError("unreadable checkpoint")


def case_load_agreement():
    """A failed load puts back every rank's lr schedule; ranks that load
    different valid checkpoints raise and are put back; a full checkpoint
    with a wrong state dtype fails before any rank loads."""
    last = W - 1
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        params = small_params()
        sched = fo.CosineDecay(1e-2, 100)
        opt = kind(fo.Adam, params, lr=sched, max_grad_norm=1.0)
        opt.step(small_grads(RANK, 0))
        norm = opt.last_grad_norm
        saved = opt.state_dict()
        ckpts = []
        for n in (1, 2, 1 + RANK):
            ref = fo.Adam(small_params(), lr=1e-2, max_grad_norm=1.0)
            for step in range(n):
                ref.step(small_grads(0, step))
            ckpts.append(ref.state_dict())
        bad_beta = dict(ckpts[0], **({"hp/beta1": 0.8} if RANK == last else {}))
        attempts = [(ValueError, bad_beta, f"rank {last}: beta1 is 0.8")]
        if W > 1:
            attempts.append((ValueError, ckpts[2], "loaded different checkpoints: t is 2 on rank 1"))
        for exc, sd, needle in attempts:
            expect_error(exc, lambda: opt.load_state_dict(sd), needle)
            assert opt.lr is sched, f"lr after a failed load: {opt.lr!r}"
            assert opt.t == 1 and opt.last_grad_norm == norm
            after = opt.state_dict()
            for k, v in saved.items():
                if isinstance(v, np.ndarray):
                    assert_bitwise(after[k], v, k)
        if kind is ShardedOptimizer:
            bad = dict(ckpts[0], **{"state/exp_avg/b": ckpts[0]["state/exp_avg/b"].astype(
                np.float32)})
            calls = []
            inner_load = opt.inner.load_state_dict
            opt.inner.load_state_dict = lambda sd: (calls.append(1), inner_load(sd))
            expect_error(TypeError, lambda: opt.load_state_dict(bad),
                         "['state/exp_avg/b'] has dtype float32 but this optimizer's state "
                         "array has float64")
            del opt.inner.load_state_dict
            assert not any(COMM.allgather(calls)), "a rank loaded a checkpoint bound to fail"
        # Any exception on one rank, not only the checked kinds: every rank
        # raises (the others used to wait in the agreement for ever).
        broken = _Broken(ckpts[0]) if RANK == last else ckpts[0]
        expect_error(DistributedError, lambda: opt.load_state_dict(broken),
                     f"rank {last}: unreadable checkpoint")
        assert opt.lr is sched and opt.t == 1
        opt.load_state_dict(ckpts[1])  # the same everywhere: lr from the checkpoint
        assert opt.t == 2 and opt.lr == 1e-2
        opt.step(small_grads(RANK, 2))
        assert same_everywhere(params)


def case_arguments():
    """Arguments checked with short messages, alike on every rank."""
    params = small_params()
    opt = ShardedOptimizer(fo.Adam, params, lr=1e-2)
    opt.step(small_grads(RANK, 0))
    expect_error(ValueError, lambda: opt.full_state_dict(root=W), f"root must be in [0, {W})")
    expect_error(TypeError, lambda: opt.full_state_dict(root="0"), "root must be an int")
    if W > 1:
        expect_error(ValueError, lambda: opt.full_state_dict(root=RANK), "root is 1 on rank 1")
    full = opt.full_state_dict(root=W - 1)
    assert (full is not None) == (RANK == W - 1)
    expect_error(TypeError, lambda: ShardedOptimizer(fo.Adam, small_params(), 1e-3),
                 "comm must be an mpi4py communicator, got float (pass hyperparameters by keyword")
    expect_error(TypeError, lambda: DataParallelOptimizer(fo.Adam, small_params(), comm="x"),
                 "comm must be an mpi4py communicator, got str")
    expect_error(TypeError, lambda: opt.load_state_dict(None), "must be a mapping")
    sgd = ShardedOptimizer(fo.SGD, small_params(), lr=0.1, momentum=0.9)
    sgd.step(small_grads(RANK, 0))
    expect_error(ValueError, lambda: opt.load_state_dict(COMM.allgather(sgd.state_dict())),
                 "state_dict is from 'SGD', not 'Adam'")
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        expect_error(TypeError, lambda: kind(fo.Adam, [{"params": small_params()}], lr=1e-2),
                     "parameter groups are not supported")
        x = np.ones(6000, np.float32)
        expect_error(ValueError, lambda: kind(fo.Adam, {"a": x, "b": x}, lr=1e-2),
                     "parameters['b'] shares memory with parameters['a']")
        # Equal values of other types are alike; a difference shows both values.
        kind(fo.Adam, small_params(), lr=np.float64(1e-2) if RANK else 1e-2,
             betas=[0.9, 0.999] if RANK else (0.9, 0.999))
        if W > 1:
            expect_error(ValueError, lambda: kind(fo.Adam, small_params(),
                                                  lr=2e-2 if RANK == 1 else 1e-2),
                         "hyperparameter 'lr' is 0.02 on rank 1 but 0.01 on rank 0")
        # inf - inf and overflow in the ordered mean: silent, as on one process.
        p = small_params()
        o = kind(fo.Adam, p, lr=1e-2, skip_nonfinite=True)
        g = small_grads(RANK, 1)
        g["w"][8000] = np.inf if RANK == 0 else -np.inf
        g["w"][100] = 3e38
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert o.step(g) is False
        assert o.skipped_steps == 1
