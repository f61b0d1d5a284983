/* The compiled backend's own thread pool (used by _step.pyx instead of OpenMP).
 *
 * Why not OpenMP: libgomp's pool hangs a child process forked after a
 * parallel region, its workers keep their own floating-point mode (MXCSR)
 * rather than the caller's, and a static split with spinning workers
 * collapses when another process competes for the CPUs.
 *
 * The design:
 *  - fo_pool_run(nt, fn, ctx, nblocks) calls fn(ctx, k) once for every block
 *    k in [0, nblocks), on the calling thread and up to nt - 1 workers.
 *    Blocks are handed out dynamically through one atomic "ticket" (job
 *    generation << 32 | next block): a thread that runs takes more blocks,
 *    and a worker that was not scheduled in time simply takes none (the
 *    caller waits only for blocks that were claimed).  What a block computes
 *    does not depend on which thread runs it, so results are bitwise those of
 *    one thread.
 *  - Workers wait passively: after a job they spin for at most
 *    FO_SPIN_NS (back-to-back steps), then sleep on a condition variable.
 *    The caller, out of blocks, spins at most FO_SPIN_NS for the claimed
 *    ones, then sleeps.
 *  - A worker runs a job's blocks in the caller's floating-point control
 *    state (MXCSR on x86: FTZ/DAZ, rounding; fegetenv/fesetenv elsewhere)
 *    and restores its own after the job.
 *  - pthread_atfork: a child process forgets the parent's workers (they do
 *    not exist in it) and creates fresh ones on its first parallel step.
 *  - One job at a time: a call made while another thread's job runs (or from
 *    inside a block) runs serially on its own thread instead of waiting.
 *  - Under contention, the caller alone (see "the adaptive policy" below):
 *    a worker descheduled while it holds a block delays the end of the step
 *    by a scheduler slice (milliseconds), which no split can avoid since a
 *    started block cannot be taken over (the update is in place).  The pool
 *    keeps the recent time per block of parallel jobs and of jobs run by
 *    the caller alone; when parallel jobs become the slower, the next jobs
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

/* The adaptive policy (under run_mu), a choice between two modes by their
 * measured cost: the mean time per block (an average of the last few jobs:
 * FO_EWMA) of parallel jobs, and of jobs the caller ran alone.  Parallel
 * jobs run, and after FO_FIRST_SAMPLE of them (the first time) then every
 * FO_SAMPLE, one job runs on the caller alone to measure the serial cost.
 * When the parallel mean exceeds the serial one (on a busy machine, a
 * worker descheduled while it holds a block makes the step wait a scheduler
 * slice, milliseconds), the level rises by FO_LEVEL_UP (at most
 * FO_LEVEL_MAX) and the next 2^level jobs run on the caller alone: 2, 4, 8,
 * ... 256 while contention lasts, so that only about one job in 256
 * pays a slice.  Then parallel jobs are tried again; their mean keeps its
 * history, so one fast job does not undo it (nor one slow job on a machine
 * that is busy for both modes alike, several competitors: there the caller
 * alone is descheduled too, and the parallel mode is kept when it is the
 * faster on average).  After FO_GOOD_RUN parallel jobs without falling back
 * the level drops by one, so a machine that became quiet gets its threads
 * back within a few hundred jobs.  Whatever the policy decides, every block
 * computes the same bits. */
#define FO_LEVEL_UP 1
#define FO_LEVEL_MAX 8
#define FO_GOOD_RUN 8
#define FO_SAMPLE 64
#define FO_FIRST_SAMPLE 2
#define FO_EWMA 4
#define FO_KINDS 8
/* Parallel counts as the slower only when its mean exceeds the serial one by
 * FO_MARGIN, and only once FO_SER_MIN serial samples were taken (the first
 * FO_SER_MIN of them FO_FIRST_SAMPLE jobs apart).  Why: on a quiet machine a
 * memory-bound step on 2 threads is only 1.1-1.3x faster than on one, and
 * this VM's memory bandwidth swings by up to 40% from one job to the next;
 * without the margin one lucky serial sample sent 53 of 60 quiet 2^24 Adam
 * steps to the caller alone (10.9 ms against 9.3 ms always parallel).  A
 * descheduled worker costs a scheduler slice, far above the margin. */
#define FO_MARGIN 1.25
#define FO_SER_MIN 2
#define FO_CLIP 4.0

/* The policy's means for one kind of job (its key: the element function of
 * a step, else the block function), since a block's cost differs between
 * kinds (a norm block is cheaper than an Adam block): a step with clipping
 * alternates two kinds, each compared with its own serial cost. */
