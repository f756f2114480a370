"""Row products of a few sequences on one thread, for any weight kind: the decoder step's
products (models/whisper_step.py), beside gemv.py's whole-matrix kernels.

Every weight matrix is a uint8 view (rows, bytes per row) plus a kind code (quant.KIND), so
one compiled kernel serves float32, float16 and the ggml block types; the block decoders
are llvm_ir.py's (LLVM vector IR, shared with gemv.py). Float16/float32 rows: one fused
convert-and-dot per row for one sequence; for several (beam search) rows are converted in
pairs into L1-resident float32 rows and dotted with every sequence, so a beam of 5 does not
convert the weights 5 times. Block types: with `int8` (the default on AVX2) activations are
quantized per 32 values as ggml's Q8_0 and each block's 32 byte products summed exactly in
integers (vpmaddubsw), each block decoded once for up to 8 sequences; without it, float
dots (the decoded block times x, scaled once per block).

rows_product compiles once per kind (and int8 setting) with that kind's kernels only, and the
decoder step calls it through its address (`rows_kernel`, `call_rows`), so that a model's
first run compiles the products of the kinds it has, once.
"""
from __future__ import annotations

import numba
import numpy as np
from gguf import GGMLQuantizationType as QType
from llvmlite import ir
from numba import literally, types
from numba.core import cgutils, errors
from numba.extending import intrinsic, overload

from whisperlite.kernels.gemv import idot_rows, row_dots
from whisperlite.kernels.llvm_ir import (
    F32, HAS_AVX512_VNNI, I32, I64, V8F, V16I, V32B, V32F, byte_dot, elem_ptr, emit_block, emit_block_i8, f16_bits_to_f32,
    fma1, fma8, hsum, load_v32b, sign_split, splat, vec)
from whisperlite.kernels.ops import to_f32
from whisperlite.kernels.quant import (
    FIRST_BLOCK_KIND, FIRST_K_KIND, KIND, KIND_F16, KIND_F32, KIND_Q4_0, KIND_Q4_1, KIND_Q5_0, KIND_Q8_0, QK,
    QUANT_TYPES)
from whisperlite.kernels.tensor import QTensor, Weight

_SER = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy", nogil=True, cache=True)


def weight_kind(w: Weight) -> tuple[int, np.ndarray] | None:
    """(kind code, uint8 (rows, bytes per row) view) of a weight, or None for a type the
    row kernels here do not take (K-quants: their dots are gemv.idot_rows'; non-contiguous
    arrays)."""
    if isinstance(w, QTensor):
        kind = KIND.get(QType(w.qtype))
        data = w.data
    elif w.dtype == np.float32:
        kind, data = KIND_F32, w
    else:
        return None
    if kind is None or kind >= FIRST_K_KIND or data.ndim != 2 or not data.flags.c_contiguous:
        return None
    return kind, data.view(np.uint8)


