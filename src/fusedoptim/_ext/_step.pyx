# cython: language_level=3
"""The compiled backend's step machinery: threads, the split, the norm.

One call per optimizer step.  A family's ``step`` (``sgd.pyx``, ...) gathers
the step (``_gather``: the compiled twin of ``_validate.gather``, which
collects data pointers and sizes into a C array of ``Tensor`` records), then
``run_step`` applies the family's chunk function over the concatenation of
all tensors: when the step has at least ``PARALLEL_MIN_ELEMENTS`` elements,
cut into fixed blocks (``_tuning.block_elements``) handed out dynamically to
the calling thread and the library's own workers (``_pool``, ``pool.h``: passive
waiting, the caller's floating-point mode, fork-safe, and the calling thread
alone for a while when parallel steps have become the slower: contention),
on the calling thread otherwise.  Only this module runs threads.

Every element is computed by the same sequence of IEEE operations whatever the
split, so results do not depend on the number of threads.  The operation order
is exactly that of the family's reference update (``fusedoptim.families``):
hyperparameters and derived scalars are computed in double and rounded once
to the array dtype, all array arithmetic happens in the array dtype (but for
``_loops._div_c1``), ``float32`` uses ``sqrtf`` and ``float`` constants only.

Each family has one element loop written with ``bint`` flags; its dispatcher
calls it with literal flags on the common paths (no clipping, no decay, no
``maximize``, no AMSGrad) so that the C compiler, after inlining, sees a
branch-free loop body and vectorizes it.  Rare flag combinations share one
generic loop.  On x86-64 CPUs with AVX2 or AVX-512, the common paths instead
call the AVX2 or AVX-512 build of the same loops (``<family>_avx2.h``, one
body compiled for both targets; same operations, same bits), the widest the
CPU has; ``simd()`` says which runs.
"""

from cython cimport floating
from libc.stdlib cimport abort
from cpython.mem cimport PyMem_Malloc, PyMem_Free

from ._gather cimport gather_step, step_init, step_free
from ._loops cimport _block_sumsq
from ._pool cimport pool_run, pool_threads
# The pool's hooks (tests, benchmarks) live with the pool in _pool.
from ._pool import _pool_judge, _pool_policy, _pool_workers, _set_ftz_daz, _set_spin_ns

from fusedoptim import _norm, _tuning

cdef extern from *:
    """
    #ifdef FUSEDOPTIM_DEBUG
    #define FO_DEBUG 1
    #else
    #define FO_DEBUG 0
    #endif
    """
    const bint FO_DEBUG

cdef extern from "avx2.h" nogil:
    const bint FO_SIMD_AVX2
    int fo_simd_detect()
    enum:
        FO_ISA_BASELINE
        FO_ISA_AVX2
        FO_ISA_AVX512

# The block sum's loops are unrolled for these at compile time; they must be
# those of the reference (checked at import below).
cdef enum:
    SUMSQ_BLOCK = 4096
    SUMSQ_LANES = 8

if (_norm.SUMSQ_BLOCK, _norm.SUMSQ_LANES) != (SUMSQ_BLOCK, SUMSQ_LANES):
    raise ImportError(f"fusedoptim._ext._step was built for SUMSQ_BLOCK={SUMSQ_BLOCK}, "
                      f"SUMSQ_LANES={SUMSQ_LANES} but fusedoptim._norm has "
                      f"{_norm.SUMSQ_BLOCK}, {_norm.SUMSQ_LANES}; rebuild the extension")

#: True when the module was built with its thread pool (else every step runs
#: on one thread, whatever ``set_num_threads`` says).
cdef bint _have_threads = pool_threads()
HAVE_THREADS = bool(_have_threads)
#: True for the ``FUSEDOPTIM_DEBUG=1`` build (range checks in every chunk).
DEBUG_BUILD = bool(FO_DEBUG)

# The SIMD builds of the fast-path loops run when the build has them, the
# widest the CPU reports (FO_ISA_*); results are the same bits either way.
_ISA_NAMES = ("baseline", "avx2", "avx512")
cdef int _isa_available = fo_simd_detect() if FO_SIMD_AVX2 else FO_ISA_BASELINE
cdef int _isa = _isa_available

cdef int _num_threads = 1
cdef Py_ssize_t _parallel_min = _tuning.PARALLEL_MIN_ELEMENTS
cdef Py_ssize_t _split_align = _tuning.SPLIT_ALIGN
cdef Py_ssize_t _block = _tuning.BLOCK_ELEMENTS
cdef Py_ssize_t _block_max = _tuning.BLOCK_MAX_ELEMENTS
cdef Py_ssize_t _blocks_per_thread = _tuning.BLOCKS_PER_THREAD
if _block <= 0 or _block % _split_align:
    raise ImportError("fusedoptim._tuning.BLOCK_ELEMENTS must be a positive "
                      "multiple of SPLIT_ALIGN")
