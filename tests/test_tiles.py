"""kernels/tiles.py: a prompt's products by the 32-weight types, in tiles of rows by
tokens, are the bits of gemv's one-row integer dots, and near the float product."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels import gemv, tiles
from whisperlite.kernels.actquant import quantize_activations
from whisperlite.kernels.quant import dequantize, quantize

TYPES = [QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1]


@pytest.mark.skipif(not gemv.HAS_AVX2, reason="the 32-weight integer dots need AVX2")
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [2, 7, 8])  # a two-token tile; widened rows with one, two tokens left over
def test_tiles_equal_the_one_row_dots(qtype, n):
    rng = np.random.default_rng(int(qtype) + n)
    rows, k = tiles.ROWS_PER_TASK + tiles.TILE_ROWS + 3, 96  # a second task, rows left over
    wf = rng.standard_normal((rows, k)).astype(np.float32)
    w = quantize(wf, qtype)
    x = rng.standard_normal((n, k)).astype(np.float32)
    kind = gemv.I8_KIND[qtype]
    xq, xd, xs = quantize_activations(x, qtype, np.int8)
    want = gemv.gemv_i8(kind, xq, xd, xs, w, np.empty((n, rows), np.float32))
    for parallel in (False, True):
        got = tiles.gemm_i8(kind, xq, xd, xs, w, np.full((n, rows), np.nan, np.float32), parallel)
        assert np.array_equal(got, want)
    ref = x @ dequantize(w, qtype, (rows, k)).T
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