@intrinsic
def address(typingctx, addr):
    """An int64 address as a uint8 pointer."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(types.uint8)(addr), codegen


@numba.njit(inline="always", **_SER)
def as_matrix(w):
    """w (rows, bytes) uint8, maybe read-only, as the type of a matrix made from its
    address (`address`): a read-only array is a numba type of its own, and the vocabulary
    projection would compile every row kernel a second time (~20 s of a first run)."""
    return numba.carray(address(w.ctypes.data), w.shape)


# ---------------------------------------------------------------- row decoders


def _dequant_intrinsic(lay):
    """Intrinsic f(row, nb, buf): the nb ggml blocks of `row` -> buf[:32*nb] float32,
    d*(q - zero) for the "_0" types, d*q + m for the "_1" types (as ggml dequantizes), for
    blocks of layout `lay` (quant.QuantTraits)."""
    size = lay.size

    @intrinsic
    def dequant(typingctx, row, nb, buf):
        def codegen(context, builder, sig, args):
            rowv, nbv, bufv = args
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            out = elem_ptr(context, builder, sig.args[2], bufv, ir.Constant(I64, 0))
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                q, d, m = emit_block(builder, lay, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                if lay.zero:
                    q = builder.fsub(q, ir.Constant(V32F, [float(lay.zero)] * 32))
                y = builder.fmul(q, splat(builder, d, 32))
                if m is not None:
                    y = builder.fadd(y, splat(builder, m, 32))
                dst = builder.bitcast(builder.gep(out, [builder.mul(b, ir.Constant(I64, QK))]), V32F.as_pointer())
                builder.store(y, dst, align=4)
            return context.get_dummy_value()

        return types.none(row, nb, buf), codegen

    return dequant


_deq_q8_0, _deq_q4_0, _deq_q4_1, _deq_q5_0, _deq_q5_1 = (
    _dequant_intrinsic(QUANT_TYPES[q]) for q in (QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1))


def _dot_intrinsic(lay):
    """Intrinsic f(row, nb, x, xs) -> row · x for float activations x (k,) with block sums
    xs (k/32,). Per block the 32 products q·x go into 8 lanes by four chained FMAs and are
    scaled by d once; the "_0" offsets come off once per block as d·offset·xs and the "_1"
    mins add m·xs, so no per-weight offset and no in-block horizontal adds (gemv.py's dots
    keep those to reproduce ggml's rounding; float activations need no such order)."""
    size = lay.size

    @intrinsic
    def dot(typingctx, row, nb, x, xs):
        def codegen(context, builder, sig, args):
            rowv, nbv, xv, xsv = args
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            xbase = elem_ptr(context, builder, sig.args[2], xv, ir.Constant(I64, 0))
            xsbase = elem_ptr(context, builder, sig.args[3], xsv, ir.Constant(I64, 0))
            acc = cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8))
            off = cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0))
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                q, d, m = emit_block(builder, lay, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                xp = builder.bitcast(builder.gep(xbase, [builder.mul(b, ir.Constant(I64, QK))]), V8F.as_pointer())
                part = None
                for i in range(4):
                    qi = builder.shuffle_vector(q, q, ir.Constant(vec(I32, 8), list(range(8 * i, 8 * i + 8))))
                    xi = builder.load(builder.gep(xp, [ir.Constant(I64, i)]), align=4)
                    part = builder.fmul(qi, xi) if part is None else fma8(builder, qi, xi, part)
                builder.store(fma8(builder, part, splat(builder, d, 8), builder.load(acc)), acc)
                xsb = builder.load(builder.gep(xsbase, [b]))
                if lay.zero:  # Σ d(q - o)x = d Σ qx - d·o·Σx
                    builder.store(fma1(builder, builder.fmul(d, ir.Constant(F32, -float(lay.zero))), xsb,
                                       builder.load(off)), off)
                elif m is not None:  # Σ (dq + m)x = d Σ qx + m·Σx
                    builder.store(fma1(builder, m, xsb, builder.load(off)), off)
            return builder.fadd(hsum(builder, builder.load(acc)), builder.load(off))

        return types.float32(row, nb, x, xs), codegen

    return dot


_fdot_q8_0, _fdot_q4_0, _fdot_q4_1, _fdot_q5_0, _fdot_q5_1 = (
    _dot_intrinsic(QUANT_TYPES[q]) for q in (QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1))


# ---------------------------------------------------------------- integer dots (several sequences)

# One sequence's integer dots are gemv.py's (`idot_rows`); without AVX2 (llvm_ir.HAS_AVX2)
# the float dots serve.

MAX_SEQS = 8  # sequences per pass of the multi-sequence integer dot (its accumulators)


def _idot_multi_intrinsic(lay):
    """Intrinsic f(row, nb, n, xq, xd, xs, res): res[t] = row · x[t] for the first n ≤ 8
    sequences of xq (·, k) int8, xd, xs (·, k/32), as gemv's `idot_rows` per sequence but
    with each weight block decoded (and split into |w| and sign) once for all of them
    (beam search)."""
    size = lay.size

    @intrinsic
    def dot(typingctx, row, nb, n, xq, xd, xs, res):
        def codegen(context, builder, sig, args):
            rowv, nbv, nv, xqv, xdv, xsv, resv = args
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            qbase = elem_ptr(context, builder, sig.args[3], xqv, ir.Constant(I64, 0))
            xdbase = elem_ptr(context, builder, sig.args[4], xdv, ir.Constant(I64, 0))
            xsbase = elem_ptr(context, builder, sig.args[5], xsv, ir.Constant(I64, 0))
            rbase = elem_ptr(context, builder, sig.args[6], resv, ir.Constant(I64, 0))
            # The sequences are unrolled (constant indices, each under `t < n`), so that LLVM
            # keeps the accumulators in registers across blocks; a loop over t indexed them in
            # stack memory, a load and a store per block and sequence on the critical path.
            accs = cgutils.alloca_once(builder, V8F, size=MAX_SEQS)
            offs = cgutils.alloca_once(builder, F32, size=MAX_SEQS)
            seqs = [ir.Constant(I64, i) for i in range(MAX_SEQS)]
            for t in seqs:
                builder.store(ir.Constant(V8F, [0.0] * 8), builder.gep(accs, [t]))
                builder.store(ir.Constant(F32, 0.0), builder.gep(offs, [t]))
            k = builder.mul(nbv, ir.Constant(I64, QK))
            with cgutils.for_range(builder, nbv) as bl:
                b = bl.index
                q, d, m, signed = emit_block_i8(builder, lay, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                qabs, sign = sign_split(builder, q, signed)
                for t in seqs:
                    with builder.if_then(builder.icmp_signed("<", t, nv), likely=True):
                        y = load_v32b(builder, qbase, builder.add(builder.mul(t, k), builder.mul(b, ir.Constant(I64, QK))))
                        p32 = byte_dot(builder, qabs, sign, y)
                        tb = builder.add(builder.mul(t, nbv), b)
                        scale = builder.fmul(d, builder.load(builder.gep(xdbase, [tb])))
                        ap = builder.gep(accs, [t])
                        builder.store(fma8(builder, builder.sitofp(p32, V8F), splat(builder, scale, 8), builder.load(ap)), ap)
                        if m is not None:
                            op = builder.gep(offs, [t])
                            builder.store(fma1(builder, m, builder.load(builder.gep(xsbase, [tb])), builder.load(op)), op)
            for t in seqs:
                with builder.if_then(builder.icmp_signed("<", t, nv), likely=True):
                    total = builder.fadd(hsum(builder, builder.load(builder.gep(accs, [t]))), builder.load(builder.gep(offs, [t])))
                    builder.store(total, builder.gep(rbase, [t]))
            return context.get_dummy_value()

        return types.none(row, nb, n, xq, xd, xs, res), codegen

    return dot


_imdot_q8_0, _imdot_q4_0, _imdot_q4_1, _imdot_q5_0, _imdot_q5_1 = (
    _idot_multi_intrinsic(QUANT_TYPES[q]) for q in (QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1))


V16F = vec(F32, 16)


def _idot_pair_intrinsic(lay):
    """Intrinsic f(row0, row1, nb, n, xq, xd, xs, res): res[t] = row0 · x[t] and
    res[MAX_SEQS + t] = row1 · x[t] for the first n ≤ 8 sequences, as `_idot_multi_intrinsic`
    per row, the same bits, with the two rows' blocks side by side in 512-bit registers
    (AVX-512 VNNI): each row keeps its own lanes and its own order of operations, and the
    instructions per block and sequence are halved.

    vpdpbusd takes unsigned × signed bytes, and AVX-512 has no byte sign instruction, so
    the activations enter offset to unsigned (y + 128, a flipped top bit) against the signed
    weights and the offset's products come off up front: the accumulator starts at
    -128 · Σ q per lane, so each lane's integer is Σ y·q exactly, as the 256-bit dot's."""
    size = lay.size

    @intrinsic
    def dot(typingctx, row0, row1, nb, n, xq, xd, xs, res):
        def codegen(context, builder, sig, args):
            r0v, r1v, nbv, nv, xqv, xdv, xsv, resv = args
            bases = [elem_ptr(context, builder, sig.args[i], v, ir.Constant(I64, 0)) for i, v in ((0, r0v), (1, r1v))]
            qbase = elem_ptr(context, builder, sig.args[4], xqv, ir.Constant(I64, 0))
            xdbase = elem_ptr(context, builder, sig.args[5], xdv, ir.Constant(I64, 0))
            xsbase = elem_ptr(context, builder, sig.args[6], xsv, ir.Constant(I64, 0))
            rbase = elem_ptr(context, builder, sig.args[7], resv, ir.Constant(I64, 0))
            dpbusd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V16I, [V16I] * 3),
                                                    "llvm.x86.avx512.vpdpbusd.512")
            fma16 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V16F, [V16F] * 3), "llvm.fma.v16f32")
            top = ir.Constant(V32B, [-128] * 32)
            both = ir.Constant(vec(I32, 64), list(range(64)))
            twice = ir.Constant(vec(I32, 64), list(range(32)) * 2)
            halves = [ir.Constant(vec(I32, 8), list(range(8 * h, 8 * h + 8))) for h in (0, 1)]
            # unrolled over the sequences, as in _idot_multi_intrinsic (accumulators in registers)
            accs = cgutils.alloca_once(builder, V16F, size=MAX_SEQS)
            offs = cgutils.alloca_once(builder, F32, size=2 * MAX_SEQS)
            seqs = [ir.Constant(I64, i) for i in range(MAX_SEQS)]
            for t in seqs:
                builder.store(ir.Constant(V16F, [0.0] * 16), builder.gep(accs, [t]))
            for i in range(2 * MAX_SEQS):
                builder.store(ir.Constant(F32, 0.0), builder.gep(offs, [ir.Constant(I64, i)]))
            k = builder.mul(nbv, ir.Constant(I64, QK))
            with cgutils.for_range(builder, nbv) as bl:
                b = bl.index
                blocks = [emit_block_i8(builder, lay, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                          for base in bases]
                (q0, d0, m0, _), (q1, d1, m1, _) = blocks
                w = builder.bitcast(builder.shuffle_vector(q0, q1, both), V16I)
                offset = builder.call(dpbusd, [ir.Constant(V16I, [0] * 16),
                                               builder.bitcast(builder.shuffle_vector(top, top, both), V16I), w])
                start = builder.sub(ir.Constant(V16I, [0] * 16), offset)
                dd = builder.shuffle_vector(splat(builder, d0, 8), splat(builder, d1, 8), ir.Constant(vec(I32, 16), list(range(16))))
                for t in seqs:
                    with builder.if_then(builder.icmp_signed("<", t, nv), likely=True):
                        y = load_v32b(builder, qbase, builder.add(builder.mul(t, k), builder.mul(b, ir.Constant(I64, QK))))
                        yu = builder.xor(y, top)
                        p = builder.call(dpbusd, [start, builder.bitcast(builder.shuffle_vector(yu, yu, twice), V16I), w])
                        tb = builder.add(builder.mul(t, nbv), b)
                        scale = builder.fmul(dd, splat(builder, builder.load(builder.gep(xdbase, [tb])), 16))
                        ap = builder.gep(accs, [t])
                        builder.store(builder.call(fma16, [builder.sitofp(p, V16F), scale, builder.load(ap)]), ap)
                        if m0 is not None:
                            xsb = builder.load(builder.gep(xsbase, [tb]))
                            for h, m in enumerate((m0, m1)):
                                op = builder.gep(offs, [builder.add(t, ir.Constant(I64, h * MAX_SEQS))])
                                builder.store(fma1(builder, m, xsb, builder.load(op)), op)
            for t in seqs:
                with builder.if_then(builder.icmp_signed("<", t, nv), likely=True):
                    acc = builder.load(builder.gep(accs, [t]))
                    for h in (0, 1):
                        at = builder.add(t, ir.Constant(I64, h * MAX_SEQS))
                        half = builder.shuffle_vector(acc, acc, halves[h])
                        total = builder.fadd(hsum(builder, half), builder.load(builder.gep(offs, [at])))
                        builder.store(total, builder.gep(rbase, [at]))
            return context.get_dummy_value()

        return types.none(row0, row1, nb, n, xq, xd, xs, res), codegen

    return dot


_ipdot_q8_0, _ipdot_q4_0, _ipdot_q4_1, _ipdot_q5_0, _ipdot_q5_1 = (
    _idot_pair_intrinsic(QUANT_TYPES[q]) for q in (QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1))


@numba.njit(inline="always", **_SER)
def decode_row(kind, w, w16, w32, r, k, buf):
    """Weight row r -> buf[:k] float32. w (rows, bytes) uint8; w16 / w32 the same matrix
    viewed as uint16 / float32 for the float16 / float32 kinds (made once per matrix by the caller:
    an array `.view()` per row costs ~20 ns, 0.4-0.6 ms over one step's ~17k rows)."""
    nb = k // QK
    if kind == KIND_F32:
        for j in range(k):
            buf[j] = w32[r, j]
    elif kind == KIND_F16:
        for j in range(k):
            buf[j] = f16_bits_to_f32(w16[r, j])
    elif kind == KIND_Q8_0:
        _deq_q8_0(w[r], nb, buf)
    elif kind == KIND_Q4_0:
        _deq_q4_0(w[r], nb, buf)
    elif kind == KIND_Q4_1:
        _deq_q4_1(w[r], nb, buf)
    elif kind == KIND_Q5_0:
        _deq_q5_0(w[r], nb, buf)
    else:
        _deq_q5_1(w[r], nb, buf)


@numba.njit(inline="always", **_SER)
def float_views(kind, w):
    """w (rows, bytes) as uint16 and float32 matrices for the float kinds; empty arrays in
    the unused slot (block-type rows need not be a whole number of either). All are
    C-contiguous: an empty *view* would type as any-layout and de-vectorize the loops."""
    if kind == KIND_F16:
        return w.view(np.uint16), np.empty((0, 0), np.float32)
    if kind == KIND_F32:
        return np.empty((0, 0), np.uint16), w.view(np.float32)
    return np.empty((0, 0), np.uint16), np.empty((0, 0), np.float32)


# ---------------------------------------------------------------- products


@numba.njit(inline="always", **_SER)
def _pair_dots(w0, w1, x, out, r):
    """out[t, r] = w0 · x[t] and out[t, r+1] = w1 · x[t] for every sequence t: two decoded
    weight rows against up to 5 sequences per pass (10 accumulators: 7 loads feed 10
    multiply-adds, where one row at a time needs a load per multiply-add)."""
    n, k = x.shape
    t = 0
    while t + 5 <= n:
        a0 = a1 = a2 = a3 = a4 = c0 = c1 = c2 = c3 = c4 = np.float32(0.0)
        for j in range(k):
            u, v = w0[j], w1[j]
            x0, x1, x2, x3, x4 = x[t, j], x[t + 1, j], x[t + 2, j], x[t + 3, j], x[t + 4, j]
            a0 += u * x0
            a1 += u * x1
            a2 += u * x2
            a3 += u * x3
            a4 += u * x4
            c0 += v * x0
            c1 += v * x1
            c2 += v * x2
            c3 += v * x3
            c4 += v * x4
        out[t, r], out[t + 1, r], out[t + 2, r], out[t + 3, r], out[t + 4, r] = a0, a1, a2, a3, a4
        out[t, r + 1], out[t + 1, r + 1], out[t + 2, r + 1], out[t + 3, r + 1], out[t + 4, r + 1] = c0, c1, c2, c3, c4
        t += 5
    while t + 2 <= n:
        a0 = a1 = c0 = c1 = np.float32(0.0)
        for j in range(k):
            u, v = w0[j], w1[j]
            x0, x1 = x[t, j], x[t + 1, j]
            a0 += u * x0
            a1 += u * x1
            c0 += v * x0
            c1 += v * x1
        out[t, r], out[t + 1, r], out[t, r + 1], out[t + 1, r + 1] = a0, a1, c0, c1
        t += 2
    if t < n:
        a0 = c0 = np.float32(0.0)
        for j in range(k):
            a0 += w0[j] * x[t, j]
            c0 += w1[j] * x[t, j]
        out[t, r], out[t, r + 1] = a0, c0


@numba.njit(inline="always", **_SER)
def _pair_int8(kind, w, r, nb, m, xq, xd, xs, res):
    """Rows r and r+1 -> res[:m] and res[MAX_SEQS : MAX_SEQS+m] (`_idot_pair_intrinsic`)."""
    if kind == KIND_Q8_0:
        _ipdot_q8_0(w[r], w[r + 1], nb, m, xq, xd, xs, res)
    elif kind == KIND_Q4_0:
        _ipdot_q4_0(w[r], w[r + 1], nb, m, xq, xd, xs, res)
    elif kind == KIND_Q4_1:
        _ipdot_q4_1(w[r], w[r + 1], nb, m, xq, xd, xs, res)
    elif kind == KIND_Q5_0:
        _ipdot_q5_0(w[r], w[r + 1], nb, m, xq, xd, xs, res)
    else:
        _ipdot_q5_1(w[r], w[r + 1], nb, m, xq, xd, xs, res)


@numba.njit(**_SER)
def _rows_multi_int8(kind, w, xq, xd, xs, buf, out, r0, r1):
    """Several sequences, block types, int8 activations: each weight block decoded once for
    up to MAX_SEQS sequences' integer dots; with AVX-512 VNNI two rows at a time."""
    n, k = xq.shape
    nb = k // QK
    res = buf[0]
    for t0 in range(0, n, MAX_SEQS):
        m = min(MAX_SEQS, n - t0)
        xq_, xd_, xs_ = xq[t0:], xd[t0:], xs[t0:]
        single = r0
        if HAS_AVX512_VNNI:
            for r in range(r0, r1 - 1, 2):
                _pair_int8(kind, w, r, nb, m, xq_, xd_, xs_, res)
                for t in range(m):
                    out[t0 + t, r] = res[t]
                    out[t0 + t, r + 1] = res[MAX_SEQS + t]
            single = r1 - (r1 - r0) % 2
        for r in range(single, r1):
            if kind == KIND_Q8_0:
                _imdot_q8_0(w[r], nb, m, xq_, xd_, xs_, res)
            elif kind == KIND_Q4_0:
                _imdot_q4_0(w[r], nb, m, xq_, xd_, xs_, res)
            elif kind == KIND_Q4_1:
                _imdot_q4_1(w[r], nb, m, xq_, xd_, xs_, res)
            elif kind == KIND_Q5_0:
                _imdot_q5_0(w[r], nb, m, xq_, xd_, xs_, res)
            else:
                _imdot_q5_1(w[r], nb, m, xq_, xd_, xs_, res)
            for t in range(m):
                out[t0 + t, r] = res[t]


@numba.njit(**_SER)
def _rows_multi_float(kind, w, x, buf, out, r0, r1):
    """Several sequences, float activations: rows decoded in pairs into buf and dotted with
    every sequence."""
    k = x.shape[1]
    w16, w32 = float_views(kind, w)
    r = r0
    while r + 2 <= r1:
        decode_row(kind, w, w16, w32, r, k, buf[0])
        decode_row(kind, w, w16, w32, r + 1, k, buf[1])
        _pair_dots(buf[0], buf[1], x, out, r)
        r += 2
    if r < r1:
        decode_row(kind, w, w16, w32, r, k, buf[0])
        row_dots(buf[0], x, out, r)


@numba.njit(**_SER)
def _rows_float(wv, x, out, r0, r1):
    """One sequence, float rows: wv the matrix as float32, or as uint16 float16 bits (a
    fused convert-and-dot per row, F16C)."""
    k = x.shape[1]
    x0 = x[0]
    for r in range(r0, r1):
        acc = np.float32(0.0)
        for j in range(k):
            acc += to_f32(wv[r, j]) * x0[j]
        out[0, r] = acc


@numba.njit(**_SER)
def _rows_int8_of(kind, w, xq, xd, xs, out, r0, r1):
    """One sequence, block types, int8 activations (gemv's ggml-order integer dots), for the
    one `kind` (a literal) rows_product is compiled for: with the type a runtime value the
    Q8_0 loop compiled ~15 % slower (1.57 vs 1.37 ms for the vocabulary projection)."""
    idot_rows(kind, w, r0, r1, xq.shape[1] // QK, xq, xd, xs, 0, out)


@numba.njit(**_SER)
def _rows_block_float(kind, w, x, xs, out, r0, r1):
    """One sequence, block types, float activations: a fused dequantize-and-dot per row."""
    nb = x.shape[1] // QK
    x0, s0 = x[0], xs[0]
    if kind == KIND_Q8_0:
        for r in range(r0, r1):
            out[0, r] = _fdot_q8_0(w[r], nb, x0, s0)
    elif kind == KIND_Q4_0:
        for r in range(r0, r1):
            out[0, r] = _fdot_q4_0(w[r], nb, x0, s0)
    elif kind == KIND_Q4_1:
        for r in range(r0, r1):
            out[0, r] = _fdot_q4_1(w[r], nb, x0, s0)
    elif kind == KIND_Q5_0:
        for r in range(r0, r1):
            out[0, r] = _fdot_q5_0(w[r], nb, x0, s0)
    else:
        for r in range(r0, r1):
            out[0, r] = _fdot_q5_1(w[r], nb, x0, s0)


def _rows_of(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
    """rows_product's paths for one kind and int8 (literals): see `_rows_of_kind`."""


@overload(_rows_of, prefer_literal=True, jit_options=_SER)
def _rows_of_kind(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
    """The paths of one weight kind and int8 setting, chosen while typing: numba compiles
    every callee of a branch it types, dead or not, so a runtime choice among the kinds'
    kernels compiled the dots of all five block types into every step (~18 of its ~45 CPU
    s). Each path is its own compiled function, specialized on the literal kind: with all
    of them in one body LLVM made the float16 row loop 2x slower (same instructions in the
    loop, measured 1.2 vs 0.6 ms for 17k rows warm)."""
    if not isinstance(kind, types.IntegerLiteral) or not isinstance(int8, types.BooleanLiteral):
        return None
    if kind.literal_value < FIRST_BLOCK_KIND:
        as_float = np.uint16 if kind.literal_value == KIND_F16 else np.float32

        def paths(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
            if x.shape[0] > 1:
                _rows_multi_float(kind, w, x, buf, out, r0, r1)
            else:
                _rows_float(w.view(as_float), x, out, r0, r1)
    elif int8.literal_value:
        def paths(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
            if x.shape[0] > 1:
                _rows_multi_int8(kind, w, xq, xd, xs, buf, out, r0, r1)
            else:
                _rows_int8_of(kind, w, xq, xd, xs, out, r0, r1)
    else:
        def paths(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
            if x.shape[0] > 1:
                _rows_multi_float(kind, w, x, buf, out, r0, r1)
            else:
                _rows_block_float(kind, w, x, xs, out, r0, r1)
    return paths


@numba.njit(**_SER)
def rows_product(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
    """out[t, r] = x[t] · W[r] for rows r0 <= r < r1: x (B, k) float32, W (rows, bytes) uint8
    of `kind`, buf (2, k) scratch, out (B, rows). For block types `prepare` has filled xs
    (B, k/32) with x's block sums and, if int8, xq (B, k) int8 and xd (B, k/32) with x
    quantized per block. Compiled once per kind and int8 (`literally`), with that kind's
    kernels only; the decoder step calls it through its address (`rows_kernel`)."""
    _rows_of(literally(kind), w, x, xq, xd, xs, buf, out, r0, r1, literally(int8))


# The argument types after `kind` that the decoder step passes rows_product (`call_rows`).
_C2 = lambda dtype: types.Array(dtype, 2, "C")  # noqa: E731
ROWS_ARGS = (_C2(types.uint8), _C2(types.float32), _C2(types.int8), _C2(types.float32), _C2(types.float32),
             _C2(types.float32), _C2(types.float32), types.int64, types.int64)


def rows_kernel(kind: int, int8: bool) -> int:
    """The address of rows_product's native function for `kind` and `int8` with the step's
    argument types, compiled now or loaded from numba's cache."""
    sig = (types.literal(kind), *ROWS_ARGS, types.literal(bool(int8)))
    rows_product.compile(sig)
    cres = rows_product.overloads[sig]
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


@intrinsic
def call_rows(typingctx, fn, kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
    """rows_product(kind, w, …, int8) through `fn`, its address from `rows_kernel(kind, int8)`:
    a call, not a link. numba links every compiled callee into its caller's module and
    optimizes and emits the whole again, so the step linking the row kernels paid their
    compile twice; through the address the step's compile holds none of them, and each
    kind's kernel compiles once, only for a model that has the kind."""
    args = (kind, w, x, xq, xd, xs, buf, out, r0, r1, int8)
    if (not isinstance(fn, types.Integer) or not isinstance(kind, types.Integer)
            or not isinstance(int8, types.Boolean) or tuple(map(types.unliteral, args[1:-1])) != ROWS_ARGS):
        raise errors.TypingError(f"call_rows: argument types {args} are not rows_kernel's")

    def codegen(context, builder, sig, llargs):
        argtys = (types.int64, *ROWS_ARGS, types.boolean)
        fnty = context.call_conv.get_function_type(types.none, argtys)
        callee = builder.inttoptr(llargs[0], fnty.as_pointer())
        vals = [context.cast(builder, v, t, u) for v, t, u in zip(llargs[1:], sig.args[1:], argtys)]
        status, _ = context.call_conv.call_function(builder, callee, types.none, argtys, vals)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(fn, *args), codegen


@numba.njit(**_SER)
def prepare(kind, x, xqf, xdf, xsf, int8):
    """What the block types' dots read, as (n, k) / (n, k/32) views of the flat scratch
    xqf, xdf, xsf: per 32-block sums xs of x and, if int8, each block quantized as ggml's
    Q8_0 does (xd = amax/127, xq = x/xd rounded to nearest). One compiled function for
    every caller: inlined into different bodies, fast-math let LLVM round the quantization
    differently (one greedy log-probability moved by 1e-6)."""
    n, k = x.shape
    nb = k // QK
    xq = xqf[: n * k].reshape((n, k))
    xd = xdf[: n * nb].reshape((n, nb))
    xs = xsf[: n * nb].reshape((n, nb))
    if kind < FIRST_BLOCK_KIND or (n > 1 and not int8):
        return xq, xd, xs
    for t in range(n):
        for b in range(nb):
            s = np.float32(0.0)
            amax = np.float32(0.0)
            for j in range(QK):
                v = x[t, b * QK + j]
                s += v
                amax = max(amax, abs(v))
            xs[t, b] = s
            if int8:
                xd[t, b] = amax / np.float32(127.0)
                inv = np.float32(127.0) / amax if amax > 0 else np.float32(0.0)
                for j in range(QK):
                    xq[t, b * QK + j] = np.int8(np.floor(x[t, b * QK + j] * inv + np.float32(0.5)))
    return xq, xd, xs


@numba.njit(**_SER)
def _product_at(fn, kind, w, x, xq, xd, xs, buf, out, int8):
    call_rows(fn, kind, as_matrix(w), x, xq, xd, xs, buf, out, 0, w.shape[0], int8)


def product(kind: int, w: np.ndarray, x: np.ndarray, xqf: np.ndarray, xdf: np.ndarray, xsf: np.ndarray,
            buf: np.ndarray, out: np.ndarray, int8: bool) -> None:
    """out (B, rows) = x (B, k) @ W.T on this thread: W (rows, bytes) uint8 of `kind`
    (`weight_kind`), xqf (B*k,) int8, xdf, xsf (B*k/32,) float32 and buf (2, k) scratch; the
    decoder step's products, one call."""
    xq, xd, xs = prepare(kind, x, xqf, xdf, xsf, int8)
    _product_at(rows_kernel(kind, int8), kind, w, x, xq, xd, xs, buf, out, bool(int8))
