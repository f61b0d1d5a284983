# cython: language_level=3
"""Adam with bfloat16 or 8-bit blockwise moments, compiled
(``families.adam_lowp``; loops in ``adam_lowp.h``).

The parameters and gradients are checked and gathered by ``_gather`` like
every family's; the moment arrays are the optimizer's own, checked by
``fusedoptim._lowp.check_states`` (the one validation of them, shared with
the other backends) before this runs.  The step then runs through
``_step.run_step``.  For the 8-bit format each tensor's length in the
concatenated index space is rounded up to a multiple of ``QBLOCK`` (the
chunk function clamps to the real length): the thread blocks
(``_tuning.BLOCK_ELEMENTS``, a multiple of ``QBLOCK``) then start on
quantization-block boundaries of every tensor, so a quantization block is
always updated whole by one thread.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.math cimport sqrt
from cpython.mem cimport PyMem_Malloc, PyMem_Free
cimport numpy as cnp

from ._step cimport Tensor, Step, run_step, simd_enabled
from ._gather cimport gather_step, step_init, step_free

from fusedoptim import _tuning
from fusedoptim.families.adam_lowp import QBLOCK as _PY_QBLOCK

cnp.import_array()

cdef extern from "avx2.h" nogil:
    Py_ssize_t fo_align_peel_f32(const float* x, Py_ssize_t n)

cdef extern from "adam_lowp.h" nogil:
    enum: FO_QBLOCK
    ctypedef struct fo_lowp_args:
        float lr, b1, omb1, b2, omb2, eps, c1, c2, gs, wd, shrink, alr, es
        double rc1
        uint32_t key
        int scale, maximize, l2, shrink_p, stochastic
    void fo_adam_bf16_base(const fo_lowp_args* A, float* p, const float* g, uint16_t* m,
                           uint16_t* v, Py_ssize_t n, Py_ssize_t idx0)
    void fo_adam_bf16_avx2(const fo_lowp_args* A, float* p, const float* g, uint16_t* m,
                           uint16_t* v, Py_ssize_t n, Py_ssize_t idx0)
    void fo_adam_bf16_avx512(const fo_lowp_args* A, float* p, const float* g, uint16_t* m,
                             uint16_t* v, Py_ssize_t n, Py_ssize_t idx0)
    void fo_adam_bf16_avx512bf(const fo_lowp_args* A, float* p, const float* g, uint16_t* m,
                               uint16_t* v, Py_ssize_t n, Py_ssize_t idx0)
    void fo_adam_f32_base(const fo_lowp_args* A, float* p, const float* g, float* m,
                          float* v, Py_ssize_t n)
    void fo_adam_f32_avx2(const fo_lowp_args* A, float* p, const float* g, float* m,
                          float* v, Py_ssize_t n)
    void fo_adam_f32_avx512(const fo_lowp_args* A, float* p, const float* g, float* m,
                            float* v, Py_ssize_t n)
    void fo_adam_q8_base(const fo_lowp_args* A, float* p, const float* g, uint8_t* mc,
                         uint8_t* vc, float* ms, float* vs, Py_ssize_t n, Py_ssize_t idx0)
    void fo_adam_q8_avx2(const fo_lowp_args* A, float* p, const float* g, uint8_t* mc,
                         uint8_t* vc, float* ms, float* vs, Py_ssize_t n, Py_ssize_t idx0)
    void fo_adam_q8_avx512(const fo_lowp_args* A, float* p, const float* g, uint8_t* mc,
                           uint8_t* vc, float* ms, float* vs, Py_ssize_t n, Py_ssize_t idx0)
    int fo_lowp_isa()

if FO_QBLOCK != _PY_QBLOCK or _tuning.BLOCK_ELEMENTS % FO_QBLOCK:
    raise ImportError("fusedoptim._ext.adam_lowp: QBLOCK must match the reference and "
                      "divide _tuning.BLOCK_ELEMENTS")

_LEVELS = ("baseline", "avx2", "avx512", "avx512bf16")
cdef int _isa_cpu = fo_lowp_isa()
cdef int _isa_available = _isa_cpu


def _set_isa(name: str) -> str:
    """Run the low-precision loops with instruction set ``name``
    (``"avx512bf16"``, ``"avx512"``, ``"avx2"``, ``"baseline"``; at most
    what the CPU has) until the next call; returns the previous choice.  For
    tests: the AVX2 build is otherwise never run on an AVX-512 CPU.
    ``"avx512bf16"`` differs from ``"avx512"`` in bfloat16 Adam with nearest
    rounding only (``adam_lowp_bf16.h``)."""
    global _isa_available
    levels = _LEVELS
    if name not in levels or levels.index(name) > _isa_cpu:
        raise ValueError(f"isa must be one of {levels[:_isa_cpu + 1]}, got {name!r}")
    before = levels[_isa_available]
    _isa_available = levels.index(name)
    return before


def isa():
    """Instruction set the low-precision loops run with now: ``"avx512bf16"``,
    ``"avx512"``, ``"avx2"`` or ``"baseline"`` (``_step._set_simd(False)``
    forces the baseline)."""
    return _LEVELS[_isa_available if simd_enabled() else 0]


cdef enum:
    KIND_BF16 = 0
    KIND_Q8 = 1
    KIND_F32 = 2

ctypedef struct Job:
    fo_lowp_args A
    const Tensor* t0
    char** s             # 4 pointers per tensor: m, v, m scale, v scale
    Py_ssize_t* base     # index of the tensor's element 0 in the step
    Py_ssize_t* n        # real element count
    uint8_t* kind
    int isa


cdef inline void _bf16(const Job* J, float* p, const float* g, uint16_t* m, uint16_t* v,
                       Py_ssize_t n, Py_ssize_t idx) noexcept nogil:
    """The bfloat16 loop of the Job's instruction set on n elements."""
    if J.isa == 3:
        fo_adam_bf16_avx512bf(&J.A, p, g, m, v, n, idx)
    elif J.isa == 2:
        fo_adam_bf16_avx512(&J.A, p, g, m, v, n, idx)
    elif J.isa == 1:
        fo_adam_bf16_avx2(&J.A, p, g, m, v, n, idx)
    else:
        fo_adam_bf16_base(&J.A, p, g, m, v, n, idx)


