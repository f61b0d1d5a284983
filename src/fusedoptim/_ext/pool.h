/* The compiled backend's own thread pool (used by _step.pyx instead of OpenMP).
 *
 * Why not OpenMP: libgomp's pool hangs a child process forked after a
 * parallel region, its workers keep their own floating-point mode (MXCSR)
 * rather than the caller's, and a static split with spinning workers
 * collapses when another process competes for the CPUs.
 *
 * The design:
 *  - fo_pool_run_keyed(nt, fn, ctx, nblocks, key) calls fn(ctx, k) once
 *    for every block k in [0, nblocks), on the calling thread and up to
 *    nt - 1 workers (key: the kind of job, for the policy).
 *    Blocks are handed out dynamically through one atomic "ticket" (job
 *    generation << 32 | next block): a thread that runs takes more blocks,
 *    and a worker that was not scheduled in time simply takes none (the
 *    caller waits only for blocks that were claimed).  What a block computes
 *    does not depend on which thread runs it, so results are bitwise those of
 *    one thread.
 *  - Workers wait passively: after a job they spin for at most
 *    FO_SPIN_NS (back-to-back steps), then sleep on a condition variable.
 *    The caller, out of blocks, spins at most FO_SPIN_NS for the claimed
 *    ones, then sleeps.  Neither spins while the policy sees contention
 *    (pool_policy.h: threads of the pool lost run time in recent jobs).
 *  - A worker runs a job's blocks in the caller's floating-point control
 *    state (MXCSR on x86: FTZ/DAZ, rounding; fegetenv/fesetenv elsewhere)
 *    and restores its own after the job.
 *  - pthread_atfork: a child process forgets the parent's workers (they do
 *    not exist in it) and creates fresh ones on its first parallel step.
 *  - One job at a time: a call made while another thread's job runs (or from
 *    inside a block) runs serially on its own thread instead of waiting.
 *  - Under contention, the caller alone (the policy: pool_policy.h):
 *    a worker descheduled while it holds a block delays the end of the step
 *    by a scheduler slice (milliseconds), which no split can avoid since a
 *    started block cannot be taken over (the update is in place).  The pool
 *    keeps the recent (median) time per block of parallel jobs and of jobs
 *    run by the caller alone; when parallel jobs become the slower, the next jobs
 *    run on the caller alone for a stretch that grows while that lasts,
 *    then parallel jobs are tried again.
 * Without pthreads (Windows, or FUSEDOPTIM_NO_THREADS) every job is serial.
 */
#ifndef FO_POOL_H
#define FO_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef void (*fo_block_fn)(void *ctx, Py_ssize_t k);

/* Marker for threadpoolctl (fusedoptim._threads): an exported symbol by
 * which its controller recognizes this library among the loaded ones. */
#if defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int fusedoptim_thread_pool(void) { return 1; }

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <xmmintrin.h>
#define FO_HAVE_MXCSR 1
typedef unsigned int fo_fpstate;
static inline void fo_fp_get(fo_fpstate *s) { *s = _mm_getcsr(); }
static inline void fo_fp_set(const fo_fpstate *s) { _mm_setcsr(*s); }
/* Test hook: set (on=1) or clear FTZ (bit 15) and DAZ (bit 6) in this
 * thread's MXCSR; returns whether both were set before. */
static int fo_ftz_daz(int on) {
    unsigned int c = _mm_getcsr();
    int old = (c & 0x8040u) == 0x8040u;
    _mm_setcsr(on ? (c | 0x8040u) : (c & ~0x8040u));
    return old;
}
#else
#include <fenv.h>
#define FO_HAVE_MXCSR 0
typedef fenv_t fo_fpstate;
static inline void fo_fp_get(fo_fpstate *s) { fegetenv(s); }
static inline void fo_fp_set(const fo_fpstate *s) { fesetenv(s); }
static int fo_ftz_daz(int on) { (void)on; return -1; }
#endif

