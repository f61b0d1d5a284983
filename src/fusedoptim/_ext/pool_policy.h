/* The thread pool's contention policy: whether a job runs in parallel or on
 * the calling thread alone.  Included by pool.h (threaded builds only), after
 * the pool's state: everything here runs under fo_pool.run_mu, held by the
 * caller of the running job.
 *
 * A choice between two modes by their measured cost: the median time per
 * block of the last FO_HIST parallel jobs, and of the last FO_HIST jobs the
 * caller ran alone.  Parallel jobs run, and after FO_FIRST_SAMPLE of them
 * (the first time) then every FO_SAMPLE, one job runs on the caller alone
 * to measure the serial cost.  When the parallel median exceeds the serial
 * one (on a busy machine, a worker descheduled while it holds a block makes
 * the step wait a scheduler slice, milliseconds), the level rises by
 * FO_LEVEL_UP (at most FO_LEVEL_MAX) and the next 2^level jobs run on the
 * caller alone: 2, 4, 8, ... 256 while contention lasts, so that only about
 * one job in 256 pays a slice.  Then parallel jobs are tried again, judged
 * on FO_PAR_MIN fresh samples (fo_policy_stretch_done).  After FO_GOOD_RUN
 * parallel jobs without falling back the level drops by one, so a machine
 * that became quiet gets its threads back within a few hundred jobs.
 * Whatever the policy decides, every block computes the same bits.
 *
 * Spinning under contention: the pool's threads spin for a while before they
 * sleep (pool.h), which keeps back-to-back steps fast on a quiet machine,
 * but on a busy one a spinning thread burns its share of the CPU: the
 * scheduler (CFS, EEVDF) then gives it no wake-up preference over the
 * competing process, so a worker waits a slice before it runs, or is
 * descheduled while it holds a block.  So the policy looks, after each
 * parallel job, whether the pool's threads were descheduled while they
 * could run, and the threads spin only while fewer than FO_DESCHED_MAX of
 * the last FO_WINDOW parallel jobs were; else they sleep at once.  A job
 * counts as descheduled when its threads lost at least FO_DESCHED_LOST_NS,
 * and at least 1/FO_DESCHED_SHARE of the job's time, of run time in it:
 * wall time minus the thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID), for the caller from the job's start until it
 * has run out of blocks and sleeps, for a worker from the end of its
 * previous job while it spins and runs blocks (not while it sleeps: that is
 * voluntary).  A competing process takes a CPU for a scheduler slice
 * (0.75-3 ms) when it preempts one of them; a quiet machine's stray
 * wake-up (a kernel thread) takes microseconds, and in a long job (a
 * 13 ms ResNet-50 step) the other processes of a shared but not busy
 * machine take a few hundred: there not spinning costs more (2-5% of the
 * step: bench --size resnet50 at 2 threads ran at 92-96% of the copy limit
 * against 97-98% spinning) than the spinning takes from them.  Counting
 * switches instead
 * (the rule before: one involuntary switch per 4 ms of the job) called a
 * quiet machine's 1.2 ms mlp step descheduled on any stray switch, and two
 * of them in 16 jobs stopped the spinning and set the busy margin (below):
 * quiet runs had 2-16% of their steps on the caller alone, against the
 * 1.5% of the serial samples. */
#ifndef FO_POOL_POLICY_H
#define FO_POOL_POLICY_H

