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
from numba import prange, types
from numba.extending import overload

from whisperlite.kernels.llvm_ir import f16_bits_to_f32, range_max
from whisperlite.kernels.variants import njit_variant

# Below this many elements a kernel runs on the calling thread (measured: waking the
# OpenMP pool in passive mode costs ~0.1–0.5 ms, more than a 384-wide row takes).
PARALLEL_MIN = 32768


# Reassociation lets LLVM vectorize the row sums; NaN/inf semantics are kept. The numpy
# error model drops Python's zero-division check, whose branch blocked vectorizing any loop
# with a division (GELU ran 4x slower).
_FAST = {"contract", "nsz", "arcp", "reassoc"}


def _dual(body: Callable) -> Callable:
    """Compile `body` serially and in parallel; dispatch on the size of the first argument.

    The serial build releases the GIL, so threads of the row-split pool can run it side by side.
    """
    par = njit_variant(body, "par", parallel=True, fastmath=_FAST, error_model="numpy", cache=True)
    seq = njit_variant(body, "seq", fastmath=_FAST, error_model="numpy", nogil=True, cache=True)

    def run(x: np.ndarray, *args):
        return (par if x.size >= PARALLEL_MIN else seq)(x, *args)

    run.__name__ = body.__name__
    run.__doc__ = body.__doc__
    run.parallel, run.serial = par, seq
    return run


@numba.njit(inline="always", fastmath=_FAST, cache=True)
def expf(x: float) -> float:
    """exp for float32 without libm, so that loops using it vectorize (numba's math.exp is a
    scalar libm call: a 1500-wide softmax ran 8x slower with it).

    2^n · p(r) with n = round(x/ln2), r = x − n·ln2 (ln2 split in two for exactness) and p a
    degree-6 Taylor polynomial (|r| ≤ 0.35: relative error < 3e-7); 2^n is built from its
    bits. Branch-free selects: below −87 (including −inf, masked attention) the result is 0.
    """
    xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
    r = xc - n * np.float32(0.693145751953125) - n * np.float32(1.428606765330187e-06)
    p = np.float32(1.0) + r * (np.float32(1.0) + r * (np.float32(0.5) + r * (np.float32(1 / 6) + r * (
        np.float32(1 / 24) + r * (np.float32(1 / 120) + r * np.float32(1 / 720))))))
    scale = np.uint32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return p * scale if x > np.float32(-87.0) else np.float32(0.0)


@numba.njit(inline="always", fastmath=_FAST, cache=True)
def _gelu(v: float) -> float:
    # Exact-erf GELU (as torch's default) with erf from Abramowitz & Stegun 7.1.26
    # (|error| < 1.5e-7, below float32 resolution here); unlike math.erf it vectorizes.
    z = abs(v) * np.float32(0.7071067811865476)
    t = np.float32(1.0) / (np.float32(1.0) + np.float32(0.3275911) * z)
    poly = ((((np.float32(1.061405429) * t - np.float32(1.453152027)) * t + np.float32(1.421413741)) * t
             - np.float32(0.284496736)) * t + np.float32(0.254829592)) * t
    y = np.float32(1.0) - poly * expf(-z * z)
    erf = y if v >= 0 else -y
    return np.float32(0.5) * v * (np.float32(1.0) + erf)


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


def to_f32(v):
    """A float32 value, or float16 bits (uint16) converted to float32."""


@overload(to_f32, inline="always")
def _to_f32_impl(v):
    if isinstance(v, types.Integer):
        return lambda v: f16_bits_to_f32(v)
    return lambda v: v


@numba.njit(inline="always", fastmath=_FAST, cache=True)
def layer_norm_row(x, i, g, b, eps, out):
    """out[i] = LayerNorm of x[i] (statistics in float64, one rounding to out's type)."""
    d = x.shape[1]
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


def _layer_norm_body(x, g, b, eps):
    """LayerNorm over the last axis: x (n, d) -> new (n, d); statistics in float64."""
    out = np.empty_like(x)
    for i in prange(x.shape[0]):
        layer_norm_row(x, i, g, b, eps, out)
    return out


def _layer_norm_into_body(x, g, b, eps, out):
    """LayerNorm of x (n, d) written into a preallocated out (n, d) -> out."""
    for i in prange(x.shape[0]):
        layer_norm_row(x, i, g, b, eps, out)
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


def _row_max(x, i, d):
    """max(x[i, :d])."""