#if !defined(_WIN32) && !defined(FUSEDOPTIM_NO_THREADS)
#define FO_THREADS 1

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FO_MAX_WORKERS 255
/* Spin before sleeping: 100 us covers the gap between back-to-back steps
 * (an Adam step's Python side over 100 tensors is about 35 us) so that a
 * worker is awake for the next one, and bounds what an idle worker takes
 * from other processes to 100 us per step. */
#define FO_SPIN_NS 100000

typedef struct {
    pthread_mutex_t mu;          /* guards gen, nworkers and the two waits */
    pthread_cond_t work_cv;      /* a new job was announced */
    pthread_cond_t done_cv;      /* the last claimed block finished */
    pthread_mutex_t run_mu;      /* held by the caller of the running job */
    _Atomic uint64_t ticket;     /* gen << 32 | next unclaimed block */
    _Atomic Py_ssize_t done;     /* blocks finished in the current job */
    _Atomic Py_ssize_t nblocks;
    _Atomic int wanted;          /* workers 0..wanted-1 take part */
    _Atomic long spin_ns;
    _Atomic int spin_on;         /* the policy's say: 0, no spinning (contention) */
    _Atomic long lost_ns;        /* run time workers lost, ever (below) */
    _Atomic long worker_blocks;  /* blocks run by workers, ever (tests) */
    _Atomic long worker_delay_ns; /* test knob: a worker sleeps this long
                                     after its first claim of a job */
    _Atomic long stale_delay_ns;  /* test knobs: a worker that finds every block
                                     claimed sleeps this long before it looks
                                     again, with the ticket it read ... */
    _Atomic long describe_delay_ns; /* ... while the caller of the next job
                                     sleeps this long between describing the
                                     job and publishing its ticket */
    uint32_t gen;                /* last announced job (under mu) */
    uint32_t next_gen;           /* caller side, under run_mu */
    int nworkers;
    fo_block_fn fn;              /* read only by a thread holding a claim */
    void *ctx;
    fo_fpstate fp;
} fo_pool_t;

static fo_pool_t fo_pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .work_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER, .run_mu = PTHREAD_MUTEX_INITIALIZER,
    .spin_ns = FO_SPIN_NS, .spin_on = 1,
};
static pthread_once_t fo_pool_once = PTHREAD_ONCE_INIT;

static long fo_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void fo_sleep_ns(long ns) {  /* the test knobs' */
    struct timespec ts;
    ts.tv_sec = ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    nanosleep(&ts, NULL);
}

/* The calling thread's CPU time (ns), or -1 where the system has no
 * per-thread CPU clock. */
static long fo_thread_cpu_ns(void) {
#ifdef CLOCK_THREAD_CPUTIME_ID
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
#endif
    return -1;
}

/* Time a thread could have run but did not (descheduled: another thread
 * had its CPU) between (w0, c0) and now, from wall and CPU clocks: the
 * policy's measure of contention (pool_policy.h).  0 without a CPU clock. */
static long fo_lost_ns(long w0, long c0) {
    long c = c0 < 0 ? -1 : fo_thread_cpu_ns(), lost;
    if (c < 0) return 0;
    lost = (fo_now_ns() - w0) - (c - c0);
    return lost > 0 ? lost : 0;
}

/* How long to spin before sleeping: FO_SPIN_NS (or the tuning hook's), or
 * not at all while the policy sees contention (pool_policy.h). */
static inline long fo_spin_budget(void) {
    return atomic_load_explicit(&fo_pool.spin_on, memory_order_relaxed)
        ? atomic_load_explicit(&fo_pool.spin_ns, memory_order_relaxed) : 0;
}

static inline void fo_cpu_relax(void) {
#if FO_HAVE_MXCSR
    _mm_pause();
#endif
}

/* In a child after fork: the parent's workers do not exist here, and the
 * locks may have been held by threads that do not exist either.  A job that
 * another thread was announcing (its ticket out, its generation not yet
 * published under mu) is the parent's: the workers started here take it as
 * seen.  Else the first one claimed its blocks (on the parent caller's
 * copy of the job) and counted them into the child's first job, which then
 * waited forever for a count it had passed. */
