"""Causal grouped-query attention over a KV cache, with llama.cpp's float16 roundings.

llama.cpp keeps K and V in a float16 cache and multiplies through ggml's F16 matrix
product, which rounds its float32 operand to float16 first: so the query is rounded to
f16 before q·k, and the softmax probabilities are rounded to f16 before p·V. The cache
here holds float32 values that are already f16-rounded (`round_f16`), which keeps the
inner loops plain float32 (vectorizable) while giving the same products.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from whisperlite.kernels.quant import f16_to_f32, f32_to_f16
from whisperlite.kernels.variants import njit_variant

# Below this many query·key products the kernel runs on the calling thread: a single
# decoding step over a short context is cheaper than waking the OpenMP pool.
PARALLEL_MIN_WORK = 1 << 16


def round_f16(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest float16 (half to even), kept as float32."""
    return x.astype(np.float16).astype(np.float32)


@numba.njit(inline="always", cache=True)
def _r16(v: np.float32) -> np.float32:
    return f16_to_f32(f32_to_f16(v))


def _attention_body(q, k_cache, v_cache, pos0, scale, out):
    """Causal GQA: q (n, n_head, hd) float32; k_cache (n_kv, n_ctx, hd) and v_cache (n_kv,
    hd, n_ctx) (transposed) float32 holding f16-rounded values; query row i sits at position pos0 + i and attends to cache
    rows 0 … pos0 + i; out (n, n_head, hd) float32. Heads h share KV head h // (n_head/n_kv)."""
    n, n_head, hd = q.shape
    group = n_head // k_cache.shape[0]
    for job in prange(n * n_head):
        i = job // n_head
        h = job % n_head
        g = h // group
        length = pos0 + i + 1
        qh = np.empty(hd, np.float32)
        for c in range(hd):
            qh[c] = _r16(q[i, h, c])
        p = np.empty(length, np.float32)
        m = np.float32(-np.inf)
        for t in range(length):
            acc = np.float32(0.0)
            for c in range(hd):
                acc += k_cache[g, t, c] * qh[c]
            s = acc * np.float32(scale)
            p[t] = s
            m = max(m, s)
        # ggml's softmax: float32 exponentials summed in double, scaled by float32(1/sum).
        total = 0.0
        for t in range(length):
            e = np.float32(math.exp(p[t] - m))
            p[t] = e
            total += e
        inv = np.float32(1.0 / total)
        o = np.zeros(hd, np.float32)
        for t in range(length):
            w = _r16(p[t] * inv)
            for c in range(hd):
                o[c] += w * v_cache[g, c, t]
        for c in range(hd):
            out[i, h, c] = o[c]
    return out


_attention_par = njit_variant(_attention_body, "par", parallel=True, cache=True)
_attention_seq = njit_variant(_attention_body, "seq", cache=True)


def attention(
    q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int, scale: float, out: np.ndarray
) -> np.ndarray:
    """Causal attention of q (n, n_head, hd) at positions pos0 … pos0+n-1 -> out."""
    n, n_head, hd = q.shape
    work = n * n_head * (pos0 + n) * hd
    run = _attention_par if work >= PARALLEL_MIN_WORK else _attention_seq
    return run(q, k_cache, v_cache, pos0, scale, out)
