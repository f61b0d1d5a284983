"""A fork while another thread starts a parallel step of the cython pool."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from conftest import AVAILABLE


# --- a fork while another thread starts a parallel step --------------------------

# An LD_PRELOAD shim that widens two windows of the pool (pool.h): in the
# first process, every pthread_mutex_lock from the _pool module first sleeps
# FO_LOCK_US (a caller then spends that long between announcing a job's
# ticket and publishing its generation under the lock, where a fork from
# another thread lands); in a forked child, the main thread's first
# CLOCK_THREAD_CPUTIME_ID read from _pool sleeps FO_CLOCK_US (between
# starting the child's workers and announcing its first job).
FORK_WINDOW_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pid_t first_pid;
__attribute__((constructor)) static void init(void) { first_pid = getpid(); }

static int from_pool(void *ra) {
    Dl_info info;
    return dladdr(ra, &info) && info.dli_fname && strstr(info.dli_fname, "/_pool.");
}

static void pause_us(const char *var) {
    const char *e = getenv(var);
    long us = e ? atol(e) : 0;
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    if (us > 0) nanosleep(&ts, NULL);
}

int pthread_mutex_lock(pthread_mutex_t *m) {
    static int (*real)(pthread_mutex_t *);
    if (!real) real = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
    if (getpid() == first_pid && from_pool(__builtin_return_address(0))) pause_us("FO_LOCK_US");
    return real(m);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    static pid_t paused;
    if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    if (id == CLOCK_THREAD_CPUTIME_ID && getpid() != first_pid && paused != getpid()
            && syscall(SYS_gettid) == getpid() && from_pool(__builtin_return_address(0))) {
        paused = getpid();
        pause_us("FO_CLOCK_US");
    }
    return real(id, ts);
}
"""

FORK_WINDOW_SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    import numpy as np
    import fusedoptim as fo
    from fusedoptim._ext import _step

    fo.set_num_threads(2)
    _step._pool_policy(adaptive=False)
    stop = False

    def hammer():                   # parallel jobs, back to back
        p = {"a": np.ones(1 << 19, np.float32)}
        g = {"da": np.full(1 << 19, 1e-3, np.float32)}
        while not stop:
            fo.update_parameters_with_gd(p, g, 0.1)

    threading.Thread(target=hammer, daemon=True).start()
    time.sleep(0.2)
    n, steps = 1 << 20, 300
    g = {"da": np.linspace(-1, 1, n).astype(np.float32)}
    want = {"a": np.ones(n, np.float32)}
    with fo.use_backend("numpy"):
        for _ in range(steps):
            fo.update_parameters_with_gd(want, g, 0.1)
    for i in range(24):
        time.sleep(0.013 * (i % 5))
        pid = os.fork()
        if pid == 0:
            # A worker holding its first block of a job sleeps 20 ms: a
            # block of the parent's job then still counts when this child
            # has announced its own jobs.
            _step._pool_policy(worker_delay_ns=20_000_000)
            p = {"a": np.ones(n, np.float32)}
            fo.update_parameters_with_gd(p, g, 0.1)
            _step._pool_policy(worker_delay_ns=0)
            for _ in range(steps - 1):
                fo.update_parameters_with_gd(p, g, 0.1)
            same = np.array_equal(p["a"].view(np.uint32), want["a"].view(np.uint32))
            os._exit(0 if same else 3)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SystemExit(f"child {i} hung")
        assert status == 0, (i, status)
    stop = True
    print("fork ok")
""")


@pytest.mark.skipif(
    "cython" not in AVAILABLE or not sys.platform.startswith("linux"),
    reason="the cython backend's pool, and an LD_PRELOAD shim (Linux)")
def test_fork_while_another_thread_announces_a_job(tmp_path):
    """A child forked while another thread's parallel job was announced but
    its generation not yet published: the child's new worker took that job
    for new, ran a block of it (the parent caller's copy) and counted it
    into the child's own job, which then waited forever.  The window is
    nanoseconds wide; the shim widens it to tens of milliseconds, and 24
    forks land in it a few times."""
    from fusedoptim import _ext
    if not _ext.HAVE_THREADS:
        pytest.skip("serial build")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip("no C compiler")
    src, shim = tmp_path / "forkwin.c", tmp_path / "forkwin.so"
    src.write_text(FORK_WINDOW_SHIM)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(shim), "-ldl"],
                   check=True, capture_output=True)
    script = tmp_path / "fork_window.py"
    script.write_text(FORK_WINDOW_SCRIPT)
    preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD"), str(shim)]))  # ASan first
    env = dict(os.environ, LD_PRELOAD=preload, FO_LOCK_US="30000", FO_CLOCK_US="5000")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0 and "fork ok" in r.stdout, (r.stdout + r.stderr)[-3000:]
