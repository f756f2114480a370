"""LLVM IR building blocks for the numba intrinsics of gemv.py and rowdots.py.

numba does not vectorize per-weight block decoding (its SLP vectorizer cannot reorder the
stores around the loads, and small integers are promoted to int64, whose conversion to
float has no AVX2 instruction), so the block dots emit vector IR directly. The pieces they
share live here once: vector types, loads, float16 conversion, the ggml block decoders (to
float and to int8, for a block layout of quant.py's table), horizontal sums and the AVX2
byte dot.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

if TYPE_CHECKING:
    from whisperlite.kernels.quant import QuantTraits

I1, I8, I16, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()

# WHISPERLITE_GENERIC_KERNELS=1 takes the paths of a CPU without AVX2 and F16C (older x86,
# ARM) on this one, so that tests run them; core/env.py keys numba's cache on it too,
# since compiled kernels keep the choice.
GENERIC = os.environ.get("WHISPERLITE_GENERIC_KERNELS", "") not in ("", "0")
_FEATURES = [] if GENERIC else _llvm.get_host_cpu_features().flatten().split(",")
# F16C (vcvtph2ps): LLVM lowers `fpext half` to it; without it LLVM would call a runtime
# helper numba does not link, so those CPUs take the bit-arithmetic conversion.
HAS_F16C = "+f16c" in _FEATURES
# AVX2's byte multiply-add (vpmaddubsw, then vpmaddwd) takes a whole block's 32 products
# in two instructions, where float activations need the weights widened to 32 floats;
# ggml's own AVX2 dots are these instructions. Without AVX2 the float dots serve.
HAS_AVX2 = "+avx2" in _FEATURES
# VNNI's vpdpbusd sums four unsigned × signed byte products into each i32 lane in one
# instruction, the two of vpmaddubsw + vpmaddwd (256-bit: AVX-VNNI, or AVX-512 VNNI with
# VL); ggml's dots use it where the CPU has it. Neither saturates for ggml's weights and
# activations (|w|, |y| <= 128, 127), so the sums are the same integers.
HAS_VNNI = HAS_AVX2 and ("+avxvnni" in _FEATURES or {"+avx512vnni", "+avx512vl"} <= set(_FEATURES))
# The same on 512-bit registers (AVX-512 VNNI and BW): two 32-weight blocks per instruction,
# of one row (tiles.py) or of two rows side by side (rowdots.py).
HAS_AVX512_VNNI = HAS_AVX2 and {"+avx512f", "+avx512bw", "+avx512vnni"} <= set(_FEATURES)


def vec(t: ir.Type, n: int) -> ir.VectorType:
    """<n x t>."""
    return ir.VectorType(t, n)


V8F, V32F = vec(F32, 8), vec(F32, 32)
V32B, V16W, V8I = vec(I8, 32), vec(I16, 16), vec(I32, 8)
V64B, V16I = vec(I8, 64), vec(I32, 16)


def splat(builder: ir.IRBuilder, s: ir.Value, n: int) -> ir.Value:
    """The scalar s broadcast to <n x s.type>."""
    v = builder.insert_element(ir.Constant(vec(s.type, n), ir.Undefined), s, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vec(s.type, n), ir.Undefined), ir.Constant(vec(I32, n), [0] * n))


def ir_f16_to_f32(builder: ir.IRBuilder, h: ir.Value) -> ir.Value:
    """i16 float16 bits -> float: `fpext half` (F16C), else the branch-free bit arithmetic:
    the 15 exponent and mantissa bits shifted into float32 position and scaled by 2^112
    rebias normals and subnormals exactly; exponent 31 (inf/nan) is patched by selects."""
    if HAS_F16C:
        return builder.fpext(builder.bitcast(h, ir.HalfType()), F32)
    h32 = builder.zext(h, I32)
    em = builder.and_(h32, ir.Constant(I32, 0x7FFF))
    mag = builder.fmul(builder.bitcast(builder.shl(em, ir.Constant(I32, 13)), F32),
                       ir.Constant(F32, 5.192296858534828e33))
    special = builder.select(builder.icmp_unsigned("==", em, ir.Constant(I32, 0x7C00)),
                             ir.Constant(F32, float("inf")), ir.Constant(F32, float("nan")))
    mag = builder.select(builder.icmp_unsigned("<", em, ir.Constant(I32, 0x7C00)), mag, special)
    sign = builder.shl(builder.and_(h32, ir.Constant(I32, 0x8000)), ir.Constant(I32, 16))
    return builder.bitcast(builder.or_(builder.bitcast(mag, I32), sign), F32)


@intrinsic
def f16_bits_to_f32(typingctx, h):
    """float16 bits (an integer; its low 16 bits) -> float32; vectorizes in loops (F16C)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        v = builder.trunc(v, I16) if v.type.width > 16 else builder.zext(v, I16) if v.type.width < 16 else v
        return ir_f16_to_f32(builder, v)

    return types.float32(h), codegen


@intrinsic
def prefetch_row(typingctx, w, r):
    """Hint the cache to fetch row r of the C-contiguous 2-D array w, every 64-byte line
    (nothing if r is past the last row). One sequence's products read each weight row once
    and only ~12 cache lines long: the hardware prefetcher ramps up on every new row, so a
    row fetched a few rows ahead keeps the loads coming (Q8_0 vocabulary projection 1.68 ->
    1.45 ms at 8 rows ahead)."""
    if not (isinstance(w, types.Array) and w.ndim == 2 and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        rows, _ = cgutils.unpack_tuple(builder, arr.shape, 2)
        stride, _ = cgutils.unpack_tuple(builder, arr.strides, 2)
        row = context.cast(builder, args[1], sig.args[1], types.int64)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [I8.as_pointer(), I32, I32, I32]))
        with builder.if_then(builder.icmp_signed("<", row, rows)):
            base = builder.gep(builder.bitcast(arr.data, I8.as_pointer()), [builder.mul(row, stride)])
            nlines = builder.udiv(builder.add(stride, ir.Constant(I64, 63)), ir.Constant(I64, 64))
            with cgutils.for_range(builder, nlines) as loop:
                line = builder.gep(base, [builder.mul(loop.index, ir.Constant(I64, 64))])
                builder.call(fn, [line, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        return context.get_dummy_value()

    return types.none(w, r), codegen


def elem_ptr(context, builder: ir.IRBuilder, aryty, ary, idx: ir.Value) -> ir.Value:
    """i8* / float* to ary[idx] of a contiguous array."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [idx])


def load(builder: ir.IRBuilder, ptr: ir.Value, offset, ty: ir.Type) -> ir.Value:
    """Unaligned load of a ty at byte `offset` (an int or i64 value) from the i8* ptr."""
    off = ir.Constant(I64, offset) if isinstance(offset, int) else offset
    return builder.load(builder.bitcast(builder.gep(ptr, [off]), ty.as_pointer()), align=1)


def _scales(builder: ir.IRBuilder, lay: QuantTraits, blk: ir.Value):
    """The block's float scale d and, for the "_1" types, its float m (else None)."""
    moff = lay.offset("m")
    d = ir_f16_to_f32(builder, load(builder, blk, lay.offset("d"), I16))
    return d, None if moff is None else ir_f16_to_f32(builder, load(builder, blk, moff, I16))


def _fifth_bits(builder: ir.IRBuilder, q: ir.Value, blk: ir.Value, hoff: int) -> ir.Value:
    """Q5: the 32 fifth bits at qh ORed into the nibbles q (<32 x i8>) as 16: each qh byte
    broadcast to its 8 lanes and mask-compared."""
    qh = load(builder, blk, hoff, vec(I8, 4))
    b32 = builder.shuffle_vector(qh, qh, ir.Constant(vec(I32, 32), [j // 8 for j in range(32)]))
    bit = builder.and_(b32, ir.Constant(V32B, [1 << (j % 8) for j in range(32)]))
    set_ = builder.icmp_unsigned("!=", bit, ir.Constant(V32B, [0] * 32))
    return builder.or_(q, builder.select(set_, ir.Constant(V32B, [16] * 32), ir.Constant(V32B, [0] * 32)))


def _nibbles(builder: ir.IRBuilder, blk: ir.Value, qoff: int) -> ir.Value:
    """The 16 bytes at qoff as 32 nibbles <32 x i8>: the low ones, then the high ones."""
    v16 = vec(I8, 16)
    qs = load(builder, blk, qoff, v16)
    lo = builder.and_(qs, ir.Constant(v16, [15] * 16))
    hi = builder.lshr(qs, ir.Constant(v16, [4] * 16))
    return builder.shuffle_vector(lo, hi, ir.Constant(vec(I32, 32), list(range(32))))


def emit_block(builder: ir.IRBuilder, lay: QuantTraits, blk: ir.Value):
    """One ggml block of layout `lay` at i8* blk -> (<32 x float> q, exact small integers
    without the "_0" types' zero, the float scale d, the float m of the "_1" types or None).

    Q4 bytes are converted to float once and split in float (hi = floor(b/16), lo = b -
    16*hi, all exact): fewer instructions than widening 32 nibbles. Q5 nibbles and fifth
    bits are assembled as <32 x i8> and widened once."""
    hoff, qoff = lay.offset("qh"), lay.offset("qs")
    d, m = _scales(builder, lay, blk)
    if lay.bits == 8:
        return builder.sitofp(load(builder, blk, qoff, V32B), V32F), d, m
    if hoff is None:
        f16v = vec(F32, 16)
        byte = builder.uitofp(load(builder, blk, qoff, vec(I8, 16)), f16v)
        floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f16v, [f16v]), "llvm.floor.v16f32")
        hi = builder.call(floor, [builder.fmul(byte, ir.Constant(f16v, [0.0625] * 16))])
        lo = builder.fsub(byte, builder.fmul(hi, ir.Constant(f16v, [16.0] * 16)))
        return builder.shuffle_vector(lo, hi, ir.Constant(vec(I32, 32), list(range(32)))), d, m
    q = _fifth_bits(builder, _nibbles(builder, blk, qoff), blk, hoff)
    return builder.uitofp(q, V32F), d, m


def emit_block_i8(builder: ir.IRBuilder, lay: QuantTraits, blk: ir.Value):
    """One ggml block of layout `lay` at i8* blk -> (<32 x i8> q, d, m or None, signed):
    q - zero for the "_0" types and Q8_0 (signed), the plain q of the "_1" types (unsigned)."""
    hoff, qoff = lay.offset("qh"), lay.offset("qs")
    d, m = _scales(builder, lay, blk)
    if lay.bits == 8:
        return load(builder, blk, qoff, V32B), d, m, True
    q = _nibbles(builder, blk, qoff)
    if hoff is not None:
        q = _fifth_bits(builder, q, blk, hoff)
    if lay.zero:
        return builder.sub(q, ir.Constant(V32B, [lay.zero] * 32)), d, m, True
    return q, d, m, False


def hsum(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """Horizontal sum of a float vector (a shuffle tree)."""
    n = v.type.count
    while n > 1:
        n //= 2
        a = builder.shuffle_vector(v, v, ir.Constant(vec(I32, n), list(range(n))))
        b = builder.shuffle_vector(v, v, ir.Constant(vec(I32, n), list(range(n, 2 * n))))
        v = builder.fadd(a, b)
    return builder.extract_element(v, ir.Constant(I32, 0))


def _vmax(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """(Lane-wise) a > b ? a : b (vmaxps; a NaN in a keeps b)."""
    return builder.select(builder.fcmp_ordered(">", a, b), a, b)


def _keep_max(builder: ir.IRBuilder, ptr: ir.Value, a: ir.Value) -> None:
    builder.store(_vmax(builder, a, builder.load(ptr)), ptr)


_MAX_LANES = 32  # 4 <8 x float> accumulators: vmaxps latency hidden


@intrinsic
def range_max(typingctx, x, lo, hi):
    """max(x[lo:hi]) for a C-contiguous float32 or float64 array, -inf when empty (NaN
    ignored).

    LLVM keeps a float maximum loop scalar (vmaxss) under any flags numba sets: 31 us per
    50k-wide row of float32 logits, numpy's 8; here 32 lanes at a time, 3 us."""
    if not (isinstance(x, types.Array) and x.dtype in (types.float32, types.float64) and x.layout == "C"
            and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        lo_ = context.cast(builder, args[1], sig.args[1], types.int64)
        hi_ = context.cast(builder, args[2], sig.args[2], types.int64)
        base = elem_ptr(context, builder, sig.args[0], args[0], lo_)
        n = builder.sub(hi_, lo_)
        elem = context.get_value_type(sig.args[0].dtype)
        ninf = ir.Constant(elem, float("-inf"))
        accs = [cgutils.alloca_once_value(builder, splat(builder, ninf, 8)) for _ in range(_MAX_LANES // 8)]
        blocks = builder.sdiv(n, ir.Constant(I64, _MAX_LANES))
        with cgutils.for_range(builder, blocks) as loop:
            at = builder.gep(base, [builder.mul(loop.index, ir.Constant(I64, _MAX_LANES))])
            for j, acc in enumerate(accs):
                ptr = builder.bitcast(builder.gep(at, [ir.Constant(I64, 8 * j)]), vec(elem, 8).as_pointer())
                _keep_max(builder, acc, builder.load(ptr, align=sig.args[0].dtype.bitwidth // 8))
        v = builder.load(accs[0])
        for acc in accs[1:]:
            v = _vmax(builder, builder.load(acc), v)
        best = cgutils.alloca_once_value(builder, ninf)
        for lane in range(8):
            _keep_max(builder, best, builder.extract_element(v, ir.Constant(I32, lane)))
        done = builder.mul(blocks, ir.Constant(I64, _MAX_LANES))
        with cgutils.for_range(builder, builder.sub(n, done)) as loop:
            _keep_max(builder, best, builder.load(builder.gep(base, [builder.add(done, loop.index)])))
        return builder.load(best)

    return x.dtype(x, lo, hi), codegen


def hadd(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """vhaddps on <8 x float>: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7]."""
    ev = ir.Constant(vec(I32, 8), [0, 2, 8, 10, 4, 6, 12, 14])
    od = ir.Constant(vec(I32, 8), [1, 3, 9, 11, 5, 7, 13, 15])
    return builder.fadd(builder.shuffle_vector(a, b, ev), builder.shuffle_vector(a, b, od))


def fma8(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    """a*b + c on <8 x float>, one rounding (llvm.fma)."""
    f = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8F, [V8F] * 3), "llvm.fma.v8f32")
    return builder.call(f, [a, b, c])


def fma1(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    """a*b + c on floats, one rounding (llvm.fma)."""
    f = cgutils.get_or_insert_function(builder.module, ir.FunctionType(F32, [F32] * 3), "llvm.fma.f32")
    return builder.call(f, [a, b, c])


def sign_split(builder: ir.IRBuilder, q: ir.Value, signed: bool):
    """<32 x i8> weights -> (|q|, q as the sign source, or None for unsigned q): vpmaddubsw
    takes unsigned × signed bytes, so a signed weight enters as |w| times x with w's sign
    (ggml's mul_sum_i8_pairs). Split once per block when several activations share it."""
    if not signed:
        return q, None
    absb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V32B, [V32B, I1]), "llvm.abs.v32i8")
    return builder.call(absb, [q, ir.Constant(I1, 0)]), q


def byte_dot(builder: ir.IRBuilder, qabs: ir.Value, sign, y: ir.Value) -> ir.Value:
    """The 32 products of a block's weights (`sign_split`'s |q| and sign source) and int8
    activations y (<32 x i8>) summed exactly into <8 x i32>, lane m = products 4m..4m+3
    (vpsignb gives y the weights' signs — y·0 where a weight is 0, whose product is 0
    anyway — then vpmaddubsw, then vpmaddwd by ones, or VNNI's vpdpbusd: one instruction
    for the signs where compare + negate + blend took three)."""
    mod = builder.module
    if sign is not None:
        psign = cgutils.get_or_insert_function(mod, ir.FunctionType(V32B, [V32B, V32B]), "llvm.x86.avx2.psign.b")
        y = builder.call(psign, [y, sign])
    if HAS_VNNI:
        dpbusd = cgutils.get_or_insert_function(mod, ir.FunctionType(V8I, [V8I] * 3), "llvm.x86.avx512.vpdpbusd.256")
        return builder.call(dpbusd, [ir.Constant(V8I, [0] * 8), builder.bitcast(qabs, V8I), builder.bitcast(y, V8I)])
    maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(V16W, [V32B, V32B]), "llvm.x86.avx2.pmadd.ub.sw")
    maddwd = cgutils.get_or_insert_function(mod, ir.FunctionType(V8I, [V16W, V16W]), "llvm.x86.avx2.pmadd.wd")
    return builder.call(maddwd, [builder.call(maddubs, [qabs, y]), ir.Constant(V16W, [1] * 16)])


def wide_sign_split(builder: ir.IRBuilder, q: ir.Value, signed: bool):
    """`sign_split` for two blocks' <64 x i8> weights: (|q|, q < 0 as <64 x i1>, or None
    for unsigned q). AVX-512 has no 512-bit vpsignb: the activations take the weights'
    signs by a masked negation instead (y where q = 0 is kept, its product 0 anyway)."""
    if not signed:
        return q, None
    absb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V64B, [V64B, I1]), "llvm.abs.v64i8")
    return builder.call(absb, [q, ir.Constant(I1, 0)]), builder.icmp_signed("<", q, ir.Constant(V64B, [0] * 64))


def wide_byte_dot(builder: ir.IRBuilder, qabs: ir.Value, neg, y: ir.Value) -> ir.Value:
    """`byte_dot` of two blocks at once (AVX-512 VNNI): <64 x i8> |q| (`wide_sign_split`)
    and activations y -> <16 x i32>, lanes 0-7 the first block's, 8-15 the second's."""
    if neg is not None:
        y = builder.select(neg, builder.sub(ir.Constant(V64B, [0] * 64), y), y)
    dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V16I, [V16I] * 3),
                                            "llvm.x86.avx512.vpdpbusd.512")
    return builder.call(dpbusd, [ir.Constant(V16I, [0] * 16), builder.bitcast(qabs, V16I), builder.bitcast(y, V16I)])


def load_v32b(builder: ir.IRBuilder, base: ir.Value, idx: ir.Value) -> ir.Value:
    """Unaligned <32 x i8> at element idx of the int8 pointer base."""
    return builder.load(builder.bitcast(builder.gep(base, [idx]), V32B.as_pointer()), align=1)
