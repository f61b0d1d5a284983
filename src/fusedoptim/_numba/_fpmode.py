"""The floating-point mode (x86 MXCSR) of the Numba backend's threads.

A worker of Numba's pool starts in the floating-point mode of the thread that
started the pool (a new thread inherits its creator's MXCSR), which need not
be the caller's: the user's own parallel Numba code run under flush-to-zero
(a library built with ``-ffast-math`` sets it when it loads) leaves workers
that flush, and a later step from a caller in the default mode flushed the
workers' part of the step (other bits than one thread's).  A parallel step
runs only for a caller in the default mode (``_step.parallel_threads``), and
each of its tasks (a ``prange`` iteration) runs in that mode: ``fp_enter``
sets it and ``fp_leave`` puts the worker's own mode back, so that the user's
parallel code keeps its mode.  Elsewhere than on x86 these do nothing.
"""

import platform

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["MXCSR_MODE", "X86", "stmxcsr", "fp_enter", "fp_leave"]

#: MXCSR bits whose non-default value changes results: FTZ, DAZ, rounding.
MXCSR_MODE = 0x8000 | 0x0040 | 0x6000
X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _mxcsr_call(builder, name, slot):
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])


@intrinsic
def stmxcsr(typingctx):
    """The calling thread's MXCSR (x86 ``stmxcsr``; 0 elsewhere)."""
    sig = types.uint32()

    def codegen(context, builder, signature, args):
        if not X86:
            return context.get_constant(types.uint32, 0)
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.load(slot)

    return sig, codegen


@intrinsic
def _ldmxcsr(typingctx, value):
    """Set the calling thread's MXCSR to ``value`` (x86 ``ldmxcsr``; nothing
    elsewhere)."""
    if not isinstance(value, types.Integer):
        return None
    sig = types.void(value)

    def codegen(context, builder, signature, args):
        if X86:
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(context.cast(builder, args[0], signature.args[0], types.uint32), slot)
            _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def fp_enter():
    """Put the calling thread in the default floating-point mode; returns its
    MXCSR, for ``fp_leave``."""
    old = stmxcsr()
    _ldmxcsr(old & np.uint32(~MXCSR_MODE & 0xFFFFFFFF))
    return old


@njit(inline="always")
def fp_leave(old):
    """Restore the MXCSR that ``fp_enter`` returned."""
    _ldmxcsr(old)
