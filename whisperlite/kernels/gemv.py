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

The decoding is explicit SIMD: numba intrinsics emitting LLVM vector IR (llvm_ir.py; Q4: 16 bytes
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

import numba
import numpy as np
from gguf import GGMLQuantizationType as QType
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from whisperlite.kernels.actquant import PARALLEL_MIN
from whisperlite.kernels.llvm_ir import HAS_AVX2  # noqa: F401 (callers choose gemv_i8 by it)
from whisperlite.kernels.llvm_ir import (
    F32, I8, I32, I64, V8F, V32F, byte_dot, elem_ptr, emit_block, emit_block_i8, f16_bits_to_f32, fma1, fma8, hadd,
    hsum, load_v32b, prefetch_row, sign_split, splat, vec)
from whisperlite.kernels.kquant import (
    BATCH_GEMM, BATCH_ROW, BATCH_TILED, TOKENS_PER_PASS, batch_one, batch_tokens, batch_two, idot_q4_k, idot_q5_k,
    idot_q6_k, idots_q4_k, idots_q5_k, idots_q6_k)
from whisperlite.kernels.quant import (
    FIRST_K_KIND, KIND, KIND_Q4_0, KIND_Q4_1, KIND_Q4_K, KIND_Q5_0, KIND_Q5_1, KIND_Q5_K, KIND_Q8_0, QK, QUANT_TYPES,
    quantize_rows_for, quantize_rows_q8_k, quantize_rows_q8_k_4x8, quantize_rows_q8_k_4x8_serial,
    quantize_rows_q8_k_serial)
from whisperlite.kernels.share import shared, share_rows, worth_sharing
from whisperlite.kernels.tensor import QTensor
from whisperlite.kernels.variants import njit_variant

# The block types with ggml's integer dots -> their codes (quant.KIND), which `gemv_i8`
# takes; the 32-weight ones (`LEGACY_KIND`) also have float-activation dots (`_gemv_block`).
# The K-quants' integer dots (kquant.py) are portable: they run without AVX2 too.
I8_KIND = {q: k for q, k in KIND.items() if QUANT_TYPES[q].dot_with is not None}
LEGACY_KIND = {q: k for q, k in I8_KIND.items() if QUANT_TYPES[q].block == QK}
K_KIND = {q: k for q, k in I8_KIND.items() if q not in LEGACY_KIND}

# Reassociation (to vectorize the sums) and FMA contraction, but not the no-NaN/no-inf
# assumptions, so a stray inf in a weight still reads as inf.
_FAST = dict(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, cache=True)
_SERIAL = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, cache=True)


