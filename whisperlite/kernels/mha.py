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
from numba.extending import intrinsic, overload

from whisperlite.kernels.llvm_ir import HAS_F16C, I16, f16_bits_to_f32
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



@numba.njit(**_SER)
def cross_attention_heads(q, k, v, src, pos, n_head, h0, h1, scores, out):
    """q (B, d); k, v (h, n_audio, hd) float32 or float16 bits; scores (B, n_audio) scratch
    -> the columns of heads h0 … h1-1 of out (B, d). Each key and value row is read once
    for all B sequences. (src, pos, n_head: unused, `self_attention_heads`'s arguments.)"""
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
