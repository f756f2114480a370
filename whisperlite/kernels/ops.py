"""Fused elementwise and row kernels (numba), each one pass over memory.

numpy expressions for these run single-threaded and allocate temporaries per operation;
in a BLAS encoder they cost more than the matrix products themselves. Every kernel is
compiled twice from one body: a parallel version for big arrays (encoder, prompts) and a
serial one for the single rows of token-by-token decoding, where waking a thread pool
costs more than the work. Each has a numpy reference in tests/test_ops.py.
"""
from __future__ import annotations

import math
from typing import Callable

import numba
import numpy as np
from numba import prange

# Below this many elements a kernel runs on the calling thread (measured: waking the
# OpenMP pool in passive mode costs ~0.1–0.5 ms, more than a 384-wide row takes).
PARALLEL_MIN = 32768


def _dual(body: Callable) -> Callable:
    """Compile `body` serially and in parallel; dispatch on the size of the first argument."""
    par = numba.njit(parallel=True, cache=True)(body)
    seq = numba.njit(parallel=False, cache=True)(body)

    def run(x: np.ndarray, *args):
        return (par if x.size >= PARALLEL_MIN else seq)(x, *args)

    run.__name__ = body.__name__
    run.__doc__ = body.__doc__
    run.parallel, run.serial = par, seq
    return run


@numba.njit(inline="always", cache=True)
def _gelu(v: float) -> float:
    # Exact-erf GELU (as torch's default) with erf from Abramowitz & Stegun 7.1.26
    # (|error| < 1.5e-7, below float32 resolution here); unlike math.erf it vectorizes.
    z = abs(v) * 0.7071067811865476
    t = 1.0 / (1.0 + 0.3275911 * z)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * math.exp(-z * z)
    erf = y if v >= 0 else -y
    return 0.5 * v * (1.0 + erf)


def _gelu_body(x):
    """In place exact GELU: x (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] = _gelu(x[i, j])
    return x


def _bias_gelu_body(x, b):
    """In place x = gelu(x + b): x (n, d), b (d,) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] = _gelu(x[i, j] + b[j])
    return x


def _layer_norm_body(x, g, b, eps):
    """LayerNorm over the last axis: x (n, d) -> new (n, d); statistics in float64."""
    n, d = x.shape
    out = np.empty_like(x)
    for i in prange(n):
        s = 0.0
        for j in range(d):
            s += x[i, j]
        mean = s / d
        v = 0.0
        for j in range(d):
            t = x[i, j] - mean
            v += t * t
        inv = 1.0 / math.sqrt(v / d + eps)
        for j in range(d):
            out[i, j] = (x[i, j] - mean) * inv * g[j] + b[j]
    return out


def _rms_norm_body(x, g, eps):
    """RMSNorm over the last axis: x (n, d) -> new (n, d)."""
    n, d = x.shape
    out = np.empty_like(x)
    for i in prange(n):
        s = 0.0
        for j in range(d):
            s += x[i, j] * x[i, j]
        inv = 1.0 / math.sqrt(s / d + eps)
        for j in range(d):
            out[i, j] = x[i, j] * inv * g[j]
    return out


def _softmax_body(x):
    """In place softmax over the last axis: x (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        m = -np.inf
        for j in range(d):
            if x[i, j] > m:
                m = x[i, j]
        s = 0.0
        for j in range(d):
            e = math.exp(x[i, j] - m)
            x[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(d):
            x[i, j] *= inv
    return x


def _add_body(x, y):
    """In place residual x += y: (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] += y[i, j]
    return x


def _silu_mul_body(gate, up):
    """In place SwiGLU gate = silu(gate) * up: (n, d) -> gate."""
    n, d = gate.shape
    for i in prange(n):
        for j in range(d):
            g = gate[i, j]
            gate[i, j] = g / (1.0 + math.exp(-g)) * up[i, j]
    return gate


def softmax_simd_(x: np.ndarray) -> np.ndarray:
    """In place softmax over the last axis with numpy's SIMD exp (one thread).

    numba's exp is a scalar libm call; numpy's float32 exp is vectorized and measured 2x
    faster than the parallel numba kernel on 1500-wide encoder attention rows, so large
    softmaxes run here, split across threads by the caller.
    """
    x -= x.max(axis=-1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    return x


gelu_ = _dual(_gelu_body)
bias_gelu_ = _dual(_bias_gelu_body)
layer_norm = _dual(_layer_norm_body)
rms_norm = _dual(_rms_norm_body)
softmax_ = _dual(_softmax_body)
add_ = _dual(_add_body)
silu_mul_ = _dual(_silu_mul_body)
