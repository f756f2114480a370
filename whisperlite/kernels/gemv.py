"""Fused dequantize-and-dot kernels for a few rows of activations (token-by-token decoding).

Decoding is memory-bound: each weight byte is read once per token, so the win is reading
2-7x fewer bytes than float32 while keeping the decode arithmetic under the memory time.

Every kernel splits the weight rows into a few ranges (`prange` over `_PARTS` ranges, each
allocating its scratch once). Per weight row:
- n = 1 (greedy): one fused loop decodes each block in registers and multiply-adds it
  into an 8-lane accumulator (`_dot_q*`), with ggml's structure: per block, the 32
  products q*x summed into 8 lanes (exact integers in ggml mode, every partial < 2^24),
  then scaled once by d_w*d_x; the "_0" offsets (-8, -16) come off per block as
  d_w*d_x*offset*xs and the "_1" types add m*xs, as in ggml.
- n > 1 (beam search): the row is decoded once into a float32 scratch row `buf` (k floats,
  L1-resident), buf = d*(q - offset) (exact in float32), and dotted with all n activation
  rows, pre-scaled per block (x*xd: exact for 8-bit integers times a float16), four rows
  per pass over buf; each term is then the exact d_w*d_x*q_w*q_x rounded once.

The decoding is explicit SIMD: numba intrinsics emitting LLVM vector IR (Q4: 16 bytes
converted to float once and split as hi = floor(b/16), lo = b - 16*hi; Q5: nibbles and
the 32 fifth bits assembled as <32 x i8>, each qh byte broadcast to its 8 lanes and
mask-compared, then widened once), because LLVM does not vectorize the same code written
per weight in numba (its SLP vectorizer cannot reorder the stores to `buf` around the
loads from `w`, and numba promotes small integers to int64, whose conversion to float
has no AVX2 instruction). float16 scales and F16 weights convert with the hardware
instruction (`fpext half`: F16C's vcvtph2ps, vectorized in loops) where the CPU has it,
elsewhere with branch-free bit arithmetic.

One signature for every quantized kernel, shared with ggml mode (see actquant.py):
  x (n, k) float32, xd (n, k/32) per-block scale of x, xs (n, k/32) per-block sum of x,
  w (d, bytes) uint8 blocks -> out (n, d) float32 = x·W.T scaled per block by xd.
Float activations pass xd = 1 and xs = block sums; ggml mode passes its Q8 integers as
floats with their scales and sums (for the "_1" types xs is ggml's float16 s = d*sum(q),
used as ggml uses it).
"""
from __future__ import annotations

import llvmlite.binding as _llvm
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels.actquant import _quantize_seq
from whisperlite.kernels.quant import QK

# Reassociation (to vectorize the sums) and FMA contraction, but not the no-NaN/no-inf
# assumptions, so a stray inf in a weight still reads as inf.
_FAST = dict(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, cache=True)
_SERIAL = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, cache=True)

# F16C (vcvtph2ps): LLVM lowers `fpext half` to it; without it LLVM would call a runtime
# helper numba does not link, so those CPUs take the bit-arithmetic conversion.
_HAS_F16C = "+f16c" in _llvm.get_host_cpu_features().flatten().split(",")