#define FO_LEVEL_UP 1
#define FO_LEVEL_MAX 8
#define FO_GOOD_RUN 8
#define FO_SAMPLE 64
#define FO_FIRST_SAMPLE 2
#define FO_HIST 5
#define FO_KINDS 8
/* Parallel counts as the slower only when its median exceeds the serial one by
 * FO_MARGIN, and only once FO_SER_MIN serial samples were taken (the first
 * FO_SER_MIN of them FO_FIRST_SAMPLE jobs apart).  Why: on a quiet machine a
 * memory-bound step on 2 threads is only 1.1-1.3x faster than on one, and
 * this VM's memory bandwidth swings by up to 40% from one job to the next;
 * without the margin one lucky serial sample sent 53 of 60 quiet 2^24 Adam
 * steps to the caller alone (10.9 ms against 9.3 ms always parallel).  A
 * descheduled worker costs a scheduler slice, far above the margin.  But
 * while the pool's threads are being descheduled (FO_DESCHED_MAX of the
 * last FO_WINDOW parallel jobs, below), a slower parallel median is that
 * contention, not the bandwidth's noise, and the margin is FO_MARGIN_BUSY:
 * with one competing busy process, parallel Adam steps on the mlp workload
 * were 1.13x the caller alone's (median), under FO_MARGIN, so they stayed
 * parallel.  Not 1.0: under heavier load (several competitors) the means
 * of both modes came close while parallel steps kept the better median
 * (measured at load 4-8: 2 threads always parallel 8.6 ms median against
 * 14.4 ms on one), and a margin of 1.0 on means of 4 jobs sent 81-99% of
 * the steps to the caller alone. */
#define FO_MARGIN 1.25
#define FO_MARGIN_BUSY 1.10
#define FO_SER_MIN 2
#define FO_PAR_MIN 3
#define FO_WINDOW 16
#define FO_DESCHED_MAX 2
#define FO_DESCHED_LOST_NS 200000L
#define FO_DESCHED_SHARE 16
#define FO_POLICY_OUT 20

/* The policy's samples for one kind of job (its key: the element function of
 * a step, else the block function), since a block's cost differs between
 * kinds (a norm block is cheaper than an Adam block): a step with clipping
 * alternates two kinds, each compared with its own serial cost. */
typedef struct {
    const void *key;
    int par_n, ser_n;            /* samples kept (at most FO_HIST) */
    int par_i, ser_i;            /* where the next sample goes */
    double par_hist[FO_HIST], ser_hist[FO_HIST];  /* ns per block, last jobs */
    double par_ns, ser_ns;       /* median ns per block of each mode */
    long since_sample;           /* parallel jobs since a serial one */
    int warm;                    /* the kind's first parallel job is done */
} fo_kind_t;

typedef struct {
    int adaptive;                /* 0: always parallel (measurements, tests) */
    int force;                   /* test knob: -1 measure, 0/1 call every
                                    parallel job faster/slower than serial */
    int level;                   /* serial stretches last 2^level jobs */
    int good;                    /* parallel jobs since the last fallback */
    int last;                    /* last job under the policy: 0 parallel,
                                    1 parallel then fallback, 2 serial */
    fo_kind_t kinds[FO_KINDS];   /* the samples, per kind of job */
    int nkinds, evict;
    fo_kind_t *kind;             /* of the last job under the policy */
    long serial_left;            /* jobs still to run on the caller alone */
    long slow_jobs, serial_jobs; /* fallbacks and serial jobs (tests) */
    unsigned desched;            /* the last FO_WINDOW parallel jobs, a bit
                                    set for each descheduled one (newest:
                                    bit 0) */
    int force_pre;               /* test knob: -1 measure, 0/1 call every
                                    parallel job calm/descheduled */
    long lost_workers_seen;      /* fo_pool.lost_ns at the last look */
    long last_lost;              /* run time lost in the last parallel job */
    long pre_jobs;               /* descheduled parallel jobs (tests) */
    /* Why jobs ran as they did (measurements): serial samples and stretch
     * jobs, fallbacks judged with the busy margin, parallel jobs that ran
     * without spinning, descheduled jobs in which the caller / a worker
     * was switched out. */
    long sample_jobs, stretch_jobs, busy_fallbacks, nospin_jobs;
    long pre_caller, pre_workers;
} fo_policy_t;

static fo_policy_t fo_policy = {.adaptive = 1, .force = -1, .last = -1, .force_pre = -1};

static int fo_policy_desched_recent(void) {
    int n = 0;
    unsigned m;
    for (m = fo_policy.desched; m; m &= m - 1) n++;
    return n;
}

/* After a parallel job under the policy that took ns, in which the caller
 * lost caller_lost ns of run time: was a thread of the pool descheduled, and so
 * do the pool's threads spin before they sleep. */