static void fo_pool_atfork_child(void) {
    pthread_mutex_init(&fo_pool.mu, NULL);
    pthread_mutex_init(&fo_pool.run_mu, NULL);
    pthread_cond_init(&fo_pool.work_cv, NULL);
    pthread_cond_init(&fo_pool.done_cv, NULL);
    fo_pool.gen = (uint32_t)(atomic_load_explicit(&fo_pool.ticket, memory_order_relaxed) >> 32);
    fo_pool.nworkers = 0;
}

static void fo_pool_init(void) { pthread_atfork(NULL, NULL, fo_pool_atfork_child); }

#include "pool_policy.h"

/* Claim and run blocks of job g until none is left; a worker (swap_fp)
 * runs them in the caller's floating-point state. */
static void fo_pool_work(uint32_t g, int swap_fp) {
    fo_fpstate mine;
    fo_block_fn fn = NULL;
    void *ctx = NULL;
    Py_ssize_t nb = 0, idx;
    long delay;
    int probed = 0;
    uint64_t t = atomic_load_explicit(&fo_pool.ticket, memory_order_acquire);
    for (;;) {
        for (;;) {
            if ((uint32_t)(t >> 32) != g) goto out;
            idx = (Py_ssize_t)(t & 0xffffffffu);
            if (idx >= atomic_load_explicit(&fo_pool.nblocks, memory_order_acquire)) {
                /* Test knob: descheduled between reading the ticket and this
                 * bound check, then checking again with the same ticket. */
                delay = atomic_load_explicit(&fo_pool.stale_delay_ns, memory_order_relaxed);
                if (delay > 0 && swap_fp && !probed) {
                    probed = 1;
                    fo_sleep_ns(delay);
                    continue;
                }
                goto out;
            }
            if (atomic_compare_exchange_weak_explicit(&fo_pool.ticket, &t, t + 1,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire))
                break;
        }
        if (fn == NULL) {
            /* A claim of job g: it cannot finish before this block does, so
             * its description is stable until then. */
            fn = fo_pool.fn;
            ctx = fo_pool.ctx;
            nb = atomic_load_explicit(&fo_pool.nblocks, memory_order_relaxed);
            if (swap_fp) {
                fo_fp_get(&mine);
                fo_fp_set(&fo_pool.fp);
                /* Test knob: a worker descheduled while it holds a block. */
                delay = atomic_load_explicit(&fo_pool.worker_delay_ns, memory_order_relaxed);
                if (delay > 0) fo_sleep_ns(delay);
            }
        }
        fn(ctx, idx);
        if (swap_fp) atomic_fetch_add_explicit(&fo_pool.worker_blocks, 1, memory_order_relaxed);
        if (atomic_fetch_add_explicit(&fo_pool.done, 1, memory_order_acq_rel) + 1 == nb) {
            pthread_mutex_lock(&fo_pool.mu);
            pthread_cond_broadcast(&fo_pool.done_cv);
            pthread_mutex_unlock(&fo_pool.mu);
        }
        t = atomic_load_explicit(&fo_pool.ticket, memory_order_acquire);
    }
out:
    if (fn != NULL && swap_fp) fo_fp_set(&mine);
}

typedef struct { int w; uint32_t seen; } fo_worker_arg;

