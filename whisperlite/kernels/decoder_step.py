"""Whisper's decoder step — one new token per sequence — as one numba kernel.

Per token the tiny decoder does ~80 small products and elementwise steps; as separate
numpy/numba calls each costs more in dispatch and temporaries than in arithmetic. Here
`step_body` runs the whole step for B sequences in one call (embedding, layer norms, QKV +
bias, KV-cache write, self-attention, out-proj + residual, cross-attention over the window's
audio, MLP with GELU, final norm, vocabulary projection) into caller-owned scratch, on one
thread (called from Python) or on two at once (`step_parallel`): the step streams ~47 MB of
weights and audio keys/values per token, and one core cannot pull that from memory as fast
as two. The threads split every product's rows and every attention's heads by claiming
chunks, so the logits are the same bits on one thread or two.

Every weight matrix is a uint8 view (rows, bytes per row) plus a kind code, so one compiled
kernel serves float32, float16 and the ggml block types; the block decoders are llvm_ir.py's
(LLVM vector IR, shared with gemv.py). Float16/float32 rows: one fused convert-and-dot per row for one sequence;
for several (beam search) rows are converted in pairs into L1-resident float32 rows and
dotted with every sequence, so a beam of 5 does not convert the weights 5 times. Block
types: with `int8` (the default on AVX2) activations are quantized per 32 values as ggml's
Q8_0 and each block's 32 byte products summed exactly in integers (vpmaddubsw), each block
decoded once for up to 8 sequences; without it, float dots (the decoded block times x,
scaled once per block).

Cross-attention keys/values may be float32 or float16 bits (uint16): they are the largest
per-token read after the weights (1500 audio positions x d per layer, keys and values:
18 MB per token for tiny in float32), and both are read row by row, once for all B.
"""
from __future__ import annotations

import numba
import numpy as np
from gguf import GGMLQuantizationType as QType
from llvmlite import ir
from numba import literally, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from whisperlite.kernels.atomics import atomic_cas, atomic_load, atomic_store, spin_pause, yield_cpu
from whisperlite.kernels.gemv import idot_rows, row_dots
from whisperlite.kernels.llvm_ir import F32 as IR_F32  # F32 here is the float32 kind code
from whisperlite.kernels.llvm_ir import HAS_AVX2  # noqa: F401 (callers choose int8 by it)
from whisperlite.kernels.llvm_ir import (
    I32, I64, LAYOUT, OFFSET, V8F, V32F, byte_dot, elem_ptr, emit_block, emit_block_i8, f16_bits_to_f32, fma1,
    fma8, hsum, load_v32b, sign_split, splat, vec)
from whisperlite.kernels.ops import _gelu, exp_shifted_row, layer_norm_row
from whisperlite.kernels.quant import QK
from whisperlite.kernels.tensor import QTensor, Weight

F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 = range(7)
_KIND = {QType.F16: F16, QType.Q8_0: Q8_0, QType.Q4_0: Q4_0, QType.Q4_1: Q4_1, QType.Q5_0: Q5_0, QType.Q5_1: Q5_1}

_SER = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy", nogil=True, cache=True)
_PAR = dict(_SER, parallel=True)


def weight_kind(w: Weight) -> tuple[int, np.ndarray] | None:
    """(kind code, uint8 (rows, bytes per row) view) of a weight, or None for a type the
    fused step does not take (K-quants, non-contiguous arrays)."""
    if isinstance(w, QTensor):
        kind = _KIND.get(QType(w.qtype))
        data = w.data
    elif w.dtype == np.float32:
        kind, data = F32, w
    else:
        return None
    if kind is None or data.ndim != 2 or not data.flags.c_contiguous:
        return None
    return kind, data.view(np.uint8)