if _block_max < _block or _block_max % _block:
    raise ImportError("fusedoptim._tuning.BLOCK_MAX_ELEMENTS must be a multiple of "
                      "BLOCK_ELEMENTS")


def set_num_threads(int n):
    """Threads of the parallel regions (``n >= 1``; the caller checks)."""
    global _num_threads
    _num_threads = n if n > 0 else 1


def get_num_threads():
    """Threads the parallel regions use."""
    return _num_threads


def simd():
    """Instruction set of the fast-path loops (no gradient prelude or AMSGrad;
    RMSProp neither centered nor with momentum): ``"avx512"``, ``"avx2"`` or
    ``"baseline"``.  (The reduced-precision Adam loops choose their own:
    ``adam_lowp.isa()``.)"""
    return _ISA_NAMES[_isa]


def _set_simd(bint on):
    """Turn the SIMD loops on (the widest the build and the CPU have) or off
    (tests compare both paths).  Returns whether they were on."""
    global _isa
    old = _isa != FO_ISA_BASELINE
    _isa = _isa_available if on else FO_ISA_BASELINE
    return old


def _set_simd_isa(str name):
    """Run the fast paths with instruction set ``name`` (``"avx512"``,
    ``"avx2"`` or ``"baseline"``), one the build and the CPU have: tests and
    benchmarks compare the builds.  Returns the previous name."""
    if name not in _ISA_NAMES:
        raise ValueError(f"name must be one of {_ISA_NAMES}")
    level = _ISA_NAMES.index(name)
    if level > _isa_available:
        raise ValueError(f"{name} loops are not available here (best: "
                         f"{_ISA_NAMES[_isa_available]})")
    global _isa
    old = _ISA_NAMES[_isa]
    _isa = level
    return old


def _set_block_elements(Py_ssize_t smallest, Py_ssize_t largest):
    """Set the range of block sizes (``_tuning.BLOCK_ELEMENTS`` and
    ``BLOCK_MAX_ELEMENTS``: measurements and tests; ``largest`` a multiple of
    ``smallest``, ``smallest`` a multiple of ``SPLIT_ALIGN`` and of every
    quantization block, which the caller checks); returns the previous pair."""
    global _block, _block_max
    if smallest <= 0 or smallest % _split_align or largest < smallest or largest % smallest:
        raise ValueError("smallest must be a positive multiple of SPLIT_ALIGN and "
                         "largest a multiple of smallest")
    old = (_block, _block_max)
    _block, _block_max = smallest, largest
    return old


cdef inline Py_ssize_t _block_for(Py_ssize_t total, int nt) noexcept nogil:
    """Block size of a parallel job over ``total`` elements on ``nt``
    threads: ``_tuning.block_elements``."""
    cdef Py_ssize_t b = _block
    while b < _block_max and total >= 2 * b * nt * _blocks_per_thread:
        b *= 2
    return b


def _block_elements(Py_ssize_t total, int nt):
    """The compiled block rule, for the tests' comparison with
    ``_tuning.block_elements``."""
    return _block_for(total, nt)


def _set_parallel_min(Py_ssize_t n):
    """Set the serial/parallel threshold (tests and the measurement of
    ``PARALLEL_MIN_ELEMENTS`` only); returns the previous value."""
    global _parallel_min
    old = _parallel_min
    _parallel_min = n
    return old


cdef bint simd_enabled() noexcept nogil:
    """Whether this step's fast paths take a SIMD build of the loops."""
    return _isa != FO_ISA_BASELINE


cdef int simd_isa() noexcept nogil:
    """The build of the loops this step's fast paths take (FO_ISA_*:
    0 baseline, 1 AVX2, 2 AVX-512)."""
    return _isa


# --- the split ---------------------------------------------------------------
#
# Steps run in blocks of ``b = _block_for(total, nt)`` elements of the
# concatenated index space (block k: [k * b, (k + 1) * b), the last one
# shorter; b a power-of-two multiple of ``_block``), which may
# straddle tensors; starts are multiples of SPLIT_ALIGN, so two threads never
# write the same cache line of a tensor.  ``_split`` (the static split of
# ``_tuning.split_start``) is kept for the tests that compare the compiled
# rule with the Python one; the numba backend still splits that way.

cdef inline Py_ssize_t _split(Py_ssize_t total, Py_ssize_t parts, Py_ssize_t k) noexcept nogil:
    """``_tuning.split_start``: start of part ``k`` of ``[0, total)``,
    near-equal parts, starts rounded down to ``SPLIT_ALIGN`` (monotonic in
    ``k``; part ``parts`` ends at total)."""
    cdef Py_ssize_t q, r, s
    if k >= parts:
        return total
    q = total // parts
    r = total % parts
    s = q * k + (k if k < r else r)
    return s - s % _split_align