typedef struct {
    const void *key;
    int par_n, ser_n;            /* samples in the means (at most FO_EWMA) */
    double par_ns, ser_ns;       /* mean ns per block of each mode */
    long since_sample;           /* parallel jobs since a serial one */
    int warm;                    /* the kind's first parallel job is done */
} fo_kind_t;

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
    _Atomic long worker_blocks;  /* blocks run by workers, ever (tests) */
    _Atomic long worker_delay_ns; /* test knob: a worker sleeps this long
                                     after its first claim of a job */
    uint32_t gen;                /* last announced job (under mu) */
    uint32_t next_gen;           /* caller side, under run_mu */
    /* The adaptive policy's state, under run_mu. */
    int adaptive;                /* 0: always parallel (measurements, tests) */
    int force;                   /* test knob: -1 measure, 0/1 call every
                                    parallel job faster/slower than serial */
    int level;                   /* serial stretches last 2^level jobs */
    int good;                    /* parallel jobs since the last fallback */
    int last;                    /* last job under the policy: 0 parallel,
                                    1 parallel then fallback, 2 serial */
    fo_kind_t kinds[FO_KINDS];   /* the means, per kind of job */
    int nkinds, evict;
    fo_kind_t *kind;             /* of the last job under the policy */
    long serial_left;            /* jobs still to run on the caller alone */
    long slow_jobs, serial_jobs; /* fallbacks and serial jobs (tests) */
    int nworkers;
    fo_block_fn fn;              /* read only by a thread holding a claim */
    void *ctx;
    fo_fpstate fp;
} fo_pool_t;

static fo_pool_t fo_pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .work_cv = PTHREAD_COND_INITIALIZER,
    .done_cv = PTHREAD_COND_INITIALIZER, .run_mu = PTHREAD_MUTEX_INITIALIZER,
    .spin_ns = FO_SPIN_NS, .adaptive = 1, .force = -1, .last = -1,
};
static pthread_once_t fo_pool_once = PTHREAD_ONCE_INIT;

static long fo_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void fo_cpu_relax(void) {
#if FO_HAVE_MXCSR
    _mm_pause();
#endif
}

/* In a child after fork: the parent's workers do not exist here, and the
 * locks may have been held by threads that do not exist either. */
static void fo_pool_atfork_child(void) {
    pthread_mutex_init(&fo_pool.mu, NULL);
    pthread_mutex_init(&fo_pool.run_mu, NULL);
    pthread_cond_init(&fo_pool.work_cv, NULL);
    pthread_cond_init(&fo_pool.done_cv, NULL);
    fo_pool.nworkers = 0;
}

static void fo_pool_init(void) { pthread_atfork(NULL, NULL, fo_pool_atfork_child); }

/* Claim and run blocks of job g until none is left; a worker (swap_fp)
 * runs them in the caller's floating-point state. */