@overload(_row_max, inline="always")
def _row_max_impl(x, i, d):
    # A maximum loop stays scalar in LLVM (vmaxss, one element per cycle): over the
    # encoder's 54M attention scores per window that was ~17 ms of CPU.
    if x.layout == "C" and x.dtype in (types.float32, types.float64):
        return lambda x, i, d: range_max(x[i], 0, d)

    def scalar(x, i, d):
        m = x[i, 0]
        for j in range(d):
            m = max(m, x[i, j])
        return m

    return scalar


@numba.njit(inline="always", fastmath=_FAST, cache=True)
def exp_shifted_row(x, i, d):
    """In place x[i, :d] = exp(x[i, :d] - max(x[i, :d])) -> their float32 sum: a softmax
    row before its division (the softmax kernels here and the decoder step's attention)."""
    m = _row_max(x, i, d)
    s = np.float32(0.0)
    for j in range(d):
        e = expf(x[i, j] - m)
        x[i, j] = e
        s += e
    return s


def _softmax_body(x):
    """In place softmax over the last axis: x (n, d) -> x."""
    n, d = x.shape
    for i in prange(n):
        inv = np.float32(1.0) / exp_shifted_row(x, i, d)
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
            gate[i, j] = g / (np.float32(1.0) + expf(-g)) * up[i, j]
    return gate


def _bias_gelu_add_body(x, b, y):
    """In place x = gelu(x + b) + y: x (n, d), b (d,), y (n, d) -> x (a convolution's
    activation plus the positional embedding)."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] = _gelu(x[i, j] + b[j]) + y[i, j]
    return x


def _bias_residual_body(x, y, b):
    """In place residual x += y + b: x (n, d), y (n, d), b (d,) -> x."""
    n, d = x.shape
    for i in prange(n):
        for j in range(d):
            x[i, j] += y[i, j] + b[j]
    return x


def _bias_scale_body(x, b, scale):
    """In place x[:, :k] = (x[:, :k] + b) * scale for b (k,): x (n, d) -> x (the query
    columns of a fused query|key|value product get their bias and attention scale)."""
    n = x.shape[0]
    k = b.shape[0]
    for i in prange(n):
        for j in range(k):
            x[i, j] = (x[i, j] + b[j]) * scale
    return x


def _softmax_unnormalized_body(x, sums):
    """In place x = exp(x - rowmax(x)), sums[i] = sum of row i: x (n, d), sums (n,) -> x.

    Dividing by the sums is left to the caller: after the product with V it touches the
    (n, head_dim) output instead of the (n, d) probabilities."""
    n, d = x.shape
    for i in prange(n):
        sums[i] = exp_shifted_row(x, i, d)
    return x


def _divide_heads_body(x, sums):
    """In place x[i, h*hd:(h+1)*hd] /= sums[h, i]: x (n, n_head*hd), sums (n_head, >= n) -> x."""
    n, d = x.shape
    n_head = sums.shape[0]
    hd = d // n_head
    for i in prange(n):
        for h in range(n_head):
            inv = np.float32(1.0) / sums[h, i]
            for c in range(h * hd, (h + 1) * hd):
                x[i, c] *= inv
    return x


def _im2col3_body(x, stride, r0, out):
    """Rows r0 … r0+n-1 of a kernel-3, padding-1 convolution's im2col: x (t, c) -> out
    (n, 3c), out[i] = [x[s-1], x[s], x[s+1]] with s = (r0+i)*stride and zeros outside x."""
    t, c = x.shape
    n = out.shape[0]
    for i in prange(n):
        s = (r0 + i) * stride
        for tap in range(3):
            src = s + tap - 1
            if 0 <= src < t:
                for j in range(c):
                    out[i, tap * c + j] = x[src, j]
            else:
                for j in range(c):
                    out[i, tap * c + j] = np.float32(0.0)
    return out


gelu_ = _dual(_gelu_body)
bias_gelu_ = _dual(_bias_gelu_body)
layer_norm = _dual(_layer_norm_body)
layer_norm_into = _dual(_layer_norm_into_body)
bias_gelu_add_ = _dual(_bias_gelu_add_body)
bias_residual_ = _dual(_bias_residual_body)
bias_scale_ = _dual(_bias_scale_body)
softmax_unnormalized_ = _dual(_softmax_unnormalized_body)
divide_heads_ = _dual(_divide_heads_body)
im2col3 = _dual(_im2col3_body)
rms_norm = _dual(_rms_norm_body)
softmax_ = _dual(_softmax_body)
add_ = _dual(_add_body)
silu_mul_ = _dual(_silu_mul_body)
