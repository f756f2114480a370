"""Multi-head attention for many query rows at once: the decoder's prompt pass, word
alignment (which wants the weights) and the per-window cross-attention keys/values; and
for one new query row per sequence, the decoder step's.

One head at a time: BLAS for the two products around a serial softmax, the heads pulled by
the kernel threads from a queue; float16 keys/values (the decoder's cross-attention cache)
are widened per head by F16C, where numpy's astype converts one value at a time (~2 ns a
value). Measured on tiny.en's cross-attention (200 query rows, 1500 audio frames, one
thread): 8.6 ms per layer, against 13.7 ms for numpy's batched products over all heads
after astype (3.7 ms of it the astype).
"""
from __future__ import annotations

import queue

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from whisperlite.kernels.llvm_ir import F32, HAS_F16C, I16, I32, I64, f16_bits_to_f32, hsum, vec
from whisperlite.kernels.ops import exp_shifted_row, to_f32
from whisperlite.kernels.quant import f32_to_f16
from whisperlite.kernels.threads import get_threads, run_parallel

_SER = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy", nogil=True, cache=True)
# Below this many multiply-adds per product attention runs on the calling thread (handing
# heads to the pool costs more than the work), as matmul.SPLIT_MIN_MACS for linear layers.
SPLIT_MIN_MACS = 4_000_000


@intrinsic
def _f32_to_f16_bits_f16c(typingctx, x):
    """float32 -> float16 bits by `fptrunc` (vcvtps2ph: round half to even, as numpy)."""
    if x != types.float32:  # a float64 would be rounded twice
        return None

    def codegen(context, builder, sig, args):
        return builder.zext(builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), I16), ir.IntType(32))

    return types.uint32(x), codegen


# Without F16C LLVM would lower fptrunc to a runtime helper numba does not link.
_f32_to_f16_bits = _f32_to_f16_bits_f16c if HAS_F16C else f32_to_f16


@numba.njit(**_SER)
def widen_f16(src, out):
    """float16 bits src (t, k) uint16 -> out (t, k) float32."""
    t, k = src.shape
    for i in range(t):
        for j in range(k):
            out[i, j] = f16_bits_to_f32(src[i, j])
    return out


def _stored(v, out):
    """v (float32) as out's elements hold it: float16 bits when out is uint16."""


@overload(_stored, inline="always")
def _stored_impl(v, out):
    if out.dtype == types.uint16:
        return lambda v, out: np.uint16(_f32_to_f16_bits(v))
    return lambda v, out: v


@numba.njit(**_SER)
def split_heads(x, bias, out, r0):
    """x (n, h*k) float32 + bias (h*k,) -> rows r0 … r0+n-1 of out (h, t, k), float32 or
    float16 bits (uint16): one head's rows contiguous."""
    n_head, _, k = out.shape
    for h in range(n_head):
        for i in range(x.shape[0]):
            for j in range(k):
                out[h, r0 + i, j] = _stored(x[i, h * k + j] + bias[h * k + j], out)
    return out


@numba.njit(**_SER)
def softmax_prefix_(x, lengths):
    """In place, row i: softmax over its first lengths[i] columns, zeros after them (masked
    keys): x (n, t), lengths (n,) int64 -> x."""
    n, t = x.shape
    for i in range(n):
        m = lengths[i]
        inv = np.float32(1.0) / exp_shifted_row(x, i, m)
        for j in range(m):
            x[i, j] *= inv
        for j in range(m, t):
            x[i, j] = np.float32(0.0)
    return x


def _as_f32(x: np.ndarray, buf: np.ndarray | None) -> np.ndarray:
    """x (t, hd) as float32: itself, or widened from float16 into buf."""
    return x if buf is None else widen_f16(x.view(np.uint16), buf)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, out: np.ndarray | None,
              lengths: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray | None:
    """Multi-head attention of B sequences -> out.

    q (B, n, h*hd) float32 queries, already scaled; k, v (B, h, t, hd) float32 or float16
    (views: each head's (t, hd) rows must have unit column stride); out (B, n, h*hd) float32,
    None: only the weights are wanted (the product with the values is skipped).
    lengths (n,): query row i sees keys 0 … lengths[i]-1 (causal); None: all t.
    weights (B, h, n, t) float32: receives the attention weights (else they are scratch).
    """
    bsz, n, _ = q.shape
    n_head, t, hd = k.shape[1:]
    lengths = np.full(n, t, np.int64) if lengths is None else np.asarray(lengths, np.int64)
    f16 = k.dtype == np.float16  # then v is float16 too
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    for job in np.ndindex(bsz, n_head):
        jobs.put(job)

    def worker(_: int) -> None:
        scores = np.empty((n, t), np.float32) if weights is None else None
        buf = np.empty((t, hd), np.float32) if f16 else None  # one head's keys, then its values
        while True:
            try:
                b, h = jobs.get_nowait()
            except queue.Empty:
                return
            s = scores if weights is None else weights[b, h]
            cols = slice(h * hd, (h + 1) * hd)
            np.matmul(q[b, :, cols], _as_f32(k[b, h], buf).T, out=s)
            softmax_prefix_(s, lengths)
            if out is not None:
                np.matmul(s, _as_f32(v[b, h], buf), out=out[b, :, cols])

    parts = min(get_threads(), bsz * n_head)
    if bsz * n * t * n_head * hd < SPLIT_MIN_MACS:
        parts = 1
    run_parallel(worker, parts)
    return out


