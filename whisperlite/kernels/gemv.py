"""Fused dequantize-and-dot kernels for a few rows of activations (token-by-token decoding).

Decoding is memory-bound: each weight byte is read once per token, so the win is reading
4-8x fewer bytes than float32 while keeping the decode arithmetic under the memory time.
Every kernel runs `prange` over weight rows and decodes each block straight into the dot
product; nothing is written but the output. fastmath (reassociation) lets LLVM vectorize the
float reductions (their order is not part of any contract here; `ggml.py` has the kernels
whose arithmetic order is).

Two measured choices make these ~3x faster than float32 GEMV per weight on one core:
- Lane accumulators: a per-block reduction (sum 32 products, then scale) costs a horizontal
  vector add every 32 weights; instead each of the 32 in-block positions keeps its own
  running sum across blocks (`lanes`, reduced once per row).
- Nibbles are split in float arithmetic (hi = floor(v/16), lo = v - 16*hi): numba promotes
  integer ops to int64, and int64 -> float32 has no AVX2 instruction.

Offsets are hoisted out of the inner loop: for the "_1" types w = d*q + m, so
w·x = d*(q·x) + m*sum(x) per block; the "_0" types' -8/-16 fold the same way.

One signature for every quantized kernel, shared with ggml mode (see ggml.py):
  x (n, k) float32, xd (n, k/32) per-block scale of x, xs (n, k/32) per-block sum of x,
  w (d, bytes) uint8 blocks -> out (n, d) float32 = x·W.T scaled per block by xd.
Float activations pass xd = 1 and xs = block sums; ggml mode passes its Q8 integers as
floats (exact: every partial sum is an integer below 2^24) with their scales and sums.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from whisperlite.kernels.quant import QK

# Reassociation (to vectorize the sums) and FMA contraction, but not the no-NaN/no-inf
# assumptions, so a stray inf in a weight still reads as inf.
_FAST = dict(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, cache=True)
_CHUNK = 16  # weight rows per parallel task: amortizes the per-task scratch allocation


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


@numba.njit(inline="always", cache=True)
def _f16_bits_to_f32(h):
    """float16 bits -> float32 without branches (selects only): shifting the 15 exponent and
    mantissa bits into float32 position and scaling by 2^112 rebiases normals and subnormals
    exactly; exponent 31 (inf/nan) is patched. quant.f16_to_f32's branches cost as much as
    a whole block's arithmetic here."""
    em = h & 0x7FFF
    mag = np.uint32(em << 13).view(np.float32) * np.float32(5.192296858534828e33)
    mag = mag if em < 0x7C00 else (np.float32(np.inf) if em == 0x7C00 else np.float32(np.nan))
    return -mag if h & 0x8000 else mag


@numba.njit(inline="always", cache=True)
def _load_f16(row, off):
    """Little-endian float16 at row[off:off+2] -> float32."""
    return _f16_bits_to_f32(np.int64(row[off]) | (np.int64(row[off + 1]) << 8))


