"""Fused dequantize-and-dot kernels for a few rows of activations (token-by-token decoding).

Decoding is memory-bound: each weight byte is read once per token, so the win is reading
4-8x fewer bytes than float32 while keeping the decode arithmetic under the memory time.
Every kernel runs `prange` over weight rows and decodes each block straight into the dot
product; nothing is written but the output. fastmath lets LLVM vectorize the per-block
float reductions (their order is not part of any contract here; `ggml.py` has the kernels
whose arithmetic order is).

Block sums of x are hoisted out of the row loop: for the "_1" types w = d*q + m, so
w·x = d*(q·x) + m*sum(x) per block, and for the "_0" types the offset (-8 or -16) folds the
same way, leaving one multiply-add per weight in the inner loop.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from whisperlite.kernels.quant import QK, _load_f16

_FAST = dict(parallel=True, fastmath=True, cache=True)


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


@numba.njit(**_FAST)
def gemv_f32(x, w, out):
    """x (n, k) float32 @ w (d, k).T float32 -> out (n, d). Reference speed for the others."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        for t in range(n):
            acc = np.float32(0.0)
            for c in range(k):
                acc += w[r, c] * x[t, c]
            out[t, r] = acc


@numba.njit(**_FAST)
def gemv_f16(x, w, out):
    """x (n, k) float32 @ w (d, k).T, w as float16 bits (uint16) -> out (n, d) float32.

    Branch-free float16 -> float32 so the loop vectorizes: shifting the 15 exponent+mantissa
    bits into float32 position and multiplying by 2^112 rebiases normals and subnormals
    exactly; exponent 31 (inf/nan) is patched with a select.
    """
    n, k = x.shape
    for r in prange(w.shape[0]):
        for t in range(n):
            acc = np.float32(0.0)
            for c in range(k):
                h = np.uint32(w[r, c])
                em = h & np.uint32(0x7FFF)
                mag = np.uint32(em << np.uint32(13)).view(np.float32) * np.float32(5.192296858534828e33)
                if em >= np.uint32(0x7C00):
                    mag = np.float32(np.inf) if em == np.uint32(0x7C00) else np.float32(np.nan)
                v = -mag if h & np.uint32(0x8000) else mag
                acc += v * x[t, c]
            out[t, r] = acc


@numba.njit(**_FAST)
def gemv_q8_0(x, xsum, w, out):
    """x (n, k) @ Q8_0 w (d, k/32*34).T -> out (n, d) float32 (xsum unused, uniform call)."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 34
                s = np.float32(0.0)
                for j in range(QK):
                    s += np.float32(np.int8(row[o + 2 + j])) * x[t, b * QK + j]
                acc += _load_f16(row, o) * s
            out[t, r] = acc


@numba.njit(**_FAST)
def gemv_q4_0(x, xsum, w, out):
    """x (n, k) @ Q4_0 w (d, k/32*18).T -> out (n, d); w = d*(q-8) so w·x = d*(q·x - 8*sum x)."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 18
                s = np.float32(0.0)
                for j in range(QK // 2):
                    v = row[o + 2 + j]
                    s += np.float32(v & 15) * x[t, b * QK + j] + np.float32(v >> 4) * x[t, b * QK + 16 + j]
                acc += _load_f16(row, o) * (s - np.float32(8.0) * xsum[t, b])
            out[t, r] = acc


@numba.njit(**_FAST)
def gemv_q4_1(x, xsum, w, out):
    """x (n, k) @ Q4_1 w (d, k/32*20).T -> out (n, d); w = d*q + m."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 20
                s = np.float32(0.0)
                for j in range(QK // 2):
                    v = row[o + 4 + j]
                    s += np.float32(v & 15) * x[t, b * QK + j] + np.float32(v >> 4) * x[t, b * QK + 16 + j]
                acc += _load_f16(row, o) * s + _load_f16(row, o + 2) * xsum[t, b]
            out[t, r] = acc


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
def gemv_q5_0(x, xsum, w, out):
    """x (n, k) @ Q5_0 w (d, k/32*22).T -> out (n, d); w = d*(q-16)."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 22
                qh = _qh(row, o + 2)
                s = np.float32(0.0)
                for j in range(QK // 2):
                    v = np.int64(row[o + 6 + j])
                    q0 = (v & 15) | (((qh >> j) & 1) << 4)
                    q1 = (v >> 4) | (((qh >> (j + 16)) & 1) << 4)
                    s += np.float32(q0) * x[t, b * QK + j] + np.float32(q1) * x[t, b * QK + 16 + j]
                acc += _load_f16(row, o) * (s - np.float32(16.0) * xsum[t, b])
            out[t, r] = acc


@numba.njit(**_FAST)
def gemv_q5_1(x, xsum, w, out):
    """x (n, k) @ Q5_1 w (d, k/32*24).T -> out (n, d); w = d*q + m."""
    n, k = x.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 24
                qh = _qh(row, o + 4)
                s = np.float32(0.0)
                for j in range(QK // 2):
                    v = np.int64(row[o + 8 + j])
                    q0 = (v & 15) | (((qh >> j) & 1) << 4)
                    q1 = (v >> 4) | (((qh >> (j + 16)) & 1) << 4)
                    s += np.float32(q0) * x[t, b * QK + j] + np.float32(q1) * x[t, b * QK + 16 + j]
                acc += _load_f16(row, o) * s + _load_f16(row, o + 2) * xsum[t, b]
            out[t, r] = acc
