"""quantize/dequantize: bit-exact against gguf-py's numpy reference (gguf.quants)."""
import json
from pathlib import Path

import numba
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

from whisperlite.core.errors import QuantizationError
from whisperlite.kernels import quant

DATA = Path(__file__).parent / "data" / "llama_kernels"
BLOCK_TYPES = [QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1]


def random_weights(rows=48, cols=256, seed=0):
    """Rows at very different scales, plus the awkward blocks ggml has to handle."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-4, 3, (rows, 1))
    x[0, :32] = 0.0  # all-zero block
    x[1, :] = -np.abs(x[1, :])  # negative-only blocks
    x[2, :] = np.abs(x[2, :])  # positive-only blocks
    x[3, :32] = 0.5  # constant block (max == min)
    x[4, :] *= 1e-30  # tiny: scales underflow float16 to zero
    x[5, :] = np.clip(x[5, :] * 1e4, -60000, 60000)  # huge, still representable scales
    x[6, 3] = -2 * np.abs(x[6, :32]).max()  # a negative absmax element
    return x.astype(np.float32)


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_quantize_dequantize_bit_exact(qtype, seed):
    x = random_weights(seed=seed)
    ours = quant.quantize(x, qtype)
    ref = quants.quantize(x, qtype)
    assert ours.dtype == np.uint8 and ours.shape == (x.shape[0], quant.bytes_per_row(qtype, x.shape[1]))
    assert same_bits(ours, ref)
    assert same_bits(quant.dequantize(ours, qtype, x.shape), quants.dequantize(ref, qtype))


def test_f16_is_numpy_half():
    x = random_weights()
    h = quant.quantize(x, QType.F16)
    assert h.dtype == np.float16 and same_bits(h, x.astype(np.float16))
    assert same_bits(quant.dequantize(h, QType.F16, x.shape), h.astype(np.float32))


def test_f16_to_f32_all_finite_halves():
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    half = bits.view(np.float16)
    ours = quant.dequantize(half.reshape(1, -1), QType.F16, (1, 1 << 16))[0]
    finite = np.isfinite(half)
    assert same_bits(ours[finite], half[finite].astype(np.float32))
    assert np.isinf(ours[np.isinf(half)]).all() and np.isnan(ours[np.isnan(half)]).all()


@numba.njit
def _to_half_bits(a):
    out = np.empty(a.shape[0], np.uint16)
    for i in range(a.shape[0]):
        out[i] = quant.f32_to_f16(a[i])
    return out


def test_f32_to_f16_round_half_even():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(200_000) * 10.0 ** rng.uniform(-9, 4.8, 200_000)).astype(np.float32)
    # exact ties between neighbouring halves, subnormal range and the overflow edge
    ties = (np.arange(1, 2049, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0**-10)
    edge = np.array([65504, 65519.99, 65520, 6.1e-5, 5.96e-8, 2.98e-8, 0.0, -0.0], np.float32)
    for a in (x, ties, -ties, edge):
        with np.errstate(over="ignore"):
            assert np.array_equal(_to_half_bits(a), a.astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("qtype", [QType.Q4_K, QType.Q6_K], ids=lambda t: t.name)
def test_k_quant_dequantize_bit_exact(qtype):
    rng = np.random.default_rng(7)
    _, size = quant.layout(qtype)
    raw = rng.integers(0, 256, (6, 3 * size), dtype=np.uint8)
    blocks = raw.reshape(6, 3, size)
    scales = rng.uniform(-0.05, 0.05, (6, 3, 2)).astype(np.float16).view(np.uint8)
    if qtype == QType.Q4_K:  # f16 d, dmin lead the block
        blocks[:, :, 0:4] = scales.reshape(6, 3, 4)
    else:  # f16 d ends it
        blocks[:, :, 208:210] = scales[:, :, :2]
    ours = quant.dequantize(raw, qtype, (6, 3 * 256))
    assert same_bits(ours, quants.dequantize(raw, qtype))


def test_q8_1_matches_ggml_activation_bytes():
    """ggml's own Q8_1 bytes for x1 column 0 (fp16 d = amax/127, half-to-even, fp16 s)."""
    ref = json.loads((DATA / "kernel_ref.json").read_text())["outputs"]["q8_1_of_x1_col0"]
    x = np.sin(0.1 * np.arange(576)).astype(np.float32)[None, :]
    assert quant.quantize(x, QType.Q8_1).tobytes() == bytes.fromhex(ref["hex"])
    assert quant.bytes_per_row(QType.Q8_1, 576) == ref["bytes"]


