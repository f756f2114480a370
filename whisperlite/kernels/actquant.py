"""ggml's arithmetic for quantized products: activations quantized to Q8_0 / Q8_1 first.

ggml does not multiply quantized weights by float activations: it quantizes each 32-value
block of x to Q8_0 (for Q8_0/Q4_0/Q5_0 weights) or Q8_1 (for Q4_1/Q5_1) and takes integer
dot products per block, scaled by d_w*d_x, plus m_w*s_x for the "_1" types. Doing the same
reproduces llama.cpp's SmolLM2 logits to ~1e-5; float activations move them by up to 0.17
and fork greedy text within a few tokens.

The quantized activations feed the same GEMV kernels as float ones (gemv.py): the int8
values travel as float32, which keeps every in-block partial sum an exact integer (|sum| <
32*127*31 < 2^24), so only the per-block scaling rounds, as in ggml. ggml's SIMD code adds
its block terms in 8 lanes and reduces them as a tree; ours uses 32 lanes, so outputs
agree to float32 rounding of the row sum (~1e-6 relative), not bit for bit.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels.quant import QK, quantize_rows_q8

# weight type -> the activation type ggml's CPU backend pairs it with (its vec_dot_type)
ACTIVATION_TYPE = {
    QType.Q8_0: QType.Q8_0,
    QType.Q4_0: QType.Q8_0,
    QType.Q5_0: QType.Q8_0,
    QType.Q4_1: QType.Q8_1,
    QType.Q5_1: QType.Q8_1,
}


def quantize_activations(x: np.ndarray, weight_qtype: QType) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (n, k) float32 -> (q (n, k) float32 integers, d (n, k/32), s (n, k/32)).

    d is the float16 block scale; s is what the weight kernel adds per block: for Q8_1 the
    stored float16 s = d*sum(q) (multiplied by the weights' m), for Q8_0 the exact integer
    sum(q) (multiplied by the -8 / -16 offset of Q4_0 / Q5_0).
    """
    n, k = x.shape
    d = np.empty((n, k // QK), np.float32)
    s = np.empty_like(d)
    q = np.empty((n, k), np.int8)
    quantize_rows_q8(x, d, s, q)
    qf = q.astype(np.float32)
    if ACTIVATION_TYPE[QType(weight_qtype)] == QType.Q8_0:
        s = qf.reshape(n, k // QK, QK).sum(axis=2)
    return qf, d, s