@numba.njit(**_FAST)
def gemv_f16(x, w, out):
    """x (n, k) float32 @ w (d, k).T, w as float16 bits (uint16) -> out (n, d) float32.

    Each weight row is widened once into a float32 scratch row, then dotted with all n
    activation rows: the conversion, not memory, is the cost, so it must not repeat per row
    of x (beam search runs n = beam size).
    """
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        buf = np.empty(k, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            for j in range(k):
                buf[j] = _f16_bits_to_f32(np.int64(w[r, j]))
            for t in range(n):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += buf[j] * x[t, j]
                out[t, r] = acc


@numba.njit(**_FAST)
def gemv_f32(x, w, out):
    """x (n, k) float32 @ w (d, k).T float32 -> out (n, d): few activation rows.

    BLAS threads collapse on these decode-time shapes on a busy 2-core machine (measured
    7-12 ms instead of 0.2 ms for 1536x384 at 2 threads); numba's pool does not.
    """
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            for t in range(n):
                acc = np.float32(0.0)
                for j in range(k):
                    acc += w[r, j] * x[t, j]
                out[t, r] = acc


@numba.njit(inline="always", cache=True)
def _nibbles(v):
    """A byte as (low nibble, high nibble) float32s, computed in float (see module doc)."""
    vf = np.float32(v)
    hi = np.floor(vf * np.float32(0.0625))
    return vf - np.float32(16.0) * hi, hi


@numba.njit(inline="always", cache=True)
def _bit16(qh, j):
    """16.0 if bit j of a Q5 block's qh is set, else 0.0 (a select, so it vectorizes)."""
    return np.float32(16.0) if (qh >> j) & 1 else np.float32(0.0)


@numba.njit(**_FAST)
def gemv_q8_0(x, xd, xs, w, out):
    """x (n, k) @ Q8_0 w (d, k/32*34).T -> out (n, d); w = d*q."""
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        lanes = np.empty(QK, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            row = w[r]
            for t in range(n):
                lanes[:] = 0
                for b in range(k // QK):
                    o = b * 34
                    dd = _load_f16(row, o) * xd[t, b]
                    for j in range(QK):
                        lanes[j] += dd * (np.float32(np.int8(row[o + 2 + j])) * x[t, b * QK + j])
                out[t, r] = lanes.sum()


@numba.njit(**_FAST)
def gemv_q4_0(x, xd, xs, w, out):
    """x (n, k) @ Q4_0 w (d, k/32*18).T -> out (n, d); w = d*(q-8)."""
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        lanes = np.empty(QK, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            row = w[r]
            for t in range(n):
                lanes[:] = 0
                acc = np.float32(0.0)
                for b in range(k // QK):
                    o = b * 18
                    dd = _load_f16(row, o) * xd[t, b]
                    acc -= dd * (np.float32(8.0) * xs[t, b])
                    for j in range(QK // 2):
                        lo, hi = _nibbles(row[o + 2 + j])
                        lanes[j] += dd * (lo * x[t, b * QK + j])
                        lanes[j + 16] += dd * (hi * x[t, b * QK + 16 + j])
                out[t, r] = acc + lanes.sum()


@numba.njit(**_FAST)
def gemv_q4_1(x, xd, xs, w, out):
    """x (n, k) @ Q4_1 w (d, k/32*20).T -> out (n, d); w = d*q + m."""
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        lanes = np.empty(QK, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            row = w[r]
            for t in range(n):
                lanes[:] = 0
                acc = np.float32(0.0)
                for b in range(k // QK):
                    o = b * 20
                    dd = _load_f16(row, o) * xd[t, b]
                    acc += _load_f16(row, o + 2) * xs[t, b]
                    for j in range(QK // 2):
                        lo, hi = _nibbles(row[o + 4 + j])
                        lanes[j] += dd * (lo * x[t, b * QK + j])
                        lanes[j + 16] += dd * (hi * x[t, b * QK + 16 + j])
                out[t, r] = acc + lanes.sum()


@numba.njit(inline="always", cache=True)
def _qh(row, off):
    """The 32 fifth bits of a Q5 block as an int (bit j belongs to weight j)."""
    return (
        np.int64(row[off])
        | (np.int64(row[off + 1]) << 8)
        | (np.int64(row[off + 2]) << 16)
        | (np.int64(row[off + 3]) << 24)
    )


@numba.njit(**_FAST)
def gemv_q5_0(x, xd, xs, w, out):
    """x (n, k) @ Q5_0 w (d, k/32*22).T -> out (n, d); w = d*(q-16)."""
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        lanes = np.empty(QK, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            row = w[r]
            for t in range(n):
                lanes[:] = 0
                acc = np.float32(0.0)
                for b in range(k // QK):
                    o = b * 22
                    dd = _load_f16(row, o) * xd[t, b]
                    acc -= dd * (np.float32(16.0) * xs[t, b])
                    qh = _qh(row, o + 2)
                    for j in range(QK // 2):
                        lo, hi = _nibbles(row[o + 6 + j])
                        lanes[j] += dd * ((lo + _bit16(qh, j)) * x[t, b * QK + j])
                        lanes[j + 16] += dd * ((hi + _bit16(qh, j + 16)) * x[t, b * QK + 16 + j])
                out[t, r] = acc + lanes.sum()


@numba.njit(**_FAST)
def gemv_q5_1(x, xd, xs, w, out):
    """x (n, k) @ Q5_1 w (d, k/32*24).T -> out (n, d); w = d*q + m."""
    n, k = x.shape
    rows = w.shape[0]
    for c in prange((rows + _CHUNK - 1) // _CHUNK):
        lanes = np.empty(QK, np.float32)
        for r in range(c * _CHUNK, min(rows, (c + 1) * _CHUNK)):
            row = w[r]
            for t in range(n):
                lanes[:] = 0
                acc = np.float32(0.0)
                for b in range(k // QK):
                    o = b * 24
                    dd = _load_f16(row, o) * xd[t, b]
                    acc += _load_f16(row, o + 2) * xs[t, b]
                    qh = _qh(row, o + 4)
                    for j in range(QK // 2):
                        lo, hi = _nibbles(row[o + 8 + j])
                        lanes[j] += dd * ((lo + _bit16(qh, j)) * x[t, b * QK + j])
                        lanes[j + 16] += dd * ((hi + _bit16(qh, j + 16)) * x[t, b * QK + 16 + j])
                out[t, r] = acc + lanes.sum()