@numba.njit(parallel=True, cache=True)
def block_sums(x: np.ndarray) -> np.ndarray:
    """Sum of each 32-value block: x (n, k) float32 -> (n, k // 32) float32."""
    n, k = x.shape
    out = np.empty((n, k // QK), np.float32)
    for t in prange(n):
        for b in range(k // QK):
            s = np.float32(0.0)
            for j in range(QK):
                s += x[t, b * QK + j]
            out[t, b] = s
    return out


# ---------------------------------------------------------------- LLVM IR helpers

_I8, _I16, _I32, _I64, _F32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64), ir.FloatType()


def _vec(t, n):
    return ir.VectorType(t, n)


def _splat(builder, s, n):
    v = builder.insert_element(ir.Constant(_vec(s.type, n), ir.Undefined), s, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, ir.Constant(_vec(s.type, n), ir.Undefined), ir.Constant(_vec(_I32, n), [0] * n))


def _ir_f16_to_f32(builder, h):
    """i16 float16 bits -> float: `fpext half` (F16C), else the branch-free bit arithmetic:
    the 15 exponent and mantissa bits shifted into float32 position and scaled by 2^112
    rebias normals and subnormals exactly; exponent 31 (inf/nan) is patched by selects."""
    if _HAS_F16C:
        return builder.fpext(builder.bitcast(h, ir.HalfType()), _F32)
    h32 = builder.zext(h, _I32)
    em = builder.and_(h32, ir.Constant(_I32, 0x7FFF))
    mag = builder.fmul(builder.bitcast(builder.shl(em, ir.Constant(_I32, 13)), _F32),
                       ir.Constant(_F32, 5.192296858534828e33))
    special = builder.select(builder.icmp_unsigned("==", em, ir.Constant(_I32, 0x7C00)),
                             ir.Constant(_F32, float("inf")), ir.Constant(_F32, float("nan")))
    mag = builder.select(builder.icmp_unsigned("<", em, ir.Constant(_I32, 0x7C00)), mag, special)
    sign = builder.shl(builder.and_(h32, ir.Constant(_I32, 0x8000)), ir.Constant(_I32, 16))
    return builder.bitcast(builder.or_(builder.bitcast(mag, _I32), sign), _F32)


@intrinsic
def _f16_bits_to_f32(typingctx, h):
    """float16 bits (an integer; its low 16 bits) -> float32; vectorizes in loops (F16C)."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        v = builder.trunc(v, _I16) if v.type.width > 16 else builder.zext(v, _I16) if v.type.width < 16 else v
        return _ir_f16_to_f32(builder, v)

    return types.float32(h), codegen


def _elem_ptr(context, builder, aryty, ary, idx):
    """i8* / float* to ary[idx] of a contiguous array."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [idx])


def _load(builder, ptr, offset, ty):
    """Unaligned load of a ty at byte `offset` (an int or i64 value) from the i8* ptr."""
    off = ir.Constant(_I64, offset) if isinstance(offset, int) else offset
    return builder.load(builder.bitcast(builder.gep(ptr, [off]), ty.as_pointer()), align=1)


# ggml block layouts: bytes per block, offset of m (the "_1" types), of qh (Q5), of qs.
_LAYOUT = {
    "q8_0": (34, None, None, 2),
    "q4_0": (18, None, None, 2),
    "q4_1": (20, 2, None, 4),
    "q5_0": (22, None, 2, 6),
    "q5_1": (24, 2, 4, 8),
}


def _emit_block(builder, kind, blk):
    """One ggml block at i8* blk -> (<32 x float> q, exact small integers without the "_0"
    types' offset, the float scale d, the float m of the "_1" types or None).

    Q4 bytes are converted to float once and split in float (hi = floor(b/16), lo = b -
    16*hi, all exact): fewer instructions than widening 32 nibbles. Q5 nibbles and fifth
    bits are assembled as <32 x i8> (each qh byte broadcast to its 8 lanes, a mask compare)
    and widened once."""
    size, moff, hoff, qoff = _LAYOUT[kind]
    d = _ir_f16_to_f32(builder, _load(builder, blk, 0, _I16))
    m = None if moff is None else _ir_f16_to_f32(builder, _load(builder, blk, moff, _I16))
    if kind == "q8_0":
        return builder.sitofp(_load(builder, blk, qoff, _vec(_I8, 32)), _vec(_F32, 32)), d, m
    if hoff is None:
        f16v = _vec(_F32, 16)
        byte = builder.uitofp(_load(builder, blk, qoff, _vec(_I8, 16)), f16v)
        floor = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f16v, [f16v]), "llvm.floor.v16f32")
        hi = builder.call(floor, [builder.fmul(byte, ir.Constant(f16v, [0.0625] * 16))])
        lo = builder.fsub(byte, builder.fmul(hi, ir.Constant(f16v, [16.0] * 16)))
        return builder.shuffle_vector(lo, hi, ir.Constant(_vec(_I32, 32), list(range(32)))), d, m
    qs = _load(builder, blk, qoff, _vec(_I8, 16))
    lo = builder.and_(qs, ir.Constant(_vec(_I8, 16), [15] * 16))
    hi = builder.lshr(qs, ir.Constant(_vec(_I8, 16), [4] * 16))
    q = builder.shuffle_vector(lo, hi, ir.Constant(_vec(_I32, 32), list(range(32))))
    qh = _load(builder, blk, hoff, _vec(_I8, 4))
    b32 = builder.shuffle_vector(qh, qh, ir.Constant(_vec(_I32, 32), [j // 8 for j in range(32)]))
    bit = builder.and_(b32, ir.Constant(_vec(_I8, 32), [1 << (j % 8) for j in range(32)]))
    set_ = builder.icmp_unsigned("!=", bit, ir.Constant(_vec(_I8, 32), [0] * 32))
    q = builder.or_(q, builder.select(set_, ir.Constant(_vec(_I8, 32), [16] * 32),
                                      ir.Constant(_vec(_I8, 32), [0] * 32)))
    return builder.uitofp(q, _vec(_F32, 32)), d, m


_OFFSET = {"q4_0": 8.0, "q5_0": 16.0}  # the "_0" types' w = d*(q - offset)


def _hsum(builder, v):
    """Horizontal sum of a float vector (a shuffle tree)."""
    n = v.type.count
    while n > 1:
        n //= 2
        a = builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, n), list(range(n))))
        b = builder.shuffle_vector(v, v, ir.Constant(_vec(_I32, n), list(range(n, 2 * n))))
        v = builder.fadd(a, b)
    return builder.extract_element(v, ir.Constant(_I32, 0))


