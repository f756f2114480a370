"""Atomic int64 operations on numpy arrays for numba kernels, and a spin-wait hint.

numba has no atomics for CPU code. The decoder step runs on two threads (worksplit.py)
that claim chunks of work with a compare-and-swap, publish a finished chunk with a release
store (every write before it becomes visible first) and observe it with an acquire load.
"""
from __future__ import annotations

import sys

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from whisperlite.kernels.llvm_ir import elem_ptr

_X86 = _llvm.get_process_triple().startswith(("x86_64", "i686", "i386"))
_POSIX = sys.platform != "win32"


@intrinsic
def atomic_load(typingctx, ary, idx):
    """ary[idx] (int64), acquire: later reads see what was written before the matching store."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(elem_ptr(context, builder, sig.args[0], args[0], args[1]), "acquire", 8)

    return types.int64(ary, idx), codegen


@intrinsic
def atomic_store(typingctx, ary, idx, value):
    """ary[idx] = value (int64), release: everything written before is visible first."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], elem_ptr(context, builder, sig.args[0], args[0], args[1]), "release", 8)
        return context.get_dummy_value()

    return types.none(ary, idx, types.int64), codegen


@intrinsic
def atomic_cas(typingctx, ary, idx, expected, new):
    """If ary[idx] == expected, set it to new; returns the value found (int64, acq_rel)."""
    if not (isinstance(ary, types.Array) and ary.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = elem_ptr(context, builder, sig.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, args[2], args[3], "acq_rel", "acquire")
        return builder.extract_value(pair, 0)

    return types.int64(ary, idx, types.int64, types.int64), codegen


@intrinsic
def spin_pause(typingctx):
    """The x86 `pause` hint inside a spin-wait loop (nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen



@intrinsic
def yield_cpu(typingctx):
    """sched_yield(): a waiting thread lets another runnable thread of the machine have its
    core (on a 2-core machine the word-alignment and audio threads share the core a spinning
    helper would otherwise hold); a `pause` where there is no sched_yield."""

    def codegen(context, builder, sig, args):
        if _POSIX:
            fnty = ir.FunctionType(ir.IntType(32), [])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "sched_yield")
            builder.call(fn, [])
        elif _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen
