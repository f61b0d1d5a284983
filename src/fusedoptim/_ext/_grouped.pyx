# cython: language_level=3
"""Parameter groups in the compiled step: one argument struct per group.

A family's ``step_groups`` checks the call (``check_grouped_call``, then
``check_group_states`` where flags decide the slots), fills one struct per
group in ``step_args``, gathers the step as ``step`` does and tags each
tensor with its group (``set_groups``); ``_step.run_step`` then hands each
chunk its group's struct, so no element loop knows about groups.  On a
failed check the Python layer (``families._spec.check_groups``) raises, so
each message is defined once.

``shell_step`` and ``shell_groups`` are that sequence, written once: a
family module (``adam.pyx``, ...) describes itself in a ``Shell`` (its
chunk function, its struct's size, its slots, how a group's keywords fill
its struct) and its ``step``/``step_groups`` only check its own states and
fill its own struct.
"""

from cpython.mem cimport PyMem_Malloc

from ._step cimport Step, run_step
from ._gather cimport gather_step, states_match, step_init, step_free


cdef void* step_args(Step* st, Py_ssize_t ngroups, size_t size) except NULL:
    """An array of ``ngroups`` family argument structs of ``size`` bytes,
    owned by ``st`` (freed by ``step_free``); tensor ``i``'s chunk then gets
    struct ``t[i].group`` (``set_groups``)."""
    st.args = PyMem_Malloc((ngroups if ngroups > 0 else 1) * size)
    if st.args == NULL:
        raise MemoryError()
    st.stride = size
    return st.args


cdef bint groups_ok(object groups, object sizes, object keys) noexcept:
    """Whether ``groups`` and ``sizes`` pass ``families._spec.check_groups``'s
    own checks (the states aside): False sends the caller to it, which names
    the problem.  ``keys``: the family's ``group_keyword_set``."""
    cdef Py_ssize_t k, n
    if not isinstance(groups, tuple) or not isinstance(sizes, tuple):
        return False
    n = len(<tuple>groups)
    if n == 0 or len(<tuple>sizes) != n:
        return False
    for k in range(n):
        kw = (<tuple>groups)[k]
        if not isinstance(kw, dict):
            return False
        try:
            if kw.keys() != keys:
                return False
        except Exception:
            return False
        m = (<tuple>sizes)[k]
        if type(m) is not int or m < 0:
            return False
    return True


cdef int set_groups(Step* st, object sizes) except -1:
    """Tensor ``i`` (in ``params`` order) belongs to group ``k`` when it is
    among the ``sizes[k]`` tensors after those of the groups before it.
    ``families._spec.check_groups`` checked ``sizes``; their sum must be
    the number of tensors gathered."""
    cdef Py_ssize_t k, j, i = 0, m
    for k in range(len(sizes)):
        m = sizes[k]
        if m < 0 or i + m > st.count:
            break
        for j in range(i, i + m):
            st.t[j].group = <int>k
        i += m
    else:
        if i == st.count:
            return 0
    raise ValueError(f"sizes must add up to the {st.count} parameters, got "
                     f"{sum(sizes)}")


cdef int check_grouped_call(object family, object states, object groups, object sizes,
                            Py_ssize_t nslots, unsigned need) except -1:
    """Every ``step_groups``' opening checks: ``groups_ok``, then (unless
    ``nslots < 0``: a family whose flags switch slots on checks its states
    once they are read) ``check_group_states``."""
    if not groups_ok(groups, sizes, family.group_keyword_set):
        from fusedoptim.families._spec import check_groups
        check_groups(family, states, groups, sizes)  # raises, naming the problem
    if nslots >= 0:
        check_group_states(family, states, groups, sizes, nslots, need)
    return 0


cdef int check_group_states(object family, object states, object groups, object sizes,
                            Py_ssize_t nslots, unsigned need) except -1:
    """``states_match`` or ``families._spec.check_groups`` raises, naming the slot."""
    if not states_match(states, nslots, need):
        from fusedoptim.families._spec import check_groups
        check_groups(family, states, groups, sizes)  # raises, naming the slot
        raise AssertionError("unreachable: check_groups passed mismatched states")
    return 0


cdef int _run(const Shell* sh, Step* st, void* args, Py_ssize_t ngroups) except -1:
    # One pass over the chunks unless the family runs its own passes (LAMB's two).
    if sh.run != NULL:
        return sh.run(st, args, ngroups)
    return run_step(st, sh.chunk, args)


cdef int shell_step(const Shell* sh, object params, object grads, object states, int mode,
                    void* args) except -1:
    """A family's ``step`` once it has checked its states and filled its
    one struct ``args``: gather, run, free (also on error)."""
    cdef Step st
    step_init(&st)
    try:
        gather_step(params, grads, states, mode, &st)
        _run(sh, &st, args, 1)
    finally:
        step_free(&st)
    return 0


cdef int shell_groups(const Shell* sh, object family, object params, object grads,
                      object states, int mode, object groups, object sizes,
                      double gscale) except -1:
    """A family's whole ``step_groups``: ``groups[k]`` is group ``k``'s
    keywords (all but ``gscale``, shared), ``sizes[k]`` its number of
    tensors, which follow those of group ``k - 1`` in ``params`` order.
    Where flags switch slots on (``sh.flagged``), ``states`` holds the slots
    any group switches on (a group whose flag is off leaves its tensors'
    entries untouched) and is checked once every group is read; otherwise
    before any is."""
    cdef Step st
    cdef char* A
    cdef Py_ssize_t k
    cdef unsigned need = sh.need
    check_grouped_call(family, states, groups, sizes, -1 if sh.flagged else sh.nslots, need)
    step_init(&st)
    try:
        A = <char*>step_args(&st, len(groups), sh.size)
        for k in range(len(groups)):
            need |= <unsigned>sh.fill(A + k * sh.size, groups[k], gscale)
        if sh.flagged:
            check_group_states(family, states, groups, sizes, sh.nslots, need)
        gather_step(params, grads, states, mode, &st)
        set_groups(&st, sizes)
        _run(sh, &st, A, len(groups))
    finally:
        step_free(&st)
    return 0