def _hadd(builder, a, b):
    """vhaddps on <8 x float>: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7]."""
    ev = ir.Constant(_vec(_I32, 8), [0, 2, 8, 10, 4, 6, 12, 14])
    od = ir.Constant(_vec(_I32, 8), [1, 3, 9, 11, 5, 7, 13, 15])
    return builder.fadd(builder.shuffle_vector(a, b, ev), builder.shuffle_vector(a, b, od))


def _row_dot(kind):
    """Intrinsic f(row, nb, x, xd, xs, t) -> row · x[t] with x[t]'s block scales xd[t], in
    ggml's order (ggml_vec_dot_*_q8_* on AVX2/AVX-512): per block, the 32 products q*x,
    lane m of 8 holding the sum of products 4m..4m+3 (exact integers when x holds ggml's Q8
    integers), scaled by d*xd once: acc = fma(lanes, d*xd, acc); the row is hsum_float_8
    of the lanes. The "_0" offsets (-8, -16) come off each weight before the products, as
    ggml does; the "_1" types add summs = fma(m, xs[t, b], summs) after the lane sum."""
    size = _LAYOUT[kind][0]
    v8, v32 = _vec(_F32, 8), _vec(_F32, 32)
    unperm = ir.Constant(_vec(_I32, 8), [0, 4, 1, 5, 2, 6, 3, 7])

    @intrinsic
    def dot(typingctx, row, nb, x, xd, xs, t):
        def codegen(context, builder, sig, args):
            rowv, nbv, xv, xdv, xsv, tv = args
            k = builder.mul(nbv, ir.Constant(_I64, QK))
            base = _elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(_I64, 0))
            xbase = _elem_ptr(context, builder, sig.args[2], xv, builder.mul(tv, k))
            xdbase = _elem_ptr(context, builder, sig.args[3], xdv, builder.mul(tv, nbv))
            xsbase = _elem_ptr(context, builder, sig.args[4], xsv, builder.mul(tv, nbv))
            fma8 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8] * 3), "llvm.fma.v8f32")
            fma1 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32] * 3), "llvm.fma.f32")
            zero8 = ir.Constant(v8, [0.0] * 8)
            fzero = ir.Constant(_F32, 0.0)
            entry = builder.block
            loop = builder.append_basic_block("qdot_loop")
            done = builder.append_basic_block("qdot_done")
            builder.cbranch(builder.icmp_signed(">", nbv, ir.Constant(nbv.type, 0)), loop, done)
            builder.position_at_end(loop)
            b = builder.phi(_I64)
            acc = builder.phi(v8)
            off = builder.phi(_F32)
            q, d, m = _emit_block(builder, kind, builder.gep(base, [builder.mul(b, ir.Constant(_I64, size))]))
            if kind in _OFFSET:  # exact: small integers
                q = builder.fsub(q, ir.Constant(q.type, [_OFFSET[kind]] * 32))
            xb = builder.load(builder.bitcast(builder.gep(xbase, [builder.mul(b, ir.Constant(_I64, QK))]),
                                              v32.as_pointer()), align=4)
            p = builder.fmul(q, xb)
            # group sums of 4 as horizontal adds within 128-bit halves (vhaddps): lanes come
            # out as groups [0, 2, 4, 6, 1, 3, 5, 7], put back in order after the loop.
            pq = [builder.shuffle_vector(p, p, ir.Constant(_vec(_I32, 8), list(range(8 * i, 8 * i + 8))))
                  for i in range(4)]
            h1 = _hadd(builder, pq[0], pq[1])
            h2 = _hadd(builder, pq[2], pq[3])
            part = _hadd(builder, h1, h2)
            dd = builder.fmul(d, builder.load(builder.gep(xdbase, [b])))
            acc2 = builder.call(fma8, [part, _splat(builder, dd, 8), acc])
            off2 = off
            if m is not None:
                off2 = builder.call(fma1, [m, builder.load(builder.gep(xsbase, [b])), off])
            b2 = builder.add(b, ir.Constant(_I64, 1))
            b.add_incoming(ir.Constant(_I64, 0), entry)
            b.add_incoming(b2, loop)
            acc.add_incoming(zero8, entry)
            acc.add_incoming(acc2, loop)
            off.add_incoming(fzero, entry)
            off.add_incoming(off2, loop)
            builder.cbranch(builder.icmp_signed("<", b2, nbv), loop, done)
            builder.position_at_end(done)
            res = builder.phi(v8)
            res.add_incoming(zero8, entry)
            res.add_incoming(acc2, loop)
            offr = builder.phi(_F32)
            offr.add_incoming(fzero, entry)
            offr.add_incoming(off2, loop)
            total = _hsum(builder, builder.shuffle_vector(res, res, unperm))
            if m is not None:
                total = builder.fadd(total, offr)
            return total

        return types.float32(row, nb, x, xd, xs, t), codegen

    return dot


