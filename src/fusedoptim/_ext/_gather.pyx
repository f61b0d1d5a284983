# cython: language_level=3
"""The compiled validation: ``_validate.gather``'s twin, filling a ``Step``.

``gather_step`` checks the whole step with the NumPy C API, in the order of
``_validate.gather`` and with the same exceptions and messages (the Python
layer builds every message: on an error the compiled check calls the Python
check that raises, so each message is defined once), then collects data
pointers and sizes into the ``Tensor`` records of a ``Step``.  Labels are
built only on the error path: a valid step formats no string.
"""

from libc.stdlib cimport qsort
from libc.string cimport memset
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.dict cimport (PyDict_GetItem, PyDict_GetItemWithError, PyDict_CheckExact,
                           PyDict_Keys)
cimport numpy as cnp

from ._step cimport Tensor, Span, Step, MAX_STATES, SLOTS

from fusedoptim import _validate as _v

cnp.import_array()

cdef int COURSE = _v.COURSE

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewLikeArray(cnp.ndarray prototype, cnp.NPY_ORDER order,
                                PyObject* descr, int subok)

cdef enum:
    SMALL_SORT = 48    # spans sorted by insertion below this count


cdef void step_free(Step* st) noexcept:
    cdef Py_ssize_t i
    if st.refs != NULL:
        for i in range(st.count * SLOTS):
            Py_XDECREF(st.refs[i])
    PyMem_Free(st.t)      # one block holds all four arrays
    PyMem_Free(st.args)
    memset(st, 0, sizeof(Step))


cdef int step_alloc(Step* st, Py_ssize_t n, int nstates) except -1:
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
    """``d[key]`` (``KeyError`` when absent); a plain dict skips the generic
    protocol, a subclass is asked ``key in d`` first so that a
    ``defaultdict`` gains no key (``_validate.lookup``)."""
    cdef PyObject* r
    if PyDict_CheckExact(d):
        r = PyDict_GetItemWithError(d, key)
        if r == NULL:
            raise KeyError(key)
        return <object>r
    if key not in d:
        raise KeyError(key)
    return d[key]


cdef tuple _PLAIN = _v.PLAIN_SUBCLASSES


cdef bint plain_subclass(object a) noexcept:
    """An ndarray subclass with ndarray's arithmetic (``PLAIN_SUBCLASSES``)."""
    cdef object cls = type(a)
    cdef object c
    for c in _PLAIN:
        if cls is c:
            return True
    return False


cdef inline Py_ssize_t _size(cnp.ndarray a) noexcept:
    cdef Py_ssize_t n = 1
    cdef int k
    for k in range(cnp.PyArray_NDIM(a)):
        n *= cnp.PyArray_DIMS(a)[k]
    return n


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


cdef object _item_label(list names, object params, object grads, tuple states, int mode,
                        int code):
    """The label ``_validate.gather`` gives the array of item ``code``."""
    name = names[code >> 3]
    kind = code & 7
    if kind == 0:
        return f"parameters[{name!r}]"
    dkey = "d" + name
    if kind == 1:
        gkey = dkey if (mode == COURSE or name not in grads) else name
        return f"grads[{gkey!r}]"
    skey = dkey if mode == COURSE else name
    return f"{states[kind - 2][0]}[{skey!r}]"


cdef bint _sweep(const Span* sp, Py_ssize_t m, Py_ssize_t last) noexcept nogil:
    """``_validate._sweep_overlaps``: whether spans (sorted by start) with
    index at most ``last`` intersect, one of them written."""
    cdef Py_ssize_t i
    cdef size_t max_hi_written = 0, max_hi_any = 0
    for i in range(m):
        if sp[i].idx > last:
            continue
        if sp[i].lo < max_hi_written or (sp[i].written and sp[i].lo < max_hi_any):
            return True
        if sp[i].hi > max_hi_any:
            max_hi_any = sp[i].hi
        if sp[i].written and sp[i].hi > max_hi_written:
            max_hi_written = sp[i].hi
    return False