# ---------------------------------------------------------------- one query row per sequence

# The decoder step's attentions (models/whisper_step.py), for the heads h0 … h1-1 that one
# thread takes. They loop over every head and skip the others: with `range(h0, h1)` numba
# cannot prove the head index non-negative, so every array index in the inner loops keeps
# its negative-index wrap-around and the loops stop vectorizing (measured 8x slower for the
# cross-attention scores).


@numba.njit(**_SER)
def self_attention_heads(qkv, kc, vc, src, pos, n_head, h0, h1, scores, out):
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



# Float16 keys/values with 64-wide heads (every Whisper size): the two loops below as vector
# IR, with the same arithmetic per score and per output value (the same bits). Compiled
# from loops, each key and value row was widened once per sequence, and the output rows were
# loaded and stored at every audio position (numba cannot show LLVM that they alias nothing).
HD = 64
V16F, V8F, V16H, V16S = vec(F32, 16), vec(F32, 8), vec(ir.HalfType(), 16), vec(I16, 16)
VALUE_SEQS = 4  # sequences whose output rows stay in registers (4 x 4 x 16 floats) per pass


def _widen16(builder, base, at):
    """16 float16 bits from the i16* base + at -> <16 x float> (vcvtph2ps)."""
    ptr = builder.bitcast(builder.gep(base, [at]), V16S.as_pointer())
    return builder.fpext(builder.bitcast(builder.load(ptr, align=2), V16H), V16F)


def _fma16(builder, a, b, c):
    f = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V16F, [V16F] * 3), "llvm.fma.v16f32")
    return builder.call(f, [a, b, c])


def _arrays(context, builder, sig, args) -> list:
    """(numba array struct, shape values) of each array argument of an intrinsic, else None."""
    out = []
    for ty, val in zip(sig.args, args):
        if isinstance(ty, types.Array):
            a = context.make_array(ty)(context, builder, val)
            out.append((a, cgutils.unpack_tuple(builder, a.shape, ty.ndim)))
        else:
            out.append(None)
    return out


def _head_rows(builder, a, shape, h):
    """Pointer to head h's first row in the (heads, n_audio, HD) array a."""
    return builder.gep(a.data, [builder.mul(h, builder.mul(shape[1], ir.Constant(I64, HD)))])


def _half(builder, v, h):
    return builder.shuffle_vector(v, v, ir.Constant(vec(I32, 8), list(range(8 * h, 8 * h + 8))))


@intrinsic
def _scores_f16(typingctx, q, o, k, h, scale, scores):
    """scores[b, t] = scale * q[b, o:o+64] · k[h, t] for every sequence b and audio row t (k
    float16 bits). Each key row is widened once for all sequences. The sum is the one
    LLVM's vectorizer gave the loop: four 8-lane accumulators over columns 8i+l and 32+8i+l
    (one rounding each), added (0+1) + (2+3), then halved down to one lane."""
    def codegen(context, builder, sig, args):
        (qa, (n, d)), _, (ka, kshape), _, _, (sa, (_, ns)) = _arrays(context, builder, sig, args)
        ov, hv, scv = args[1], args[3], args[4]
        na, kbase = kshape[1], _head_rows(builder, ka, kshape, hv)
        zero = ir.Constant(V16F, [0.0] * 16)
        with cgutils.for_range(builder, na) as tl:
            t = tl.index
            krow = builder.mul(t, ir.Constant(I64, HD))
            kk = [_widen16(builder, kbase, builder.add(krow, ir.Constant(I64, 16 * j))) for j in range(4)]
            with cgutils.for_range(builder, n) as bl:
                b = bl.index
                qrow = builder.gep(qa.data, [builder.add(builder.mul(b, d), ov)])
                qq = [builder.load(builder.bitcast(builder.gep(qrow, [ir.Constant(I64, 16 * j)]), V16F.as_pointer()),
                                   align=4) for j in range(4)]
                a01 = _fma16(builder, qq[2], kk[2], _fma16(builder, qq[0], kk[0], zero))
                a23 = _fma16(builder, qq[3], kk[3], _fma16(builder, qq[1], kk[1], zero))
                s01 = builder.fadd(_half(builder, a01, 0), _half(builder, a01, 1))
                s23 = builder.fadd(_half(builder, a23, 0), _half(builder, a23, 1))
                total = hsum(builder, builder.fadd(s01, s23))
                builder.store(builder.fmul(total, scv), builder.gep(sa.data, [builder.add(builder.mul(b, ns), t)]))
        return context.get_dummy_value()

    return types.none(q, o, k, h, scale, scores), codegen


