# cython: language_level=3
from ._step cimport Step, chunk_fn

# Fills the family's struct at ``args`` from one group's keywords ``kw``;
# returns the slots (bit j: state j) the group's flags switch on, 0 where no
# flag switches one on.
ctypedef int (*fill_fn)(void* args, object kw, double gscale) except -1
# A family's own run of the gathered step (LAMB's two passes) over its
# ``ngroups`` structs at ``args``; NULL in a Shell: one ``run_step``.
ctypedef int (*run_fn)(Step* st, void* args, Py_ssize_t ngroups) except -1

# What the shared step shell needs of a family (see _grouped.pyx).
ctypedef struct Shell:
    chunk_fn chunk       # the family's element update over a chunk
    run_fn run           # or its own passes (NULL: run_step(chunk))
    fill_fn fill         # a group's keywords into its struct
    size_t size          # sizeof the family's args struct
    Py_ssize_t nslots    # state slots per tensor
    unsigned need        # slots always on (bit j: state j)
    bint flagged         # flags switch further slots on (fill returns them)

cdef void* step_args(Step* st, Py_ssize_t ngroups, size_t size) except NULL
cdef int set_groups(Step* st, object sizes) except -1
cdef bint groups_ok(object groups, object sizes, object keys) noexcept
cdef int check_grouped_call(object family, object states, object groups, object sizes,
                            Py_ssize_t nslots, unsigned need) except -1
cdef int check_group_states(object family, object states, object groups, object sizes,
                            Py_ssize_t nslots, unsigned need) except -1
cdef int shell_step(const Shell* sh, object params, object grads, object states, int mode,
                    void* args) except -1
cdef int shell_groups(const Shell* sh, object family, object params, object grads,
                      object states, int mode, object groups, object sizes,
                      double gscale) except -1