cdef int _overlap_error(Step* st, list names, object params, object grads, tuple states,
                        int mode) except -1:
    """Name the first overlapping pair in step order, as ``_find_overlap``:
    bisect on the prefix length (spans are sorted by start already), then
    scan for the earlier partner; O(m log m)."""
    cdef Py_ssize_t i, m = st.nspans, lo = 0, hi = m - 1, mid
    cdef Py_ssize_t j = -1, partner = -1
    cdef Span* sp = st.spans
    while lo < hi:
        mid = (lo + hi) // 2
        if _sweep(sp, m, mid):
            hi = mid
        else:
            lo = mid + 1
    for i in range(m):
        if sp[i].idx == hi:
            j = i
    for i in range(m):
        if sp[i].idx < hi and (sp[i].written or sp[j].written) and sp[i].lo < sp[j].hi \
                and sp[j].lo < sp[i].hi and (partner < 0 or sp[i].idx < sp[partner].idx):
            partner = i
    if j < 0 or partner < 0:
        raise AssertionError("unreachable: sorted scan found an overlap")
    later = _item_label(names, params, grads, states, mode, sp[j].code)
    earlier = _item_label(names, params, grads, states, mode, sp[partner].code)
    raise _v.overlap(later, earlier)


cdef inline int _unreachable(label) except -1:
    raise AssertionError(f"compiled and Python validation disagree about {label}")


cdef int _open_states(tuple states, PyObject** sdp, Step* st) except -1:
    """Check that every state given is a dict; ``sdp[j]`` is state ``j``'s
    dict, NULL when the slot is off."""
    cdef Py_ssize_t j
    for j in range(len(states)):
        label, sd = states[j]
        if sd is not None and not isinstance(sd, dict):
            _v._check_dict(sd, label)
        sdp[j] = NULL if sd is None else <PyObject*>sd
        st.has_state[j] = sd is not None
    return 0


cdef int _gather_states(Step* st, Py_ssize_t i, cnp.ndarray pa, object name, object skey,
                        tuple states, PyObject** sdp) except -1:
    """Check parameter ``name``'s state arrays (key ``skey``) and record
    them in tensor ``i``."""
    cdef Tensor* t = &st.t[i]
    cdef cnp.ndarray aa
    cdef Py_ssize_t j
    for j in range(MAX_STATES):
        t.s[j] = NULL
    for j in range(st.nstates):
        if sdp[j] == NULL:
            continue
        try:
            a = _getitem(<object>sdp[j], skey)
        except KeyError:
            raise _v.missing_state(states[j][0], skey, name) from None
        if not float_array(a):
            _v._check_array(a, f"{states[j][0]}[{skey!r}]")
            _unreachable(skey)
        aa = <cnp.ndarray>a
        if not _like(aa, pa):
            _v._check_like(a, f"{states[j][0]}[{skey!r}]", pa, f"parameters[{name!r}]")
            _unreachable(skey)
        if not writeable(aa):
            _v._check_writeable(a, f"{states[j][0]}[{skey!r}]")
            _unreachable(skey)
        if not (_dense(aa) and _same_layout(aa, pa)):
            raise _v.layout_mismatch(f"{states[j][0]}[{skey!r}]", f"parameters[{name!r}]")
        Py_INCREF(a)
        st.refs[i * SLOTS + 2 + j] = <PyObject*>a
        _add_span(st, aa, 1, <int>(i * 8 + 2 + j))
        t.s[j] = <char*>cnp.PyArray_DATA(aa)
    return 0


cdef int _finish(Step* st) except -1:
    """After the whole step validated: gradients copied into their
    parameter's layout where needed, tensor offsets in the concatenation."""
    cdef Py_ssize_t i
    cdef Tensor* t
    cdef cnp.ndarray pa, ga
    st.start[0] = 0
    for i in range(st.count):
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
    st.total = st.start[st.count]
    return 0


