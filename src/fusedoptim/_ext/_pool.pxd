# cython: language_level=3
"""The thread pool's module (``_pool.pyx``, which alone compiles ``pool.h``):
what ``_step`` runs its parallel jobs through."""

# A job's block function: fn(ctx, k) for every block k (pool.h's fo_block_fn).
ctypedef void (*block_fn)(void* ctx, Py_ssize_t k) noexcept nogil

cdef void pool_run(int nt, block_fn fn, void* ctx, Py_ssize_t nblocks,
                   const void* key) noexcept nogil
cdef bint pool_threads() noexcept nogil
