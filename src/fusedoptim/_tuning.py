"""Tuning constants shared by the compiled backends."""

#: A step whose parameters hold fewer elements in all than this runs on one
#: thread in every backend: below it, starting a parallel region costs more
#: than the work.  Measured on the 2-core development machine (see the
#: closing note of the compiled-core issue).
PARALLEL_MIN_ELEMENTS = 1 << 16