@intrinsic
def _values_f16(typingctx, scores, v, h, out, o):
    """out[b, o:o+64] = Σ_t scores[b, t] v[h, t] for every sequence b (v float16 bits),
    summed in t order by one multiply-add each, as the loop did, with VALUE_SEQS sequences'
    rows held in registers across t and each value row widened once for them."""
    def codegen(context, builder, sig, args):
        (sa, (n, ns)), (va, vshape), _, (oa, (_, d)), _ = _arrays(context, builder, sig, args)
        hv, ov = args[2], args[4]
        na, vbase = vshape[1], _head_rows(builder, va, vshape, hv)
        accs = cgutils.alloca_once(builder, V16F, size=4 * VALUE_SEQS)
        groups = builder.udiv(builder.add(n, ir.Constant(I64, VALUE_SEQS - 1)), ir.Constant(I64, VALUE_SEQS))
        with cgutils.for_range(builder, groups) as gl:
            b0 = builder.mul(gl.index, ir.Constant(I64, VALUE_SEQS))
            seqs = [(i, builder.add(b0, ir.Constant(I64, i))) for i in range(VALUE_SEQS)]
            for i in range(4 * VALUE_SEQS):
                builder.store(ir.Constant(V16F, [0.0] * 16), builder.gep(accs, [ir.Constant(I64, i)]))
            with cgutils.for_range(builder, na) as tl:
                t = tl.index
                vrow = builder.mul(t, ir.Constant(I64, HD))
                vals = [_widen16(builder, vbase, builder.add(vrow, ir.Constant(I64, 16 * j))) for j in range(4)]
                for i, b in seqs:
                    with builder.if_then(builder.icmp_signed("<", b, n), likely=True):
                        p = builder.load(builder.gep(sa.data, [builder.add(builder.mul(b, ns), t)]))
                        pv = builder.shuffle_vector(builder.insert_element(ir.Constant(V16F, ir.Undefined), p,
                                                                           ir.Constant(I32, 0)),
                                                    ir.Constant(V16F, ir.Undefined), ir.Constant(vec(I32, 16), [0] * 16))
                        for j in range(4):
                            ap = builder.gep(accs, [ir.Constant(I64, 4 * i + j)])
                            builder.store(_fma16(builder, pv, vals[j], builder.load(ap)), ap)
            for i, b in seqs:
                with builder.if_then(builder.icmp_signed("<", b, n), likely=True):
                    orow = builder.gep(oa.data, [builder.add(builder.mul(b, d), ov)])
                    for j in range(4):
                        dst = builder.bitcast(builder.gep(orow, [ir.Constant(I64, 16 * j)]), V16F.as_pointer())
                        builder.store(builder.load(builder.gep(accs, [ir.Constant(I64, 4 * i + j)])), dst, align=4)
        return context.get_dummy_value()

    return types.none(scores, v, h, out, o), codegen


@numba.njit(inline="always", **_SER)
def _head_loops(q, k, v, h, o, scale, scores, out):
    """One head of `cross_attention_heads`, compiled from loops (any head size, float32
    keys/values, CPUs without F16C)."""
    n = q.shape[0]
    na, hd = k.shape[1], k.shape[2]
    for t in range(na):
        for b in range(n):
            acc = np.float32(0.0)
            for c in range(hd):
                acc += q[b, o + c] * to_f32(k[h, t, c])
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
                out[b, o + c] += p * to_f32(v[h, t, c])


def _cross_head(q, k, v, h, o, scale, scores, out):
    """One head of `cross_attention_heads`: `_cross_head_impl`."""


@overload(_cross_head, inline="always", jit_options=_SER)
def _cross_head_impl(q, k, v, h, o, scale, scores, out):
    """Float16 keys/values of 64-wide heads take the vector IR (the same bits), the rest
    the loops; chosen while typing, so float32 caches never type the IR's float16 loads."""
    if not (HAS_F16C and k.dtype == types.uint16):
        return lambda q, k, v, h, o, scale, scores, out: _head_loops(q, k, v, h, o, scale, scores, out)

    def head(q, k, v, h, o, scale, scores, out):
        if k.shape[2] != HD:
            _head_loops(q, k, v, h, o, scale, scores, out)
            return
        n, na = q.shape[0], k.shape[1]
        _scores_f16(q, o, k, h, scale, scores)
        for b in range(n):
            inv = np.float32(1.0) / exp_shifted_row(scores, b, na)
            for t in range(na):
                scores[b, t] *= inv
        _values_f16(scores[:n], v, h, out, o)

    return head


@numba.njit(**_SER)
def cross_attention_heads(q, k, v, src, pos, n_head, h0, h1, scores, out):
    """q (B, d); k, v (h, n_audio, hd) float32 or float16 bits; scores (B, n_audio) scratch
    -> the columns of heads h0 … h1-1 of out (B, d). Each key and value row is read once
    for all B sequences. (src, pos, n_head: unused, `self_attention_heads`'s arguments.)"""
    n_head, hd = k.shape[0], k.shape[2]
    scale = np.float32(hd ** -0.5)
    for h in range(n_head):
        if h < h0 or h >= h1:
            continue
        _cross_head(q, k, v, h, h * hd, scale, scores, out)
