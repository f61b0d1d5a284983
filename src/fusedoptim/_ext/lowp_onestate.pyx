# cython: language_level=3
"""Reduced-precision state for the one-state families, compiled
(``families.lowp_onestate``; loops in ``lowp_onestate.h``).

As ``adam_lowp``: parameters and gradients are checked and gathered by
``_gather``; the state arrays are the optimizer's own, checked by
``_lowp_onestate.OneStateLowp.arrays`` before this runs; the step runs
through ``_step.run_step``.  For the 8-bit format each tensor's length in
the index space of the split is rounded up to a multiple of ``QBLOCK`` (the
chunk function clamps to the real length), so thread blocks
(``_tuning.BLOCK_ELEMENTS``, a multiple of ``QBLOCK``) start on
quantization-block boundaries and a quantization block is always updated
whole by one thread.  The rounding's element index is the unpadded one.
"""

from libc.stdint cimport uint8_t, uint32_t
from cpython.mem cimport PyMem_Malloc, PyMem_Free
cimport numpy as cnp

from ._step cimport Tensor, Step, run_step, simd_isa
from ._gather cimport gather_step, step_init, step_free

from fusedoptim import _tuning
from fusedoptim.families.adam_lowp import QBLOCK as _PY_QBLOCK
from fusedoptim.families.lowp_onestate import DECLS as _DECLS

cnp.import_array()

cdef extern from "avx2.h" nogil:
    Py_ssize_t fo_align_peel_f32(const float* x, Py_ssize_t n)

cdef extern from "lowp_onestate.h" nogil:
    enum: FO1_QBLOCK
    enum: FO1_NFAM
    ctypedef struct fo1_args:
        float s[8]
        float gs, wd
        uint32_t key
        int f[4]
        int scale, maximize, l2, stochastic
    ctypedef void (*fo1_fn)(const fo1_args* A, float* p, const float* g, void* st,
                            float* sc, Py_ssize_t n, Py_ssize_t idx0) noexcept nogil
    fo1_fn fo1_get(int fam, int isa, int kind)

if FO1_QBLOCK != _PY_QBLOCK or _tuning.BLOCK_ELEMENTS % FO1_QBLOCK:
    raise ImportError("fusedoptim._ext.lowp_onestate: QBLOCK must match the reference "
                      "and divide _tuning.BLOCK_ELEMENTS")
if FO1_NFAM != len(_DECLS) or sorted(d.index for d in _DECLS.values()) != list(range(FO1_NFAM)):
    raise ImportError("fusedoptim._ext.lowp_onestate: the loop table does not match DECLS")

def isa():
    """Instruction set the loops run with now: ``"avx512"``, ``"avx2"`` or
    ``"baseline"``, the family loops' (``_step.simd()``; set with
    ``_step._set_simd_isa`` or ``_step._set_simd``)."""
    return ("baseline", "avx2", "avx512")[simd_isa()]


cdef enum:
    KIND_BF16 = 0
    KIND_Q8 = 1
    KIND_F32 = 2

ctypedef struct Job:
    fo1_args A
    const Tensor* t0
    char** s             # 2 pointers per tensor: state, scale (NULL: none)
    Py_ssize_t* base     # index of the tensor's element 0 in the step
    Py_ssize_t* n        # real element count
    Py_ssize_t* item     # bytes per state element (2 bf16, 1 int8, 4 float32)
    fo1_fn* fn           # the tensor's loop