cdef inline cnp.ndarray _param(object params, object name):
    """``params[name]``, checked as a parameter."""
    try:
        p = _getitem(params, name)
    except KeyError:
        raise _v.param_vanished(name) from None
    if not float_array(p):
        _v._check_array(p, f"parameters[{name!r}]")
        _unreachable(name)
    if not writeable(<cnp.ndarray>p):
        _v._check_writeable(p, f"parameters[{name!r}]")
        _unreachable(name)
    if not _dense(<cnp.ndarray>p):
        raise _v.not_contiguous(f"parameters[{name!r}]")
    return <cnp.ndarray>p


cdef int gather_step(object params, object grads, object states, int mode,
                     Step* st) except -1:
    """Check a whole step exactly as ``_validate.gather`` does (same order,
    same exceptions, same messages) and fill ``st``; writes nothing."""
    cdef Py_ssize_t i, n, nst
    cdef PyObject* sdp[3]
    cdef cnp.ndarray pa, ga
    cdef Tensor* t
    cdef bint course = mode == COURSE
    if not isinstance(states, tuple):
        states = tuple(states)
    nst = len(<tuple>states)
    if nst > MAX_STATES:
        raise ValueError(f"at most {MAX_STATES} states, got {nst}")
    if not isinstance(params, dict):
        _v._check_dict(params, "parameters")
    if not isinstance(grads, dict):
        _v._check_dict(grads, "grads")
    _open_states(<tuple>states, sdp, st)
    # The keys, iterated once; len() of a dict subclass may lie.
    names = PyDict_Keys(params) if PyDict_CheckExact(params) else [k for k in params]
    n = len(<list>names)
    step_alloc(st, n, <int>nst)
    st.count = 0          # tensors filled so far (refs beyond are NULL)
    for i in range(n):
        name = (<list>names)[i]
        if not isinstance(name, str):
            raise _v.bad_name(name)
        st.count = i + 1
        t = &st.t[i]
        p = pa = _param(params, name)
        Py_INCREF(p)
        st.refs[i * SLOTS] = <PyObject*>p
        dkey = _dkey(name)
        if course:
            gkey = dkey
            try:
                g = _getitem(grads, dkey)
            except KeyError:
                _v._grad_of(grads, name, _v.COURSE, params)  # raises, with the Python message
                _unreachable(dkey)
        else:
            has_plain = name in grads
            # A key that is another parameter's name is that parameter's gradient.
            has_d = dkey in grads and dkey not in params
            if has_plain == has_d:
                _v._grad_of(grads, name, _v.NAMED, params)  # raises: both keys, or neither
                _unreachable(dkey)
            gkey = name if has_plain else dkey
            g = _getitem(grads, gkey)
        if not float_array(g):
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
        t.group = 0
        _gather_states(st, i, pa, name, dkey if course else name, <tuple>states, sdp)
    if _any_overlap(st.spans, st.nspans):
        _overlap_error(st, <list>names, params, grads, <tuple>states, mode)
    return _finish(st)


def gather(params, grads, states, int mode):
    """The compiled validation, returning what ``_validate.gather`` returns:
    one tuple ``(p, g, *state_arrays)`` per parameter (for tests)."""
    cdef Step st
    cdef Py_ssize_t i, k
    step_init(&st)
    try:
        gather_step(params, grads, states, mode, &st)
        out = []
        for i in range(st.count):
            group = []
            for k in range(2 + st.nstates):
                r = st.refs[i * SLOTS + k]
                group.append(None if r == NULL else <object>r)
            out.append(tuple(group))
        return out
    finally:
        step_free(&st)


cdef bint states_match(object states, Py_ssize_t nslots, unsigned need) noexcept:
    """Whether ``states`` is a tuple of ``nslots`` ``(label, dict or None)``
    tuples whose slot ``j`` is present exactly when bit ``j`` of ``need``
    is set (a family's flags say which slots a step uses).  False sends the
    caller to ``families._spec.check_states``, which names the problem."""
    cdef Py_ssize_t j
    if type(states) is not tuple or len(<tuple>states) != nslots:
        return False
    for j in range(nslots):
        pair = (<tuple>states)[j]
        if type(pair) is not tuple or len(<tuple>pair) != 2:
            return False
        if ((<tuple>pair)[1] is not None) != <bint>((need >> j) & 1):
            return False
    return True