@pytest.mark.parametrize("qtype", BLOCK_TYPES + [QType.F16], ids=lambda t: t.name)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(qtype, bad):
    x = random_weights(8, 64)
    x[2, 17] = bad
    with pytest.raises(QuantizationError, match="NaN or inf"):
        quant.quantize(x, qtype)


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_partial_block_rejected(qtype):
    with pytest.raises(QuantizationError, match="multiple of 32"):
        quant.quantize(np.ones((2, 40), np.float32), qtype)


def test_scale_overflow_rejected():
    with pytest.raises(QuantizationError, match="too large"):
        quant.quantize(np.full((1, 32), 1e30, np.float32), QType.Q8_0)
    with pytest.raises(QuantizationError, match="F16"):
        quant.quantize(np.full((1, 4), 1e5, np.float32), QType.F16)


def test_bad_shapes_and_types():
    q = quant.quantize(np.ones((3, 64), np.float32), QType.Q4_0)
    with pytest.raises(QuantizationError, match="does not hold"):
        quant.dequantize(q, QType.Q4_0, (3, 96))
    with pytest.raises(QuantizationError, match="not supported"):
        quant.quantize(np.ones((1, 256), np.float32), QType.Q4_K)
    with pytest.raises(QuantizationError, match="unsupported"):
        quant.layout(QType.IQ2_XXS)
    assert quant.cols_from_bytes(QType.Q5_1, 48) == 64


# --- the one table of stored types and what derives from it ---------------------------------


def test_table_sizes_are_ggmls():
    """Each block size is the sum of its fields and ggml's (gguf-py's table lags on Q8_1:
    it still has the old 40-byte float d, float s block)."""
    for qtype, t in quant.QUANT_TYPES.items():
        assert quant.layout(qtype) == (t.block, t.size) == (t.block, sum(n for _, n in t.fields))
        if qtype != QType.Q8_1:
            assert (t.block, t.size) == GGML_QUANT_SIZES[qtype], qtype.name
    assert quant.layout(QType.Q8_1) == (32, 36)


