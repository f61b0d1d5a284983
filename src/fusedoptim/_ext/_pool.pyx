# cython: language_level=3
"""The compiled backend's thread pool (``pool.h``) and its contention policy
(``pool_policy.h``), and their hooks for tests and measurements.

Only this module compiles ``pool.h`` (the pool's state is static C data: one
copy per extension module), so the pool is one per process; ``_step`` runs
its parallel jobs through ``pool_run`` (cimported) and re-exports the hooks
(``_step._pool_policy``, ...).  The module also exports the marker symbol
``fusedoptim_thread_pool`` by which ``fusedoptim._threads``' threadpoolctl
controller finds the library.
"""

cdef extern from "pool.h" nogil:
    const bint FO_THREADS
    const bint FO_HAVE_MXCSR
    ctypedef void (*fo_block_fn)(void* ctx, Py_ssize_t k) noexcept nogil
    void fo_pool_run_keyed(int nt, fo_block_fn fn, void* ctx, Py_ssize_t nblocks,
                           const void* key)
    long fo_pool_set_spin_ns(long ns)
    void fo_pool_set_stale_probe(long stale_ns, long describe_ns)
    int fo_pool_workers()
    long fo_pool_worker_blocks()
    void fo_pool_policy(int adaptive, int force, int force_pre, long delay, int reset, long* out)
    int fo_pool_judge_means(double par_ns, double ser_ns, int par_n, int ser_n, int desched)
    int fo_ftz_daz(int on)


cdef void pool_run(int nt, block_fn fn, void* ctx, Py_ssize_t nblocks,
                   const void* key) noexcept nogil:
    """Run ``fn(ctx, k)`` for every block ``k < nblocks`` on the caller and
    up to ``nt - 1`` workers (``pool.h``); ``key`` names the kind of job
    for the policy's samples (NULL: the block function)."""
    fo_pool_run_keyed(nt, <fo_block_fn>fn, ctx, nblocks,
                      key if key != NULL else <const void*>fn)


cdef bint pool_threads() noexcept nogil:
    """Whether the build has the pool (else every job runs on the caller)."""
    return FO_THREADS


def _set_spin_ns(long ns):
    """Set how long idle workers and the waiting caller spin before they
    sleep (tuning and tests); returns the previous value."""
    return fo_pool_set_spin_ns(ns)


def _set_stale_probe(long stale_ns, long describe_ns):
    """Test knobs of the claim race (``pool.h``): a worker that finds every
    block of its job claimed sleeps ``stale_ns`` (once per job) before it
    checks again with the ticket it read, and the caller of a job sleeps
    ``describe_ns`` between describing the job and publishing its ticket
    (0, 0: off)."""
    fo_pool_set_stale_probe(stale_ns, describe_ns)


def _pool_workers():
    """Worker threads the pool has started in this process, and the blocks
    they have run (tests, measurements)."""
    return fo_pool_workers(), fo_pool_worker_blocks()


_POLICY_KEYS = ("adaptive", "level", "serial_left", "last", "fallbacks", "serial_jobs",
                "good_run", "parallel_ns_per_block", "serial_ns_per_block", "kinds",
                "descheduled_recent", "descheduled_jobs", "spinning", "sample_jobs",
                "stretch_jobs", "busy_fallbacks", "nospin_jobs", "descheduled_caller",
                "descheduled_workers", "last_lost_ns")
_LAST = {-1: None, 0: "parallel", 1: "parallel-fallback", 2: "serial"}


def _pool_policy(adaptive=None, force=..., worker_delay_ns=None, bint reset=False,
                 descheduled=...):
    """The pool's contention policy (``pool_policy.h``), for tests and measurements.

    Returns its state before this call's changes: ``adaptive``, ``level``
    (fallback stretches last ``2**level`` jobs), ``serial_left`` (of the
    current stretch), ``last`` (how the last job under the policy ran:
    ``"parallel"``, ``"parallel-fallback"`` (then fell back), ``"serial"``
    or None), the counts ``fallbacks`` and ``serial_jobs``, ``good_run``
    (parallel jobs since the last fallback, modulo 8), the last job's kind's
    median ns per block of each mode (-1: no sample; kinds: each family's
    loop, the norm, LAMB's reduction), ``kinds`` seen,
    ``descheduled_recent`` (of the last 16 parallel jobs, how many had a
    thread of the pool descheduled), ``descheduled_jobs`` and ``spinning``
    (the threads spin before they sleep: fewer than 2 recent ones, or off).
    Why jobs ran as they did: ``serial_jobs`` = ``sample_jobs`` (the
    periodic samples of the serial cost) + ``stretch_jobs`` (after a
    fallback); ``busy_fallbacks`` (of ``fallbacks``, judged with the busy
    margin), ``nospin_jobs`` (parallel jobs run without spinning),
    ``descheduled_caller`` / ``descheduled_workers`` (descheduled jobs in
    which the caller / the workers alone lost enough run time) and
    ``last_lost_ns`` (run time the pool's threads lost in the last parallel
    job: descheduled while they could run).

    ``adaptive`` turns the policy on or off (off: every large job parallel,
    always spinning).  Test knobs: ``force`` makes every parallel job count
    as slower (True) or faster (False) than the caller alone, and
    ``descheduled`` as descheduled or not (None: measure again);
    ``worker_delay_ns`` makes a worker sleep that long after its first claim
    of each job, as if descheduled while holding a block (0: off).  None
    (``...`` for the knobs) keeps a setting; ``reset`` first clears the
    state, the counts, the knobs and the delay."""
    cdef long out[20]  # FO_POLICY_OUT
    if reset:
        fo_pool_policy(-1, -1, -1, 0, 1, out)
    fo_pool_policy(-1 if adaptive is None else (1 if adaptive else 0),
                   -2 if force is Ellipsis else (-1 if force is None else (1 if force else 0)),
                   -2 if descheduled is Ellipsis else (-1 if descheduled is None
                                                       else (1 if descheduled else 0)),
                   -1 if worker_delay_ns is None else max(0, worker_delay_ns), 0, out)
    d = dict(zip(_POLICY_KEYS, [out[i] for i in range(len(_POLICY_KEYS))]))
    d["adaptive"], d["spinning"], d["last"] = bool(out[0]), bool(out[12]), _LAST.get(out[3])
    return d


def _pool_judge(double parallel_ns, double serial_ns, int parallel_n, int serial_n,
                int descheduled_recent) -> bool:
    """The policy's verdict on these medians (ns per block, samples) with
    ``descheduled_recent`` of 16 descheduled: parallel is the slower (tests)."""
    return bool(fo_pool_judge_means(parallel_ns, serial_ns, parallel_n, serial_n,
                                    descheduled_recent))


def _set_ftz_daz(bint on):
    """Set or clear flush-to-zero and denormals-are-zero in the calling
    thread's MXCSR (tests: a caller in that mode); returns whether both were
    set before.  x86 only (``NotImplementedError`` elsewhere)."""
    if not FO_HAVE_MXCSR:
        raise NotImplementedError("FTZ/DAZ control is x86 only")
    return bool(fo_ftz_daz(on))