static void *fo_worker(void *p) {
    int w = ((fo_worker_arg *)p)->w;
    uint32_t seen = ((fo_worker_arg *)p)->seen, g;
    long until, w0, c0;
    int i;
    free(p);
    for (;;) {
        /* Run time lost while spinning or running blocks (not while
         * asleep: that is voluntary), told to the policy after the job. */
        w0 = fo_now_ns();
        c0 = fo_thread_cpu_ns();
        /* Bounded spin for the next job, then sleep. */
        until = w0 + fo_spin_budget();
        g = seen;
        for (i = 1;; i++) {
            g = (uint32_t)(atomic_load_explicit(&fo_pool.ticket, memory_order_acquire) >> 32);
            if (g != seen) break;
            fo_cpu_relax();
            if ((i & 63) == 0 && fo_now_ns() > until) break;
        }
        if (g == seen) {
            atomic_fetch_add_explicit(&fo_pool.lost_ns, fo_lost_ns(w0, c0), memory_order_relaxed);
            pthread_mutex_lock(&fo_pool.mu);
            while (fo_pool.gen == seen) pthread_cond_wait(&fo_pool.work_cv, &fo_pool.mu);
            g = fo_pool.gen;
            pthread_mutex_unlock(&fo_pool.mu);
            w0 = fo_now_ns();
            c0 = fo_thread_cpu_ns();
        }
        seen = g;
        if (w < atomic_load_explicit(&fo_pool.wanted, memory_order_relaxed))
            fo_pool_work(g, 1);
        atomic_fetch_add_explicit(&fo_pool.lost_ns, fo_lost_ns(w0, c0), memory_order_relaxed);
    }
    return NULL;
}

/* Start workers up to n (fewer if the system refuses); returns how many run. */
static int fo_pool_grow(int n) {
    pthread_attr_t attr;
    pthread_t tid;
    fo_worker_arg *a;
    if (n > FO_MAX_WORKERS) n = FO_MAX_WORKERS;
    pthread_mutex_lock(&fo_pool.mu);
    if (fo_pool.nworkers < n && pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        while (fo_pool.nworkers < n) {
            a = (fo_worker_arg *)malloc(sizeof *a);
            if (a == NULL) break;
            a->w = fo_pool.nworkers;
            a->seen = fo_pool.gen;
            if (pthread_create(&tid, &attr, fo_worker, a) != 0) {
                free(a);
                break;
            }
            fo_pool.nworkers++;
        }
        pthread_attr_destroy(&attr);
    }
    n = fo_pool.nworkers;
    pthread_mutex_unlock(&fo_pool.mu);
    return n;
}

/* key: what kind of job this is for the policy's samples (see fo_kind_t). */
static void fo_pool_run_keyed(int nt, fo_block_fn fn, void *ctx, Py_ssize_t nblocks,
                              const void *key) {
    Py_ssize_t k;
    uint32_t g;
    long until, t0, c0, lost, delay;
    int i, nw, serial;
    fo_kind_t *kd;
    if (nt > 1 && nblocks > 1 && nblocks < 0xffffffffL) {
        pthread_once(&fo_pool_once, fo_pool_init);
        if (pthread_mutex_trylock(&fo_pool.run_mu) == 0) {
            kd = fo_policy_begin(key, &serial);
            if (serial) {
                /* The caller alone; the workers stay asleep. */
                t0 = fo_now_ns();
                for (k = 0; k < nblocks; k++) fn(ctx, k);
                fo_policy_serial_done(kd, fo_now_ns() - t0, nblocks);
                pthread_mutex_unlock(&fo_pool.run_mu);
                return;
            }
            nw = fo_pool_grow(nt - 1);
            if (nw > 0) {
                t0 = fo_now_ns();
                c0 = fo_thread_cpu_ns();
                /* Close the previous job's ticket before describing this
                 * one: a worker that read it (every block claimed) and was
                 * descheduled before its bound check must not find this
                 * job's larger nblocks and claim past the old job's end. */
                atomic_store_explicit(&fo_pool.ticket,
                    atomic_load_explicit(&fo_pool.ticket, memory_order_relaxed) | 0xffffffffu,
                    memory_order_relaxed);
                fo_pool.fn = fn;
                fo_pool.ctx = ctx;
                fo_fp_get(&fo_pool.fp);
                atomic_store_explicit(&fo_pool.nblocks, nblocks, memory_order_release);
                atomic_store_explicit(&fo_pool.wanted, nt - 1, memory_order_relaxed);
                atomic_store_explicit(&fo_pool.done, 0, memory_order_relaxed);
                /* Test knob: the caller preempted before it publishes the job. */
                delay = atomic_load_explicit(&fo_pool.describe_delay_ns, memory_order_relaxed);
                if (delay > 0) fo_sleep_ns(delay);
                g = ++fo_pool.next_gen;
                if (g == 0) g = ++fo_pool.next_gen;
                atomic_store_explicit(&fo_pool.ticket, (uint64_t)g << 32, memory_order_release);
                pthread_mutex_lock(&fo_pool.mu);
                fo_pool.gen = g;
                pthread_cond_broadcast(&fo_pool.work_cv);
                pthread_mutex_unlock(&fo_pool.mu);
                fo_pool_work(g, 0);
                /* Out of blocks: wait for the claimed ones. */
                until = fo_now_ns() + fo_spin_budget();
                lost = -1;
                for (i = 1; atomic_load_explicit(&fo_pool.done, memory_order_acquire) != nblocks; i++) {
                    fo_cpu_relax();
                    if ((i & 63) == 0 && fo_now_ns() > until) {
                        lost = fo_lost_ns(t0, c0);  /* before the voluntary sleep */
                        pthread_mutex_lock(&fo_pool.mu);
                        while (atomic_load_explicit(&fo_pool.done, memory_order_acquire) != nblocks)
                            pthread_cond_wait(&fo_pool.done_cv, &fo_pool.mu);
                        pthread_mutex_unlock(&fo_pool.mu);
                        break;
                    }
                }
                if (lost < 0) lost = fo_lost_ns(t0, c0);
                fo_policy_parallel_done(kd, fo_now_ns() - t0, nblocks, lost);
                pthread_mutex_unlock(&fo_pool.run_mu);
                return;
            }
            pthread_mutex_unlock(&fo_pool.run_mu);
        }
    }
    for (k = 0; k < nblocks; k++) fn(ctx, k);
}

