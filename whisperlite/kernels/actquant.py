"""ggml's arithmetic for quantized products: activations quantized to Q8_0 / Q8_1 first.

ggml does not multiply quantized weights by float activations: it quantizes each 32-value
block of x to Q8_0 (for Q8_0/Q4_0/Q5_0 weights) or Q8_1 (for Q4_1/Q5_1) and takes integer
dot products per block, scaled by d_w*d_x, plus m_w*s_x for the "_1" types. Doing the same
reproduces llama.cpp's SmolLM2 logits to ~1e-5; float activations move them by up to 0.17
and fork greedy text within a few tokens.

The quantized activations feed the same GEMV kernels as float ones (gemv.py): the int8
values travel as float32, which keeps every in-block partial sum an exact integer (|sum| <
32*127*31 < 2^24), so only the per-block scaling rounds, as in ggml. ggml's SIMD code adds
its block terms in 8 lanes and reduces them as a tree; the kernels do the same (lane m
holds products 4m..4m+3), so outputs equal ggml's bit for bit (tests/test_llama.py).
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels.quant import (
    QK, QUANT_TYPES, quantize_rows_q8, quantize_rows_q8_k, quantize_rows_q8_k_serial, quantize_rows_q8_serial)

# weight type -> the activation type ggml's CPU backend pairs it with (its vec_dot_type)
ACTIVATION_TYPE = {q: t.dot_with for q, t in QUANT_TYPES.items() if t.dot_with is not None}

# Below this many values the quantizer runs on the calling thread (one decoding row).
PARALLEL_MIN = 16384


def quantize_activations(x: np.ndarray, weight_qtype: QType, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (n, k) float32 -> (q (n, k) integers as dtype (float32, or int8 for gemv_i8),
    d (n, k/32), s (n, k/32)).

    d is the float16 block scale; s is what the weight kernel adds per block: for Q8_1 the
    stored float16 s = d*sum(q) (multiplied by the weights' m), for Q8_0 the exact integer
    sum(q) (unused by the kernels: the -8 / -16 offsets come off the weights). For the
    K-quants (Q8_K) d is the float32 scale of each 256 values, repeated for its 8 blocks,
    and s each block's integer sum (what ggml's bsums give for the mins).
    """
    x = np.ascontiguousarray(x, np.float32)
    n, k = x.shape
    q = np.empty((n, k), dtype)
    d = np.empty((n, k // QK), np.float32)
    s = np.empty_like(d)
    act = ACTIVATION_TYPE[QType(weight_qtype)]
    if act == QType.Q8_K:
        (quantize_rows_q8_k if x.size >= PARALLEL_MIN else quantize_rows_q8_k_serial)(x, q, d, s)
        return q, d, s
    run = quantize_rows_q8 if x.size >= PARALLEL_MIN else quantize_rows_q8_serial
    run(x, act == QType.Q8_1, q, d, s)
    return q, d, s
