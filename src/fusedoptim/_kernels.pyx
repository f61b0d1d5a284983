# cython: language_level=3
"""Compiled kernels: the ``cython`` backend.

One call per optimizer step.  ``_gather`` (the compiled twin of
``_validate.gather``) checks the whole step with the NumPy C API and collects
data pointers and sizes into a C array of ``Tensor`` records; the family
kernels then run over the concatenation of all tensors, split into one
contiguous range per thread (static schedule) when the step has at least
``PARALLEL_MIN_ELEMENTS`` elements, on the calling thread otherwise.

Every element is computed by the same sequence of IEEE operations whatever the
split, so results do not depend on the number of threads.  The operation order
is exactly that of ``_reference`` (read it for the formulas): hyperparameters
and derived scalars are computed in double and rounded once to the array
dtype, all array arithmetic happens in the array dtype (but for ``_div_c1``,
below), ``float32`` uses ``sqrtf`` and ``float`` constants only.

Each family has one element loop written with ``bint`` flags; the dispatchers
call it with literal flags on the common paths (no clipping, no decay, no
``maximize``, no AMSGrad) so that the C compiler, after inlining, sees a
branch-free loop body and vectorizes it.  Rare flag combinations share one
generic loop.  On x86-64 CPUs with AVX2, the common paths instead call the
AVX2 builds of the same loops in ``_simd.h`` (same operations, same bits;
``simd()`` says which runs).  One operation differs in form, not in result:
float32 Adam's ``m / c1`` is a multiply by the double reciprocal
(``_div_c1``), which is the correctly rounded quotient for every float32.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf
from libc.stdlib cimport qsort, abort
from libc.string cimport memset
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.dict cimport PyDict_GetItem, PyDict_GetItemWithError, PyDict_CheckExact
cimport numpy as cnp

from . import _validate as _v
from ._tuning import PARALLEL_MIN_ELEMENTS

cnp.import_array()

cdef int COURSE = _v.COURSE

cdef extern from *:
    """
    #ifdef FUSEDOPTIM_DEBUG
    #define FO_DEBUG 1
    #else
    #define FO_DEBUG 0
    #endif
    #ifdef _OPENMP
    #define FO_OPENMP 1
    #else
    #define FO_OPENMP 0
    #endif
    """
    const bint FO_DEBUG
    const bint FO_OPENMP

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                PyObject* descr, int subok)

cdef extern from "_simd.h" nogil:
    const bint FO_SIMD_AVX2
    int fo_simd_detect()
    void fo_adam_avx2_f32(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                          float lr, float b1, float omb1, float b2, float omb2, float e,
                          float c1, float c2, double rc1, float shrink, int shrink_p)
    void fo_adam_avx2_f64(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                          double lr, double b1, double omb1, double b2, double omb2,
                          double e, double c1, double c2, double rc1, double shrink,
                          int shrink_p)
    void fo_sgd_avx2_f32(float* p, const float* g, float* buf, Py_ssize_t n, float lr,
                         float mu, float omd, int has_buf, int nesterov)
    void fo_sgd_avx2_f64(double* p, const double* g, double* buf, Py_ssize_t n, double lr,
                         double mu, double omd, int has_buf, int nesterov)
    void fo_rmsprop_avx2_f32(float* p, const float* g, float* sq, Py_ssize_t n, float lr,
                             float al, float oma, float e, int eps_inside)
    void fo_rmsprop_avx2_f64(double* p, const double* g, double* sq, Py_ssize_t n,
                             double lr, double al, double oma, double e, int eps_inside)
    void fo_copy_avx2_f32(float* x0, float* x1, float* x2, const float* g, Py_ssize_t n,
                          int nrw)
    void fo_copy_avx2_f64(double* x0, double* x1, double* x2, const double* g,
                          Py_ssize_t n, int nrw)

#: True when the module was built with OpenMP (else every step runs on one
#: thread, whatever ``set_num_threads`` says).
HAVE_OPENMP = bool(FO_OPENMP)
#: True for the ``FUSEDOPTIM_DEBUG=1`` build (range checks in every chunk).
DEBUG_BUILD = bool(FO_DEBUG)

# The AVX2 builds of the fast-path loops (_simd.h) run when the build has them
# and the CPU reports AVX2; results are the same bits either way.
cdef bint _simd_available = FO_SIMD_AVX2 and fo_simd_detect()
cdef bint _simd = _simd_available

cdef int _num_threads = 1
cdef Py_ssize_t _parallel_min = PARALLEL_MIN_ELEMENTS

# Thread ranges start on multiples of this many elements (a 64-byte cache line
# of float32), so two threads never write the same line of one tensor.
cdef enum:
    SPLIT_ALIGN = 16
    SUMSQ_BLOCK = 4096
    SUMSQ_LANES = 8
    MAX_STATES = 3
    SLOTS = 5          # refs per tensor: p, g, state 0..2
    SMALL_SORT = 48    # spans sorted by insertion below this count


def set_num_threads(int n):
    """Threads of the parallel regions (``n >= 1``; the caller checks)."""
    global _num_threads
    _num_threads = n if n > 0 else 1


def get_num_threads():
    """Threads the parallel regions use."""
    return _num_threads


def simd():
    """Instruction set of the fast-path loops (no gradient prelude or AMSGrad;
    RMSProp neither centered nor with momentum): ``"avx2"`` or
    ``"baseline"``."""
    return "avx2" if _simd else "baseline"


def _set_simd(bint on):
    """Turn the AVX2 loops on or off (tests compare both paths); on only
    where the build and the CPU have it.  Returns the previous state."""
    global _simd
    old = _simd
    _simd = on and _simd_available
    return old


def _set_parallel_min(Py_ssize_t n):
    """Set the serial/parallel threshold (tests and the measurement of
    ``PARALLEL_MIN_ELEMENTS`` only); returns the previous value."""
    global _parallel_min
    old = _parallel_min
    _parallel_min = n
    return old


# --- the gathered step ----------------------------------------------------------

ctypedef struct Tensor:
    char* p              # parameter (written)
    char* g              # gradient in the parameter's layout (read)
    char* s[3]           # states in family order, NULL when absent (written)
    Py_ssize_t n         # elements
    bint dbl             # float64, else float32

ctypedef struct Span:
    size_t lo, hi        # bytes [lo, hi)
    Py_ssize_t idx       # position in step order
    int code             # param index * 8 + kind (0 param, 1 grad, 2 + j state j)
    int written

ctypedef struct Step:
    Tensor* t
    Py_ssize_t* start    # start[i]: offset of tensor i in the concatenation
    Py_ssize_t count
    Py_ssize_t total
    int nstates
    bint has_state[3]
    PyObject** refs      # owned: SLOTS per tensor (NULL where absent)
    Span* spans
    Py_ssize_t nspans


cdef inline void _step_init(Step* st) noexcept:
    memset(st, 0, sizeof(Step))


cdef void _step_free(Step* st) noexcept:
    cdef Py_ssize_t i
    if st.refs != NULL:
        for i in range(st.count * SLOTS):
            Py_XDECREF(st.refs[i])
    PyMem_Free(st.t)      # one block holds all four arrays
    memset(st, 0, sizeof(Step))


cdef int _step_alloc(Step* st, Py_ssize_t n, int nstates) except -1:
    """One allocation for the tensor records, offsets, references and spans
    (a small model pays for one malloc, not four)."""
    cdef Py_ssize_t m = n if n > 0 else 1
    cdef size_t nt = m * sizeof(Tensor), ns = (n + 1) * sizeof(Py_ssize_t)
    cdef size_t nr = m * SLOTS * sizeof(PyObject*), nsp = m * (2 + nstates) * sizeof(Span)
    cdef char* block = <char*>PyMem_Malloc(nt + ns + nr + nsp)
    if block == NULL:
        raise MemoryError()
    # Tensor, pointer and Span sizes are multiples of 8, so every part stays aligned.
    st.t = <Tensor*>block
    st.start = <Py_ssize_t*>(block + nt)
    st.refs = <PyObject**>(block + nt + ns)
    st.spans = <Span*>(block + nt + ns + nr)
    memset(st.refs, 0, nr)
    st.count = n
    st.nstates = nstates
    return 0


cdef inline bint _float_array(object a) noexcept:
    """A native-order float32/float64 ndarray (what ``_check_array`` accepts)."""
    cdef int tn
    if not cnp.PyArray_Check(a):
        return False
    tn = cnp.PyArray_TYPE(<cnp.ndarray>a)
    return (tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE) and \
        cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)


cdef dict _dkeys = {}


cdef inline object _dkey(object name):
    """``"d" + name``, cached for plain ``str`` names: building the string
    anew is the largest single cost of validating a tiny model."""
    cdef PyObject* k
    if type(name) is not str:
        return "d" + name
    k = PyDict_GetItem(_dkeys, name)
    if k != NULL:
        return <object>k
    if len(_dkeys) >= 4096:
        _dkeys.clear()
    key = "d" + name
    _dkeys[name] = key
    return key


cdef inline object _getitem(object d, object key):
    """``d[key]``; a plain dict skips the generic protocol."""
    cdef PyObject* r
    if PyDict_CheckExact(d):
        r = PyDict_GetItemWithError(d, key)
        if r == NULL:
            raise KeyError(key)
        return <object>r
    return d[key]


cdef inline Py_ssize_t _size(cnp.ndarray a) noexcept:
    cdef Py_ssize_t n = 1
    cdef int k
    for k in range(cnp.PyArray_NDIM(a)):
        n *= cnp.PyArray_DIMS(a)[k]
    return n


cdef inline bint _writeable(cnp.ndarray a) noexcept:
    return cnp.PyArray_ISWRITEABLE(a) and cnp.PyArray_ISALIGNED(a)


cdef inline bint _dense(cnp.ndarray a) noexcept:
    return cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a)


cdef inline bint _same_layout(cnp.ndarray a, cnp.ndarray p) noexcept:
    if _size(a) <= 1:
        return True
    if cnp.PyArray_IS_C_CONTIGUOUS(p):
        return cnp.PyArray_IS_C_CONTIGUOUS(a)
    return cnp.PyArray_IS_F_CONTIGUOUS(a)


cdef inline bint _like(cnp.ndarray a, cnp.ndarray p) noexcept:
    """Same dtype and shape (both already native float arrays)."""
    cdef int k, nd = cnp.PyArray_NDIM(a)
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(p) or nd != cnp.PyArray_NDIM(p):
        return False
    for k in range(nd):
        if cnp.PyArray_DIMS(a)[k] != cnp.PyArray_DIMS(p)[k]:
            return False
    return True


cdef inline void _add_span(Step* st, cnp.ndarray a, int written, int code) noexcept:
    """Byte range of ``a`` as ``_validate._bounds`` computes it; empty arrays
    have none."""
    cdef size_t lo, hi
    cdef Py_ssize_t ext
    cdef int k
    cdef Span* s
    if _size(a) == 0:
        return
    lo = hi = <size_t>cnp.PyArray_DATA(a)
    for k in range(cnp.PyArray_NDIM(a)):
        ext = (cnp.PyArray_DIMS(a)[k] - 1) * cnp.PyArray_STRIDES(a)[k]
        if ext > 0:
            hi += <size_t>ext
        else:
            lo -= <size_t>(-ext)
    s = &st.spans[st.nspans]
    s.lo = lo
    s.hi = hi + <size_t>cnp.PyArray_ITEMSIZE(a)
    s.idx = st.nspans
    s.code = code
    s.written = written
    st.nspans += 1


cdef inline int _span_before(const Span* a, const Span* b) noexcept nogil:
    if a.lo != b.lo:
        return a.lo < b.lo
    if a.hi != b.hi:
        return a.hi < b.hi
    return a.idx < b.idx


cdef int _cmp_span(const void* x, const void* y) noexcept nogil:
    cdef const Span* a = <const Span*>x
    cdef const Span* b = <const Span*>y
    if _span_before(a, b):
        return -1
    if _span_before(b, a):
        return 1
    return 0


cdef int _cmp_idx(const void* x, const void* y) noexcept nogil:
    cdef Py_ssize_t a = (<const Span*>x).idx, b = (<const Span*>y).idx
    return (a > b) - (a < b)


cdef bint _any_overlap(Span* sp, Py_ssize_t m) noexcept nogil:
    """Whether two spans intersect, one of them written: a sweep over the
    spans sorted by start, O(m log m) (insertion sort for the few spans of a
    small model, which usually arrive almost sorted)."""
    cdef Py_ssize_t i, j
    cdef Span tmp
    cdef size_t max_hi_written = 0, max_hi_any = 0
    if m < 2:
        return False
    if m <= SMALL_SORT:
        for i in range(1, m):
            tmp = sp[i]
            j = i
            while j > 0 and _span_before(&tmp, &sp[j - 1]):
                sp[j] = sp[j - 1]
                j -= 1
            sp[j] = tmp
    else:
        qsort(sp, m, sizeof(Span), _cmp_span)
    for i in range(m):
        if sp[i].lo < max_hi_written or (sp[i].written and sp[i].lo < max_hi_any):
            return True
        if sp[i].hi > max_hi_any:
            max_hi_any = sp[i].hi
        if sp[i].written and sp[i].hi > max_hi_written:
            max_hi_written = sp[i].hi
    return False


cdef object _nth_key(object d, Py_ssize_t k):
    cdef Py_ssize_t i = 0
    for key in d:
        if i == k:
            return key
        i += 1
    raise RuntimeError("parameters changed during the step")


cdef object _item_label(object params, object grads, tuple states, int mode, int code):
    """The label ``_validate.gather`` gives the array of item ``code``."""
    name = _nth_key(params, code >> 3)
    kind = code & 7
    if kind == 0:
        return f"parameters[{name!r}]"
    dkey = "d" + name
    if kind == 1:
        gkey = dkey if (mode == COURSE or name not in grads) else name
        return f"grads[{gkey!r}]"
    skey = dkey if mode == COURSE else name
    return f"{states[kind - 2][0]}[{skey!r}]"


cdef int _overlap_error(Step* st, object params, object grads, tuple states,
                        int mode) except -1:
    """Name the first overlapping pair in step order, as ``_find_overlap``."""
    cdef Py_ssize_t i, j, m = st.nspans
    cdef Span* sp = st.spans
    qsort(sp, m, sizeof(Span), _cmp_idx)
    for j in range(1, m):
        for i in range(j):
            if (sp[i].written or sp[j].written) and sp[i].lo < sp[j].hi \
                    and sp[j].lo < sp[i].hi:
                later = _item_label(params, grads, states, mode, sp[j].code)
                earlier = _item_label(params, grads, states, mode, sp[i].code)
                raise ValueError(f"{later} shares memory with {earlier}")
    raise AssertionError("unreachable: sorted scan found an overlap")


cdef inline int _unreachable(label) except -1:
    raise AssertionError(f"compiled and Python validation disagree about {label}")


cdef int _gather(object params, object grads, object states, int mode,
                 Step* st) except -1:
    """Check a whole step exactly as ``_validate.gather`` does (same order,
    same exceptions, same messages) and fill ``st``; writes nothing.

    Labels are built only on the error path: a valid step formats no string.
    """
    cdef Py_ssize_t i, n, j, nst
    cdef PyObject* sdp[3]
    cdef cnp.ndarray pa, ga, aa
    cdef Tensor* t
    cdef bint course = mode == COURSE
    cdef bint relayout
    if not isinstance(states, tuple):
        states = tuple(states)
    nst = len(<tuple>states)
    if nst > MAX_STATES:
        raise ValueError(f"at most {MAX_STATES} states, got {nst}")
    if not isinstance(params, dict):
        _v._check_dict(params, "parameters")
    if not isinstance(grads, dict):
        _v._check_dict(grads, "grads")
    for j in range(nst):
        label, sd = (<tuple>states)[j]
        if sd is not None and not isinstance(sd, dict):
            _v._check_dict(sd, label)
        sdp[j] = NULL if sd is None else <PyObject*>sd
        st.has_state[j] = sd is not None
    n = len(params)
    _step_alloc(st, n, <int>nst)
    st.count = 0          # tensors filled so far (refs beyond are NULL)
    i = 0
    for name in params:
        if i >= n:
            raise RuntimeError("parameters changed size during the step")
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be str, got {name!r}")
        st.count = i + 1
        t = &st.t[i]
        p = _getitem(params, name)
        if not _float_array(p):
            _v._check_array(p, f"parameters[{name!r}]")
            _unreachable(name)
        pa = <cnp.ndarray>p
        if not _writeable(pa):
            _v._check_writeable(p, f"parameters[{name!r}]")
            _unreachable(name)
        if not _dense(pa):
            raise ValueError(f"parameters[{name!r}] is not contiguous; fusedoptim updates "
                             f"arrays in place and never a copy (store "
                             f"np.ascontiguousarray of it back in the dict)")
        Py_INCREF(p)
        st.refs[i * SLOTS] = <PyObject*>p
        dkey = _dkey(name)
        if course:
            gkey = dkey
            try:
                g = _getitem(grads, dkey)
            except KeyError:
                _v._grad_of(grads, name, _v.COURSE)  # raises, with the Python message
                _unreachable(dkey)
        else:
            has_plain = name in grads
            has_d = dkey in grads
            if has_plain == has_d:
                _v._grad_of(grads, name, _v.NAMED)  # raises: both keys, or neither
                _unreachable(dkey)
            gkey = name if has_plain else dkey
            g = _getitem(grads, gkey)
        if not _float_array(g):
            _v._check_array(g, f"grads[{gkey!r}]")
            _unreachable(gkey)
        ga = <cnp.ndarray>g
        if not _like(ga, pa):
            _v._check_like(g, f"grads[{gkey!r}]", p, f"parameters[{name!r}]")
            _unreachable(gkey)
        Py_INCREF(g)
        st.refs[i * SLOTS + 1] = <PyObject*>g
        _add_span(st, pa, 1, <int>(i * 8))
        _add_span(st, ga, 0, <int>(i * 8 + 1))
        t.p = <char*>cnp.PyArray_DATA(pa)
        # Relayout (a copy of g) waits until the whole step validates.
        t.g = <char*>cnp.PyArray_DATA(ga) if _same_layout(ga, pa) else NULL
        t.n = _size(pa)
        t.dbl = cnp.PyArray_TYPE(pa) == cnp.NPY_DOUBLE
        skey = dkey if course else name
        for j in range(MAX_STATES):
            t.s[j] = NULL
        for j in range(nst):
            if sdp[j] == NULL:
                continue
            try:
                a = _getitem(<object>sdp[j], skey)
            except KeyError:
                raise KeyError(f"{(<tuple>states)[j][0]} has no {skey!r} (state of "
                               f"parameter {name!r})") from None
            if not _float_array(a):
                _v._check_array(a, f"{(<tuple>states)[j][0]}[{skey!r}]")
                _unreachable(skey)
            aa = <cnp.ndarray>a
            if not _like(aa, pa):
                _v._check_like(a, f"{(<tuple>states)[j][0]}[{skey!r}]", p,
                               f"parameters[{name!r}]")
                _unreachable(skey)
            if not _writeable(aa):
                _v._check_writeable(a, f"{(<tuple>states)[j][0]}[{skey!r}]")
                _unreachable(skey)
            if not (_dense(aa) and _same_layout(aa, pa)):
                raise ValueError(f"{(<tuple>states)[j][0]}[{skey!r}] does not have the "
                                 f"memory layout of parameters[{name!r}]")
            Py_INCREF(a)
            st.refs[i * SLOTS + 2 + j] = <PyObject*>a
            _add_span(st, aa, 1, <int>(i * 8 + 2 + j))
            t.s[j] = <char*>cnp.PyArray_DATA(aa)
        i += 1
    if i != n:
        raise RuntimeError("parameters changed size during the step")
    if _any_overlap(st.spans, st.nspans):
        _overlap_error(st, params, grads, <tuple>states, mode)
    st.start[0] = 0
    for i in range(n):
        t = &st.t[i]
        if t.g == NULL:
            # np.empty_like(p); np.copyto(out, g): g in p's layout.
            pa = <cnp.ndarray>st.refs[i * SLOTS]
            ga = <cnp.ndarray>st.refs[i * SLOTS + 1]
            out = PyArray_NewLikeArray(pa, cnp.NPY_KEEPORDER, NULL, 1)
            cnp.PyArray_CopyInto(<cnp.ndarray>out, ga)
            Py_INCREF(out)
            Py_XDECREF(st.refs[i * SLOTS + 1])
            st.refs[i * SLOTS + 1] = <PyObject*>out
            t.g = <char*>cnp.PyArray_DATA(<cnp.ndarray>out)
        st.start[i + 1] = st.start[i] + t.n
    st.total = st.start[n]
    return 0


def gather(params, grads, states, int mode):
    """The compiled validation, returning what ``_validate.gather`` returns:
    one tuple ``(p, g, *state_arrays)`` per parameter (for tests)."""
    cdef Step st
    cdef Py_ssize_t i, k
    _step_init(&st)
    try:
        _gather(params, grads, states, mode, &st)
        out = []
        for i in range(st.count):
            group = []
            for k in range(2 + st.nstates):
                r = st.refs[i * SLOTS + k]
                group.append(None if r == NULL else <object>r)
            out.append(tuple(group))
        return out
    finally:
        _step_free(&st)


# --- the parallel split ---------------------------------------------------------

ctypedef void (*chunk_fn)(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                          const void* args) noexcept nogil


cdef inline Py_ssize_t _split(Py_ssize_t total, Py_ssize_t parts, Py_ssize_t k) noexcept nogil:
    """Start of part ``k`` of ``[0, total)``: near-equal parts, starts rounded
    down to ``SPLIT_ALIGN`` (monotonic in ``k``; part ``parts`` ends at total)."""
    cdef Py_ssize_t q, r, s
    if k >= parts:
        return total
    q = total // parts
    r = total % parts
    s = q * k + (k if k < r else r)
    return s - s % SPLIT_ALIGN


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
            fn(&st.t[lo], x, y, args)
        lo += 1


cdef void _run(const Step* st, chunk_fn fn, const void* args) noexcept nogil:
    """Run ``fn`` over the whole step: serially below the threshold, else one
    contiguous range of the concatenated index space per thread."""
    cdef int nt = _num_threads
    cdef Py_ssize_t k, i, total = st.total
    if not FO_OPENMP or nt <= 1 or total < _parallel_min:
        for i in range(st.count):
            if st.t[i].n > 0:
                fn(&st.t[i], 0, st.t[i].n, args)
        return
    for k in prange(nt, schedule="static", num_threads=nt):
        _run_range(st, fn, args, _split(total, nt, k), _split(total, nt, k + 1))


cdef inline int _run_step(const Step* st, chunk_fn fn, const void* args) except -1:
    # Small steps keep the GIL: releasing it costs more than the work.
    if st.total >= _parallel_min:
        with nogil:
            _run(st, fn, args)
    else:
        _run(st, fn, args)
    return 0


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _div_c1(floating x, floating c, double rc) noexcept nogil:
    """``x / c`` correctly rounded, for Adam's first bias correction.

    float32: ``(float)((double)x * rc)`` with ``rc = 1.0 / (double)c``, which
    is the same bits as the float32 division for every ``x`` (zeros,
    subnormals, infinities and NaN payloads included; the proof is in
    ``_simd.h``).  It replaces a division, the slowest instruction of the
    Adam loop, by a multiply and two conversions.  float64 divides.
    """
    if floating is float:
        return <float>(<double>x * rc)
    else:
        return x / c


cdef inline floating _prelude(floating g, floating p, floating gs, bint scale,
                              bint maximize, floating wd, bint decay) noexcept nogil:
    if scale:
        g = g * gs
    if maximize:
        g = -g
    if decay:
        g = g + wd * p
    return g


# --- SGD ------------------------------------------------------------------------

ctypedef struct SgdArgs:
    double lr, momentum, dampening, wd, gscale
    bint nesterov, first, maximize, has_buf


# _LOADS_FIRST: every element loop reads all of its operands before it
# stores any.  NumPy starts every large array at the same offset in a page, so
# p[i], m[i], v[i] of user-made arrays share their address modulo 4096 (the
# states fusedoptim makes are placed apart, _alloc); a store to m[i] followed
# by a load of v[i] then stalls on 4K aliasing (the CPU's store-to-load check
# compares only the low 12 address bits).  Validation guarantees the arrays do
# not overlap, so the reordering cannot change a result.


cdef inline void _sgd_loop(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                           floating lr, floating mu, floating omd, floating gs, floating wd,
                           bint has_buf, bint first, bint nesterov, bint scale,
                           bint maximize, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, b, pi, b0
    for i in range(n):
        # Every load of the element before any store (see _LOADS_FIRST).
        pi = p[i]
        if has_buf and not first:
            b0 = buf[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, decay)
        if has_buf:
            if first:
                b = gi
            else:
                b = mu * b0 + omd * gi
            buf[i] = b
            if nesterov:
                gi = gi + mu * b
            else:
                gi = b
        p[i] = pi - lr * gi


cdef inline void _sgd_typed(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                            const SgdArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, mu = <floating>A.momentum
    cdef floating omd = <floating>(1.0 - A.dampening)
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, decay = A.wd != 0.0, mx = A.maximize
    if scale or mx or decay:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, A.has_buf, A.first, A.nesterov,
                  scale, mx, decay)
    elif _simd and not (A.has_buf and A.first):
        if floating is float:
            fo_sgd_avx2_f32(p, g, buf, n, lr, mu, omd, A.has_buf, A.nesterov)
        else:
            fo_sgd_avx2_f64(p, g, buf, n, lr, mu, omd, A.has_buf, A.nesterov)
    elif not A.has_buf:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, False, False, False, False, False, False)
    elif A.first:
        if A.nesterov:
            _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, True, True, False, False, False)
        else:
            _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, True, False, False, False, False)
    elif A.nesterov:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, False, True, False, False, False)
    else:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, False, False, False, False, False)


cdef inline char* _at(char* base, Py_ssize_t a, Py_ssize_t itemsize) noexcept nogil:
    return NULL if base == NULL else base + a * itemsize


cdef void _sgd_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                     const void* args) noexcept nogil:
    cdef const SgdArgs* A = <const SgdArgs*>args
    if t.dbl:
        _sgd_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                   <double*>_at(t.s[0], a, 8), b - a, A)
    else:
        _sgd_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                   <float*>_at(t.s[0], a, 4), b - a, A)


def sgd(params, grads, states, int mode, double lr, double momentum, double dampening,
        bint nesterov, bint first, double weight_decay, bint maximize, double gscale):
    """Multi-tensor SGD step; ``states = ((label, buf),)`` (see ``_reference.sgd``)."""
    cdef Step st
    cdef SgdArgs A
    _step_init(&st)
    try:
        _gather(params, grads, states, mode, &st)
        A.lr = lr
        A.momentum = momentum
        A.dampening = dampening
        A.wd = weight_decay
        A.gscale = gscale
        A.nesterov = nesterov
        A.first = first
        A.maximize = maximize
        A.has_buf = st.nstates > 0 and st.has_state[0]
        _run_step(&st, _sgd_chunk, &A)
    finally:
        _step_free(&st)


# --- RMSProp --------------------------------------------------------------------

ctypedef struct RmspropArgs:
    double lr, alpha, eps, momentum, wd, gscale
    bint eps_inside, maximize, centered, has_buf


cdef inline void _rmsprop_loop(floating* p, const floating* g, floating* sq, floating* gavg,
                               floating* buf, Py_ssize_t n, floating lr, floating al,
                               floating oma, floating e, floating mu, floating gs, floating wd,
                               bint centered, bint eps_inside, bint has_buf, bint scale,
                               bint maximize, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, s, d, r, ga, b, pi, s0, ga0, b0
    for i in range(n):
        # Every load of the element before any store (see _LOADS_FIRST).
        pi = p[i]
        s0 = sq[i]
        if centered:
            ga0 = gavg[i]
        if has_buf:
            b0 = buf[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, decay)
        s = al * s0 + oma * (gi * gi)
        d = s
        if centered:
            ga = al * ga0 + oma * gi
            d = s - ga * ga
        if eps_inside:
            r = _sqrt(d + e)
        else:
            r = _sqrt(d) + e
        sq[i] = s
        if centered:
            gavg[i] = ga
        if has_buf:
            b = mu * b0 + gi / r
            buf[i] = b
            p[i] = pi - lr * b
        else:
            p[i] = pi - (lr * gi) / r


cdef inline void _rmsprop_fast(floating* p, const floating* g, floating* sq, floating* gavg,
                               floating* buf, Py_ssize_t n, floating lr, floating al,
                               floating oma, floating e, floating mu, floating gs, floating wd,
                               bint centered, bint eps_inside, bint has_buf) noexcept nogil:
    """No prelude: one literal-flag loop per structure (centered, eps
    placement, momentum buffer)."""
    if centered:
        if eps_inside:
            if has_buf:
                _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                              True, True, True, False, False, False)
            else:
                _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                              True, True, False, False, False, False)
        elif has_buf:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          True, False, True, False, False, False)
        else:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          True, False, False, False, False, False)
    elif eps_inside:
        if has_buf:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          False, True, True, False, False, False)
        else:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          False, True, False, False, False, False)
    elif has_buf:
        _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                      False, False, True, False, False, False)
    else:
        _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                      False, False, False, False, False, False)


cdef inline void _rmsprop_typed(floating* p, const floating* g, floating* sq, floating* gavg,
                                floating* buf, Py_ssize_t n,
                                const RmspropArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, al = <floating>A.alpha
    cdef floating oma = <floating>(1.0 - A.alpha), e = <floating>A.eps
    cdef floating mu = <floating>A.momentum, gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, decay = A.wd != 0.0, mx = A.maximize
    if scale or mx or decay:
        _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd, A.centered,
                      A.eps_inside, A.has_buf, scale, mx, decay)
    elif _simd and not (A.centered or A.has_buf):
        if floating is float:
            fo_rmsprop_avx2_f32(p, g, sq, n, lr, al, oma, e, A.eps_inside)
        else:
            fo_rmsprop_avx2_f64(p, g, sq, n, lr, al, oma, e, A.eps_inside)
    else:
        _rmsprop_fast(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd, A.centered,
                      A.eps_inside, A.has_buf)


cdef void _rmsprop_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                         const void* args) noexcept nogil:
    cdef const RmspropArgs* A = <const RmspropArgs*>args
    if t.dbl:
        _rmsprop_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                       <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8),
                       <double*>_at(t.s[2], a, 8), b - a, A)
    else:
        _rmsprop_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                       <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4),
                       <float*>_at(t.s[2], a, 4), b - a, A)


def rmsprop(params, grads, states, int mode, double lr, double alpha, double eps,
            bint eps_inside, double momentum, double weight_decay, bint maximize,
            double gscale):
    """Multi-tensor RMSProp step; ``states = (sq, gavg, buf)`` pairs (see
    ``_reference.rmsprop``)."""
    cdef Step st
    cdef RmspropArgs A
    _step_init(&st)
    try:
        _gather(params, grads, states, mode, &st)
        if st.nstates < 1 or not st.has_state[0]:
            raise ValueError("rmsprop needs its square-average state")
        A.lr = lr
        A.alpha = alpha
        A.eps = eps
        A.momentum = momentum
        A.wd = weight_decay
        A.gscale = gscale
        A.eps_inside = eps_inside
        A.maximize = maximize
        A.centered = st.nstates > 1 and st.has_state[1]
        A.has_buf = st.nstates > 2 and st.has_state[2]
        _run_step(&st, _rmsprop_chunk, &A)
    finally:
        _step_free(&st)


# --- Adam -----------------------------------------------------------------------

ctypedef struct AdamArgs:
    double lr, beta1, beta2, eps, bc1, bc2, wd, gscale
    bint decoupled, maximize, amsgrad


cdef inline void _adam_loop(floating* p, const floating* g, floating* m, floating* v,
                            floating* vmax, Py_ssize_t n, floating lr, floating b1,
                            floating omb1, floating b2, floating omb2, floating e, floating c1,
                            floating c2, double rc1, floating gs, floating wd,
                            floating shrink, bint scale, bint maximize, bint l2,
                            bint shrink_p, bint amsgrad) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, mi, vi, vv, m0, v0
    for i in range(n):
        # Every load of the element before any store (see _LOADS_FIRST).
        pi = p[i]
        m0 = m[i]
        v0 = v[i]
        if amsgrad:
            vv = vmax[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, l2)
        if shrink_p:
            pi = pi * shrink
        mi = b1 * m0 + omb1 * gi
        vi = b2 * v0 + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        if amsgrad:
            # np.maximum: the first operand when it is >= or NaN, else the second.
            if not (vv >= vi or vv != vv):
                vv = vi
            vmax[i] = vv
            vi = vv
        p[i] = pi - (lr * _div_c1(mi, c1, rc1)) / (_sqrt(vi / c2) + e)


cdef inline void _adam_typed(floating* p, const floating* g, floating* m, floating* v,
                             floating* vmax, Py_ssize_t n, const AdamArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, b1 = <floating>A.beta1
    cdef floating omb1 = <floating>(1.0 - A.beta1), b2 = <floating>A.beta2
    cdef floating omb2 = <floating>(1.0 - A.beta2), e = <floating>A.eps
    cdef floating c1 = <floating>A.bc1, c2 = <floating>A.bc2
    cdef double rc1 = 1.0 / <double>c1
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef floating shrink = <floating>(1.0 - A.lr * A.wd)
    cdef bint scale = A.gscale != 1.0, mx = A.maximize
    cdef bint l2 = A.wd != 0.0 and not A.decoupled
    cdef bint shrink_p = A.wd != 0.0 and A.decoupled
    if scale or mx or l2 or A.amsgrad:
        _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, shrink,
                   scale, mx, l2, shrink_p, A.amsgrad)
    elif _simd:
        if floating is float:
            fo_adam_avx2_f32(p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1,
                             shrink, shrink_p)
        else:
            fo_adam_avx2_f64(p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1,
                             shrink, shrink_p)
    elif shrink_p:
        # AdamW
        _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, shrink,
                   False, False, False, True, False)
    else:
        _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, shrink,
                   False, False, False, False, False)


cdef void _adam_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                      const void* args) noexcept nogil:
    cdef const AdamArgs* A = <const AdamArgs*>args
    if t.dbl:
        _adam_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                    <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8),
                    <double*>_at(t.s[2], a, 8), b - a, A)
    else:
        _adam_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                    <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4),
                    <float*>_at(t.s[2], a, 4), b - a, A)


def adam(params, grads, states, int mode, double lr, double beta1, double beta2, double eps,
         double bc1, double bc2, double weight_decay, bint decoupled, bint maximize,
         double gscale):
    """Multi-tensor Adam step; ``states = (m, v, vmax)`` pairs (see
    ``_reference.adam``)."""
    cdef Step st
    cdef AdamArgs A
    _step_init(&st)
    try:
        _gather(params, grads, states, mode, &st)
        if st.nstates < 2 or not (st.has_state[0] and st.has_state[1]):
            raise ValueError("adam needs its two moment states")
        A.lr = lr
        A.beta1 = beta1
        A.beta2 = beta2
        A.eps = eps
        A.bc1 = bc1
        A.bc2 = bc2
        A.wd = weight_decay
        A.gscale = gscale
        A.decoupled = decoupled
        A.maximize = maximize
        A.amsgrad = st.nstates > 2 and st.has_state[2]
        _run_step(&st, _adam_chunk, &A)
    finally:
        _step_free(&st)


# --- global gradient norm -------------------------------------------------------

ctypedef struct Block:
    const char* x
    Py_ssize_t n
    bint dbl


cdef inline double _block_sumsq(const floating* x, Py_ssize_t n) noexcept nogil:
    """``_reference.sumsq_blocks`` for one block: element i to lane i % 8,
    each lane summed in order, lanes combined pairwise."""
    cdef double acc[8]
    cdef double y
    cdef Py_ssize_t i, k, full = n - n % SUMSQ_LANES
    for k in range(SUMSQ_LANES):
        acc[k] = 0.0
    for i in range(0, full, 8):
        for k in range(8):
            y = <double>x[i + k]
            acc[k] = acc[k] + y * y
    for k in range(n - full):
        y = <double>x[full + k]
        acc[k] = acc[k] + y * y
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef void _block_sums(const Block* blocks, double* out, Py_ssize_t a,
                      Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(a, b):
        if blocks[k].dbl:
            out[k] = _block_sumsq(<const double*>blocks[k].x, blocks[k].n)
        else:
            out[k] = _block_sumsq(<const float*>blocks[k].x, blocks[k].n)


def grad_sumsq(params, grads, int mode):
    """Float64 sum of squares of all gradients, bit for bit that of
    ``_reference.grad_sumsq``: block sums (computed in parallel for large
    steps), then added in order to a running total from 0.0."""
    cdef Step st
    cdef Py_ssize_t i, j, nb = 0, k, nt = _num_threads
    cdef Block* blocks = NULL
    cdef double* sums = NULL
    cdef double total = 0.0
    cdef Py_ssize_t isz
    _step_init(&st)
    try:
        _gather(params, grads, (), mode, &st)
        for i in range(st.count):
            nb += (st.t[i].n + SUMSQ_BLOCK - 1) // SUMSQ_BLOCK
        blocks = <Block*>PyMem_Malloc((nb if nb > 0 else 1) * sizeof(Block))
        sums = <double*>PyMem_Malloc((nb if nb > 0 else 1) * sizeof(double))
        if blocks == NULL or sums == NULL:
            raise MemoryError()
        k = 0
        for i in range(st.count):
            isz = 8 if st.t[i].dbl else 4
            for j in range(0, st.t[i].n, 4096):
                blocks[k].x = st.t[i].g + j * isz
                blocks[k].n = SUMSQ_BLOCK if st.t[i].n - j > SUMSQ_BLOCK else st.t[i].n - j
                blocks[k].dbl = st.t[i].dbl
                k += 1
        if not FO_OPENMP or nt <= 1 or st.total < _parallel_min:
            _block_sums(blocks, sums, 0, nb)
        else:
            with nogil:
                for k in prange(nt, schedule="static", num_threads=nt):
                    _block_sums(blocks, sums, nb * k // nt, nb * (k + 1) // nt)
        for k in range(nb):
            total += sums[k]
        return total
    finally:
        PyMem_Free(blocks)
        PyMem_Free(sums)
        _step_free(&st)


# --- the benchmark's physical yardstick -------------------------------------------

cdef inline void _copy_like_loop(floating* x0, floating* x1, floating* x2, const floating* g,
                                 Py_ssize_t n, int nrw) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating a0, a1, a2, gi
    for i in range(n):
        # All loads before any store, as in the optimizer kernels
        # (_LOADS_FIRST), so the yardstick is not slower than what it measures.
        gi = g[i]
        a0 = x0[i]
        if nrw > 1:
            a1 = x1[i]
        if nrw > 2:
            a2 = x2[i]
        x0[i] = a0 + gi
        if nrw > 1:
            x1[i] = a1 + gi
        if nrw > 2:
            x2[i] = a2 + gi


cdef inline void _copy_like_typed(floating* x0, floating* x1, floating* x2, const floating* g,
                                  Py_ssize_t n, int nrw) noexcept nogil:
    if _simd:
        if floating is float:
            fo_copy_avx2_f32(x0, x1, x2, g, n, nrw)
        else:
            fo_copy_avx2_f64(x0, x1, x2, g, n, nrw)
    elif nrw == 1:
        _copy_like_loop(x0, x1, x2, g, n, 1)
    elif nrw == 2:
        _copy_like_loop(x0, x1, x2, g, n, 2)
    else:
        _copy_like_loop(x0, x1, x2, g, n, 3)


cdef void _copy_like_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                           const void* args) noexcept nogil:
    cdef int nrw = (<const int*>args)[0]
    if t.dbl:
        _copy_like_typed(<double*>_at(t.p, a, 8), <double*>_at(t.s[0], a, 8),
                         <double*>_at(t.s[1], a, 8), <const double*>_at(t.g, a, 8),
                         b - a, nrw)
    else:
        _copy_like_typed(<float*>_at(t.p, a, 4), <float*>_at(t.s[0], a, 4),
                         <float*>_at(t.s[1], a, 4), <const float*>_at(t.g, a, 4),
                         b - a, nrw)


def copy_like(rw, ro):
    """Move the bytes of an optimizer step and nothing more: each array in
    ``rw`` (1 to 3, read and written) gets ``+= ro[0]`` (read only).

    With ``rw = [p, v, s]`` and ``ro = [g]`` it reads 4 and writes 3 arrays,
    the traffic of an Adam step; the benchmark reports each optimizer's time
    against this floor.  It runs through the same split as the optimizer
    kernels (serial below ``PARALLEL_MIN_ELEMENTS``, else one contiguous range
    per thread), so the comparison is like for like.  Arrays: same dtype
    (float32/float64), C-contiguous, same size.
    """
    cdef Step st
    cdef int nrw = len(rw), k
    cdef cnp.ndarray a
    if not 1 <= nrw <= 3 or len(ro) != 1:
        raise ValueError("copy_like takes 1 to 3 read-write arrays and 1 read-only array")
    arrays = list(rw) + list(ro)
    first = arrays[0]
    for x in arrays:
        if not (_float_array(x) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
                and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.PyArray_TYPE(<cnp.ndarray>first)
                and cnp.PyArray_SIZE(<cnp.ndarray>x) == cnp.PyArray_SIZE(<cnp.ndarray>first)):
            raise ValueError("copy_like needs C-contiguous float32/float64 arrays of one "
                             "dtype and size")
    for x in rw:
        if not _writeable(<cnp.ndarray>x):
            raise ValueError("copy_like: a read-write array is read-only")
    _step_init(&st)
    try:
        _step_alloc(&st, 1, 0)
        a = <cnp.ndarray>first
        st.t[0].p = <char*>cnp.PyArray_DATA(a)
        st.t[0].g = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[nrw])
        for k in range(3):
            st.t[0].s[k] = NULL
        for k in range(1, nrw):
            st.t[0].s[k - 1] = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k])
        st.t[0].n = cnp.PyArray_SIZE(a)
        st.t[0].dbl = cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE
        st.start[0] = 0
        st.start[1] = st.t[0].n
        st.total = st.t[0].n
        _run_step(&st, _copy_like_chunk, &nrw)
    finally:
        _step_free(&st)
