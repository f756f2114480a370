"""Matrix products over any `Weight`: y = x @ W.T (+ b), W stored (out, in) like nn.Linear.

Dispatch on the weight type and the number of activation rows n:
- float32 ndarray: BLAS with rows split over the kernel threads, except for
  n <= GEMV_MAX_ROWS on large matrices (numba GEMV, see gemv.gemv_f32).
- n <= GEMV_MAX_ROWS (token-by-token decoding): fused dequantize-and-dot kernels (gemv.py);
  memory-bound, so reading 2-7x fewer bytes than float32 is the whole point.
- more rows (encoder, prompt): dequantize TILE_BYTES of weight rows at a time into one
  reused float32 buffer and hand each tile to BLAS, so the full float32 matrix never exists
  (a 51864x384 logits matrix would be 80 MB) while the GEMM keeps BLAS speed.
- ggml_exact=True: ggml's own arithmetic (actquant.py) for every n, as ggml itself does.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.core.errors import QuantizationError
from whisperlite.kernels import gemv
from whisperlite.kernels.actquant import quantize_activations
from whisperlite.kernels.quant import QK, dequantize_rows
from whisperlite.kernels.tensor import QTensor, Weight
from whisperlite.kernels.threads import get_threads, one_numba_thread, run_parallel

GEMV_MAX_ROWS = 8
# float32 matrices below this size stay with single-threaded BLAS even for few rows: waking
# a thread pool costs more than reading a 384x1536 matrix on one core.
GEMV_F32_MIN_WEIGHTS = 4_000_000
TILE_BYTES = 1 << 20  # float32 tile size: L2-sized, large enough for BLAS to reach full speed

_GEMV = {
    QType.Q8_0: gemv.gemv_q8_0,
    QType.Q4_0: gemv.gemv_q4_0,
    QType.Q4_1: gemv.gemv_q4_1,
    QType.Q5_0: gemv.gemv_q5_0,
    QType.Q5_1: gemv.gemv_q5_1,
}


# Below this many multiply-adds a product runs on the calling thread.
SPLIT_MIN_MACS = 4_000_000


def blas_matmul(x: np.ndarray, wt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x (n, k) @ wt (k, d) -> out (n, d), rows of x split over the kernel threads
    (single-threaded BLAS per part: see threads.py for why)."""
    n = x.shape[0]
    if out is None:
        out = np.empty((n, wt.shape[1]), np.float32)
    parts = min(get_threads(), n)
    if parts <= 1 or n * x.shape[1] * wt.shape[1] < SPLIT_MIN_MACS:
        return np.matmul(x, wt, out=out)  # decode-size products: splitting costs more than it saves
    bounds = [n * i // parts for i in range(parts + 1)]

    def part(i: int) -> None:
        a, b = bounds[i], bounds[i + 1]
        np.matmul(x[a:b], wt, out=out[a:b])

    run_parallel(part, len(bounds) - 1)
    return out


def _tiled(x: np.ndarray, w: QTensor) -> np.ndarray:
    """x (n, k) @ dequantize(w).T one tile of rows at a time -> (n, d).

    With several threads each takes a contiguous share of W's rows and tiles through it with
    its own buffer: the dequantization runs in parallel too, and the pool is woken once per
    product rather than once per tile (a 205-token prompt pass over float16 weights: ~44
    tiles)."""
    d, k = w.shape
    n = x.shape[0]
    step = max(QK, TILE_BYTES // (4 * k))
    y = np.empty((n, d), np.float32)
    parts = min(get_threads(), -(-d // QK))
    if n * k * d < SPLIT_MIN_MACS:
        parts = 1
    bounds = [d * i // parts for i in range(parts + 1)]

    def part(i: int) -> None:
        a, b = bounds[i], bounds[i + 1]
        tile = np.empty((min(step, b - a), k), np.float32)
        for r0 in range(a, b, step):
            r1 = min(b, r0 + step)
            t = dequantize_rows(w.data, w.qtype, w.shape, r0, r1, tile[: r1 - r0])
            np.matmul(x, t.T, out=y[:, r0:r1])

    if parts == 1:
        part(0)
    else:
        run_parallel(lambda i: one_numba_thread(part, i), parts)
    return y


def matmul(x: np.ndarray, w: Weight, *, ggml_exact: bool = False) -> np.ndarray:
    """x (n, k) float32 @ W (d, k).T -> (n, d) float32 (x (k,) -> (d,)).

    ggml_exact: compute as ggml's CPU backend does (activations quantized to Q8_0/Q8_1/Q8_K
    for block weights, rounded to float16 for F16 weights), to reproduce llama.cpp outputs.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return matmul(x[None, :], w, ggml_exact=ggml_exact)[0]
    if not isinstance(w, QTensor):
        if (x.shape[0] <= GEMV_MAX_ROWS and w.size >= GEMV_F32_MIN_WEIGHTS and w.dtype == np.float32
                and w.flags.c_contiguous):
            y = np.empty((x.shape[0], w.shape[0]), np.float32)
            gemv.gemv_f32(np.ascontiguousarray(x), w, y)
            return y
        return blas_matmul(x, w.T)
    x = np.ascontiguousarray(x)
    n, k = x.shape
    if k != w.shape[1]:
        raise ValueError(f"matmul: x has {k} columns, weight is {w.shape[0]}x{w.shape[1]}")
    qtype = QType(w.qtype)
    y = np.empty((n, w.shape[0]), np.float32)
    if qtype == QType.F16:
        if ggml_exact:  # ggml's F16 vec_dot takes float16 activations
            x = x.astype(np.float16).astype(np.float32)
        if n > GEMV_MAX_ROWS and not ggml_exact:
            return _tiled(x, w)
        gemv.gemv_f16(x, w.data.view(np.uint16), y)
        return y
    if ggml_exact and gemv.batch_kernel(n, w):  # llama.cpp's K-quant batch kernels
        return gemv.k_batch(x, w, y)
    if qtype in gemv.K_KIND and ggml_exact:  # ggml's integer dots (portable: any CPU)
        xq, xd, xs = quantize_activations(x, qtype, np.int8)
        return gemv.gemv_i8(gemv.K_KIND[qtype], xq, xd, xs, w.data, y)
    if qtype not in _GEMV:  # K-quants on float activations: dequantize-on-load tiles
        if ggml_exact:
            raise QuantizationError(f"ggml-exact products are not implemented for {qtype.name}")
        return _tiled(x, w)
    if ggml_exact:
        xq, xd, xs = quantize_activations(x, qtype)
        _GEMV[qtype](xq, xd, xs, w.data, y)
        return y
    if n > GEMV_MAX_ROWS:
        return _tiled(x, w)
    _GEMV[qtype](x, np.ones((n, k // QK), np.float32), gemv.block_sums(x), w.data, y)
    return y


def linear(x: np.ndarray, w: Weight, b: np.ndarray | None = None, *, ggml_exact: bool = False) -> np.ndarray:
    """nn.Linear: x (n, k) -> (n, d), bias added in place."""
    y = matmul(x, w, ggml_exact=ggml_exact)
    if b is not None:
        y += b
    return y
