"""ggml's own arithmetic for quantized matrix products (`matmul(..., ggml_exact=True)`).

ggml does not multiply quantized weights by float activations: it first quantizes each
32-value block of x to Q8_0 (for Q8_0/Q4_0/Q5_0 weights) or Q8_1 (for Q4_1/Q5_1), see
`quant.quantize_rows_q8`, then takes integer dot products per block scaled by d_w*d_x, plus
m_w*s_x for the "_1" types. Reproducing that is what makes LLaMA logits match llama.cpp to
~1e-5 (float activations move SmolLM2's logits by up to 0.17 and fork greedy text).

Float operations follow ggml's scalar order: per block, the product d_w*d_x is rounded to
float32, then multiplied by the integer sum and accumulated in float32; m*s terms are
accumulated separately and added at the end. (ggml's SIMD code sums 8 lanes and reduces
them as a tree, so outputs agree to float32 rounding, not bit for bit.)

Weights: (d, bytes) uint8 blocks; activations: q (n, k) int8, xd/xs (n, k // 32) float32.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from whisperlite.kernels.gemv import _qh
from whisperlite.kernels.quant import QK, _load_f16

_EXACT = dict(parallel=True, fastmath=False, cache=True)


@numba.njit(**_EXACT)
def dot_q8_0_q8_0(xq, xd, xs, w, out):
    """Q8_0 w (d, k/32*34) · Q8_0 x -> out (n, d) float32."""
    n, k = xq.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 34
                isum = np.int32(0)
                for j in range(QK):
                    isum += np.int32(np.int8(row[o + 2 + j])) * np.int32(xq[t, b * QK + j])
                acc += (_load_f16(row, o) * xd[t, b]) * np.float32(isum)
            out[t, r] = acc


@numba.njit(**_EXACT)
def dot_q4_0_q8_0(xq, xd, xs, w, out):
    """Q4_0 w (d, k/32*18) · Q8_0 x -> out (n, d) float32."""
    n, k = xq.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 18
                isum = np.int32(0)
                for j in range(QK // 2):
                    v = np.int32(row[o + 2 + j])
                    isum += ((v & 15) - 8) * np.int32(xq[t, b * QK + j])
                    isum += ((v >> 4) - 8) * np.int32(xq[t, b * QK + 16 + j])
                acc += (_load_f16(row, o) * xd[t, b]) * np.float32(isum)
            out[t, r] = acc


@numba.njit(**_EXACT)
def dot_q4_1_q8_1(xq, xd, xs, w, out):
    """Q4_1 w (d, k/32*20) · Q8_1 x -> out (n, d) float32."""
    n, k = xq.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            summs = np.float32(0.0)
            for b in range(k // QK):
                o = b * 20
                isum = np.int32(0)
                for j in range(QK // 2):
                    v = np.int32(row[o + 4 + j])
                    isum += (v & 15) * np.int32(xq[t, b * QK + j])
                    isum += (v >> 4) * np.int32(xq[t, b * QK + 16 + j])
                acc += (_load_f16(row, o) * xd[t, b]) * np.float32(isum)
                summs += _load_f16(row, o + 2) * xs[t, b]
            out[t, r] = acc + summs


@numba.njit(**_EXACT)
def dot_q5_0_q8_0(xq, xd, xs, w, out):
    """Q5_0 w (d, k/32*22) · Q8_0 x -> out (n, d) float32."""
    n, k = xq.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(k // QK):
                o = b * 22
                qh = _qh(row, o + 2)
                isum = np.int32(0)
                for j in range(QK // 2):
                    v = np.int32(row[o + 6 + j])
                    q0 = ((v & 15) | np.int32(((qh >> j) & 1) << 4)) - 16
                    q1 = ((v >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)) - 16
                    isum += q0 * np.int32(xq[t, b * QK + j]) + q1 * np.int32(xq[t, b * QK + 16 + j])
                acc += (_load_f16(row, o) * xd[t, b]) * np.float32(isum)
            out[t, r] = acc


@numba.njit(**_EXACT)
def dot_q5_1_q8_1(xq, xd, xs, w, out):
    """Q5_1 w (d, k/32*24) · Q8_1 x -> out (n, d) float32."""
    n, k = xq.shape
    for r in prange(w.shape[0]):
        row = w[r]
        for t in range(n):
            acc = np.float32(0.0)
            summs = np.float32(0.0)
            for b in range(k // QK):
                o = b * 24
                qh = _qh(row, o + 4)
                isum = np.int32(0)
                for j in range(QK // 2):
                    v = np.int32(row[o + 8 + j])
                    q0 = (v & 15) | np.int32(((qh >> j) & 1) << 4)
                    q1 = (v >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)
                    isum += q0 * np.int32(xq[t, b * QK + j]) + q1 * np.int32(xq[t, b * QK + 16 + j])
                acc += (_load_f16(row, o) * xd[t, b]) * np.float32(isum)
                summs += _load_f16(row, o + 2) * xs[t, b]
            out[t, r] = acc + summs