def _dequantize_from_table(data: np.ndarray, qtype: QType) -> np.ndarray:
    """A numpy decoder of the legacy block types that knows nothing but the table's
    fields: d (and m) at their offsets, 8-bit or nibble quants at qs, fifth bits at qh."""
    t = quant.QUANT_TYPES[qtype]
    blocks = data.reshape(-1, t.size)
    field = lambda name, n: blocks[:, t.offset(name) : t.offset(name) + n]  # noqa: E731
    d = field("d", 2).copy().view(np.float16).astype(np.float32)
    m = field("m", 2).copy().view(np.float16).astype(np.float32) if t.offset("m") is not None else None
    if t.bits == 8:
        q = field("qs", t.block).view(np.int8).astype(np.int32)
    else:
        qs = field("qs", t.block // 2).astype(np.int32)
        q = np.concatenate([qs & 15, qs >> 4], axis=1)
        if t.offset("qh") is not None:
            qh = field("qh", 4).copy().view("<u4").astype(np.int64)
            q |= (((qh >> np.arange(t.block)) & 1) << 4).astype(np.int32)
    w = d * (q - t.zero).astype(np.float32) if m is None else d * q.astype(np.float32) + m
    return w.reshape(data.shape[0], -1)


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_table_fields_describe_the_stored_bytes(qtype):
    """The table's offsets, bits and zero points are where ggml keeps them: a decoder
    written from the table alone gives gguf-py's dequantized values bit for bit."""
    x = random_weights(seed=2)
    ref = quants.quantize(x, qtype)
    assert same_bits(_dequantize_from_table(ref, qtype), quants.dequantize(ref, qtype))


def test_every_type_enumeration_agrees_with_the_table():
    from whisperlite.kernels import QTensor, actquant, gemv, rowdots

    kinds = quant.KIND
    # codes number the types the row kernels take, in the table's order, floats first
    assert list(kinds) == [q for q, t in quant.QUANT_TYPES.items() if t.kernels]
    assert sorted(kinds.values()) == list(range(len(kinds)))
    for q, k in kinds.items():
        assert (k >= quant.FIRST_BLOCK_KIND) == (quant.QUANT_TYPES[q].block > 1)
    # each module-level constant names its own type's code
    names = [n for n in vars(quant) if n.startswith("KIND_")]
    assert len(names) == len(kinds)
    for n in names:
        assert getattr(quant, n) == kinds[QType[n.removeprefix("KIND_")]]
    dots = {q: t.dot_with for q, t in quant.QUANT_TYPES.items() if t.dot_with is not None}
    assert gemv.I8_KIND == {q: kinds[q] for q in dots}
    assert actquant.ACTIVATION_TYPE == dots
    assert set(dots.values()) == {QType.Q8_0, QType.Q8_1, QType.Q8_K}
    # the weights the row kernels take are coded as the table says (the decoder step's
    # rowdots: not the K-quants, whose dots are gemv's alone)
    assert all((k >= quant.FIRST_K_KIND) == (quant.QUANT_TYPES[q].block == quant.QK_K) for q, k in kinds.items())
    assert rowdots.weight_kind(np.zeros((2, 32), np.float32))[0] == quant.KIND_F32
    for q, t in quant.QUANT_TYPES.items():
        if q == QType.F32:
            continue
        w = QTensor(q, (2, t.block), np.zeros((2, t.size), np.uint8))
        got = rowdots.weight_kind(w)
        rows_take = t.kernels and t.block < quant.QK_K
        assert (got is None) == (not rows_take) and (got is None or got[0] == kinds[q]), q.name


# --- the real tiny.en decoder: every product path against float64 ----------------------------


@pytest.fixture(scope="module")
def tiny_ckpt():
    from whisperlite.formats.ct2 import load_ct2
    from whisperlite.registry.embedded import embedded_model_dir

    return load_ct2(embedded_model_dir())


DECODER_MATRICES = ["decoder.token_embedding.weight", "decoder.blocks.0.attn.query.weight",
                    "decoder.blocks.1.cross_attn.out.weight", "decoder.blocks.2.mlp.0.weight",
                    "decoder.blocks.3.mlp.2.weight"]


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_real_decoder_products_match_float64(tiny_ckpt, qtype):
    """Trained weights are heavy-tailed (a block's absmax is ~3.6x its RMS), unlike random
    ones: the n = 1 GEMV (greedy), the few-row GEMV (beams) and the tiled path (prompt)
    must each equal the float64 product with the dequantized weights, and a quantized
    token embedding must look up exactly its dequantized rows."""
    from dataclasses import replace

    from whisperlite.kernels import QTensor
    from whisperlite.kernels.matmul import matmul
    from whisperlite.models.whisper_decoder import TextDecoder

    rng = np.random.default_rng(0)
    for name in DECODER_MATRICES:
        f = tiny_ckpt.weights[name].dequantize()
        w = QTensor(qtype, f.shape, quant.quantize(f, qtype))
        ref = w.dequantize().astype(np.float64)
        for n in (1, 5, 40):
            x = rng.standard_normal((n, f.shape[1])).astype(np.float32)
            want = x.astype(np.float64) @ ref.T
            err = np.abs(matmul(x, w) - want).max() / np.abs(want).max()
            assert err < 1e-5, (name, n, err)
    key = "decoder.token_embedding.weight"
    emb = tiny_ckpt.weights[key].dequantize()
    qemb = QTensor(qtype, emb.shape, quant.quantize(emb, qtype))
    dec = TextDecoder(replace(tiny_ckpt, weights={**tiny_ckpt.weights, key: qemb}))
    ids = np.array([0, 50256, 50257, 50363, 50364, 51863])
    assert np.array_equal(dec.embed(ids), qemb.dequantize()[ids])
