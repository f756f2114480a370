"""`QTensor`: a weight matrix kept in its on-disk ggml block layout."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
from gguf import GGMLQuantizationType as QType


def readonly(a: np.ndarray) -> np.ndarray:
    """`a`, or a read-only view of it. Weights go to kernels read-only, as mapped files are:
    numba compiles a kernel once per array mutability, so weights converted in memory and
    weights read from disk would each compile it."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class QTensor:
    """A 2-D weight (rows, cols) stored as raw ggml blocks, one row per `data` row.

    `data` is uint8 of shape (rows, bytes_per_row) for block types, or float16 (rows, cols)
    for F16. Rows are independent, so any row range can be dequantized or multiplied alone.
    """

    qtype: QType
    shape: tuple[int, int]
    data: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", readonly(self.data))

    def dequantize(self) -> np.ndarray:
        from whisperlite.kernels.quant import dequantize

        return dequantize(self.data, self.qtype, self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


# What model code accepts as a weight: float32 ndarray or a QTensor.
Weight = Union[np.ndarray, QTensor]
