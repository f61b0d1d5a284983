"""The distributed optimizers under real MPI: ``mpiexec -n N`` for N = 1..4
(oversubscribed on small machines), one launch per world size running every
case of tests/mpi/check_distributed.py (Adam, AdamW, SGD with momentum,
RMSProp, Adagrad, clipping and skipping; sharded and data-parallel; bitwise
against the single-process optimizer and across ranks; resharded
checkpoints; fault cases that must raise on every rank, not hang;
reduced-precision state: stochastic rounding across slices, int8 pieces
under 4096 elements, full and resharded checkpoints)."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import AVAILABLE
from fusedoptim.distributed import balanced_cuts, find_mpiexec, flat_parameters

SCRIPT = Path(__file__).parent / "mpi" / "check_distributed.py"
EXAMPLE = Path(__file__).parent.parent / "examples" / "mpi_train.py"
# Cases in the script (7 optimizer settings x 2 wrappers + 14, then 4
# reduced-precision settings + their checkpoints).
N_CASES = 34
TIMEOUT = 300  # seconds for one world size; a hang fails instead of blocking CI


def _mpi_or_skip():
    # CI sets FUSEDOPTIM_REQUIRE_MPI=1: a missing MPI is then a failure, not a skip.
    missing = pytest.fail if os.environ.get("FUSEDOPTIM_REQUIRE_MPI") == "1" else pytest.skip
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        missing("mpi4py is not installed (pip install '.[mpi]')")
    exe = find_mpiexec()
    if exe is None:
        missing("no mpiexec found (pip install mpich, or set MPIEXEC)")
    return exe


def _launch(n, script):
    """``mpiexec -n n python script``: its return code and output."""
    exe = _mpi_or_skip()
    # These tests check the distributed layer (the backends are compared with
    # each other by test_parity): the compiled backend when under test, else
    # numpy, never a Numba that every rank of every launch would compile again.
    backend = "cython" if "cython" in AVAILABLE else "numpy"
    env = dict(os.environ, FUSEDOPTIM_NUM_THREADS="1", FUSEDOPTIM_BACKEND=backend)
    proc = subprocess.Popen([exe, "-n", str(n), sys.executable, str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # mpiexec and every rank
        out, _ = proc.communicate()
        pytest.fail(f"mpiexec -n {n} did not finish in {TIMEOUT} s:\n{out[-4000:]}")
    return proc, out


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_mpi_world_size(n):
    proc, out = _launch(n, SCRIPT)
    passed = [line for line in out.splitlines() if line.startswith("PASS ")]
    assert proc.returncode == 0, out[-6000:]
    assert len(passed) == N_CASES, out[-6000:]


def test_example_weights_unequal_local_batches():
    # 64 examples at 3 ranks are 22, 21 and 21: unweighted, the rank-ordered
    # mean of the ranks' means is not the mini-batch's mean (8.5e-2 away
    # after training, and the example still passed).
    proc, out = _launch(3, EXAMPLE)
    assert proc.returncode == 0, out[-3000:]
    diff = float(re.search(r"max \|param diff\| (\S+)", out).group(1))
    assert diff < 1e-12, out[-3000:]


def test_cuts_balanced_on_block_boundaries():
    sizes = [11100, 37, 1500, 0, 5, 100000]
    n = sum(sizes)
    starts = np.cumsum([0] + sizes)
    for world in range(1, 9):
        cuts = balanced_cuts(sizes, world)
        assert cuts[0] == 0 and cuts[-1] == n and cuts == sorted(cuts)
        for r, c in enumerate(cuts[1:-1], 1):
            k = np.searchsorted(starts, c, side="right") - 1
            assert c in starts or (c - starts[k]) % 4096 == 0, (world, c)
            assert abs(c - r * n // world) <= 2048
    assert balanced_cuts([10], 4) == [0, 0, 0, 10, 10]  # a small tensor is not split


def test_flat_parameters_one_buffer_per_dtype():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)).astype(np.float32),
              "b": np.asfortranarray(rng.standard_normal((5, 2))),
              "c": rng.standard_normal(7).astype(np.float32)}
    flat = flat_parameters(params)
    assert list(flat) == list(params)
    for k in params:
        assert flat[k].shape == params[k].shape and flat[k].dtype == params[k].dtype
        assert np.array_equal(flat[k], params[k]) and not np.shares_memory(flat[k], params[k])
    assert np.shares_memory(flat["a"].base, flat["c"])
    assert flat["c"].__array_interface__["data"][0] == \
        flat["a"].__array_interface__["data"][0] + flat["a"].nbytes


def test_find_mpiexec_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MPIEXEC", "/bin/true")
    assert find_mpiexec() == "/bin/true"


def test_param_groups_drive_the_inner_optimizer_and_lamb_is_refused():
    # In-process at world size 1 (an MPI singleton): the one group's view
    # writes through to the inner optimizer, as ReduceLROnPlateau needs.
    _mpi_or_skip()
    import fusedoptim as fo
    from fusedoptim.distributed import ShardedOptimizer
    from fusedoptim.lr_scheduler import ReduceLROnPlateau
    w, b = np.ones(5), np.zeros(3)
    opt = ShardedOptimizer(fo.Adam, {"w": w, "b": b}, lr=0.1, max_grad_norm=1.0)
    ref_w, ref_b = w.copy(), b.copy()
    ref = fo.Adam({"w": ref_w, "b": ref_b}, lr=0.1, max_grad_norm=1.0)
    (group,) = opt.param_groups
    assert group["params"] == ["w", "b"] and group["lr"] == 0.1 and group["betas"] == (0.9, 0.999)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)
    sched.step(1.0)
    sched.step(2.0)
    assert opt.lr == 0.05 and opt.param_groups[0]["lr"] == 0.05
    ref.lr = 0.05
    with pytest.raises(ValueError, match="eps"):
        opt.param_groups[0].update(lr=0.5, eps=-1.0)
    with pytest.raises(TypeError, match="params"):
        opt.param_groups[0]["params"] = ["w"]
    assert opt.lr == 0.05
    g = {"w": np.full(5, 2.0), "b": np.ones(3)}
    assert opt.step(g) and ref.step(g)
    assert opt.last_grad_norm == ref.last_grad_norm and opt.t == ref.t == 1
    assert w.tobytes() == ref_w.tobytes() and b.tobytes() == ref_b.tobytes()
    with pytest.raises(TypeError, match="LAMB needs whole tensors"):
        ShardedOptimizer(fo.LAMB, {"w": np.ones(3)}, lr=0.1)


def test_wrappers_have_the_optimizer_attributes():
    # In-process at world size 1: the read-only attributes of the plain
    # optimizer, a repr naming the wrapper, and add_param_group refused.
    _mpi_or_skip()
    import fusedoptim as fo
    from fusedoptim.distributed import DataParallelOptimizer, ShardedOptimizer
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        sched = fo.CosineDecay(0.1, 10)
        opt = kind(fo.AdamW, {"w": np.ones(5), "b": np.zeros(3)}, lr=sched,
                   max_grad_norm=1.0)
        ref = fo.AdamW({"w": np.ones(5), "b": np.zeros(3)}, lr=sched, max_grad_norm=1.0)
        assert opt.last_lr is None and opt.last_lrs is None
        assert opt.current_lr == ref.current_lr and opt.current_lrs == ref.current_lrs
        assert opt.max_grad_norm == 1.0 and opt.skip_nonfinite is False
        assert opt.defaults == ref.defaults and opt.defaults is not opt.inner.defaults
        g = {"w": np.full(5, 0.5), "b": np.ones(3)}
        opt.step(g)
        ref.step(g)
        assert opt.last_lr == ref.last_lr and opt.last_lrs == ref.last_lrs
        assert opt.current_lr == ref.current_lr
        text = repr(opt)
        assert text.startswith(f"{kind.__name__}(AdamW(2 parameters, lr=CosineDecay(")
        assert "weight_decay=0.01" in text and "t=1" in text and text.endswith(", world_size=1)")
        with pytest.raises(TypeError, match="parameter groups are not supported by the "
                                            "distributed optimizers"):
            opt.add_param_group({"params": {"c": np.ones(2)}})
        for name in ("max_grad_norm", "skip_nonfinite", "last_lr", "current_lr"):
            with pytest.raises(AttributeError):
                setattr(opt, name, 0.5)


def test_group_view_refuses_what_a_param_group_refuses():
    _mpi_or_skip()
    import fusedoptim as fo
    from fusedoptim.distributed import DataParallelOptimizer, ShardedOptimizer
    for kind in (ShardedOptimizer, DataParallelOptimizer):
        opt = kind(fo.Adam, {"w": np.ones(3)}, lr=0.1)
        single = fo.Adam({"w": np.ones(3)}, lr=0.1)
        for group in (opt.param_groups[0], single.param_groups[0]):
            for key in ("momentum", "initial_lr"):
                with pytest.raises(KeyError, match=f"Adam has no hyperparameter '{key}'"):
                    group.setdefault(key, 0.9)
            assert group.setdefault("eps", 1.0) == 1e-8
            for remove in (lambda g: g.pop("lr"), lambda g: g.__delitem__("eps"),
                           lambda g: g.popitem(), lambda g: g.clear()):
                with pytest.raises(TypeError, match="a parameter group's keys cannot be removed"):
                    remove(group)
        view = opt.param_groups[0]
        with pytest.raises(KeyError, match="Adam has no hyperparameter 'momentum'"):
            view |= {"momentum": 0.9}
        view |= {"eps": 1e-6}
        assert opt.inner.param_groups[0]["eps"] == 1e-6 and view["eps"] == 1e-6
        assert opt.lr == 0.1 and "momentum" not in opt.param_groups[0]
        assert set(opt.param_groups[0]) == set(single.param_groups[0])