static void fo_policy_spin(long ns, long caller_lost) {
    long theirs = atomic_load_explicit(&fo_pool.lost_ns, memory_order_relaxed);
    long workers_lost = theirs - fo_policy.lost_workers_seen;
    long enough = ns / FO_DESCHED_SHARE > FO_DESCHED_LOST_NS ? ns / FO_DESCHED_SHARE
        : FO_DESCHED_LOST_NS;
    int pre = fo_policy.force_pre >= 0 ? fo_policy.force_pre
        : caller_lost + workers_lost >= enough;
    fo_policy.pre_caller += pre && caller_lost >= enough;
    fo_policy.pre_workers += pre && workers_lost >= enough;
    fo_policy.last_lost = caller_lost + workers_lost;
    if (!atomic_load_explicit(&fo_pool.spin_on, memory_order_relaxed)) fo_policy.nospin_jobs++;
    fo_policy.lost_workers_seen = theirs;
    fo_policy.pre_jobs += pre;
    fo_policy.desched = ((fo_policy.desched << 1) | (pre != 0)) & ((1u << FO_WINDOW) - 1);
    atomic_store_explicit(&fo_pool.spin_on, fo_policy_desched_recent() < FO_DESCHED_MAX,
                          memory_order_relaxed);
}

/* Add a job's ns per block to a mode's last FO_HIST samples, and return
 * their median (of an even count, the mean of the middle two).  A median,
 * not a mean: under heavy load (several competitors) both modes have long
 * tails (a thread descheduled for a slice), and a mean of 4 parallel jobs
 * (clipped at 4x) had the caller alone run 58-99% of the steps while
 * parallel steps kept the better median (mlp, load 4-5: 8.2 ms against
 * 11.0 ms); lasting contention (most jobs slow) still moves the median
 * within FO_HIST / 2 + 1 jobs. */
static double fo_pool_sample(double *hist, int *n, int *i, double sample) {
    double v[FO_HIST], x;
    int a, b;
    hist[*i] = sample;
    *i = (*i + 1) % FO_HIST;
    if (*n < FO_HIST) ++*n;
    for (a = 0; a < *n; a++) {          /* insertion sort of <= FO_HIST */
        x = hist[a];
        for (b = a; b > 0 && v[b - 1] > x; b--) v[b] = v[b - 1];
        v[b] = x;
    }
    return *n % 2 ? v[*n / 2] : 0.5 * (v[*n / 2 - 1] + v[*n / 2]);
}

/* The samples of jobs of this key; a new key takes a free entry, or the
 * oldest one's. */
static fo_kind_t *fo_pool_kind(const void *key) {
    fo_kind_t *k;
    int i;
    for (i = 0; i < fo_policy.nkinds; i++)
        if (fo_policy.kinds[i].key == key) return &fo_policy.kinds[i];
    if (fo_policy.nkinds < FO_KINDS) {
        k = &fo_policy.kinds[fo_policy.nkinds++];
    } else {
        k = &fo_policy.kinds[fo_policy.evict];
        fo_policy.evict = (fo_policy.evict + 1) % FO_KINDS;
    }
    memset(k, 0, sizeof *k);
    k->key = key;
    return k;
}

/* Whether parallel jobs of kind kd are the slower, desched_recent of the
 * last FO_WINDOW parallel jobs having been descheduled. */
static int fo_policy_slower(const fo_kind_t *kd, int desched_recent) {
    double margin = desched_recent >= FO_DESCHED_MAX ? FO_MARGIN_BUSY : FO_MARGIN;
    return kd->par_n >= FO_PAR_MIN && kd->ser_n >= FO_SER_MIN && kd->par_ns > margin * kd->ser_ns;
}

/* After a parallel job of kind kd: fall back to the caller alone when
 * parallel jobs of that kind have become the slower. */
