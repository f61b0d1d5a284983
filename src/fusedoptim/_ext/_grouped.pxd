# cython: language_level=3
from ._step cimport Step

cdef void* step_args(Step* st, Py_ssize_t ngroups, size_t size) except NULL
cdef int set_groups(Step* st, object sizes) except -1
cdef bint groups_ok(object groups, object sizes, object keys) noexcept
cdef int check_grouped_call(object family, object states, object groups, object sizes,
                            Py_ssize_t nslots, unsigned need) except -1
cdef int check_group_states(object family, object states, object groups, object sizes,
                            Py_ssize_t nslots, unsigned need) except -1