cdef void _chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                 const void* args) noexcept nogil:
    cdef const Job* J = <const Job*>args
    cdef Py_ssize_t i = t - J.t0, n = J.n[i]
    cdef char** s = J.s + 4 * i
    cdef float* p = <float*>t.p + a
    cdef const float* g = <const float*>t.g + a
    cdef int k = J.kind[i]
    cdef Py_ssize_t pre
    if b > n:
        b = n
    if a >= b:
        return
    if k == KIND_BF16:
        if J.isa >= 1:
            # The elements before p's first 64-byte boundary apart: then no
            # vector access straddles two cache lines (NumPy starts large
            # arrays 16 bytes into one).  lowp_big.c at NumPy's offset, the
            # AVX512_BF16 loop: 0.78-0.80 -> 0.74-0.75 of float32 Adam's time.
            pre = fo_align_peel_f32(p, b - a)
            if pre:
                _bf16(J, p, g, <uint16_t*>s[0] + a, <uint16_t*>s[1] + a, pre, J.base[i] + a)
                a += pre
                p += pre
                g += pre
        _bf16(J, p, g, <uint16_t*>s[0] + a, <uint16_t*>s[1] + a, b - a, J.base[i] + a)
    elif k == KIND_Q8:
        # a is a multiple of FO_QBLOCK (padded split, see the module docstring)
        if J.isa >= 2:
            fo_adam_q8_avx512(&J.A, p, g, <uint8_t*>s[0] + a, <uint8_t*>s[1] + a,
                              <float*>s[2] + a // FO_QBLOCK, <float*>s[3] + a // FO_QBLOCK,
                              b - a, J.base[i] + a)
        elif J.isa == 1:
            fo_adam_q8_avx2(&J.A, p, g, <uint8_t*>s[0] + a, <uint8_t*>s[1] + a,
                            <float*>s[2] + a // FO_QBLOCK, <float*>s[3] + a // FO_QBLOCK,
                            b - a, J.base[i] + a)
        else:
            fo_adam_q8_base(&J.A, p, g, <uint8_t*>s[0] + a, <uint8_t*>s[1] + a,
                            <float*>s[2] + a // FO_QBLOCK, <float*>s[3] + a // FO_QBLOCK,
                            b - a, J.base[i] + a)
    else:
        if J.isa >= 2:
            fo_adam_f32_avx512(&J.A, p, g, <float*>s[0] + a, <float*>s[1] + a, b - a)
        elif J.isa == 1:
            fo_adam_f32_avx2(&J.A, p, g, <float*>s[0] + a, <float*>s[1] + a, b - a)
        else:
            fo_adam_f32_base(&J.A, p, g, <float*>s[0] + a, <float*>s[1] + a, b - a)


