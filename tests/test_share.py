"""kernels/share.py: a product's rows shared with a helper thread that the calling thread
never waits for. The protocol on a toy row function (each order of the two threads that
matters, run one after the other), then the real kernels shared with the helper thread
give the bits they give alone."""
from __future__ import annotations

import numba
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from test_kquant import random_blocks
from whisperlite.kernels import QTensor, gemv, share, tiles
from whisperlite.kernels.actquant import quantize_activations
from whisperlite.kernels.quant import quantize
from whisperlite.kernels.share import FREE, HELPER, MAIN, SLOT, WRITTEN


@numba.njit(inline="always", cache=True)
def _triple(args, out, r0, r1):
    # out[:, r0:r1] = 3 * x[:, r0:r1]
    (x,) = args
    out[:, r0:r1] = 3 * x[:, r0:r1]


_drive = share.share_rows(_triple, cache=True)
ROWS = 200


def _job(chunk_align: int = 16):
    x = np.arange(3 * ROWS, dtype=np.float32).reshape(3, ROWS)
    bounds = share.chunk_bounds(ROWS, chunk_align)
    chunks = len(bounds) - 1
    out = np.full_like(x, np.nan)
    return x, (bounds, np.zeros(chunks * SLOT, np.int64), np.zeros(chunks * SLOT, np.int64),
               np.full_like(x, np.nan), out, (x,))


def _states(a: np.ndarray) -> list[int]:
    return a[::SLOT].tolist()


def test_chunk_bounds_cover_the_rows_aligned():
    b = share.chunk_bounds(ROWS, 16)
    assert b[0] == 0 and b[-1] == ROWS and len(b) - 1 == min(share.MAX_CHUNKS, -(-ROWS // 16))
    assert all(v % 16 == 0 for v in b[:-1]) and np.all(np.diff(b) > 0)
    assert share.chunk_bounds(10, 64).tolist() == [0, 10]


def test_main_alone_computes_every_chunk():
    x, job = _job()
    _drive(0, *job)
    bounds, claim, commit, own, out, _ = job
    assert np.array_equal(out, 3 * x)
    assert set(_states(claim)) == {MAIN} and np.isnan(own).all()


def test_helper_first_leaves_main_nothing():
    x, job = _job()
    _drive(1, *job)
    bounds, claim, commit, own, out, _ = job
    assert set(_states(claim)) == {HELPER} and set(_states(commit)) == {WRITTEN}
    assert np.array_equal(out, 3 * x)
    out[:] = -7.0  # main finds every chunk claimed and written: it computes none
    _drive(0, *job)
    assert (out == -7.0).all()


def test_main_takes_back_a_chunk_the_helper_has_not_committed():
    x, job = _job()
    bounds, claim, commit, own, out, _ = job
    claim[-SLOT] = HELPER  # the helper claimed the last chunk and is still computing it
    _drive(0, *job)
    assert np.array_equal(out, 3 * x)
    assert _states(commit)[-1] == MAIN and _states(claim).count(MAIN) == len(bounds) - 2
    # the helper finishing late writes nothing: its commit fails
    out[:] = -7.0
    _drive(1, *job)
    assert (out == -7.0).all()


def test_a_late_helper_claims_nothing():
    x, job = _job()
    _drive(0, *job)
    job[4][:] = -7.0
    _drive(1, *job)
    assert (job[4] == -7.0).all() and set(_states(job[1])) == {MAIN} and set(_states(job[2])) == {FREE}


@pytest.fixture
def always_share(monkeypatch):
    monkeypatch.setattr(share, "SHARE_MIN_BYTES", 0)


@pytest.mark.slow  # loading the kernels' compiled switch over every type takes seconds
@pytest.mark.skipif(not gemv.HAS_AVX2, reason="the 32-weight integer dots need AVX2")
@pytest.mark.parametrize("qtype", [QType.Q5_0, QType.Q4_1], ids=lambda t: t.name)
def test_shared_tiles_are_the_same_bits(always_share, qtype):
    rng = np.random.default_rng(1)
    n, rows, k = 7, 3 * tiles.ROWS_PER_TASK + 5, 96
    w = quantize(rng.standard_normal((rows, k)).astype(np.float32), qtype)
    xq, xd, xs = quantize_activations(rng.standard_normal((n, k)).astype(np.float32), qtype, np.int8)
    kind = gemv.I8_KIND[qtype]
    want = tiles.gemm_i8(kind, xq, xd, xs, w, np.empty((n, rows), np.float32), False)
    with share.helping():
        for _ in range(5):  # the helper joins at different points
            got = tiles.gemm_i8(kind, xq, xd, xs, w, np.full((n, rows), np.nan, np.float32), False)
            assert np.array_equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("qtype,n", [(QType.Q4_K, 6), (QType.Q6_K, 9), (QType.Q8_0, 1)],
                         ids=["q4_k-gemm", "q6_k-tiled", "q8_0-one-row"])
def test_shared_batches_and_rows_are_the_same_bits(always_share, qtype, n):
    if qtype == QType.Q8_0 and not gemv.HAS_AVX2:
        pytest.skip("the 32-weight integer dots need AVX2")
    rng = np.random.default_rng(2)
    rows, k = 3 * gemv.SHARE_ALIGN + 8, 256
    w = QTensor(qtype, (rows, k), random_blocks(qtype, rows, k, 3))
    x = rng.standard_normal((n, k)).astype(np.float32)
    kind = gemv.I8_KIND[qtype]

    def product(out):
        return gemv.k_batch(x, w, out) if n > 1 else gemv.gemv_i8_f32(kind, x, w.data, out)

    want = product(np.empty((n, rows), np.float32))
    with share.helping():
        for _ in range(5):
            assert np.array_equal(product(np.full((n, rows), np.nan, np.float32)), want)


@pytest.mark.slow
def test_a_prompt_with_shared_products_is_the_one_thread_prompt(always_share, tmp_path):
    """The tiny Q8_0 Gemma 3's prompt at two threads, every product shared, gives the
    logits and KV cache of one thread, bit for bit."""
    from gemma3_tiny import write_tiny_gemma
    from whisperlite.formats.gguf import read_gguf
    from whisperlite.kernels import get_threads, set_threads
    from whisperlite.models.gemma3 import Gemma3

    path = tmp_path / "tiny-q8_0.gguf"
    write_tiny_gemma(path, QType.Q8_0)
    model = Gemma3(read_gguf(path))
    ids = [5, 9, 2, 31, 7, 7, 12]
    before = get_threads()
    runs = []
    try:
        for threads in (1, 2):
            set_threads(threads)
            cache = model.new_cache(16)
            runs.append((model.forward(ids, cache, all_logits=True), cache))
    finally:
        set_threads(before)
    (one, c1), (two, c2) = runs
    assert np.array_equal(one, two)
    assert all(np.array_equal(a, b) for a, b in zip(c1.k + c1.v, c2.k + c2.v))
