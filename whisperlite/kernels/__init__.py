"""The shared numeric kernels: one module for Whisper and LLaMA.

Weights are either float32 ndarrays or `QTensor`s (ggml block layouts); `matmul` picks the
path (fused GEMV for a few rows, dequantize→BLAS tiles for many).
"""
from whisperlite.kernels.tensor import QTensor, Weight
from whisperlite.kernels.threads import set_threads, get_threads
from whisperlite.kernels.matmul import matmul, linear

__all__ = ["QTensor", "Weight", "set_threads", "get_threads", "matmul", "linear"]