cdef void _chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                 const void* args) noexcept nogil:
    cdef const Job* J = <const Job*>args
    cdef Py_ssize_t i = t - J.t0, n = J.n[i]
    cdef char** s = J.s + 2 * i
    cdef Py_ssize_t pre
    if b > n:
        b = n
    if a >= b:
        return
    if s[1] == NULL:  # element-wise (not int8's blocks)
        # The elements before the parameter's first 64-byte boundary apart,
        # as adam_lowp._chunk: no vector access then straddles two lines.
        pre = fo_align_peel_f32(<float*>t.p + a, b - a)
        if pre:
            J.fn[i](&J.A, <float*>t.p + a, <const float*>t.g + a, s[0] + a * J.item[i],
                    NULL, pre, J.base[i] + a)
            a += pre
        J.fn[i](&J.A, <float*>t.p + a, <const float*>t.g + a, s[0] + a * J.item[i],
                NULL, b - a, J.base[i] + a)
        return
    # int8: a is a multiple of FO1_QBLOCK (padded split, see the module docstring)
    J.fn[i](&J.A, <float*>t.p + a, <const float*>t.g + a, s[0] + a * J.item[i],
            <float*>s[1] + a // FO1_QBLOCK, b - a, J.base[i] + a)


cdef inline char* _data(object a):
    return NULL if a is None else <char*>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _run(object decl, params, grads, list arrays, int mode, dict kw) except -1:
    """Gather, fill the job, run.  ``arrays[i] = (state, scale)`` of tensor
    ``i``, already checked."""
    cdef Step st
    cdef Job J
    cdef Py_ssize_t i, j, nt, off = 0, pad
    cdef Py_ssize_t base0 = kw.get("index_base", 0)  # a shard's first element
    cdef char* block = NULL
    cdef int fam = decl.index, kind, isa
    cdef bint q8 = False
    step_init(&st)
    try:
        gather_step(params, grads, (), mode, &st)
        nt = st.count
        if len(arrays) != nt:
            raise ValueError("the states do not match the parameters")
        block = <char*>PyMem_Malloc((nt if nt > 0 else 1)
                                    * (2 * sizeof(char*) + 3 * sizeof(Py_ssize_t)
                                       + sizeof(fo1_fn)))
        if block == NULL:
            raise MemoryError()
        J.s = <char**>block
        J.base = <Py_ssize_t*>(block + nt * 2 * sizeof(char*))
        J.n = J.base + nt
        J.item = J.n + nt
        J.fn = <fo1_fn*>(J.item + nt)
        isa = simd_isa()
        for i in range(nt):
            if st.t[i].dbl:
                raise TypeError("reduced-precision state needs float32 parameters")
            state, scale = arrays[i]
            J.s[2 * i] = _data(state)
            J.s[2 * i + 1] = _data(scale)
            J.item[i] = state.dtype.itemsize
            kind = KIND_BF16 if J.item[i] == 2 else (KIND_F32 if scale is None else KIND_Q8)
            q8 = q8 or kind != KIND_BF16
            J.fn[i] = fo1_get(fam, isa, kind)
            J.n[i] = st.t[i].n
            J.base[i] = base0 + st.start[i]
        if q8:
            # Every tensor starts on a QBLOCK boundary of the split's index space.
            for i in range(nt):
                pad = (st.t[i].n + FO1_QBLOCK - 1) // FO1_QBLOCK * FO1_QBLOCK
                st.t[i].n = pad
                st.start[i] = off
                off += pad
            st.start[nt] = off
            st.total = off
        J.t0 = st.t
        sc = decl.scalars(kw)
        fl = decl.flags(kw)
        for j in range(8):
            J.A.s[j] = sc[j] if j < len(sc) else 0.0
        for j in range(4):
            J.A.f[j] = fl[j] if j < len(fl) else 0
        wd = kw["weight_decay"] if decl.l2 else 0.0
        J.A.gs = kw["gscale"]
        J.A.wd = wd
        J.A.key = kw["key"]
        J.A.scale = kw["gscale"] != 1.0
        J.A.maximize = kw["maximize"]
        J.A.l2 = wd != 0.0
        J.A.stochastic = kw["stochastic"]
        run_step(&st, _chunk, &J)
    finally:
        PyMem_Free(block)
        step_free(&st)
    return 0


def onestate_step(decl, params, grads, list arrays, int mode, dict kw):
    """One step of ``decl``'s family (a ``LowpDecl``) with reduced-precision
    state: ``arrays[i] = (state, scale)`` of parameter ``i`` (in ``params``
    order), ``scale`` ``None`` for bfloat16 words or a float32 state."""
    _run(decl, params, grads, arrays, mode, kw)