/* Test and tuning hooks. */
static void fo_pool_set_stale_probe(long stale_ns, long describe_ns) {
    atomic_store_explicit(&fo_pool.stale_delay_ns, stale_ns, memory_order_relaxed);
    atomic_store_explicit(&fo_pool.describe_delay_ns, describe_ns, memory_order_relaxed);
}
static long fo_pool_set_spin_ns(long ns) {
    return atomic_exchange_explicit(&fo_pool.spin_ns, ns < 0 ? 0 : ns, memory_order_relaxed);
}
static long fo_pool_worker_blocks(void) {
    return atomic_load_explicit(&fo_pool.worker_blocks, memory_order_relaxed);
}
static int fo_pool_workers(void) {
    int n;
    pthread_mutex_lock(&fo_pool.mu);
    n = fo_pool.nworkers;
    pthread_mutex_unlock(&fo_pool.mu);
    return n;
}
#else  /* serial build */
#define FO_THREADS 0
static void fo_pool_run_keyed(int nt, fo_block_fn fn, void *ctx, Py_ssize_t nblocks,
                              const void *key) {
    Py_ssize_t k;
    (void)nt; (void)key;
    for (k = 0; k < nblocks; k++) fn(ctx, k);
}
static long fo_pool_set_spin_ns(long ns) { (void)ns; return 0; }
static void fo_pool_set_stale_probe(long stale_ns, long describe_ns) {
    (void)stale_ns; (void)describe_ns;
}
static int fo_pool_workers(void) { return 0; }
static void fo_pool_policy(int adaptive, int force, int force_pre, long delay_ns, int reset,
                           long *out) {
    int i;
    (void)adaptive; (void)force; (void)force_pre; (void)delay_ns; (void)reset;
    for (i = 0; i < 20; i++) out[i] = 0;  /* FO_POLICY_OUT */
    out[3] = -1;
}
static long fo_pool_worker_blocks(void) { return 0; }
static int fo_pool_judge_means(double par_ns, double ser_ns, int par_n, int ser_n,
                               int desched_recent) {
    (void)par_ns; (void)ser_ns; (void)par_n; (void)ser_n; (void)desched_recent;
    return 0;
}
#endif

#endif /* FO_POOL_H */