def _split_start(Py_ssize_t total, Py_ssize_t parts, Py_ssize_t k):
    """The compiled split, for the tests' comparison with ``_tuning.split_start``."""
    return _split(total, parts, k)


cdef void _run_range(const Step* st, chunk_fn fn, const void* args,
                     Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Apply ``fn`` to the elements ``[a, b)`` of the concatenated tensors."""
    cdef Py_ssize_t lo = 0, hi = st.count, mid, s, e, x, y
    if a >= b:
        return
    # First tensor that ends after a.
    while lo < hi:
        mid = (lo + hi) // 2
        if st.start[mid + 1] <= a:
            lo = mid + 1
        else:
            hi = mid
    while lo < st.count and st.start[lo] < b:
        s = st.start[lo]
        e = st.start[lo + 1]
        x = (a if a > s else s) - s
        y = (b if b < e else e) - s
        if y > x:
            if FO_DEBUG and not (0 <= x and y <= st.t[lo].n):
                abort()
            fn(&st.t[lo], x, y, <const char*>args + st.t[lo].group * st.stride)
        lo += 1


ctypedef struct StepJob:
    const Step* st
    chunk_fn fn
    const void* args
    Py_ssize_t block


cdef void _step_block(void* ctx, Py_ssize_t k) noexcept nogil:
    cdef const StepJob* j = <const StepJob*>ctx
    cdef Py_ssize_t a = k * j.block, b = a + j.block
    _run_range(j.st, j.fn, j.args, a, b if b < j.st.total else j.st.total)


cdef void _run(const Step* st, chunk_fn fn, const void* args) noexcept nogil:
    """Run ``fn`` over the whole step: serially below the threshold, else in
    blocks shared by the calling thread and the pool's workers."""
    cdef int nt = _num_threads
    cdef Py_ssize_t i, total = st.total
    cdef StepJob job
    if not _have_threads or nt <= 1 or total < _parallel_min:
        for i in range(st.count):
            if st.t[i].n > 0:
                fn(&st.t[i], 0, st.t[i].n, <const char*>args + st.t[i].group * st.stride)
        return
    job.st = st
    job.fn = fn
    job.args = args
    job.block = _block_for(total, nt)
    # The policy keeps its costs per element function (a family's loop).
    pool_run(nt, _step_block, &job, (total + job.block - 1) // job.block, <const void*>fn)


cdef int run_step(const Step* st, chunk_fn fn, const void* args) except -1:
    """Run a gathered step; small steps keep the GIL (releasing it costs
    more than the work).  ``args`` is group 0's arguments struct; tensor
    ``i``'s chunk gets ``args + t[i].group * st.stride`` (``step_args`` and
    ``set_groups`` of ``_gather`` fill them for a step over several groups)."""
    if st.total >= _parallel_min:
        with nogil:
            _run(st, fn, args)
    else:
        _run(st, fn, args)
    return 0


# --- per-tensor reduction (the first pass of a two-pass family) ---------------

ctypedef struct ReduceJob:
    const Step* st
    reduce_fn fn
    const void* args
    const Py_ssize_t* bt     # block k: tensor bt[k], elements from bs[k]
    const Py_ssize_t* bs
    double* out              # nout results per block
    int nout
    Py_ssize_t nb
    Py_ssize_t per           # reduction blocks per pool block


cdef void _reduce_range(const ReduceJob* j, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t k, n, s
    cdef const Tensor* t
    for k in range(a, b):
        s = j.bs[k]
        t = &j.st.t[j.bt[k]]
        n = t.n
        # The tensor's group's arguments, as in _run_range.
        j.fn(t, s, s + SUMSQ_BLOCK if n - s > SUMSQ_BLOCK else n, j.out + k * j.nout,
             <const char*>j.args + t.group * j.st.stride)


cdef void _reduce_block(void* ctx, Py_ssize_t k) noexcept nogil:
    cdef const ReduceJob* j = <const ReduceJob*>ctx
    cdef Py_ssize_t a = k * j.per, b = a + j.per
    _reduce_range(j, a, b if b < j.nb else j.nb)


cdef int run_reduce(const Step* st, reduce_fn fn, const void* args, int nout,
                    double* sums) except -1:
    """Run ``fn`` over every tensor in blocks of ``SUMSQ_BLOCK`` elements
    from the tensor's start (the blocks shared by the caller and the pool's
    workers as in ``run_step``), each block's ``nout`` results in its own
    slot; then ``sums[i * nout + r]`` = result ``r`` of tensor ``i``'s blocks
    added in order to a running total from 0.0 (0.0 for an empty tensor).
    The same bits whichever thread computes a block.  ``args`` is group 0's
    arguments struct; tensor ``i``'s blocks get its group's, as in
    ``run_step``."""
    cdef ReduceJob job
    cdef Py_ssize_t i, k, r, nb = 0, a
    cdef Py_ssize_t* bt = NULL
    cdef double total
    cdef int nt = _num_threads
    for i in range(st.count):
        nb += (st.t[i].n + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK
    bt = <Py_ssize_t*>PyMem_Malloc(2 * (nb if nb > 0 else 1) * sizeof(Py_ssize_t))
    job.out = <double*>PyMem_Malloc((nb if nb > 0 else 1) * nout * sizeof(double))
    try:
        if bt == NULL or job.out == NULL:
            raise MemoryError()
        k = 0
        for i in range(st.count):
            for a in range(0, st.t[i].n, 4096):  # SUMSQ_BLOCK (a literal step)
                bt[k] = i
                bt[nb + k] = a
                k += 1
        job.st = st
        job.fn = fn
        job.args = args
        job.bt = bt
        job.bs = bt + nb
        job.nout = nout
        job.nb = nb
        job.per = (_block_for(st.total, nt) + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK
        if not _have_threads or nt <= 1 or st.total < _parallel_min:
            _reduce_range(&job, 0, nb)
        else:
            with nogil:
                pool_run(nt, _reduce_block, &job, (nb + job.per - 1) // job.per, NULL)
        k = 0
        for i in range(st.count):
            for r in range(nout):
                sums[i * nout + r] = 0.0
            while k < nb and bt[k] == i:
                for r in range(nout):
                    sums[i * nout + r] += job.out[k * nout + r]
                k += 1
        return 0
    finally:
        PyMem_Free(bt)
        PyMem_Free(job.out)


# --- global gradient norm -------------------------------------------------------

ctypedef struct Block:
    const char* x
    Py_ssize_t n
    bint dbl


cdef void _block_sums(const Block* blocks, double* out, Py_ssize_t a,
                      Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(a, b):
        if blocks[k].dbl:
            out[k] = _block_sumsq(<const double*>blocks[k].x, blocks[k].n)
        else:
            out[k] = _block_sumsq(<const float*>blocks[k].x, blocks[k].n)


ctypedef struct NormJob:
    const Block* blocks
    double* sums
    Py_ssize_t nb
    Py_ssize_t per         # norm blocks per pool block


cdef void _norm_block(void* ctx, Py_ssize_t k) noexcept nogil:
    cdef const NormJob* j = <const NormJob*>ctx
    cdef Py_ssize_t a = k * j.per, b = a + j.per
    _block_sums(j.blocks, j.sums, a, b if b < j.nb else j.nb)


def grad_sumsq(params, grads, int mode):
    """Float64 sum of squares of all gradients, bit for bit that of
    ``_norm.grad_sumsq``: block sums (computed in parallel for large steps),
    then added in order to a running total from 0.0."""
    cdef Step st
    cdef Py_ssize_t i, j, nb = 0, k, nt = _num_threads
    cdef Block* blocks = NULL
    cdef double* sums = NULL
    cdef double total = 0.0
    cdef Py_ssize_t isz
    cdef NormJob job
    step_init(&st)
    try:
        gather_step(params, grads, (), mode, &st)
        for i in range(st.count):
            nb += (st.t[i].n + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK
        blocks = <Block*>PyMem_Malloc((nb if nb > 0 else 1) * sizeof(Block))
        sums = <double*>PyMem_Malloc((nb if nb > 0 else 1) * sizeof(double))
        if blocks == NULL or sums == NULL:
            raise MemoryError()
        k = 0
        for i in range(st.count):
            isz = 8 if st.t[i].dbl else 4
            for j in range(0, st.t[i].n, 4096):  # SUMSQ_BLOCK (a literal step, as above)
                blocks[k].x = st.t[i].g + j * isz
                blocks[k].n = SUMSQ_BLOCK if st.t[i].n - j > SUMSQ_BLOCK else st.t[i].n - j
                blocks[k].dbl = st.t[i].dbl
                k += 1
        if not _have_threads or nt <= 1 or st.total < _parallel_min:
            _block_sums(blocks, sums, 0, nb)
        else:
            # Fixed blocks, each sum in its own slot, added in order below:
            # the same bits whichever thread computes a block.
            job.blocks = blocks
            job.sums = sums
            job.nb = nb
            job.per = (_block_for(st.total, nt) + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK
            with nogil:
                pool_run(nt, _norm_block, &job, (nb + job.per - 1) // job.per, NULL)
        for k in range(nb):
            total += sums[k]
        return total
    finally:
        PyMem_Free(blocks)
        PyMem_Free(sums)
        step_free(&st)