cdef inline char* _data(object a):
    return NULL if a is None else <char*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _run(params, grads, list arrays, int mode, bint q8, dict kw) except -1:
    """Gather, fill the job, run.  ``arrays[i]`` holds tensor ``i``'s state
    arrays, already checked (``_lowp.check_states``)."""
    cdef Step st
    cdef Job J
    cdef Py_ssize_t i, j, nt, off = 0, pad
    cdef Py_ssize_t base0 = kw.get("index_base", 0)  # a shard's first element
    cdef char* block = NULL
    step_init(&st)
    try:
        gather_step(params, grads, (), mode, &st)
        nt = st.count
        if len(arrays) != nt:
            raise ValueError("the states do not match the parameters")
        block = <char*>PyMem_Malloc((nt if nt > 0 else 1)
                                    * (4 * sizeof(char*) + 2 * sizeof(Py_ssize_t) + 1))
        if block == NULL:
            raise MemoryError()
        J.s = <char**>block
        J.base = <Py_ssize_t*>(block + nt * 4 * sizeof(char*))
        J.n = J.base + nt
        J.kind = <uint8_t*>(J.n + nt)
        for i in range(nt):
            if st.t[i].dbl:
                raise TypeError("reduced-precision state needs float32 parameters")
            row = arrays[i]
            for j in range(4):
                J.s[4 * i + j] = _data(row[j]) if j < len(row) else NULL
            J.n[i] = st.t[i].n
            J.base[i] = base0 + st.start[i]
            J.kind[i] = KIND_BF16 if not q8 else (KIND_Q8 if row[2] is not None else KIND_F32)
        if q8:
            # Every tensor starts on a QBLOCK boundary of the index space.
            for i in range(nt):
                pad = (st.t[i].n + FO_QBLOCK - 1) // FO_QBLOCK * FO_QBLOCK
                st.t[i].n = pad
                st.start[i] = off
                off += pad
            st.start[nt] = off
            st.total = off
        J.t0 = st.t
        J.isa = _isa_available if simd_enabled() else 0
        b1 = kw["beta1"]
        b2 = kw["beta2"]
        lr = kw["lr"]
        wd = kw["weight_decay"]
        J.A.lr = lr
        J.A.b1 = b1
        J.A.omb1 = 1.0 - b1
        J.A.b2 = b2
        J.A.omb2 = 1.0 - b2
        J.A.eps = kw["eps"]
        J.A.c1 = kw["bc1"]
        J.A.c2 = kw["bc2"]
        J.A.rc1 = 1.0 / <double>J.A.c1
        # families.adam_lowp._alr_es
        J.A.alr = lr * sqrt(<double>kw["bc2"]) / kw["bc1"]
        J.A.es = kw["eps"] * sqrt(<double>kw["bc2"])
        J.A.gs = kw["gscale"]
        J.A.wd = wd
        J.A.shrink = 1.0 - lr * wd
        J.A.key = kw["key"]
        J.A.scale = kw["gscale"] != 1.0
        J.A.maximize = kw["maximize"]
        J.A.l2 = wd != 0.0 and not kw["decoupled"]
        J.A.shrink_p = wd != 0.0 and kw["decoupled"]
        J.A.stochastic = kw["stochastic"]
        run_step(&st, _chunk, &J)
    finally:
        PyMem_Free(block)
        step_free(&st)
    return 0


def adam_bf16(params, grads, list arrays, int mode, dict kw):
    """Adam with bfloat16 moments: ``arrays[i] = (m_words, v_words)`` of
    parameter ``i`` (in ``params`` order)."""
    _run(params, grads, arrays, mode, False, kw)


def adam_q8(params, grads, list arrays, int mode, dict kw):
    """Adam with 8-bit moments: ``arrays[i] = (m, v, m_scale, v_scale)``,
    the scales ``None`` for a tensor with float32 moments."""
    _run(params, grads, arrays, mode, True, kw)
