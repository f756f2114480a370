"""Matrix products over any `Weight`: y = x @ W.T (+ b), W stored (out, in) like nn.Linear."""
from __future__ import annotations

import numpy as np

from whisperlite.kernels.tensor import QTensor, Weight


def matmul(x: np.ndarray, w: Weight) -> np.ndarray:
    """x (n, k) float32 @ W (d, k).T -> (n, d) float32."""
    if isinstance(w, QTensor):
        w = w.dequantize()
    return x @ w.T


def linear(x: np.ndarray, w: Weight, b: np.ndarray | None = None) -> np.ndarray:
    """nn.Linear: x (n, k) -> (n, d), bias added in place."""
    y = matmul(x, w)
    if b is not None:
        y += b
    return y