static void fo_pool_judge(const fo_kind_t *kd) {
    int slow, busy = fo_policy_desched_recent() >= FO_DESCHED_MAX;
    if (fo_policy.force >= 0)
        slow = fo_policy.force;
    else
        slow = fo_policy_slower(kd, fo_policy_desched_recent());
    fo_policy.last = slow;
    if (slow) {
        fo_policy.slow_jobs++;
        fo_policy.busy_fallbacks += busy;
        fo_policy.good = 0;
        fo_policy.level += FO_LEVEL_UP;
        if (fo_policy.level > FO_LEVEL_MAX) fo_policy.level = FO_LEVEL_MAX;
        fo_policy.serial_left = 1L << fo_policy.level;
    } else if (++fo_policy.good >= FO_GOOD_RUN) {
        fo_policy.good = 0;
        if (fo_policy.level > 0) fo_policy.level--;
    }
}

/* The last job of a stretch on the caller alone has run: the parallel
 * samples of every kind are from before it, when contention made parallel
 * the slower, and are dropped, so that parallel jobs are judged again on
 * FO_PAR_MIN fresh ones against the serial samples the stretch just took
 * (the load may have changed meanwhile: other processes come and go; with
 * the old samples one fresh job was judged, and under a load that varies
 * the caller alone ran 44% of the steps at 14.5 ms median against 8.0 ms
 * for the parallel ones). */
static void fo_policy_stretch_done(void) {
    int i;
    for (i = 0; i < fo_policy.nkinds; i++) fo_policy.kinds[i].par_n = fo_policy.kinds[i].par_i = 0;
}

/* Before a job of this key: its kind (NULL when the policy is off), and in
 * *serial whether the caller runs it alone (a stretch after contention, or
 * a sample of the serial cost). */
static fo_kind_t *fo_policy_begin(const void *key, int *serial) {
    fo_kind_t *kd;
    *serial = 0;
    if (!fo_policy.adaptive) return NULL;
    kd = fo_policy.kind = fo_pool_kind(key);
    if (fo_policy.serial_left > 0
            || kd->since_sample >= (kd->ser_n >= FO_SER_MIN ? FO_SAMPLE : FO_FIRST_SAMPLE)) {
        if (fo_policy.serial_left > 0) {
            if (--fo_policy.serial_left == 0) fo_policy_stretch_done();
            fo_policy.stretch_jobs++;
        } else {
            fo_policy.sample_jobs++;
        }
        kd->since_sample = 0;
        fo_policy.serial_jobs++;
        fo_policy.last = 2;
        *serial = 1;
    }
    return kd;
}

/* After a job of kind kd that the caller ran alone in ns for nblocks. */
static void fo_policy_serial_done(fo_kind_t *kd, long ns, Py_ssize_t nblocks) {
    kd->ser_ns = fo_pool_sample(kd->ser_hist, &kd->ser_n, &kd->ser_i, (double)ns / (double)nblocks);
}

/* After a parallel job of kind kd (NULL: policy off) that took ns, in
 * which the caller lost caller_lost ns of run time. */
static void fo_policy_parallel_done(fo_kind_t *kd, long ns, Py_ssize_t nblocks,
                                    long caller_lost) {
    if (kd == NULL) {
        /* Policy off: what the workers lose now is not the next job's. */
        fo_policy.lost_workers_seen = atomic_load_explicit(&fo_pool.lost_ns,
                                                           memory_order_relaxed);
        return;
    }
    fo_policy_spin(ns, caller_lost);
    kd->since_sample++;
    if (!kd->warm) {
        /* Not a sample: the first job of a kind pays the workers' creation
         * and the first touch of state that was just allocated (97 ms
         * against 6.5 ms for the next 2^24 Adam step). */
        kd->warm = 1;
        fo_policy.last = 0;
        return;
    }
    kd->par_ns = fo_pool_sample(kd->par_hist, &kd->par_n, &kd->par_i, (double)ns / (double)nblocks);
    fo_pool_judge(kd);
}

/* Test hook: fo_policy_slower's verdict on these medians. */
static int fo_pool_judge_means(double par_ns, double ser_ns, int par_n, int ser_n,
                               int desched_recent) {
    fo_kind_t k;
    memset(&k, 0, sizeof k);
    k.par_ns = par_ns;
    k.ser_ns = ser_ns;
    k.par_n = par_n;
    k.ser_n = ser_n;
    return fo_policy_slower(&k, desched_recent);
}