@intrinsic
def _address(typingctx, addr):
    """An int64 address as a uint8 pointer."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(types.uint8)(addr), codegen


@numba.njit(inline="always", **_SER)
def _matrix(addrs, shapes, role, li):
    """Layer li's matrix of `role`: (rows, bytes) uint8 at addrs[li], shaped shapes[role].

    The layers' matrices are passed as addresses, not as a tuple of arrays: a tuple's type
    holds its length, so every model depth (tiny 4 layers, base 6, small 12 …) compiled the
    whole step again (~75 s), inside its first tokens."""
    return numba.carray(_address(addrs[li]), (shapes[role, 0], shapes[role, 1]))


@numba.njit(inline="always", **_SER)
def _as_matrix(w):
    """w (rows, bytes) uint8, maybe read-only, as the type `_matrix` gives: a read-only
    array is a numba type of its own, and the vocabulary projection would compile every row
    kernel a second time (~20 s of a first run)."""
    return numba.carray(_address(w.ctypes.data), w.shape)


# ---------------------------------------------------------------- row decoders


def _dequant_intrinsic(kind):
    """Intrinsic f(row, nb, buf): the nb ggml blocks of `row` -> buf[:32*nb] float32,
    d*(q - offset) for the "_0" types, d*q + m for the "_1" types (as ggml dequantizes)."""
    size = LAYOUT[kind][0]

    @intrinsic
    def dequant(typingctx, row, nb, buf):
        def codegen(context, builder, sig, args):
            rowv, nbv, bufv = args
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            out = elem_ptr(context, builder, sig.args[2], bufv, ir.Constant(I64, 0))
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                q, d, m = emit_block(builder, kind, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                if kind in OFFSET:
                    q = builder.fsub(q, ir.Constant(V32F, [OFFSET[kind]] * 32))
                y = builder.fmul(q, splat(builder, d, 32))
                if m is not None:
                    y = builder.fadd(y, splat(builder, m, 32))
                dst = builder.bitcast(builder.gep(out, [builder.mul(b, ir.Constant(I64, QK))]), V32F.as_pointer())
                builder.store(y, dst, align=4)
            return context.get_dummy_value()

        return types.none(row, nb, buf), codegen

    return dequant


_deq_q8_0, _deq_q4_0, _deq_q4_1, _deq_q5_0, _deq_q5_1 = (_dequant_intrinsic(k) for k in LAYOUT)


def _dot_intrinsic(kind):
    """Intrinsic f(row, nb, x, xs) -> row · x for float activations x (k,) with block sums
    xs (k/32,). Per block the 32 products q·x go into 8 lanes by four chained FMAs and are
    scaled by d once; the "_0" offsets come off once per block as d·offset·xs and the "_1"
    mins add m·xs, so no per-weight offset and no in-block horizontal adds (gemv.py's dots
    keep those to reproduce ggml's rounding; float activations need no such order)."""
    size = LAYOUT[kind][0]

    @intrinsic
    def dot(typingctx, row, nb, x, xs):
        def codegen(context, builder, sig, args):
            rowv, nbv, xv, xsv = args
            base = elem_ptr(context, builder, sig.args[0], rowv, ir.Constant(I64, 0))
            xbase = elem_ptr(context, builder, sig.args[2], xv, ir.Constant(I64, 0))
            xsbase = elem_ptr(context, builder, sig.args[3], xsv, ir.Constant(I64, 0))
            acc = cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8))
            off = cgutils.alloca_once_value(builder, ir.Constant(IR_F32, 0.0))
            with cgutils.for_range(builder, nbv) as loop:
                b = loop.index
                q, d, m = emit_block(builder, kind, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
                xp = builder.bitcast(builder.gep(xbase, [builder.mul(b, ir.Constant(I64, QK))]), V8F.as_pointer())
                part = None
                for i in range(4):
                    qi = builder.shuffle_vector(q, q, ir.Constant(vec(I32, 8), list(range(8 * i, 8 * i + 8))))
                    xi = builder.load(builder.gep(xp, [ir.Constant(I64, i)]), align=4)
                    part = builder.fmul(qi, xi) if part is None else fma8(builder, qi, xi, part)
                builder.store(fma8(builder, part, splat(builder, d, 8), builder.load(acc)), acc)
                xsb = builder.load(builder.gep(xsbase, [b]))
                if kind in OFFSET:  # Σ d(q - o)x = d Σ qx - d·o·Σx
                    builder.store(fma1(builder, builder.fmul(d, ir.Constant(IR_F32, -OFFSET[kind])), xsb,
                                       builder.load(off)), off)
                elif m is not None:  # Σ (dq + m)x = d Σ qx + m·Σx
                    builder.store(fma1(builder, m, xsb, builder.load(off)), off)
            return builder.fadd(hsum(builder, builder.load(acc)), builder.load(off))

        return types.float32(row, nb, x, xs), codegen

    return dot


_fdot_q8_0, _fdot_q4_0, _fdot_q4_1, _fdot_q5_0, _fdot_q5_1 = (_dot_intrinsic(k) for k in LAYOUT)


# ---------------------------------------------------------------- integer dots (several sequences)

# One sequence's integer dots are gemv.py's (`idot_rows`); without AVX2 (HAS_AVX2) the
# float dots serve.

MAX_SEQS = 8  # sequences per pass of the multi-sequence integer dot (its accumulators)


def _idot_multi_intrinsic(kind):
    """Intrinsic f(row, nb, n, xq, xd, xs, res): res[t] = row · x[t] for the first n ≤ 8
    sequences of xq (·, k) int8, xd, xs (·, k/32), as gemv's `idot_rows` per sequence but
    with each weight block decoded (and split into |w| and sign) once for all of them
    (beam search)."""
    size = LAYOUT[kind][0]

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
            offs = cgutils.alloca_once(builder, IR_F32, size=MAX_SEQS)
            seqs = [ir.Constant(I64, i) for i in range(MAX_SEQS)]
            for t in seqs:
                builder.store(ir.Constant(V8F, [0.0] * 8), builder.gep(accs, [t]))
                builder.store(ir.Constant(IR_F32, 0.0), builder.gep(offs, [t]))
            k = builder.mul(nbv, ir.Constant(I64, QK))
            with cgutils.for_range(builder, nbv) as bl:
                b = bl.index
                q, d, m, signed = emit_block_i8(builder, kind, builder.gep(base, [builder.mul(b, ir.Constant(I64, size))]))
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


_imdot_q8_0, _imdot_q4_0, _imdot_q4_1, _imdot_q5_0, _imdot_q5_1 = (_idot_multi_intrinsic(k) for k in LAYOUT)


@numba.njit(inline="always", **_SER)
def _decode_row(kind, w, w16, w32, r, k, buf):
    """Weight row r -> buf[:k] float32. w (rows, bytes) uint8; w16 / w32 the same matrix
    viewed as uint16 / float32 when kind is F16 / F32 (made once per matrix by the caller:
    an array `.view()` per row costs ~20 ns, 0.4-0.6 ms over one step's ~17k rows)."""
    nb = k // QK
    if kind == F32:
        for j in range(k):
            buf[j] = w32[r, j]
    elif kind == F16:
        for j in range(k):
            buf[j] = f16_bits_to_f32(w16[r, j])
    elif kind == Q8_0:
        _deq_q8_0(w[r], nb, buf)
    elif kind == Q4_0:
        _deq_q4_0(w[r], nb, buf)
    elif kind == Q4_1:
        _deq_q4_1(w[r], nb, buf)
    elif kind == Q5_0:
        _deq_q5_0(w[r], nb, buf)
    else:
        _deq_q5_1(w[r], nb, buf)


@numba.njit(inline="always", **_SER)
def _float_views(kind, w):
    """w (rows, bytes) as uint16 and float32 matrices for the float kinds; empty arrays in
    the unused slot (block-type rows need not be a whole number of either). All are
    C-contiguous: an empty *view* would type as any-layout and de-vectorize the loops."""
    if kind == F16:
        return w.view(np.uint16), np.empty((0, 0), np.float32)
    if kind == F32:
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


@numba.njit(**_SER)
def _rows_multi_int8(kind, w, xq, xd, xs, buf, out, r0, r1):
    """Several sequences, block types, int8 activations: each weight block decoded once for
    up to MAX_SEQS sequences' integer dots."""
    n, k = xq.shape
    nb = k // QK
    res = buf[0]
    for t0 in range(0, n, MAX_SEQS):
        m = min(MAX_SEQS, n - t0)
        xq_, xd_, xs_ = xq[t0:], xd[t0:], xs[t0:]
        for r in range(r0, r1):
            if kind == Q8_0:
                _imdot_q8_0(w[r], nb, m, xq_, xd_, xs_, res)
            elif kind == Q4_0:
                _imdot_q4_0(w[r], nb, m, xq_, xd_, xs_, res)
            elif kind == Q4_1:
                _imdot_q4_1(w[r], nb, m, xq_, xd_, xs_, res)
            elif kind == Q5_0:
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
    w16, w32 = _float_views(kind, w)
    r = r0
    while r + 2 <= r1:
        _decode_row(kind, w, w16, w32, r, k, buf[0])
        _decode_row(kind, w, w16, w32, r + 1, k, buf[1])
        _pair_dots(buf[0], buf[1], x, out, r)
        r += 2
    if r < r1:
        _decode_row(kind, w, w16, w32, r, k, buf[0])
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
            acc += _to_f32(wv[r, j]) * x0[j]
        out[0, r] = acc


@numba.njit(**_SER)
def _rows_int8_of(kind, w, xq, xd, xs, out, r0, r1):
    """One sequence, block types, int8 activations (gemv's ggml-order integer dots),
    compiled once per type (`literally`): with the type a runtime value the Q8_0 loop
    compiled ~15 % slower (1.57 vs 1.37 ms for the vocabulary projection)."""
    idot_rows(literally(kind) - Q8_0, w, r0, r1, xq.shape[1] // QK, xq, xd, xs, 0, out)


@numba.njit(inline="always", **_SER)
def _rows_int8(kind, w, xq, xd, xs, out, r0, r1):
    if kind == Q8_0:
        _rows_int8_of(Q8_0, w, xq, xd, xs, out, r0, r1)
    elif kind == Q4_0:
        _rows_int8_of(Q4_0, w, xq, xd, xs, out, r0, r1)
    elif kind == Q4_1:
        _rows_int8_of(Q4_1, w, xq, xd, xs, out, r0, r1)
    elif kind == Q5_0:
        _rows_int8_of(Q5_0, w, xq, xd, xs, out, r0, r1)
    else:
        _rows_int8_of(Q5_1, w, xq, xd, xs, out, r0, r1)


@numba.njit(**_SER)
def _rows_block_float(kind, w, x, xs, out, r0, r1):
    """One sequence, block types, float activations: a fused dequantize-and-dot per row."""
    nb = x.shape[1] // QK
    x0, s0 = x[0], xs[0]
    if kind == Q8_0:
        for r in range(r0, r1):
            out[0, r] = _fdot_q8_0(w[r], nb, x0, s0)
    elif kind == Q4_0:
        for r in range(r0, r1):
            out[0, r] = _fdot_q4_0(w[r], nb, x0, s0)
    elif kind == Q4_1:
        for r in range(r0, r1):
            out[0, r] = _fdot_q4_1(w[r], nb, x0, s0)
    elif kind == Q5_0:
        for r in range(r0, r1):
            out[0, r] = _fdot_q5_0(w[r], nb, x0, s0)
    else:
        for r in range(r0, r1):
            out[0, r] = _fdot_q5_1(w[r], nb, x0, s0)


@numba.njit(**_SER)
def _linear(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8):
    """out[t, r] = x[t] · W[r] for rows r0 <= r < r1: x (B, k) float32, W (rows, bytes) uint8
    of `kind`, buf (2, k) scratch, out (B, rows). For block types `_prepare` has filled xs
    (B, k/32) with x's block sums and, if int8, xq (B, k) int8 and xd (B, k/32) with x
    quantized per block.

    Each path is its own compiled function: with all of them in one body LLVM made the
    float16 row loop 2x slower (same instructions in the loop, measured 1.2 vs 0.6 ms for
    17k rows warm)."""
    n = x.shape[0]
    if n > 1 and int8 and kind >= Q8_0:
        _rows_multi_int8(kind, w, xq, xd, xs, buf, out, r0, r1)
    elif n > 1:
        _rows_multi_float(kind, w, x, buf, out, r0, r1)
    elif kind == F16:
        _rows_float(w.view(np.uint16), x, out, r0, r1)
    elif kind == F32:
        _rows_float(w.view(np.float32), x, out, r0, r1)
    elif int8:
        _rows_int8(kind, w, xq, xd, xs, out, r0, r1)
    else:
        _rows_block_float(kind, w, x, xs, out, r0, r1)


@numba.njit(**_SER)
def _prepare(kind, x, xqf, xdf, xsf, int8):
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
    if kind < Q8_0 or (n > 1 and not int8):
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
def product(kind, w, x, xqf, xdf, xsf, buf, out, int8):
    """out (B, rows) = x (B, k) @ W.T on this thread: W (rows, bytes) uint8 of `kind`
    (`weight_kind`), xqf (B*k,) int8, xdf, xsf (B*k/32,) float32 and buf (2, k) scratch."""
    xq, xd, xs = _prepare(kind, x, xqf, xdf, xsf, int8)
    _linear(kind, w, x, xq, xd, xs, buf, out, 0, w.shape[0], int8)


# ---------------------------------------------------------------- elementwise pieces


@numba.njit(inline="always", **_SER)
def _layer_norm(x, g, b, out):
    """LayerNorm of each row of x (B, d) -> out, as ops.layer_norm (Whisper's eps 1e-5)."""
    for i in range(x.shape[0]):
        layer_norm_row(x, i, g, b, 1e-5, out)


def _to_f32(v):
    """A float32 value, or float16 bits (uint16) converted to float32."""


@overload(_to_f32, inline="always")
def _to_f32_impl(v):
    if isinstance(v, types.Integer):
        return lambda v: f16_bits_to_f32(v)
    return lambda v: v


# Attention over a range of heads [h0, h1) loops over every head and skips the others: with
# `range(h0, h1)` numba cannot prove the head index non-negative, so every array index in
# the inner loops keeps its negative-index wrap-around and the loops stop vectorizing
# (measured 8x slower for the cross-attention scores).


@numba.njit(**_SER)
def _self_attention(qkv, kc, vc, src, pos, n_head, h0, h1, scores, out):
    """qkv (B, 3d) this token's query | key | value rows; kc, vc (≥B, n_ctx, d) the layer's
    cache, where sequence b's position t is in row src[b, t] (positions 0 … pos-1 filled).
    For heads h0 … h1-1: writes their columns of position pos in row b, then their columns
    of out (B, d) = causal attention; scores (·, > pos) scratch, row 0 used."""
    n, d3 = qkv.shape
    d = d3 // 3
    hd = d // n_head
    scale = np.float32(hd ** -0.5)
    for b in range(n):
        for h in range(n_head):
            if h < h0 or h >= h1:
                continue
            o = h * hd
            for c in range(hd):
                kc[b, pos, o + c] = qkv[b, d + o + c]
                vc[b, pos, o + c] = qkv[b, 2 * d + o + c]
            for t in range(pos + 1):
                r = src[b, t]
                acc = np.float32(0.0)
                for c in range(hd):
                    acc += qkv[b, o + c] * kc[r, t, o + c]
                scores[0, t] = acc * scale
            inv = np.float32(1.0) / exp_shifted_row(scores, 0, pos + 1)
            for c in range(hd):
                out[b, o + c] = np.float32(0.0)
            for t in range(pos + 1):
                p = scores[0, t] * inv
                r = src[b, t]
                for c in range(hd):
                    out[b, o + c] += p * vc[r, t, o + c]


@numba.njit(**_SER)
def _cross_attention(q, k, v, src, pos, n_head, h0, h1, scores, out):
    """q (B, d); k, v (h, n_audio, hd) float32 or float16 bits; scores (B, n_audio) scratch
    -> the columns of heads h0 … h1-1 of out (B, d). Each key and value row is read once
    for all B sequences. (src, pos, n_head: unused, `_self_attention`'s arguments.)"""
    n, d = q.shape
    n_head, na, hd = k.shape
    scale = np.float32(hd ** -0.5)
    for h in range(n_head):
        if h < h0 or h >= h1:
            continue
        o = h * hd
        for t in range(na):
            for b in range(n):
                acc = np.float32(0.0)
                for c in range(hd):
                    acc += q[b, o + c] * _to_f32(k[h, t, c])
                scores[b, t] = acc * scale
        for b in range(n):
            inv = np.float32(1.0) / exp_shifted_row(scores, b, na)
            for t in range(na):
                scores[b, t] *= inv
            for c in range(hd):
                out[b, o + c] = np.float32(0.0)
        for t in range(na):
            for b in range(n):
                p = scores[b, t]
                for c in range(hd):
                    out[b, o + c] += p * _to_f32(v[h, t, c])


@numba.njit(inline="always", **_SER)
def _residual(y, res):
    """res += y."""
    n, d = y.shape
    for b in range(n):
        for j in range(d):
            res[b, j] += y[b, j]


# ---------------------------------------------------------------- the step, on one or two threads

# The phases below are inlined into step_body (numba IR), not compiled functions: numba links
# every callee's code into each caller and optimizes and emits the whole again, so each
# level of compiled function between step_body and the row kernels cost the row kernels'
# compile once more (first use compiled in ~290 s with the phases as functions, ~110 s
# inlined; same step time). The row kernels and attentions stay functions of their own (see
# `_linear`).

# Slots are int64s 64 bytes apart, so that flags written by different threads never share a
# cache line.
SLOT = 8
PRODUCT_CHUNKS = 4  # per layer product: a thread that arrives late can still take some
VOCAB_CHUNKS = 16
YIELD_EVERY = 64  # spins between yields of the core to other runnable threads (~2 µs)


def step_slots(n_layer: int, n_head: int) -> int:
    """Length of each of the int64 claim and done arrays the step takes."""
    return (n_layer * (6 * PRODUCT_CHUNKS + 2 * n_head) + VOCAB_CHUNKS) * SLOT


@numba.njit(inline="always", **_SER)
def _claim(claim, slot, g):
    """Take chunk `slot` of step g unless a thread already has (a slot holds the last step
    that claimed it, so nothing is reset between steps)."""
    v = atomic_load(claim, slot * SLOT)
    return v < g and atomic_cas(claim, slot * SLOT, v, g) == v


@numba.njit(inline="always", **_SER)
def _finish(done, slot, g):
    atomic_store(done, slot * SLOT, g)


@numba.njit(inline="always", **_SER)
def _await(done, slot0, n, g):
    """Wait until chunks slot0 … slot0+n-1 of step g are finished. Every chunk waited for
    has been claimed by a running thread, so this ends; the waiting thread yields its core
    now and then to the alignment and audio threads."""
    spins = 0
    for c in range(n):
        while atomic_load(done, (slot0 + c) * SLOT) < g:
            spins += 1
            if spins % YIELD_EVERY == 0:
                yield_cpu()
            else:
                spin_pause()


@numba.njit(inline="always", **_SER)
def _chunk_start(rows, c, chunks):
    """First row of chunk c of `chunks` (rows at c = chunks): even, so that several
    sequences' float rows pair up as in one pass over all rows (same bits)."""
    return rows if c == chunks else rows * c // chunks // 2 * 2


@numba.njit(inline="always", **_SER)
def _rows_phase(tid, g, claim, done, slot0, chunks, kind, w, bias, gelu, x, xqf, xdf, xsf, buf, out, int8):
    """out = x @ W.T + bias (GELU'd if gelu; no bias if it is empty) for the chunks of rows
    this thread claims, its own half first; then wait for the rest."""
    xq, xd, xs = _prepare(kind, x, xqf, xdf, xsf, int8)
    rows = w.shape[0]
    n = x.shape[0]
    for k in range(chunks):
        c = (k + tid * (chunks // 2)) % chunks
        if _claim(claim, slot0 + c, g):
            r0, r1 = _chunk_start(rows, c, chunks), _chunk_start(rows, c + 1, chunks)
            _linear(kind, w, x, xq, xd, xs, buf, out, r0, r1, int8)
            if bias.shape[0]:
                for b in range(n):
                    for r in range(r0, r1):
                        v = out[b, r] + bias[r]
                        out[b, r] = _gelu(v) if gelu else v
            _finish(done, slot0 + c, g)
    _await(done, slot0, chunks, g)


@numba.njit(inline="always", **_SER)
def _heads_phase(tid, g, claim, done, slot0, n_head, attend, q, k, v, src, pos, scores, out):
    """`attend` (`_self_attention` or `_cross_attention`, arguments as theirs) for the heads
    this thread claims, its own half first, then wait for the rest."""
    for c in range(n_head):
        hc = (c + tid * (n_head // 2)) % n_head
        if _claim(claim, slot0 + hc, g):
            attend(q, k, v, src, pos, n_head, hc, hc + 1, scores, out)
            _finish(done, slot0 + hc, g)
    _await(done, slot0, n_head, g)


@numba.njit(inline="always", **_SER)
def _attention_block(tid, g, claim, done, slot, n_head, attend, x, ln_g, ln_b, h, kind_in, w_in, b_in, s_in,
                     k, v, src, pos, scores, s_heads, kind_out, w_out, b_out, s_y, xq, xd, xs, buf, int8):
    """x += out-projection of attention over layer-normed x: the input product (query|key|value,
    or the cross-attention query) into s_in, the heads into s_heads, the output product into
    s_y; chunks from slot on (2 * PRODUCT_CHUNKS + n_head of them). Arguments as
    `_heads_phase` and `_rows_phase`."""
    _layer_norm(x, ln_g, ln_b, h)
    _rows_phase(tid, g, claim, done, slot, PRODUCT_CHUNKS, kind_in, w_in, b_in, False, h, xq, xd, xs, buf, s_in, int8)
    _heads_phase(tid, g, claim, done, slot + PRODUCT_CHUNKS, n_head, attend, s_in, k, v, src, pos, scores, s_heads)
    _rows_phase(tid, g, claim, done, slot + PRODUCT_CHUNKS + n_head, PRODUCT_CHUNKS, kind_out, w_out, b_out, False,
                s_heads, xq, xd, xs, buf, s_y, int8)
    _residual(s_y, x)


@numba.njit(**_SER)
def step_body(tid, g, claim, done, tokens, pos, emb_kind, emb, pos_emb, kinds, shapes, ln_g, ln_b,
              w_qkv, b_qkv, w_out, b_out, w_cq, b_cq, w_co, b_co, w_fc1, b_fc1, w_fc2, b_fc2,
              lnf_g, lnf_b, k_self, v_self, src, k_cross, v_cross, n_head,
              s_qkv, s_att, s_y, s_q, s_catt, s_mlp, x2, h2, xq2, xd2, xs2, buf2, scores2, logits, int8):
    """Decoder step g for tokens (B, 1), one per sequence, at position `pos` -> logits
    (B, vocab), run by thread `tid` (0 or 1) alone or by both at once.

    Every product's rows and every attention's heads come in chunks that whichever thread
    gets there first claims (claim/done: `step_slots` int64s, zero at first; g must grow
    from call to call on them), so a thread that starts late — waking numba's pool costs
    ~0.1-0.2 ms on a shared VM, a twentieth of the step — leaves its work to the other, and
    one thread alone does the whole step. Each chunk is computed by one thread with the same
    code, so the logits are the same bits whoever computes what. Each thread keeps its own
    residual stream x2[tid] and normalized rows h2[tid] (recomputed by both: cheaper than a
    hand-off), read from per-layer phase outputs s_* that nothing overwrites within the
    step, so a late thread replays the stream from finished results.

    emb (vocab, bytes) token embedding of `emb_kind` (also the vocabulary projection),
    pos_emb (n_ctx, d); kinds (6,) the kinds of qkv, out, cross query, cross out, fc1, fc2,
    shapes (6, 2) their (rows, bytes); ln_g/ln_b (L, 3, d) the attention, cross-attention
    and MLP norms; w_* (L,) int64 addresses of each layer's C-contiguous matrix of that
    role (see `_matrix`), b_* (L, rows); k_self/v_self (L, ≥B, n_ctx, d) the
    self-attention cache (sequence b's position t in row src[b, t]; position pos written in
    row b, and src[b, pos] must already be b); k_cross, v_cross (L, h, n_audio, hd)
    float32 or float16 bits. Phase outputs: s_qkv (L, B, 3d), s_att, s_q, s_catt (L, B, d),
    s_y (L, 3, B, d), s_mlp (L, B, 4d). Per thread: x2, h2 (2, B, d), xq2 (2, B*4d) int8,
    xd2, xs2 (2, B*4d/32), buf2 (2, 2, 4d), scores2 (2, B, max(n_ctx, n_audio)). int8:
    products on block-type weights take integer dots over per-block int8 activations.
    """
    x, h, xq, xd, xs, buf, scores = x2[tid], h2[tid], xq2[tid], xd2[tid], xs2[tid], buf2[tid], scores2[tid]
    emb = _as_matrix(emb)
    n = tokens.shape[0]
    d = x.shape[1]
    no_bias = b_qkv[0, :0]
    e16, e32 = _float_views(emb_kind, emb)
    for b in range(n):
        _decode_row(emb_kind, emb, e16, e32, tokens[b, 0], d, buf[0])
        for j in range(d):
            x[b, j] = buf[0, j] + pos_emb[pos, j]
    slot = 0
    for li in range(w_qkv.shape[0]):
        _attention_block(tid, g, claim, done, slot, n_head, _self_attention, x, ln_g[li, 0], ln_b[li, 0], h,
                         kinds[0], _matrix(w_qkv, shapes, 0, li), b_qkv[li], s_qkv[li], k_self[li], v_self[li], src, pos, scores,
                         s_att[li], kinds[1], _matrix(w_out, shapes, 1, li), b_out[li], s_y[li, 0], xq, xd, xs, buf, int8)
        slot += 2 * PRODUCT_CHUNKS + n_head
        _attention_block(tid, g, claim, done, slot, n_head, _cross_attention, x, ln_g[li, 1], ln_b[li, 1], h,
                         kinds[2], _matrix(w_cq, shapes, 2, li), b_cq[li], s_q[li], k_cross[li], v_cross[li], src, pos, scores,
                         s_catt[li], kinds[3], _matrix(w_co, shapes, 3, li), b_co[li], s_y[li, 1], xq, xd, xs, buf, int8)
        slot += 2 * PRODUCT_CHUNKS + n_head
        _layer_norm(x, ln_g[li, 2], ln_b[li, 2], h)
        _rows_phase(tid, g, claim, done, slot, PRODUCT_CHUNKS, kinds[4], _matrix(w_fc1, shapes, 4, li), b_fc1[li], True, h,
                    xq, xd, xs, buf, s_mlp[li], int8)
        slot += PRODUCT_CHUNKS
        _rows_phase(tid, g, claim, done, slot, PRODUCT_CHUNKS, kinds[5], _matrix(w_fc2, shapes, 5, li), b_fc2[li], False, s_mlp[li],
                    xq, xd, xs, buf, s_y[li, 2], int8)
        slot += PRODUCT_CHUNKS
        _residual(s_y[li, 2], x)
    _layer_norm(x, lnf_g, lnf_b, h)
    _rows_phase(tid, g, claim, done, slot, VOCAB_CHUNKS, emb_kind, emb, no_bias, False, h, xq, xd, xs, buf,
                logits, int8)


@numba.njit(**_PAR)
def step_parallel(g, claim, done, tokens, pos, emb_kind, emb, pos_emb, kinds, shapes, ln_g, ln_b,
                  w_qkv, b_qkv, w_out, b_out, w_cq, b_cq, w_co, b_co, w_fc1, b_fc1, w_fc2, b_fc2,
                  lnf_g, lnf_b, k_self, v_self, src, k_cross, v_cross, n_head,
                  s_qkv, s_att, s_y, s_q, s_catt, s_mlp, x2, h2, xq2, xd2, xs2, buf2, scores2, logits, int8):
    """`step_body` on two threads of numba's pool (with a one-thread pool the two run in
    order: the second finds every chunk done)."""
    for p in prange(2):
        # int64 as a Python int from TextDecoder.step_serial (prange's unsigned index here
        # would compile the whole step body once more: ~25 s)
        step_body(np.int64(p), g, claim, done, tokens, pos, emb_kind, emb, pos_emb, kinds, shapes, ln_g, ln_b,
                  w_qkv, b_qkv, w_out, b_out, w_cq, b_cq, w_co, b_co, w_fc1, b_fc1, w_fc2, b_fc2,
                  lnf_g, lnf_b, k_self, v_self, src, k_cross, v_cross, n_head,
                  s_qkv, s_att, s_y, s_q, s_catt, s_mlp, x2, h2, xq2, xd2, xs2, buf2, scores2, logits, int8)
