"""Fused, parallel elementwise and row kernels (numba).

numpy expressions for these run single-threaded and allocate temporaries per operation;
in a BLAS encoder they cost more than the matrix products themselves, so each op here is
one parallel pass, writing in place where the caller allows it. Each has a numpy
reference in tests/test_ops.py.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

_SQRT_HALF = 0.7071067811865476


@numba.njit(parallel=True, fastmath=False, cache=True)
def gelu_(x: np.ndarray) -> np.ndarray:
    """In place exact (erf) GELU, as torch.nn.functional.gelu: x (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            v = x[i, j]
            x[i, j] = 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))
    return x


@numba.njit(parallel=True, cache=True)
def bias_gelu_(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """In place x = gelu(x + b): x (n, d), b (d,) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            v = x[i, j] + b[j]
            x[i, j] = 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))
    return x


@numba.njit(parallel=True, cache=True)
def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: x (n, d) -> new (n, d); mean/var accumulated in float64."""
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


@numba.njit(parallel=True, cache=True)
def rms_norm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
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


@numba.njit(parallel=True, cache=True)
def softmax_(x: np.ndarray) -> np.ndarray:
    """In place softmax over the last axis of a 2-D array: x (n, d) -> x."""
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


@numba.njit(parallel=True, cache=True)
def add_(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """In place residual x += y: (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] += y[i, j]
    return x


@numba.njit(parallel=True, cache=True)
def bias_add_(x: np.ndarray, b: np.ndarray, res: np.ndarray) -> np.ndarray:
    """In place x = x + b + res (projection bias and residual in one pass): x (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] += b[j] + res[i, j]
    return x


@numba.njit(parallel=True, cache=True)
def silu_mul_(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """In place SwiGLU gate = silu(gate) * up: (n, d) -> gate."""
    n, d = gate.shape
    for i in prange(n):
        for j in range(d):
            g = gate[i, j]
            gate[i, j] = g / (1.0 + math.exp(-g)) * up[i, j]
    return gate
