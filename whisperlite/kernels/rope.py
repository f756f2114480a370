"""Rotary position embeddings, computed the way ggml computes them.

ggml's "normal" rope mode (the one llama.cpp uses for the llama architecture) rotates
adjacent pairs (x[2i], x[2i+1]); GGUF conversion permutes the Q/K weight rows so that this
equals Hugging Face's rotate-half on the original weights. Its "neox" mode (Gemma, whose
rows are not permuted) rotates the pairs (x[i], x[i + n_rot/2]) with the same angles. Angles are float32 throughout:
theta_i = p * base^(-2i/n_rot) built by repeated multiplication, as ggml does, so the same
rounding reaches the same cos/sin (the C library's cosf/sinf), and the rotation is two
float32 products and a sum, fused or not as the llama.cpp build compiled it.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from whisperlite.kernels.variants import njit_variant

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
    if n_rot < 2 or n_rot % 2 or (freq_factors is not None and np.shape(freq_factors) != (half,)):
        raise ValueError(f"rope_cache: n_rot {n_rot} must be even and positive, with {half} freq_factors")
    # powf's result: computed in float64 and rounded once (glibc's powf is correctly rounded).
    theta_scale = np.float32(np.float64(base) ** np.float64(np.float32(-2.0) / np.float32(n_rot)))
    ff = np.ones(half, np.float32) if freq_factors is None else np.asarray(freq_factors, np.float32)
    cos = np.empty((len(positions), half), np.float32)
    sin = np.empty((len(positions), half), np.float32)
    _rope_cache_kernel(np.asarray(positions, np.float32), theta_scale, ff, np.float32(freq_scale), cos, sin)
    return cos, sin


@numba.njit(cache=True)
def _rope_cache_kernel(positions, theta_scale, ff, freq_scale, cos, sin):
    """ggml_rope_cache_init: positions (n,) -> cos, sin (n, half) float32.

    cosf/sinf are the C library's, as in ggml (numba's float32 math.cos calls libm's cosf;
    glibc's are not correctly rounded, and a last-bit difference can flip an f16 rounding
    of K downstream).
    """
    for t in range(positions.shape[0]):
        theta = positions[t]
        for i in range(cos.shape[1]):
            th = np.float32(freq_scale * np.float32(theta / ff[i]))
            cos[t, i] = math.cos(th)
            sin[t, i] = math.sin(th)
            theta = np.float32(theta * theta_scale)


@numba.njit(inline="always", cache=True)
def rotate_head(x, t, h, cos, sin, fused, neox):
    """Token t, head h of x rotated in place (arguments as `_rope_body` takes them)."""
    half = cos.shape[1]
    for i in range(half):
        a = i if neox else 2 * i
        b = i + half if neox else 2 * i + 1
        x0 = x[t, h, a]
        x1 = x[t, h, b]
        c = cos[t, i]
        s = sin[t, i]
        if fused:
            x[t, h, a] = np.float32(np.float64(c) * np.float64(x0) - np.float64(np.float32(s * x1)))
            x[t, h, b] = np.float32(np.float64(s) * np.float64(x0) + np.float64(np.float32(c * x1)))
        else:
            x[t, h, a] = x0 * c - x1 * s
            x[t, h, b] = x0 * s + x1 * c


def _rope_body(x, cos, sin, fused, neox):
    """In place rotation of pairs (2i, 2i+1), or (i, i + n_rot/2) with neox, i < cos.shape[1]:
    x (n, heads, hd) -> x, cos/sin (n, n_rot // 2); dims from n_rot on are left as they are.

    fused: as GCC contracts ggml's rotate_pairs with FMA (vfmsub231ss, vfmadd132ss in
    llama-cpp-python 0.3.36's AVX2 build): fma(c, x0, -(s*x1)) and fma(s, x0, c*x1); else
    two rounded products and a sum. (An fma is the float64 product plus the rounded
    addend, rounded to float32.) ggml runs both modes through one rotate_pairs, so the
    contraction is the same in both.
    """
    n, heads, _ = x.shape
    for job in prange(n * heads):
        rotate_head(x, job // heads, job % heads, cos, sin, fused, neox)
    return x


_rope_par = njit_variant(_rope_body, "par", parallel=True, cache=True)
_rope_seq = njit_variant(_rope_body, "seq", cache=True)


def rope_(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, fused: bool = False, neox: bool = False) -> np.ndarray:
    """Rotate x (n, heads, head_dim) in place with a `rope_cache` for its n positions
    (fused: with the fused multiply-adds of a vectorized FMA build of ggml; neox: ggml's
    NEOX mode, halves instead of adjacent pairs)."""
    # The kernel indexes x[t, h, 2i + 1] for i < cos.shape[1] unchecked: sizes come from a
    # model file, so they are checked here, once per call.
    if (x.ndim != 3 or cos.ndim != 2 or cos.shape != sin.shape or cos.shape[0] != x.shape[0]
            or 2 * cos.shape[1] > x.shape[2]):
        raise ValueError(f"rope_: x {x.shape} does not fit a rope cache of {cos.shape} / {sin.shape}")
    run = _rope_par if x.shape[0] * x.shape[1] >= PARALLEL_MIN_ROWS else _rope_seq
    return run(x, cos, sin, fused, neox)