/* The test hook: set adaptive (0/1; -1 leaves it), the forced verdicts
 * (force: -1 measure, 0 parallel is faster, 1 slower; force_pre: -1
 * measure, 0 calm, 1 descheduled; -2 leaves each) and the worker delay (ns;
 * < 0 leaves it); reset (1) clears the level, stretch, samples, the
 * descheduled window and counts.  Fills out[0..12] = adaptive, level,
 * serial_left, last, slow_jobs, serial_jobs, good, the last job's kind's
 * parallel and serial median ns per block (-1: no sample), the kinds seen,
 * the descheduled jobs in the window, descheduled jobs, whether the threads
 * spin, then (FO_POLICY_OUT in all) serial samples, stretch jobs,
 * fallbacks with the busy margin, parallel jobs without spinning, and
 * descheduled jobs that saw the caller / a worker switched out, as they
 * were before the call's changes. */
static void fo_pool_policy(int adaptive, int force, int force_pre, long delay_ns, int reset,
                           long *out) {
    pthread_mutex_lock(&fo_pool.run_mu);
    out[0] = fo_policy.adaptive;
    out[1] = fo_policy.level;
    out[2] = fo_policy.serial_left;
    out[3] = fo_policy.last;
    out[4] = fo_policy.slow_jobs;
    out[5] = fo_policy.serial_jobs;
    out[6] = fo_policy.good;
    out[7] = fo_policy.kind && fo_policy.kind->par_n ? (long)fo_policy.kind->par_ns : -1;
    out[8] = fo_policy.kind && fo_policy.kind->ser_n ? (long)fo_policy.kind->ser_ns : -1;
    out[9] = fo_policy.nkinds;
    out[10] = fo_policy_desched_recent();
    out[11] = fo_policy.pre_jobs;
    out[12] = atomic_load_explicit(&fo_pool.spin_on, memory_order_relaxed);
    out[13] = fo_policy.sample_jobs;
    out[14] = fo_policy.stretch_jobs;
    out[15] = fo_policy.busy_fallbacks;
    out[16] = fo_policy.nospin_jobs;
    out[17] = fo_policy.pre_caller;
    out[18] = fo_policy.pre_workers;
    out[19] = fo_policy.last_lost;
    if (adaptive >= 0) fo_policy.adaptive = adaptive != 0;
    if (force >= -1) fo_policy.force = force > 1 ? 1 : force;
    if (force_pre >= -1) fo_policy.force_pre = force_pre > 1 ? 1 : force_pre;
    if (delay_ns >= 0) atomic_store_explicit(&fo_pool.worker_delay_ns, delay_ns, memory_order_relaxed);
    if (reset) {
        fo_policy.level = fo_policy.good = fo_policy.nkinds = fo_policy.evict = 0;
        fo_policy.kind = NULL;
        fo_policy.last = -1;
        fo_policy.serial_left = 0;
        fo_policy.slow_jobs = fo_policy.serial_jobs = fo_policy.pre_jobs = 0;
        fo_policy.sample_jobs = fo_policy.stretch_jobs = fo_policy.busy_fallbacks = 0;
        fo_policy.nospin_jobs = fo_policy.pre_caller = fo_policy.pre_workers = 0;
        fo_policy.last_lost = 0;
        fo_policy.desched = 0;
        /* Run time the workers lost before the reset is not the next job's. */
        fo_policy.lost_workers_seen = atomic_load_explicit(&fo_pool.lost_ns,
                                                           memory_order_relaxed);
    }
    /* The policy off is the pool as it was before it: always spinning. */
    atomic_store_explicit(&fo_pool.spin_on,
                          !fo_policy.adaptive || fo_policy_desched_recent() < FO_DESCHED_MAX,
                          memory_order_relaxed);
    pthread_mutex_unlock(&fo_pool.run_mu);
}

#endif /* FO_POOL_POLICY_H */
