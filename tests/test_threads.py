"""The threading layer: fork safety, one floating-point mode, thread control.

Fork tests run in a subprocess with a timeout: the fault they guard against
is a hang.  The FTZ/DAZ tests set flush-to-zero and denormals-are-zero in the
calling thread (what a library built with ``-ffast-math`` does when it
loads) and check that a parallel step gives the bits of one thread in that
mode, which are those of the NumPy reference run in the same mode.
"""

import os
import platform
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fusedoptim
from conftest import AVAILABLE
from helpers import assert_bitwise

FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing, os, sys
    import numpy as np
    import fusedoptim as fo

    def step(seed):
        # The issue's reproducer, on the backend under test, checked against
        # the NumPy reference.
        p = {"a": np.ones(100_000, np.float32)}
        g = {"da": np.full(100_000, 0.5 + seed, np.float32)}
        q = {k: v.copy() for k, v in p.items()}
        fo.update_parameters_with_gd(p, g, 0.1)
        with fo.use_backend("numpy"):
            fo.update_parameters_with_gd(q, g, 0.1)
        return bool(np.array_equal(p["a"].view(np.uint32), q["a"].view(np.uint32)))

    if __name__ == "__main__":
        fo.set_backend(sys.argv[1])
        fo.set_num_threads(2)
        assert step(0)                      # the parent runs a parallel step
        pid = os.fork()
        if pid == 0:
            os._exit(0 if step(1) else 3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert all(pool.map(step, range(4)))
        assert step(2)                      # and the parent still steps
        print("fork ok")
""")


@pytest.mark.parametrize("name", [b for b in ("cython", "numpy", "numba") if b in AVAILABLE])
def test_fork_after_parallel_step(name, tmp_path):
    """A child forked after a parallel step, and a ``fork`` pool, finish with
    the reference's bits (numba: children step serially)."""
    script = tmp_path / "fork_step.py"
    script.write_text(FORK_SCRIPT)
    timeout = 600 if name == "numba" else 120
    r = subprocess.run([sys.executable, str(script), name], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fork ok" in r.stdout


USER_PRANGE_FORK = textwrap.dedent("""
    import os
    import numpy as np
    from numba import njit, prange
    import fusedoptim as fo

    @njit(parallel=True)
    def user_kernel(a):             # the caller's own parallel Numba code
        for i in prange(a.size):
            a[i] += 1.0

    fo.set_backend("numba")
    fo.set_num_threads(2)
    user_kernel(np.zeros(100_000))  # starts Numba's pool; no fusedoptim step yet
    pid = os.fork()
    if pid == 0:
        p = {"a": np.ones(100_000, np.float32)}
        g = {"da": np.full(100_000, 0.5, np.float32)}
        q = {k: v.copy() for k, v in p.items()}
        fo.update_parameters_with_gd(p, g, 0.1)
        with fo.use_backend("numpy"):
            fo.update_parameters_with_gd(q, g, 0.1)
        os._exit(0 if np.array_equal(p["a"].view(np.uint32), q["a"].view(np.uint32)) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    print("fork ok")
""")


@pytest.mark.skipif("numba" not in AVAILABLE, reason="the numba backend is not under test")
def test_fork_after_the_callers_own_numba_parallel_code(tmp_path):
    """A child forked after the caller's own ``prange`` (Numba's pool started,
    fusedoptim's never ran) steps serially: with GNU OpenMP as Numba's
    threading layer, a parallel step there was killed ("fork() called from a
    process already using GNU OpenMP")."""
    script = tmp_path / "user_prange_fork.py"
    script.write_text(USER_PRANGE_FORK)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "fork ok" in r.stdout, (r.stdout + r.stderr)[-3000:]


FORK_DURING_COMPILE = textwrap.dedent("""
    import faulthandler, os, signal, threading, time
    import numpy as np
    from numba.core.compiler_lock import global_compiler_lock
    import fusedoptim as fo

    fo.set_backend("numba")
    fo.set_num_threads(2)

    def first_step():               # compiles the Adam kernels (seconds)
        p = {"a": np.ones(1 << 16, np.float32)}
        fo.update_parameters_with_adam(p, {"da": np.ones(1 << 16, np.float32)},
                                       *fo.initialize_adam(p), 1)

    th = threading.Thread(target=first_step)
    th.start()
    time.sleep(0.3)
    # Fork while that thread holds Numba's compiler lock.
    while global_compiler_lock._lock.acquire(blocking=False):
        global_compiler_lock._lock.release()
        assert th.is_alive(), "the compilation ended before the fork"
        time.sleep(0.001)
    pid = os.fork()
    if pid == 0:
        faulthandler.dump_traceback_later(30, exit=True)
        p = {"a": np.ones(100, np.float32)}
        fo.update_parameters_with_gd(p, {"da": np.ones(100, np.float32)}, 0.5)
        os._exit(0 if (p["a"] == 0.5).all() else 3)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        raise SystemExit("the child hung")
    th.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    print("fork ok")
""")


@pytest.mark.skipif("numba" not in AVAILABLE, reason="the numba backend is not under test")
def test_fork_while_another_thread_compiles(tmp_path):
    """A child forked while another thread compiles a kernel (the first step
    of a family) steps: it inherited Numba's compiler lock held by a thread
    that does not exist in it, and hung on its first compilation."""
    script = tmp_path / "fork_during_compile.py"
    script.write_text(FORK_DURING_COMPILE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FUSEDOPTIM_NUMBA_CACHE="0")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0 and "fork ok" in r.stdout, (r.stdout + r.stderr)[-3000:]


def _ftz_hook():
    # The hook lives in the compiled module, also when only numba is tested.
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs x86-64 (MXCSR)")
    _step = pytest.importorskip("fusedoptim._ext._step", reason="compiled module not built")
    return _step._set_ftz_daz


def _gd_in_mode(name, nthreads, ftz):
    set_ftz_daz = _ftz_hook()
    p = {"a": np.full(100_000, 2e-38, np.float32)}
    g = {"da": np.full(100_000, 2e-38, np.float32)}
    before = fusedoptim.get_num_threads()
    fusedoptim.set_num_threads(nthreads)
    old = set_ftz_daz(ftz)
    try:
        with fusedoptim.use_backend(name):
            fusedoptim.update_parameters_with_gd(p, g, 0.1)
    finally:
        set_ftz_daz(old)
        fusedoptim.set_num_threads(before)
    return p["a"]


@pytest.mark.parametrize("name", [b for b in ("cython", "numba") if b in AVAILABLE])
def test_ftz_daz_caller_same_bits_at_any_thread_count(name):
    """Under an FTZ/DAZ caller, 1 and 2 threads give the same bits, those the
    reference computes in that mode on one thread."""
    ref = _gd_in_mode("numpy", 1, True)
    assert not np.array_equal(ref, _gd_in_mode("numpy", 1, False)), \
        "FTZ/DAZ did not change the reference: the test exercises nothing"
    assert_bitwise(_gd_in_mode(name, 1, True), ref)
    assert_bitwise(_gd_in_mode(name, 2, True), ref)


NUMBA_WORKERS_BORN_FTZ = textwrap.dedent("""
    import numpy as np
    from numba import njit, prange
    import fusedoptim as fo
    from fusedoptim._ext import _step

    @njit(parallel=True)
    def user_kernel(a, x):          # the caller's own parallel Numba code
        for i in prange(a.size):
            a[i] = x * np.float32(1e-3)

    def run(backend):
        p = {"a": np.full(100_000, 2e-38, np.float32), "b": np.full(50_000, 3e-39, np.float32)}
        g = {"da": np.full(100_000, 2e-38, np.float32), "db": np.full(50_000, 1e-39, np.float32)}
        with fo.use_backend(backend):
            fo.update_parameters_with_gd(p, g, 0.1)
            fo.LAMB(p, lr=1e-3, weight_decay=0.01, max_grad_norm=1e-37).step(g)
        return p

    fo.set_num_threads(2)
    old = _step._set_ftz_daz(True)
    a = np.zeros(100_000, np.float32)
    user_kernel(a, np.float32(1e-36))   # Numba's workers start, and inherit FTZ
    _step._set_ftz_daz(old)
    assert not a.any()
    want, got = run("numpy"), run("numba")
    for k in want:
        assert np.array_equal(want[k].view(np.uint32), got[k].view(np.uint32)), k
    user_kernel(a, np.float32(1e-36))   # the workers keep their own mode
    assert np.count_nonzero(a) < a.size
    print("modes ok")
""")


@pytest.mark.skipif("numba" not in AVAILABLE, reason="the numba backend is not under test")
def test_numba_workers_born_in_another_mode_compute_the_callers_bits(tmp_path):
    """Numba's pool started by the caller's own ``prange`` under FTZ/DAZ has
    workers that flush; a later parallel step from a caller in the default
    mode runs its tasks in that mode (the workers' part was flushed: other
    bits than the reference's), and leaves the workers' own mode to them."""
    _ftz_hook()
    script = tmp_path / "workers_born_ftz.py"
    script.write_text(NUMBA_WORKERS_BORN_FTZ)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "modes ok" in r.stdout, (r.stdout + r.stderr)[-3000:]


def test_ftz_daz_hook_restores():
    set_ftz_daz = _ftz_hook()
    first = set_ftz_daz(True)
    assert set_ftz_daz(first) is True
    assert set_ftz_daz(first) is first


@pytest.mark.skipif(
    "cython" not in AVAILABLE,
    reason="the cython backend is not under test (not built, or not in FUSEDOPTIM_TEST_BACKENDS)")
def test_pool_reused_and_concurrent_callers_exact():
    """Steps from several Python threads at once (one runs in the pool, the
    others serially on their own thread) give the reference's bits, and the
    pool keeps its workers rather than starting new ones."""
    from fusedoptim import _ext
    from fusedoptim._ext import _step
    if not _ext.HAVE_THREADS:
        pytest.skip("serial build")
    rng = np.random.default_rng(0)
    grads = {f"d{i}": rng.standard_normal(50_000 + i).astype(np.float32) for i in range(3)}
    start = {k[1:]: rng.standard_normal(v.shape).astype(np.float32) for k, v in grads.items()}
    ref = {k: v.copy() for k, v in start.items()}
    with fusedoptim.use_backend("numpy"):
        for _ in range(20):
            fusedoptim.update_parameters_with_gd(ref, grads, 0.01)
    before = fusedoptim.get_num_threads()
    fusedoptim.set_num_threads(2)
    results, errors = [], []
    started, blocks = _step._pool_workers()

    def worker():
        p = {k: v.copy() for k, v in start.items()}
        try:
            for _ in range(20):
                fusedoptim.update_parameters_with_gd(p, grads, 0.01)
            results.append(p)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        with fusedoptim.use_backend("cython"):
            threads = [threading.Thread(target=worker) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        workers, blocks_after = _step._pool_workers()
    finally:
        fusedoptim.set_num_threads(before)
    assert not errors and len(results) == 3
    for p in results:
        for k in ref:
            assert_bitwise(p[k], ref[k])
    # 2 threads: the caller and one worker, started once (earlier tests may
    # have started more at higher counts).
    assert workers == max(started, 1)


# --- thread control -------------------------------------------------------------


def test_cgroup_quota_caps_default(tmp_path):
    from fusedoptim import _threads
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    assert _threads.cgroup_cpu_limit(str(tmp_path), str(proc)) is None
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _threads.cgroup_cpu_limit(str(tmp_path), str(proc)) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert _threads.cgroup_cpu_limit(str(tmp_path), str(proc)) == 2
    # The process's own cgroup, deeper and tighter, wins.
    own = tmp_path / "job"
    own.mkdir()
    (own / "cpu.max").write_text("50000 100000\n")
    proc.write_text("0::/job\n")
    assert _threads.cgroup_cpu_limit(str(tmp_path), str(proc)) == 1
    # cgroup v1.
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _threads.cgroup_cpu_limit(str(v1), str(tmp_path / "none")) == 3
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert _threads.cgroup_cpu_limit(str(v1), str(tmp_path / "none")) is None


def test_cgroup_quota_of_an_ancestor_and_v1_layout(tmp_path):
    """A quota on a parent of the process's cgroup (a systemd slice) caps it
    too, and cgroup v1 keeps a cgroup's quota under its controllers' mount
    (``<root>/cpu,cpuacct/<path>``): both were missed."""
    from fusedoptim import _threads
    proc = tmp_path / "cgroup"
    # v2: the slice has the quota, the process's scope below it has none.
    scope = tmp_path / "work.slice" / "job.scope"
    scope.mkdir(parents=True)
    (tmp_path / "work.slice" / "cpu.max").write_text("100000 100000\n")
    (scope / "cpu.max").write_text("max 100000\n")
    proc.write_text("0::/work.slice/job.scope\n")
    assert _threads.cgroup_cpu_limit(str(tmp_path), str(proc)) == 1
    # A path outside the cgroup namespace is not under the root.
    proc.write_text("0::/../../work.slice/job.scope\n")
    assert _threads.cgroup_cpu_limit(str(tmp_path), str(proc)) is None
    # v1: the quota in <root>/cpu,cpuacct/<path>, none at the hierarchy's root.
    v1 = tmp_path / "v1"
    app = v1 / "cpu,cpuacct" / "user.slice" / "app"
    app.mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    (app / "cpu.cfs_quota_us").write_text("250000\n")
    (app / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:cpu,cpuacct:/user.slice/app\n3:memory:/user.slice/app\n")
    assert _threads.cgroup_cpu_limit(str(v1), str(proc)) == 3


def test_default_threads_within_affinity():
    from fusedoptim import _threads
    n = _threads.default_threads()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def _threadpoolctl():
    """threadpoolctl with ``register``, and fusedoptim's compiled pool, or skip."""
    pytest.importorskip("fusedoptim._ext._pool", reason="the controller matches the compiled module")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl without register (< 3.0)")
    return threadpoolctl


def test_threadpoolctl_limits_fusedoptim():
    threadpoolctl = _threadpoolctl()
    before = fusedoptim.get_num_threads()
    fusedoptim.set_num_threads(2)
    try:
        info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fusedoptim"]
        assert len(info) == 1 and info[0]["num_threads"] == 2
        with threadpoolctl.threadpool_limits(1):
            assert fusedoptim.get_num_threads() == 1
            from fusedoptim.backend import _loaded
            assert all(m.get_num_threads() == 1 for m in _loaded.values()
                       if hasattr(m, "get_num_threads"))
        assert fusedoptim.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(limits=1, user_api="fusedoptim"):
            assert fusedoptim.get_num_threads() == 1
        assert fusedoptim.get_num_threads() == 2
        fusedoptim.set_num_threads(3)  # set_num_threads keeps working
        assert fusedoptim.get_num_threads() == 3
    finally:
        fusedoptim.set_num_threads(before)


def test_threadpoolctl_limits_out_of_range_clamped():
    """``threadpool_limits`` with a count fusedoptim refuses (0, above
    ``MAX_THREADS``) clamps it: threadpoolctl restores nothing when a
    controller raises, so the libraries it had set before fusedoptim stayed
    changed."""
    threadpoolctl = _threadpoolctl()
    from fusedoptim.backend import MAX_THREADS
    before = fusedoptim.get_num_threads()
    fusedoptim.set_num_threads(2)
    try:
        for limit, want in ((0, 1), (10**6, MAX_THREADS)):
            with threadpoolctl.threadpool_limits(limits=limit, user_api="fusedoptim"):
                assert fusedoptim.get_num_threads() == want
            assert fusedoptim.get_num_threads() == 2
    finally:
        fusedoptim.set_num_threads(before)


def test_pool_hooks_reexported_by_step():
    """The pool's hooks live in ``_ext._pool`` (the one module compiling
    ``pool.h``: one pool per process); ``_step`` re-exports them."""
    _pool = pytest.importorskip("fusedoptim._ext._pool", reason="compiled module not built")
    from fusedoptim._ext import _step
    for name in ("_pool_policy", "_pool_judge", "_pool_workers", "_set_spin_ns", "_set_ftz_daz"):
        assert getattr(_step, name) is getattr(_pool, name), name