_dot = {kind: _row_dot(kind) for kind in _LAYOUT}
_dot_q8_0, _dot_q4_0, _dot_q4_1, _dot_q5_0, _dot_q5_1 = (_dot[k] for k in _LAYOUT)


# ---------------------------------------------------------------- dots and scaffolding


_PARTS = 16  # row ranges per call (numba splits them evenly over its threads)


@numba.njit(inline="always", cache=True)
def _parts(rows):
    """How many row ranges to split `rows` into: scratch is allocated once per range, so
    few (numba.get_num_threads() would make the kernels uncacheable: a dynamic global)."""
    return max(1, min(_PARTS, rows // 16))


@numba.njit(inline="always", cache=True)
def _dots(buf, xp, out, r):
    """out[t, r] = buf · xp[t] for every activation row t, up to 4 rows per pass over buf
    (one load of buf feeds 4 multiply-adds; 4 reductions in one loop vectorize)."""
    n, k = xp.shape
    t = 0
    while t + 4 <= n:
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for j in range(k):
            v = buf[j]
            a0 += v * xp[t, j]
            a1 += v * xp[t + 1, j]
            a2 += v * xp[t + 2, j]
            a3 += v * xp[t + 3, j]
        out[t, r] = a0
        out[t + 1, r] = a1
        out[t + 2, r] = a2
        out[t + 3, r] = a3
        t += 4
    if t + 2 <= n:
        a0 = a1 = np.float32(0.0)
        for j in range(k):
            v = buf[j]
            a0 += v * xp[t, j]
            a1 += v * xp[t + 1, j]
        out[t, r] = a0
        out[t + 1, r] = a1
        t += 2
    if t < n:
        a0 = np.float32(0.0)
        for j in range(k):
            a0 += buf[j] * xp[t, j]
        out[t, r] = a0


@numba.njit(**_FAST)
def gemv_f16(x, w, out):
    """x (n, k) float32 @ w (d, k).T, w as float16 bits (uint16) -> out (n, d) float32.

    One row of x: convert-and-dot in one loop. More rows: each weight row is converted
    once into a float32 scratch row, then dotted with all n activation rows.
    """
    n, k = x.shape
    rows = w.shape[0]
    parts = _parts(rows)
    for p in prange(parts):
        buf = np.empty(k, np.float32)
        for r in range(rows * p // parts, rows * (p + 1) // parts):
            if n == 1:
                acc = np.float32(0.0)
                for j in range(k):
                    acc += _f16_bits_to_f32(w[r, j]) * x[0, j]
                out[0, r] = acc
            else:
                for j in range(k):
                    buf[j] = _f16_bits_to_f32(w[r, j])
                _dots(buf, x, out, r)


@numba.njit(**_FAST)
def gemv_f32(x, w, out):
    """x (n, k) float32 @ w (d, k).T float32 -> out (n, d): few activation rows.

    BLAS threads collapse on these decode-time shapes on a busy 2-core machine (measured
    7-12 ms instead of 0.2 ms for 1536x384 at 2 threads); numba's pool does not.
    """
    rows = w.shape[0]
    parts = _parts(rows)
    for p in prange(parts):
        for r in range(rows * p // parts, rows * (p + 1) // parts):
            _dots(w[r], x, out, r)


# Below this many weight bytes (times activation rows) a product runs on the calling
# thread: waking numba's pool costs more than a 576x576 Q4_1 product takes (207 KB).
PARALLEL_MIN_BYTES = 1 << 18


@numba.njit(inline="always", cache=True)
def _dot_kind(kind, row, nb, x, xd, xs, t):
    """`_row_dot` of the block type with code `kind` (I8_KIND's codes, _LAYOUT's order)."""
    if kind == 0:
        return _dot_q8_0(row, nb, x, xd, xs, t)
    if kind == 1:
        return _dot_q4_0(row, nb, x, xd, xs, t)
    if kind == 2:
        return _dot_q4_1(row, nb, x, xd, xs, t)
    if kind == 3:
        return _dot_q5_0(row, nb, x, xd, xs, t)
    return _dot_q5_1(row, nb, x, xd, xs, t)


def _gemv_block_body(kind, x, xd, xs, w, out):
    """x (n, k) @ block-type w (d, bytes).T -> out (n, d) for the type coded `kind`; every
    activation row through the fused row dot (ggml's order, so beam rows equal single rows)."""
    n, k = x.shape
    rows, nb = w.shape[0], k // QK
    parts = _parts(rows)
    for p in prange(parts):
        for r in range(rows * p // parts, rows * (p + 1) // parts):
            row = w[r]
            for t in range(n):
                out[t, r] = _dot_kind(kind, row, nb, x, xd, xs, t)


_gemv_block_par = numba.njit(**_FAST)(_gemv_block_body)
_gemv_block_seq = numba.njit(nogil=True, **_SERIAL)(_gemv_block_body)


def _gemv_block(kind: int, x: np.ndarray, xd: np.ndarray, xs: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The serial build below PARALLEL_MIN_BYTES of weights per call, else parallel."""
    (_gemv_block_par if w.size * x.shape[0] >= PARALLEL_MIN_BYTES else _gemv_block_seq)(kind, x, xd, xs, w, out)
    return out


def gemv_q8_0(x, xd, xs, w, out):
    """x (n, k) @ Q8_0 w (d, k/32*34).T -> out (n, d), w = d*q."""
    return _gemv_block(0, x, xd, xs, w, out)


def gemv_q4_0(x, xd, xs, w, out):
    """x (n, k) @ Q4_0 w (d, k/32*18).T -> out (n, d), w = d*(q-8)."""
    return _gemv_block(1, x, xd, xs, w, out)


def gemv_q4_1(x, xd, xs, w, out):
    """x (n, k) @ Q4_1 w (d, k/32*20).T -> out (n, d), w = d*q + m."""
    return _gemv_block(2, x, xd, xs, w, out)


def gemv_q5_0(x, xd, xs, w, out):
    """x (n, k) @ Q5_0 w (d, k/32*22).T -> out (n, d), w = d*(q-16)."""
    return _gemv_block(3, x, xd, xs, w, out)


def gemv_q5_1(x, xd, xs, w, out):
    """x (n, k) @ Q5_1 w (d, k/32*24).T -> out (n, d), w = d*q + m."""
    return _gemv_block(4, x, xd, xs, w, out)


# ---------------------------------------------------------------- integer dots (ggml mode)

# AVX2's byte multiply-add (vpmaddubsw, then vpmaddwd) takes a whole block's 32 products
# in two instructions, where float activations need the weights widened to 32 floats and
# three rounds of horizontal adds; ggml's own AVX2 dots are these instructions. Without
# AVX2 the float-integer kernels above serve (same results: all sums are exact).
HAS_AVX2 = "+avx2" in _llvm.get_host_cpu_features().flatten().split(",")

_V32B, _V16W, _V8I = _vec(_I8, 32), _vec(_I16, 16), _vec(_I32, 8)


def _emit_block_i8(builder, kind, blk):
    """One ggml block at i8* blk -> (<32 x i8> q, d, m or None, signed): q - offset for
    the "_0" types and Q8_0 (signed), the plain q of the "_1" types (unsigned)."""
    size, moff, hoff, qoff = _LAYOUT[kind]
    d = _ir_f16_to_f32(builder, _load(builder, blk, 0, _I16))
    m = None if moff is None else _ir_f16_to_f32(builder, _load(builder, blk, moff, _I16))
    if kind == "q8_0":
        return _load(builder, blk, qoff, _V32B), d, m, True
    v16 = _vec(_I8, 16)
    qs = _load(builder, blk, qoff, v16)
    lo = builder.and_(qs, ir.Constant(v16, [15] * 16))
    hi = builder.lshr(qs, ir.Constant(v16, [4] * 16))
    q = builder.shuffle_vector(lo, hi, ir.Constant(_vec(_I32, 32), list(range(32))))
    if hoff is not None:
        qh = _load(builder, blk, hoff, _vec(_I8, 4))
        b32 = builder.shuffle_vector(qh, qh, ir.Constant(_vec(_I32, 32), [j // 8 for j in range(32)]))
        bit = builder.and_(b32, ir.Constant(_V32B, [1 << (j % 8) for j in range(32)]))
        set_ = builder.icmp_unsigned("!=", bit, ir.Constant(_V32B, [0] * 32))
        q = builder.or_(q, builder.select(set_, ir.Constant(_V32B, [16] * 32), ir.Constant(_V32B, [0] * 32)))
    if kind in _OFFSET:
        return builder.sub(q, ir.Constant(_V32B, [int(_OFFSET[kind])] * 32)), d, m, True
    return q, d, m, False


def _row_idot(kind):
    """Intrinsic f(row, nb, xq, xd, xs, t) -> row · x[t] for int8 activations xq (n, k)
    (ggml's Q8_0/Q8_1 values), in ggml's AVX2 order: per block the 32 byte products summed
    exactly into 8 int32 lanes (lane m = products 4m..4m+3; signed weights as |w| times x
    with w's sign, as ggml's mul_sum_i8_pairs), converted and scaled once by d*xd:
    acc = fma(lanes, d*xd, acc); the row is hsum_float_8(acc), plus, for the "_1" types,
    summs = fma(m, xs[t, b], summs). Equal bit for bit to `_row_dot` on the same values."""
    size = _LAYOUT[kind][0]
    v8 = _vec(_F32, 8)

    @intrinsic
    def dot(typingctx, row, nb, xq, xd, xs, t):
        def codegen(context, builder, sig, args):
            rowv, nbv, xqv, xdv, xsv, tv = args
            base = _elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(_I64, 0))
            qbase = _elem_ptr(context, builder, sig.args[2], xqv, builder.mul(tv, builder.mul(nbv, ir.Constant(_I64, QK))))
            xdbase = _elem_ptr(context, builder, sig.args[3], xdv, builder.mul(tv, nbv))
            xsbase = _elem_ptr(context, builder, sig.args[4], xsv, builder.mul(tv, nbv))
            mod = builder.module
            fma8 = cgutils.get_or_insert_function(mod, ir.FunctionType(v8, [v8] * 3), "llvm.fma.v8f32")
            fma1 = cgutils.get_or_insert_function(mod, ir.FunctionType(_F32, [_F32] * 3), "llvm.fma.f32")
            maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(_V16W, [_V32B, _V32B]), "llvm.x86.avx2.pmadd.ub.sw")
            maddwd = cgutils.get_or_insert_function(mod, ir.FunctionType(_V8I, [_V16W, _V16W]), "llvm.x86.avx2.pmadd.wd")
            absb = cgutils.get_or_insert_function(mod, ir.FunctionType(_V32B, [_V32B, ir.IntType(1)]), "llvm.abs.v32i8")
            acc = cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8))
            off = cgutils.alloca_once_value(builder, ir.Constant(_F32, 0.0))
            zero = ir.Constant(_V32B, [0] * 32)
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                q, d, m, signed = _emit_block_i8(builder, kind, builder.gep(base, [builder.mul(b, ir.Constant(_I64, size))]))
                y = builder.load(builder.bitcast(builder.gep(qbase, [builder.mul(b, ir.Constant(_I64, QK))]),
                                                 _V32B.as_pointer()), align=1)
                if signed:  # vpmaddubsw takes unsigned × signed bytes
                    y = builder.select(builder.icmp_signed("<", q, zero), builder.sub(zero, y), y)
                    q = builder.call(absb, [q, ir.Constant(ir.IntType(1), 0)])
                p32 = builder.call(maddwd, [builder.call(maddubs, [q, y]), ir.Constant(_V16W, [1] * 16)])
                scale = builder.fmul(d, builder.load(builder.gep(xdbase, [b])))
                builder.store(builder.call(fma8, [builder.sitofp(p32, v8), _splat(builder, scale, 8),
                                                  builder.load(acc)]), acc)
                if m is not None:
                    builder.store(builder.call(fma1, [m, builder.load(builder.gep(xsbase, [b])), builder.load(off)]), off)
            total = _hsum(builder, builder.load(acc))
            return builder.fadd(total, builder.load(off)) if m is not None else total

        return types.float32(row, nb, xq, xd, xs, t), codegen

    return dot


def _rows_idot(kind, nrows):
    """Intrinsic f(w, r, nb, xq, xd, xs, t, out): out[t, r + i] = `_row_idot` of weight row
    r + i with x[t], for i < nrows, in one pass over the blocks: the rows share each
    activation block's loads and their multiply-add chains overlap (each row's arithmetic
    and order are unchanged, so results are bit-equal to one row at a time)."""
    size = _LAYOUT[kind][0]
    v8 = _vec(_F32, 8)

    @intrinsic
    def dots(typingctx, w, r, nb, xq, xd, xs, t, out):
        def codegen(context, builder, sig, args):
            wv, rv, nbv, xqv, xdv, xsv, tv, outv = args
            warr = context.make_array(sig.args[0])(context, builder, wv)
            rowstride = cgutils.unpack_tuple(builder, warr.strides, 2)[0]
            bases = [builder.gep(warr.data, [builder.mul(builder.add(rv, ir.Constant(_I64, i)), rowstride)])
                     for i in range(nrows)]
            qbase = _elem_ptr(context, builder, sig.args[3], xqv, builder.mul(tv, builder.mul(nbv, ir.Constant(_I64, QK))))
            xdbase = _elem_ptr(context, builder, sig.args[4], xdv, builder.mul(tv, nbv))
            xsbase = _elem_ptr(context, builder, sig.args[5], xsv, builder.mul(tv, nbv))
            mod = builder.module
            fma8 = cgutils.get_or_insert_function(mod, ir.FunctionType(v8, [v8] * 3), "llvm.fma.v8f32")
            fma1 = cgutils.get_or_insert_function(mod, ir.FunctionType(_F32, [_F32] * 3), "llvm.fma.f32")
            maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(_V16W, [_V32B, _V32B]), "llvm.x86.avx2.pmadd.ub.sw")
            maddwd = cgutils.get_or_insert_function(mod, ir.FunctionType(_V8I, [_V16W, _V16W]), "llvm.x86.avx2.pmadd.wd")
            absb = cgutils.get_or_insert_function(mod, ir.FunctionType(_V32B, [_V32B, ir.IntType(1)]), "llvm.abs.v32i8")
            accs = [cgutils.alloca_once_value(builder, ir.Constant(v8, [0.0] * 8)) for _ in range(nrows)]
            offs = [cgutils.alloca_once_value(builder, ir.Constant(_F32, 0.0)) for _ in range(nrows)]
            zero = ir.Constant(_V32B, [0] * 32)
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                y0 = builder.load(builder.bitcast(builder.gep(qbase, [builder.mul(b, ir.Constant(_I64, QK))]),
                                                  _V32B.as_pointer()), align=1)
                xd_b = builder.load(builder.gep(xdbase, [b]))
                xs_b = builder.load(builder.gep(xsbase, [b])) if _LAYOUT[kind][1] is not None else None
                for i in range(nrows):
                    q, d, m, signed = _emit_block_i8(builder, kind, builder.gep(bases[i], [builder.mul(b, ir.Constant(_I64, size))]))
                    y = y0
                    if signed:  # vpmaddubsw takes unsigned × signed bytes
                        y = builder.select(builder.icmp_signed("<", q, zero), builder.sub(zero, y), y)
                        q = builder.call(absb, [q, ir.Constant(ir.IntType(1), 0)])
                    p32 = builder.call(maddwd, [builder.call(maddubs, [q, y]), ir.Constant(_V16W, [1] * 16)])
                    scale = builder.fmul(d, xd_b)
                    builder.store(builder.call(fma8, [builder.sitofp(p32, v8), _splat(builder, scale, 8),
                                                      builder.load(accs[i])]), accs[i])
                    if m is not None:
                        builder.store(builder.call(fma1, [m, xs_b, builder.load(offs[i])]), offs[i])
            oarr = context.make_array(sig.args[7])(context, builder, outv)
            ostr = cgutils.unpack_tuple(builder, oarr.strides, 2)[0]
            orow = builder.bitcast(builder.gep(builder.bitcast(oarr.data, _I8.as_pointer()), [builder.mul(tv, ostr)]),
                                   _F32.as_pointer())
            for i in range(nrows):
                total = _hsum(builder, builder.load(accs[i]))
                if _LAYOUT[kind][1] is not None:
                    total = builder.fadd(total, builder.load(offs[i]))
                builder.store(total, builder.gep(orow, [builder.add(rv, ir.Constant(_I64, i))]))
            return context.get_dummy_value()

        return types.none(w, r, nb, xq, xd, xs, t, out), codegen

    return dots


ROWS_PER_PASS = 4
_idots = {kind: _rows_idot(kind, ROWS_PER_PASS) for kind in _LAYOUT}
_idots_q8_0, _idots_q4_0, _idots_q4_1, _idots_q5_0, _idots_q5_1 = (_idots[k] for k in _LAYOUT)


@numba.njit(inline="always", cache=True)
def _idots_kind(kind, w, r, nb, xq, xd, xs, t, out):
    if kind == 0:
        _idots_q8_0(w, r, nb, xq, xd, xs, t, out)
    elif kind == 1:
        _idots_q4_0(w, r, nb, xq, xd, xs, t, out)
    elif kind == 2:
        _idots_q4_1(w, r, nb, xq, xd, xs, t, out)
    elif kind == 3:
        _idots_q5_0(w, r, nb, xq, xd, xs, t, out)
    else:
        _idots_q5_1(w, r, nb, xq, xd, xs, t, out)


_idot = {kind: _row_idot(kind) for kind in _LAYOUT}
_idot_q8_0, _idot_q4_0, _idot_q4_1, _idot_q5_0, _idot_q5_1 = (_idot[k] for k in _LAYOUT)

# weight type codes of `gemv_i8` and `_gemv_block`, in _LAYOUT's order
I8_KIND = {QType.Q8_0: 0, QType.Q4_0: 1, QType.Q4_1: 2, QType.Q5_0: 3, QType.Q5_1: 4}


@numba.njit(inline="always", cache=True)
def _idot_kind(kind, row, nb, xq, xd, xs, t):
    if kind == 0:
        return _idot_q8_0(row, nb, xq, xd, xs, t)
    if kind == 1:
        return _idot_q4_0(row, nb, xq, xd, xs, t)
    if kind == 2:
        return _idot_q4_1(row, nb, xq, xd, xs, t)
    if kind == 3:
        return _idot_q5_0(row, nb, xq, xd, xs, t)
    return _idot_q5_1(row, nb, xq, xd, xs, t)


def _gemv_i8_body(kind, xq, xd, xs, w, out):
    """xq (n, k) int8 with block scales xd and sums xs @ w (d, bytes).T -> out (n, d), any
    block type by its I8_KIND code."""
    n, k = xq.shape
    rows, nb = w.shape[0], k // QK
    parts = _parts(rows)
    for p in prange(parts):
        r0, r1 = rows * p // parts, rows * (p + 1) // parts
        for t in range(n):
            r = r0
            # Q4_1 only: measured 15-20 % faster; Q8_0 rows (612 bytes) ran 1.8x slower in
            # fours, the four streams defeating the prefetcher.
            while kind == 2 and r + ROWS_PER_PASS <= r1:
                _idots_kind(kind, w, r, nb, xq, xd, xs, t, out)
                r += ROWS_PER_PASS
            for r in range(r, r1):
                out[t, r] = _idot_kind(kind, w[r], nb, xq, xd, xs, t)


_gemv_i8_par = numba.njit(**_FAST)(_gemv_i8_body)
_gemv_i8_seq = numba.njit(nogil=True, **_SERIAL)(_gemv_i8_body)


def gemv_i8(kind: int, xq: np.ndarray, xd: np.ndarray, xs: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """ggml-mode product on int8 activations (AVX2 only: see HAS_AVX2); the serial build
    below PARALLEL_MIN_BYTES of weights per call, else parallel."""
    (_gemv_i8_par if w.size * xq.shape[0] >= PARALLEL_MIN_BYTES else _gemv_i8_seq)(kind, xq, xd, xs, w, out)
    return out


@numba.njit(nogil=True, cache=True)
def _gemv_i8_f32(kind, q8_1, parallel, x, w, out):
    """Quantize x as ggml does, then the product of `gemv_i8`: one dispatch from Python."""
    n, k = x.shape
    xq = np.empty((n, k), np.int8)
    xd = np.empty((n, k // QK), np.float32)
    xs = np.empty((n, k // QK), np.float32)
    _quantize_seq(x, q8_1, xq, xd, xs)
    if parallel:
        _gemv_i8_par(kind, xq, xd, xs, w, out)
    else:
        _gemv_i8_seq(kind, xq, xd, xs, w, out)
    return out


def gemv_i8_f32(kind: int, q8_1: bool, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """x (n, k) float32, C-contiguous, quantized to ggml's Q8_1 (q8_1) or Q8_0 activations,
    @ w.T by `gemv_i8` -> out (n, d); for few rows (the quantizer runs on this thread)."""
    return _gemv_i8_f32(kind, q8_1, w.size * x.shape[0] >= PARALLEL_MIN_BYTES, x, w, out)