static void fo_pool_work(uint32_t g, int swap_fp) {
    fo_fpstate mine;
    fo_block_fn fn = NULL;
    void *ctx = NULL;
    Py_ssize_t nb = 0, idx;
    long delay;
    struct timespec ts;
    uint64_t t = atomic_load_explicit(&fo_pool.ticket, memory_order_acquire);
    for (;;) {
        for (;;) {
            if ((uint32_t)(t >> 32) != g) goto out;
            idx = (Py_ssize_t)(t & 0xffffffffu);
            if (idx >= atomic_load_explicit(&fo_pool.nblocks, memory_order_relaxed)) goto out;
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
                if (delay > 0) {
                    ts.tv_sec = delay / 1000000000L;
                    ts.tv_nsec = delay % 1000000000L;
                    nanosleep(&ts, NULL);
                }
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
    long until;
    int i;
    free(p);
    for (;;) {
        /* Bounded spin for the next job, then sleep. */
        until = fo_now_ns() + atomic_load_explicit(&fo_pool.spin_ns, memory_order_relaxed);
        g = seen;
        for (i = 1;; i++) {
            g = (uint32_t)(atomic_load_explicit(&fo_pool.ticket, memory_order_acquire) >> 32);
            if (g != seen) break;
            fo_cpu_relax();
            if ((i & 63) == 0 && fo_now_ns() > until) break;
        }
        if (g == seen) {
            pthread_mutex_lock(&fo_pool.mu);
            while (fo_pool.gen == seen) pthread_cond_wait(&fo_pool.work_cv, &fo_pool.mu);
            g = fo_pool.gen;
            pthread_mutex_unlock(&fo_pool.mu);
        }
        seen = g;
        if (w < atomic_load_explicit(&fo_pool.wanted, memory_order_relaxed))
            fo_pool_work(g, 1);
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

/* Add a job's ns per block to a mode's mean: the plain mean of the first
 * FO_EWMA samples, then an exponential average of weight 1/FO_EWMA. */
static void fo_pool_mean(double *mean, int *n, double sample) {
    /* One outlier (a page fault storm, a stall) moves the mean by at most
     * (FO_CLIP - 1) / FO_EWMA of itself; lasting contention still raises
     * it within a few jobs. */
    if (*n > 0 && sample > FO_CLIP * *mean) sample = FO_CLIP * *mean;
    if (*n < FO_EWMA) ++*n;
    *mean += (sample - *mean) / *n;
}

/* The means of jobs of this key (under run_mu); a new key takes a free
 * entry, or the oldest one's. */
static fo_kind_t *fo_pool_kind(const void *key) {
    fo_kind_t *k;
    int i;
    for (i = 0; i < fo_pool.nkinds; i++)
        if (fo_pool.kinds[i].key == key) return &fo_pool.kinds[i];
    if (fo_pool.nkinds < FO_KINDS) {
        k = &fo_pool.kinds[fo_pool.nkinds++];
    } else {
        k = &fo_pool.kinds[fo_pool.evict];
        fo_pool.evict = (fo_pool.evict + 1) % FO_KINDS;
    }
    memset(k, 0, sizeof *k);
    k->key = key;
    return k;
}

/* After a parallel job of kind kd (under run_mu): fall back to the caller
 * alone when parallel jobs of that kind have become the slower. */
static void fo_pool_judge(const fo_kind_t *kd) {
    int slow;
    if (fo_pool.force >= 0)
        slow = fo_pool.force;
    else
        slow = kd->par_n >= 2 && kd->ser_n >= FO_SER_MIN && kd->par_ns > FO_MARGIN * kd->ser_ns;
    fo_pool.last = slow;
    if (slow) {
        fo_pool.slow_jobs++;
        fo_pool.good = 0;
        fo_pool.level += FO_LEVEL_UP;
        if (fo_pool.level > FO_LEVEL_MAX) fo_pool.level = FO_LEVEL_MAX;
        fo_pool.serial_left = 1L << fo_pool.level;
    } else if (++fo_pool.good >= FO_GOOD_RUN) {
        fo_pool.good = 0;
        if (fo_pool.level > 0) fo_pool.level--;
    }
}

/* key: what kind of job this is for the policy's means (see fo_kind_t). */
static void fo_pool_run_keyed(int nt, fo_block_fn fn, void *ctx, Py_ssize_t nblocks,
                              const void *key) {
    Py_ssize_t k;
    uint32_t g;
    long until, t0;
    int i, nw;
    fo_kind_t *kd = NULL;
    if (nt > 1 && nblocks > 1 && nblocks <= 0xffffffffL) {
        pthread_once(&fo_pool_once, fo_pool_init);
        if (pthread_mutex_trylock(&fo_pool.run_mu) == 0) {
            if (fo_pool.adaptive) kd = fo_pool.kind = fo_pool_kind(key);
            if (kd != NULL && (fo_pool.serial_left > 0 || kd->since_sample
                               >= (kd->ser_n >= FO_SER_MIN ? FO_SAMPLE : FO_FIRST_SAMPLE))) {
                /* The caller alone (a stretch after contention, or a sample
                 * of the serial cost); the workers stay asleep. */
                if (fo_pool.serial_left > 0) fo_pool.serial_left--;
                kd->since_sample = 0;
                fo_pool.serial_jobs++;
                fo_pool.last = 2;
                t0 = fo_now_ns();
                for (k = 0; k < nblocks; k++) fn(ctx, k);
                fo_pool_mean(&kd->ser_ns, &kd->ser_n,
                             (double)(fo_now_ns() - t0) / (double)nblocks);
                pthread_mutex_unlock(&fo_pool.run_mu);
                return;
            }
            nw = fo_pool_grow(nt - 1);
            if (nw > 0) {
                t0 = fo_now_ns();
                fo_pool.fn = fn;
                fo_pool.ctx = ctx;
                fo_fp_get(&fo_pool.fp);
                atomic_store_explicit(&fo_pool.nblocks, nblocks, memory_order_relaxed);
                atomic_store_explicit(&fo_pool.wanted, nt - 1, memory_order_relaxed);
                atomic_store_explicit(&fo_pool.done, 0, memory_order_relaxed);
                g = ++fo_pool.next_gen;
                if (g == 0) g = ++fo_pool.next_gen;
                atomic_store_explicit(&fo_pool.ticket, (uint64_t)g << 32, memory_order_release);
                pthread_mutex_lock(&fo_pool.mu);
                fo_pool.gen = g;
                pthread_cond_broadcast(&fo_pool.work_cv);
                pthread_mutex_unlock(&fo_pool.mu);
                fo_pool_work(g, 0);
                /* Out of blocks: wait for the claimed ones. */
                until = fo_now_ns() + atomic_load_explicit(&fo_pool.spin_ns, memory_order_relaxed);
                for (i = 1; atomic_load_explicit(&fo_pool.done, memory_order_acquire) != nblocks; i++) {
                    fo_cpu_relax();
                    if ((i & 63) == 0 && fo_now_ns() > until) {
                        pthread_mutex_lock(&fo_pool.mu);
                        while (atomic_load_explicit(&fo_pool.done, memory_order_acquire) != nblocks)
                            pthread_cond_wait(&fo_pool.done_cv, &fo_pool.mu);
                        pthread_mutex_unlock(&fo_pool.mu);
                        break;
                    }
                }
                if (kd != NULL && !kd->warm) {
                    /* Not a sample: the first job of a kind pays the
                     * workers' creation and the first touch of state that
                     * was just allocated (97 ms against 6.5 ms for the next
                     * 2^24 Adam step). */
                    kd->warm = 1;
                    kd->since_sample++;
                    fo_pool.last = 0;
                } else if (kd != NULL) {
                    kd->since_sample++;
                    fo_pool_mean(&kd->par_ns, &kd->par_n,
                                 (double)(fo_now_ns() - t0) / (double)nblocks);
                    fo_pool_judge(kd);
                }
                pthread_mutex_unlock(&fo_pool.run_mu);
                return;
            }
            pthread_mutex_unlock(&fo_pool.run_mu);
        }
    }
    for (k = 0; k < nblocks; k++) fn(ctx, k);
}

static void fo_pool_run(int nt, fo_block_fn fn, void *ctx, Py_ssize_t nblocks) {
    fo_pool_run_keyed(nt, fn, ctx, nblocks, (const void *)fn);
}

/* Test and tuning hooks. */
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
/* The policy: set adaptive (0/1; -1 leaves it), the forced verdict (-1
 * measure, 0 parallel is faster, 1 slower; -2 leaves it) and the worker
 * delay (ns; < 0 leaves it); reset (1) clears the level, stretch, means and
 * counts.  Fills out[0..9] = adaptive, level, serial_left, last, slow_jobs,
 * serial_jobs, good, the last job's kind's parallel and serial mean ns per
 * block (-1: no sample), the kinds seen, as they were before the call's
 * changes. */
static void fo_pool_policy(int adaptive, int force, long delay_ns, int reset, long *out) {
    pthread_mutex_lock(&fo_pool.run_mu);
    out[0] = fo_pool.adaptive;
    out[1] = fo_pool.level;
    out[2] = fo_pool.serial_left;
    out[3] = fo_pool.last;
    out[4] = fo_pool.slow_jobs;
    out[5] = fo_pool.serial_jobs;
    out[6] = fo_pool.good;
    out[7] = fo_pool.kind && fo_pool.kind->par_n ? (long)fo_pool.kind->par_ns : -1;
    out[8] = fo_pool.kind && fo_pool.kind->ser_n ? (long)fo_pool.kind->ser_ns : -1;
    out[9] = fo_pool.nkinds;
    if (adaptive >= 0) fo_pool.adaptive = adaptive != 0;
    if (force >= -1) fo_pool.force = force > 1 ? 1 : force;
    if (delay_ns >= 0) atomic_store_explicit(&fo_pool.worker_delay_ns, delay_ns, memory_order_relaxed);
    if (reset) {
        fo_pool.level = fo_pool.good = fo_pool.nkinds = fo_pool.evict = 0;
        fo_pool.kind = NULL;
        fo_pool.last = -1;
        fo_pool.serial_left = 0;
        fo_pool.slow_jobs = fo_pool.serial_jobs = 0;
    }
    pthread_mutex_unlock(&fo_pool.run_mu);
}

#else  /* serial build */
#define FO_THREADS 0
static void fo_pool_run(int nt, fo_block_fn fn, void *ctx, Py_ssize_t nblocks) {
    Py_ssize_t k;
    (void)nt;
    for (k = 0; k < nblocks; k++) fn(ctx, k);
}
static void fo_pool_run_keyed(int nt, fo_block_fn fn, void *ctx, Py_ssize_t nblocks,
                              const void *key) {
    (void)key;
    fo_pool_run(nt, fn, ctx, nblocks);
}
static long fo_pool_set_spin_ns(long ns) { (void)ns; return 0; }
static int fo_pool_workers(void) { return 0; }
static void fo_pool_policy(int adaptive, int force, long delay_ns, int reset, long *out) {
    int i;
    (void)adaptive; (void)force; (void)delay_ns; (void)reset;
    for (i = 0; i < 10; i++) out[i] = 0;
    out[3] = -1;
}
static long fo_pool_worker_blocks(void) { return 0; }
#endif

#endif /* FO_POOL_H */
