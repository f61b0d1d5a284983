"""Tuning constants shared by the compiled backends."""

#: A step whose parameters hold fewer elements in all than this runs on one
#: thread in every backend: below it, starting a parallel region costs more
#: than the work.  Measured on the 2-core development machine (AMD EPYC Zen1)
#: with ``benchmarks/threshold.py`` (compiled Adam step, tensors of 4096,
#: median of 1500 single calls, serial vs 2 threads): the parallel region has
#: a fixed cost of about 4 us; the parallel/serial time ratio was 1.06 (f32)
#: and 0.75 (f64) at 4096 elements, 0.81 / 0.64 at 8192, 0.68 / 0.59 at 16384,
#: 0.61 / 0.55 at 32768 and 0.59 / 0.54 at 65536.  32768 is where both dtypes
#: are within 10% of the 2-thread speed-up's plateau; cheaper kernels (SGD,
#: the copy yardstick) need more elements than Adam to pay for the region, and
#: on a shared machine every region risks waiting for a preempted thread.
PARALLEL_MIN_ELEMENTS = 1 << 15

#: Thread ranges of the concatenated element space start on multiples of this
#: many elements (a 64-byte cache line of float32), so two threads never
#: write the same line of one tensor.
SPLIT_ALIGN = 16


#: The compiled backend runs a parallel step in blocks of this many elements
#: of the concatenated tensors, handed out dynamically (a thread that runs
#: takes more blocks, a descheduled one holds up at most one block); a
#: multiple of ``SPLIT_ALIGN``.  16384 float32 Adam elements are about 25 us
#: of work on the development machine: claiming one costs one atomic
#: operation, far below that.
BLOCK_ELEMENTS = 1 << 14

#: Large steps run in larger blocks, doubled from ``BLOCK_ELEMENTS`` up to
#: this many while every thread still gets ``BLOCKS_PER_THREAD`` blocks or
#: more (``block_elements``).  Why: every block starts its streams anew (the
#: loop's software prefetches run only inside a block, and the claim's
#: atomics move a cache line between cores), and on GPT-2's shapes (124M
#: float32 elements, 2 threads, benchmarks/split_shapes.c: the slower
#: thread's CPU time, median of 11-15 interleaved rounds, load 4 from other
#: sessions) Adam took 45-50 ms in blocks of 2^14 against 38-40 ms in blocks
#: of 2^16 to 2^20 or in torch's layout (each tensor halved between the
#: threads), and the copy of its traffic 45-49 against 40-43 ms.  The
#: bound keeps the end of a step balanced: at most one block (2^18 float32
#: Adam elements, about 90 us) is left to one thread.
BLOCK_MAX_ELEMENTS = 1 << 18
BLOCKS_PER_THREAD = 32


def block_elements(total, threads):
    """Block size of a parallel step over ``total`` elements on ``threads``
    threads: ``BLOCK_ELEMENTS`` doubled while below ``BLOCK_MAX_ELEMENTS``
    and ``total`` holds at least ``2 * BLOCKS_PER_THREAD`` blocks of the
    doubled size per thread.  Any block size gives the same bits."""
    b = BLOCK_ELEMENTS
    while b < BLOCK_MAX_ELEMENTS and total >= 2 * b * threads * BLOCKS_PER_THREAD:
        b *= 2
    return b


def split_start(total, parts, k):
    """Start of thread ``k``'s range of ``[0, total)`` split ``parts`` ways:
    near-equal parts, each start rounded down to ``SPLIT_ALIGN`` (monotonic
    in ``k``; part ``parts`` ends at ``total``).  The Numba backend splits
    exactly so (the compiled one runs ``BLOCK_ELEMENTS`` blocks instead and
    keeps this rule only for the tests), and the tests compare them with it."""
    if k >= parts:
        return total
    q, r = divmod(total, parts)
    s = q * k + min(k, r)
    return s - s % SPLIT_ALIGN
