"""Rotary position embeddings, computed the way ggml computes them.

ggml's "normal" rope mode (the one llama.cpp uses for the llama architecture) rotates
adjacent pairs (x[2i], x[2i+1]); GGUF conversion permutes the Q/K weight rows so that this
equals Hugging Face's rotate-half on the original weights. Angles are float32 throughout:
theta_i = p * base^(-2i/n_rot) built by repeated multiplication, as ggml does, so the same
rounding reaches the same cos/sin, and the rotation is two plain float32 products and a
sum (no fused multiply-add), as ggml's scalar loop compiles.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

# Below this many (token, head) pairs the rotation runs on the calling thread: waking the
# OpenMP pool costs more than rotating one token's heads.
PARALLEL_MIN_ROWS = 64


def rope_cache(
    positions: np.ndarray,
    n_rot: int,
    base: float,
    freq_scale: float = 1.0,
    freq_factors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of each rotated pair: positions (n,) -> two (n, n_rot // 2) float32.

    freq_scale < 1 is linear position interpolation; freq_factors (n_rot // 2,) divide the
    per-pair frequency (Llama 3's long-context rope_freqs tensor).
    """
    half = n_rot // 2
    # powf/cosf/sinf results: computed in float64 and rounded once, which is what a
    # correctly rounded libm returns.
    theta_scale = np.float32(np.float64(base) ** np.float64(np.float32(-2.0) / np.float32(n_rot)))
    theta = np.empty((len(positions), half), np.float32)
    t = np.asarray(positions, np.float32).copy()
    for i in range(half):
        theta[:, i] = t
        t *= theta_scale
    if freq_factors is not None:
        theta /= np.asarray(freq_factors, np.float32)[None, :]
    theta *= np.float32(freq_scale)
    t64 = theta.astype(np.float64)
    return np.cos(t64).astype(np.float32), np.sin(t64).astype(np.float32)


def _rope_body(x, cos, sin):
    """In place rotation of pairs (2i, 2i+1), i < cos.shape[1]: x (n, heads, hd) -> x,
    cos/sin (n, n_rot // 2); dims from n_rot on are left as they are."""
    n, heads, _ = x.shape
    half = cos.shape[1]
    for job in prange(n * heads):
        t = job // heads
        h = job % heads
        for i in range(half):
            x0 = x[t, h, 2 * i]
            x1 = x[t, h, 2 * i + 1]
            c = cos[t, i]
            s = sin[t, i]
            x[t, h, 2 * i] = x0 * c - x1 * s
            x[t, h, 2 * i + 1] = x0 * s + x1 * c
    return x


_rope_par = numba.njit(parallel=True, cache=True)(_rope_body)
_rope_seq = numba.njit(parallel=False, cache=True)(_rope_body)


def rope_(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate x (n, heads, head_dim) in place with a `rope_cache` for its n positions."""
    run = _rope_par if x.shape[0] * x.shape[1] >= PARALLEL_MIN_ROWS else _rope_seq
    return run(x, cos, sin)