@numba.njit(nogil=True, cache=True)
def block_sums(x: np.ndarray) -> np.ndarray:
    """Sum of each 32-value block: x (n, k) float32 -> (n, k // 32) float32. Serial: its
    callers pass a few rows (matmul's GEMV_MAX_ROWS), and a parallel loop cost ~3 CPU s of
    a first run's compile for microseconds of work."""
    n, k = x.shape
    out = np.empty((n, k // QK), np.float32)
    for t in range(n):
        for b in range(k // QK):
            s = np.float32(0.0)
            for j in range(QK):
                s += x[t, b * QK + j]
            out[t, b] = s
    return out


# ---------------------------------------------------------------- float-integer row dots


def _row_dot(lay):
    """Intrinsic f(row, nb, x, xd, xs, t) for blocks of layout `lay` (quant.QuantTraits) -> row · x[t] with x[t]'s block scales xd[t], in
    ggml's order (ggml_vec_dot_*_q8_* on AVX2/AVX-512): per block, the 32 products q*x,
    lane m of 8 holding the sum of products 4m..4m+3 (exact integers when x holds ggml's Q8
    integers), scaled by d*xd once: acc = fma(lanes, d*xd, acc); the row is hsum_float_8
    of the lanes. The "_0" offsets (-8, -16) come off each weight before the products, as
    ggml does; the "_1" types add summs = fma(m, xs[t, b], summs) after the lane sum."""
    size = lay.size
    unperm = ir.Constant(vec(I32, 8), [0, 4, 1, 5, 2, 6, 3, 7])

    @intrinsic
    def dot(typingctx, row, nb, x, xd, xs, t):
        def codegen(context, builder, sig, args):
            rowv, nbv, xv, xdv, xsv, tv = args
            k = builder.mul(nbv, ir.Constant(I64, QK))
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            xbase = elem_ptr(context, builder, sig.args[2], xv, builder.mul(tv, k))
            xdbase = elem_ptr(context, builder, sig.args[3], xdv, builder.mul(tv, nbv))
            xsbase = elem_ptr(context, builder, sig.args[4], xsv, builder.mul(tv, nbv))
            zero8 = ir.Constant(V8F, [0.0] * 8)
            fzero = ir.Constant(F32, 0.0)
            entry = builder.block
            loop = builder.append_basic_block("qdot_loop")
            done = builder.append_basic_block("qdot_done")
            builder.cbranch(builder.icmp_signed(">", nbv, ir.Constant(nbv.type, 0)), loop, done)
            builder.position_at_end(loop)
            b = builder.phi(I64)
            acc = builder.phi(V8F)
            off = builder.phi(F32)
            q, d, m = emit_block(builder, lay, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
            if lay.zero:  # exact: small integers
                q = builder.fsub(q, ir.Constant(q.type, [float(lay.zero)] * 32))
            xb = builder.load(builder.bitcast(builder.gep(xbase, [builder.mul(b, ir.Constant(I64, QK))]),
                                              V32F.as_pointer()), align=4)
            p = builder.fmul(q, xb)
            # group sums of 4 as horizontal adds within 128-bit halves (vhaddps): lanes come
            # out as groups [0, 2, 4, 6, 1, 3, 5, 7], put back in order after the loop.
            pq = [builder.shuffle_vector(p, p, ir.Constant(vec(I32, 8), list(range(8 * i, 8 * i + 8))))
                  for i in range(4)]
            part = hadd(builder, hadd(builder, pq[0], pq[1]), hadd(builder, pq[2], pq[3]))
            dd = builder.fmul(d, builder.load(builder.gep(xdbase, [b])))
            acc2 = fma8(builder, part, splat(builder, dd, 8), acc)
            off2 = off
            if m is not None:
                off2 = fma1(builder, m, builder.load(builder.gep(xsbase, [b])), off)
            b2 = builder.add(b, ir.Constant(I64, 1))
            b.add_incoming(ir.Constant(I64, 0), entry)
            b.add_incoming(b2, loop)
            acc.add_incoming(zero8, entry)
            acc.add_incoming(acc2, loop)
            off.add_incoming(fzero, entry)
            off.add_incoming(off2, loop)
            builder.cbranch(builder.icmp_signed("<", b2, nbv), loop, done)
            builder.position_at_end(done)
            res = builder.phi(V8F)
            res.add_incoming(zero8, entry)
            res.add_incoming(acc2, loop)
            offr = builder.phi(F32)
            offr.add_incoming(fzero, entry)
            offr.add_incoming(off2, loop)
            total = hsum(builder, builder.shuffle_vector(res, res, unperm))
            if m is not None:
                total = builder.fadd(total, offr)
            return total

        return types.float32(row, nb, x, xd, xs, t), codegen

    return dot


_dot = {kind: _row_dot(QUANT_TYPES[q]) for q, kind in LEGACY_KIND.items()}
_dot_q8_0, _dot_q4_0, _dot_q4_1, _dot_q5_0 = _dot[KIND_Q8_0], _dot[KIND_Q4_0], _dot[KIND_Q4_1], _dot[KIND_Q5_0]
_dot_q5_1 = _dot[KIND_Q5_1]

# ---------------------------------------------------------------- dots and scaffolding


_PARTS = 16  # row ranges per call (numba splits them evenly over its threads)


@numba.njit(inline="always", cache=True)
def _parts(rows):
    """How many row ranges to split `rows` into: scratch is allocated once per range, so
    few (numba.get_num_threads() would make the kernels uncacheable: a dynamic global)."""
    return max(1, min(_PARTS, rows // 16))


@numba.njit(inline="always", cache=True)
def row_dots(buf, xp, out, r):
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
                    acc += f16_bits_to_f32(w[r, j]) * x[0, j]
                out[0, r] = acc
            else:
                for j in range(k):
                    buf[j] = f16_bits_to_f32(w[r, j])
                row_dots(buf, x, out, r)


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
            row_dots(w[r], x, out, r)


@numba.njit(inline="always", cache=True)
def _k_shared_rows(args, out, r0, r1):
    """out[:, r0:r1] of `k_batch` for args (kind, order, m, xq, xd, xs, w): the first m
    activation rows in the batch order, the rest in BATCH_ROW's."""
    kind, order, m, xq, xd, xs, w = args
    _k_rows(kind, order, xq, xd, xs, w, out, 0, m, r0, r1)
    _k_rows(kind, BATCH_ROW, xq, xd, xs, w, out, m, xq.shape[0], r0, r1)


@numba.njit(inline="always", cache=True)
def _i8_rows(args, out, r0, r1):
    """out[:, r0:r1] of `gemv_i8` for args (kind, xq, xd, xs, w)."""
    kind, xq, xd, xs, w = args
    for t in range(xq.shape[0]):
        idot_range(kind, w, r0, r1, xq.shape[1] // QK, xq, xd, xs, t, out)


_k_shared = share_rows(_k_shared_rows, **_SERIAL)
_i8_shared = share_rows(_i8_rows, **_SERIAL)
# Shared products' chunks start at multiples of this many rows (llama.cpp's repacked Q4_K
# gemm takes its rows in eights).
SHARE_ALIGN = 64

# Below this many weight bytes (times activation rows) a product runs on the calling
# thread: waking numba's pool costs more than a 576x576 Q4_1 product takes (207 KB).
PARALLEL_MIN_BYTES = 1 << 18


@numba.njit(inline="always", cache=True)
def _dot_kind(kind, row, nb, x, xd, xs, t):
    """`_row_dot` of the block type with code `kind` (quant.KIND)."""
    if kind == KIND_Q8_0:
        return _dot_q8_0(row, nb, x, xd, xs, t)
    if kind == KIND_Q4_0:
        return _dot_q4_0(row, nb, x, xd, xs, t)
    if kind == KIND_Q4_1:
        return _dot_q4_1(row, nb, x, xd, xs, t)
    if kind == KIND_Q5_0:
        return _dot_q5_0(row, nb, x, xd, xs, t)
    return _dot_q5_1(row, nb, x, xd, xs, t)


def _gemv_block_kernels(kind: int) -> tuple:
    """The parallel and the serial gemv over block-type rows of code `kind`: x (n, k) @ w
    (d, bytes).T -> out (n, d), every activation row through the fused row dot (ggml's order,
    so beam rows equal single rows). One pair per type, compiled on first use with that type's
    dot only: with the type a runtime argument every compile held all five dots, a second of
    a first run's compile per kernel for a model that has one type."""
    def body(x, xd, xs, w, out):
        n, k = x.shape
        rows, nb = w.shape[0], k // QK
        parts = _parts(rows)
        for p in prange(parts):
            for r in range(rows * p // parts, rows * (p + 1) // parts):
                row = w[r]
                for t in range(n):
                    out[t, r] = _dot_kind(kind, row, nb, x, xd, xs, t)

    return njit_variant(body, "par", **_FAST), njit_variant(body, "seq", nogil=True, **_SERIAL)


_GEMV_BLOCK = {kind: _gemv_block_kernels(kind) for kind in LEGACY_KIND.values()}


def _gemv_block(kind: int, x: np.ndarray, xd: np.ndarray, xs: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The serial build below PARALLEL_MIN_BYTES of weights per call, else parallel."""
    parallel, serial = _GEMV_BLOCK[kind]
    (parallel if w.size * x.shape[0] >= PARALLEL_MIN_BYTES else serial)(x, xd, xs, w, out)
    return out


def gemv_q8_0(x, xd, xs, w, out):
    """x (n, k) @ Q8_0 w (d, k/32*34).T -> out (n, d), w = d*q."""
    return _gemv_block(KIND_Q8_0, x, xd, xs, w, out)


def gemv_q4_0(x, xd, xs, w, out):
    """x (n, k) @ Q4_0 w (d, k/32*18).T -> out (n, d), w = d*(q-8)."""
    return _gemv_block(KIND_Q4_0, x, xd, xs, w, out)


def gemv_q4_1(x, xd, xs, w, out):
    """x (n, k) @ Q4_1 w (d, k/32*20).T -> out (n, d), w = d*q + m."""
    return _gemv_block(KIND_Q4_1, x, xd, xs, w, out)


def gemv_q5_0(x, xd, xs, w, out):
    """x (n, k) @ Q5_0 w (d, k/32*22).T -> out (n, d), w = d*(q-16)."""
    return _gemv_block(KIND_Q5_0, x, xd, xs, w, out)


def gemv_q5_1(x, xd, xs, w, out):
    """x (n, k) @ Q5_1 w (d, k/32*24).T -> out (n, d), w = d*q + m."""
    return _gemv_block(KIND_Q5_1, x, xd, xs, w, out)


# ---------------------------------------------------------------- integer dots (ggml mode)

# Without AVX2 (llvm_ir.HAS_AVX2) the float-integer kernels above serve (same results: all
# sums are exact).


def _row_idot(lay):
    """Intrinsic f(row, nb, xq, xd, xs, t) -> row · x[t] for int8 activations xq (n, k)
    (ggml's Q8_0/Q8_1 values), in ggml's AVX2 order: per block the 32 byte products summed
    exactly into 8 int32 lanes (lane m = products 4m..4m+3; signed weights as |w| times x
    with w's sign, as ggml's mul_sum_i8_pairs), converted and scaled once by d*xd:
    acc = fma(lanes, d*xd, acc); the row is hsum_float_8(acc), plus, for the "_1" types,
    summs = fma(m, xs[t, b], summs). Equal bit for bit to `_row_dot` on the same values."""
    size = lay.size

    @intrinsic
    def dot(typingctx, row, nb, xq, xd, xs, t):
        def codegen(context, builder, sig, args):
            rowv, nbv, xqv, xdv, xsv, tv = args
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            qbase = elem_ptr(context, builder, sig.args[2], xqv, builder.mul(tv, builder.mul(nbv, ir.Constant(I64, QK))))
            xdbase = elem_ptr(context, builder, sig.args[3], xdv, builder.mul(tv, nbv))
            xsbase = elem_ptr(context, builder, sig.args[4], xsv, builder.mul(tv, nbv))
            acc = cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8))
            off = cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0))
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                q, d, m, signed = emit_block_i8(builder, lay, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                qabs, sign = sign_split(builder, q, signed)
                p32 = byte_dot(builder, qabs, sign, load_v32b(builder, qbase, builder.mul(b, ir.Constant(I64, QK))))
                scale = builder.fmul(d, builder.load(builder.gep(xdbase, [b])))
                builder.store(fma8(builder, builder.sitofp(p32, V8F), splat(builder, scale, 8), builder.load(acc)), acc)
                if m is not None:
                    builder.store(fma1(builder, m, builder.load(builder.gep(xsbase, [b])), builder.load(off)), off)
            total = hsum(builder, builder.load(acc))
            return builder.fadd(total, builder.load(off)) if m is not None else total

        return types.float32(row, nb, xq, xd, xs, t), codegen

    return dot


def _rows_idot(lay, nrows):
    """Intrinsic f(w, r, nb, xq, xd, xs, t, out): out[t, r + i] = `_row_idot` of weight row
    r + i with x[t], for i < nrows, in one pass over the blocks: the rows share each
    activation block's loads and their multiply-add chains overlap (each row's arithmetic
    and order are unchanged, so results are bit-equal to one row at a time)."""
    size = lay.size

    @intrinsic
    def dots(typingctx, w, r, nb, xq, xd, xs, t, out):
        def codegen(context, builder, sig, args):
            wv, rv, nbv, xqv, xdv, xsv, tv, outv = args
            warr = context.make_array(sig.args[0])(context, builder, wv)
            rowstride = cgutils.unpack_tuple(builder, warr.strides, 2)[0]
            bases = [builder.gep(warr.data, [builder.mul(builder.add(rv, ir.Constant(I64, i)), rowstride)])
                     for i in range(nrows)]
            qbase = elem_ptr(context, builder, sig.args[3], xqv, builder.mul(tv, builder.mul(nbv, ir.Constant(I64, QK))))
            xdbase = elem_ptr(context, builder, sig.args[4], xdv, builder.mul(tv, nbv))
            xsbase = elem_ptr(context, builder, sig.args[5], xsv, builder.mul(tv, nbv))
            accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in range(nrows)]
            offs = [cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0)) for _ in range(nrows)]
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                y = load_v32b(builder, qbase, builder.mul(b, ir.Constant(I64, QK)))
                xd_b = builder.load(builder.gep(xdbase, [b]))
                xs_b = builder.load(builder.gep(xsbase, [b])) if lay.offset("m") is not None else None
                for i in range(nrows):
                    q, d, m, signed = emit_block_i8(builder, lay, builder.gep(bases[i], [builder.mul(b, ir.Constant(I64, size))]))
                    qabs, sign = sign_split(builder, q, signed)
                    p32 = byte_dot(builder, qabs, sign, y)
                    scale = builder.fmul(d, xd_b)
                    builder.store(fma8(builder, builder.sitofp(p32, V8F), splat(builder, scale, 8),
                                       builder.load(accs[i])), accs[i])
                    if m is not None:
                        builder.store(fma1(builder, m, xs_b, builder.load(offs[i])), offs[i])
            oarr = context.make_array(sig.args[7])(context, builder, outv)
            ostr = cgutils.unpack_tuple(builder, oarr.strides, 2)[0]
            orow = builder.bitcast(builder.gep(builder.bitcast(oarr.data, I8.as_pointer()), [builder.mul(tv, ostr)]),
                                   F32.as_pointer())
            for i in range(nrows):
                total = hsum(builder, builder.load(accs[i]))
                if lay.offset("m") is not None:
                    total = builder.fadd(total, builder.load(offs[i]))
                builder.store(total, builder.gep(orow, [builder.add(rv, ir.Constant(I64, i))]))
            return context.get_dummy_value()

        return types.none(w, r, nb, xq, xd, xs, t, out), codegen

    return dots


ROWS_PER_PASS = 4
_idots = {kind: _rows_idot(QUANT_TYPES[q], ROWS_PER_PASS) for q, kind in LEGACY_KIND.items()}
_idots_q8_0, _idots_q4_0, _idots_q4_1 = _idots[KIND_Q8_0], _idots[KIND_Q4_0], _idots[KIND_Q4_1]
_idots_q5_0, _idots_q5_1 = _idots[KIND_Q5_0], _idots[KIND_Q5_1]


@numba.njit(inline="always", cache=True)
def _idots_kind(kind, w, r, nb, xq, xd, xs, t, out):
    if kind == KIND_Q8_0:
        _idots_q8_0(w, r, nb, xq, xd, xs, t, out)
    elif kind == KIND_Q4_0:
        _idots_q4_0(w, r, nb, xq, xd, xs, t, out)
    elif kind == KIND_Q4_1:
        _idots_q4_1(w, r, nb, xq, xd, xs, t, out)
    elif kind == KIND_Q5_0:
        _idots_q5_0(w, r, nb, xq, xd, xs, t, out)
    else:
        _idots_q5_1(w, r, nb, xq, xd, xs, t, out)


_idot = {kind: _row_idot(QUANT_TYPES[q]) for q, kind in LEGACY_KIND.items()}
_idot_q8_0, _idot_q4_0, _idot_q4_1 = _idot[KIND_Q8_0], _idot[KIND_Q4_0], _idot[KIND_Q4_1]
_idot_q5_0, _idot_q5_1 = _idot[KIND_Q5_0], _idot[KIND_Q5_1]


PREFETCH_ROWS = 8  # rows ahead that one-row loops ask the cache for (llvm_ir.prefetch_row)
K_FOURS_MAX_BYTES = 544  # K-quant rows up to this many bytes go four per pass (_k_range)


@numba.njit(inline="always", cache=True)
def idot_rows(kind, w, r0, r1, nb, xq, xd, xs, t, out):
    """out[t, r] = `_row_idot` of weight row r with xq[t] for r0 <= r < r1, `kind` an I8_KIND
    code (quant.KIND): one loop per type, its branch taken once rather than per row (measured ~5 % of a
    one-sequence 51864-row product)."""
    if kind == KIND_Q8_0:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = _idot_q8_0(w[r], nb, xq, xd, xs, t)
    elif kind == KIND_Q4_0:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = _idot_q4_0(w[r], nb, xq, xd, xs, t)
    elif kind == KIND_Q4_1:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = _idot_q4_1(w[r], nb, xq, xd, xs, t)
    elif kind == KIND_Q5_0:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = _idot_q5_0(w[r], nb, xq, xd, xs, t)
    elif kind == KIND_Q5_1:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = _idot_q5_1(w[r], nb, xq, xd, xs, t)
    elif kind == KIND_Q4_K:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = idot_q4_k(w[r], nb, xq, xd, xs, t)
    elif kind == KIND_Q5_K:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = idot_q5_k(w[r], nb, xq, xd, xs, t)
    else:
        for r in range(r0, r1):
            prefetch_row(w, r + PREFETCH_ROWS)
            out[t, r] = idot_q6_k(w[r], nb, xq, xd, xs, t)


@numba.njit(nogil=True, cache=True)
def _k_range(kind, w, r0, r1, nb, xq, xd, xs, t, out):
    """`idot_range` of the K-quants: rows four per pass (kquant.rows_idot_k) up to
    K_FOURS_MAX_BYTES a row (Gemma's 640-wide rows, 360-525 bytes: Q4_K 0.75 of Q8_0's time
    in fours, 0.90 alone), one at a time above (576-1152-byte rows ran 1.1-2x slower in
    fours, the four streams defeating the prefetcher). Its own
    function: inlined with the 32-weight types' loops, it made Q5_0's 1.6x slower."""
    r = r0
    if w.shape[1] <= K_FOURS_MAX_BYTES:
        while r + ROWS_PER_PASS <= r1:
            if kind == KIND_Q4_K:
                idots_q4_k(w, r, nb, xq, xd, xs, t, out)
            elif kind == KIND_Q5_K:
                idots_q5_k(w, r, nb, xq, xd, xs, t, out)
            else:
                idots_q6_k(w, r, nb, xq, xd, xs, t, out)
            r += ROWS_PER_PASS
    idot_rows(kind, w, r, r1, nb, xq, xd, xs, t, out)


@numba.njit(inline="always", cache=True)
def idot_range(kind, w, r0, r1, nb, xq, xd, xs, t, out):
    """`idot_rows`, Q4_1 rows four per pass (`_rows_idot`): measured 15-20 % faster; Q8_0
    rows (612 bytes) ran 1.8x slower in fours, the four streams defeating the prefetcher.
    The fours fetch their rows PREFETCH_ROWS ahead as the one-row loops do (a token's
    Q4_1 products read from memory, not cache). The K-quants: `_k_range`."""
    if kind >= FIRST_K_KIND:
        _k_range(kind, w, r0, r1, nb, xq, xd, xs, t, out)
        return
    r = r0
    while kind == KIND_Q4_1 and r + ROWS_PER_PASS <= r1:
        for i in range(ROWS_PER_PASS):
            prefetch_row(w, r + PREFETCH_ROWS + i)
        _idots_kind(kind, w, r, nb, xq, xd, xs, t, out)
        r += ROWS_PER_PASS
    idot_rows(kind, w, r, r1, nb, xq, xd, xs, t, out)


def _gemv_i8_body(kind, xq, xd, xs, w, out):
    """xq (n, k) int8 with block scales xd and sums xs @ w (d, bytes).T -> out (n, d), any
    block type by its I8_KIND code."""
    rows = w.shape[0]
    parts = _parts(rows)
    for p in prange(parts):
        _i8_rows((kind, xq, xd, xs, w), out, rows * p // parts, rows * (p + 1) // parts)


_gemv_i8_par = njit_variant(_gemv_i8_body, "par", **_FAST)
_gemv_i8_seq = njit_variant(_gemv_i8_body, "seq", nogil=True, **_SERIAL)


def gemv_i8(kind: int, xq: np.ndarray, xd: np.ndarray, xs: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """ggml-mode product on int8 activations (the 32-weight types need AVX2: see HAS_AVX2;
    the K-quants run on any CPU); the serial build below PARALLEL_MIN_BYTES of weights per
    call, else parallel."""
    if worth_sharing(w.size * xq.shape[0]):
        return shared(_i8_shared, out, SHARE_ALIGN, (kind, xq, xd, xs, w))
    (_gemv_i8_par if w.size * xq.shape[0] >= PARALLEL_MIN_BYTES else _gemv_i8_seq)(kind, xq, xd, xs, w, out)
    return out


@numba.njit(nogil=True, cache=True)
def _gemv_i8_f32(kind, parallel, x, w, out):
    """Quantize x as ggml does, then the product of `gemv_i8`: one dispatch from Python."""
    n, k = x.shape
    xq = np.empty((n, k), np.int8)
    xd = np.empty((n, k // QK), np.float32)
    xs = np.empty((n, k // QK), np.float32)
    quantize_rows_for(kind, x, xq, xd, xs)
    if parallel:
        _gemv_i8_par(kind, xq, xd, xs, w, out)
    else:
        _gemv_i8_seq(kind, xq, xd, xs, w, out)
    return out


def gemv_i8_f32(kind: int, x: np.ndarray, w: np.ndarray, out: np.ndarray) -> np.ndarray:
    """x (n, k) float32, C-contiguous, quantized as ggml does for weights of `kind` (Q8_K
    for the K-quants, Q8_1 for the "_1" types, else Q8_0: quant.quantize_rows_for), @ w.T
    by `gemv_i8` -> out (n, d); for few rows (the quantizer runs on this thread)."""
    if worth_sharing(w.size * x.shape[0]):
        n, k = x.shape
        xq, xd, xs = np.empty((n, k), np.int8), np.empty((n, k // QK), np.float32), np.empty((n, k // QK), np.float32)
        quantize_rows_for(kind, x, xq, xd, xs)
        return gemv_i8(kind, xq, xd, xs, w, out)
    return _gemv_i8_f32(kind, w.size * x.shape[0] >= PARALLEL_MIN_BYTES, x, w, out)


@numba.njit(inline="always", cache=True)
def _k_rows(kind, order, xq, xd, xs, w, out, t0, t1, r0, r1):
    """out[t0:t1, r0:r1] of `_k_batch_body` for activation rows t0 .. t1 - 1 in the order
    BATCH_ORDERS[order]: each weight row by TOKENS_PER_PASS activation rows a pass (then
    two, then one), all of its passes while it is in L1."""
    nb = xq.shape[1] // QK
    n_four = t1 - (t1 - t0) % TOKENS_PER_PASS
    for r in range(r0, r1):
        for t in range(t0, n_four, TOKENS_PER_PASS):
            batch_tokens(kind, order, w, r, nb, xq, xd, xs, t, out)
        if t1 - n_four >= 2:
            batch_two(kind, order, w, r, nb, xq, xd, xs, n_four, out)
        if (t1 - n_four) % 2:
            batch_one(kind, order, w, r, nb, xq, xd, xs, t1 - 1, out)


def _k_batch_body(kind, order, xq, xd, xs, w, out):
    """`_gemv_i8_body` of a K-quant in a batch kernel's order (kquant.BATCH_ORDERS[order]),
    `_k_rows` over a few ranges of weight rows."""
    rows = w.shape[0]
    parts = _parts(rows)
    for p in prange(parts):
        _k_rows(kind, order, xq, xd, xs, w, out, 0, xq.shape[0], rows * p // parts, rows * (p + 1) // parts)


_k_batch_par = njit_variant(_k_batch_body, "par", **_FAST)
_k_batch_seq = njit_variant(_k_batch_body, "seq", nogil=True, **_SERIAL)

# llama.cpp's repacked Q4_K kernels take activation rows in groups of this many; its tiled
# K-quant matmul takes batches of at least TILED_MIN_ROWS (ggml-cpu/tiled: "profitable at
# rows >= 8").
GEMM_ROWS = 4
TILED_MIN_ROWS = 8


def batch_kernel(n: int, w: QTensor) -> str | None:
    """Which batch kernel llama.cpp's AVX2 build multiplies n activation rows by the K-quant
    w with: "gemm" (Q4_K repacked, its row count a multiple of 8, n >= 4), "tiled" (other
    K-quants, n >= 8), or None (the one-row kernels)."""
    qtype = QType(w.qtype)
    if qtype not in K_KIND:
        return None
    if qtype == QType.Q4_K and w.shape[0] % 8 == 0:
        return "gemm" if n >= GEMM_ROWS else None
    return "tiled" if n >= TILED_MIN_ROWS else None


def k_batch(x: np.ndarray, w: QTensor, out: np.ndarray) -> np.ndarray:
    """x (n, k) float32 @ w.T -> out (n, d) as llama.cpp's AVX2 build computes a batch
    (`batch_kernel` says which kernel). gemm: the first n - n % 4 rows quantized by
    ggml_quantize_mat_q8_K_4x8 and multiplied by ggml_gemm_q4_K_8x8_q8_K, the rest by
    quantize_row_q8_K and the one-row gemv's order (BATCH_ROW); tiled: all rows by quantize_row_q8_K and the
    tiled kernel's order."""
    x = np.ascontiguousarray(x, np.float32)
    n, k = x.shape
    kind = K_KIND[QType(w.qtype)]
    tiled = batch_kernel(n, w) == "tiled"
    m = n if tiled else n - n % GEMM_ROWS
    xq = np.empty((n, k), np.int8)
    xd = np.empty((n, k // QK), np.float32)
    xs = np.empty((n, k // QK), np.float32)
    big = x.size >= PARALLEL_MIN  # rows quantized in parallel, as actquant does
    rest = 0 if tiled else m  # the first row the one-row quantizer takes
    if not tiled:
        (quantize_rows_q8_k_4x8 if big else quantize_rows_q8_k_4x8_serial)(x[:m], xq[:m], xd[:m], xs[:m])
    (quantize_rows_q8_k if big else quantize_rows_q8_k_serial)(x[rest:], xq[rest:], xd[rest:], xs[rest:])
    if worth_sharing(w.data.size * n):
        return shared(_k_shared, out, SHARE_ALIGN, (kind, BATCH_TILED if tiled else BATCH_GEMM, m, xq, xd, xs, w.data))
    parallel = w.data.size * n >= PARALLEL_MIN_BYTES
    batch = _k_batch_par if parallel else _k_batch_seq
    batch(kind, BATCH_TILED if tiled else BATCH_GEMM, xq[:m], xd[:m], xs[:m], w.data, out[:m])
    if m < n:
        batch(kind, BATCH_ROW, xq[m:], xd[m:], xs[m:], w.data, out[m:])
    return out
