"""The decoder's multi-token path (TextDecoder.forward: prompt pass, word alignment, beams),
its cross-attention cache and the attention kernels (kernels/mha.py) against plain numpy."""
import numpy as np
import pytest
from scipy.special import erf
from gguf import GGMLQuantizationType as QType
from test_decoder_step import AUDIO_CTX, STATE, TEXT_CTX, VOCAB, random_decoder

from whisperlite.kernels import QTensor, set_threads
from whisperlite.kernels import mha
from whisperlite.models.whisper_decoder import TextDecoder


def dense(w) -> np.ndarray:
    return (w.dequantize() if isinstance(w, QTensor) else w).astype(np.float64)


def ref_attention(q, k, v, offset=None):
    """q (h, n, hd), k, v (h, t, hd) float64; query i at position offset + i sees keys ≤ it."""
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    if offset is not None:
        s[:, np.arange(s.shape[1])[:, None] + offset < np.arange(s.shape[2])[None, :]] = -np.inf
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return w @ v, w


def ref_forward(dec: TextDecoder, tokens, features, positions):
    """float64 numpy decoder over a fresh cache: logits (B, len(positions), vocab) and the
    cross-attention weights of every layer (B, h, n, n_audio_ctx)."""
    nh, eps = dec.dims.n_text_head, 1e-5
    norm = lambda x, ln: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * ln.g + ln.b  # noqa: E731
    heads = lambda x: x.reshape(len(x), nh, -1).transpose(1, 0, 2)  # noqa: E731
    merge = lambda x: x.transpose(1, 0, 2).reshape(x.shape[1], -1)  # noqa: E731
    gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))  # noqa: E731
    emb = dense(dec.token_embedding)
    logits, crosses = [], [[] for _ in dec.blocks]
    for seq in tokens:
        x = emb[seq] + dec.pos[: len(seq)]
        for li, b in enumerate(dec.blocks):
            q, k, v = np.split(norm(x, b.attn_ln) @ dense(b.qkv).T + b.qkv_b, 3, axis=1)
            x = x + merge(ref_attention(heads(q), heads(k), heads(v), 0)[0]) @ dense(b.out).T + b.out_b
            ck, cv = np.split(features.astype(np.float64) @ dense(b.cross_kv).T + b.cross_kv_b, 2, axis=1)
            o, w = ref_attention(heads(norm(x, b.cross_ln) @ dense(b.cross_q).T + b.cross_q_b), heads(ck), heads(cv))
            crosses[li].append(w)
            x = x + merge(o) @ dense(b.cross_out).T + b.cross_out_b
            h = gelu(norm(x, b.mlp_ln) @ dense(b.fc1).T + b.fc1_b)
            x = x + h @ dense(b.fc2).T + b.fc2_b
        logits.append(norm(x[list(positions)], dec.ln) @ emb.T)
    return np.stack(logits), [np.stack(c) for c in crosses]


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("qtype", [None, QType.F16, QType.Q8_0, QType.Q4_1], ids=lambda q: "F32" if q is None else q.name)
@pytest.mark.parametrize("cross_f16", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_matches_numpy(qtype, cross_f16, threads):
    """A prompt in one pass and then in pieces (positions asked for, weights wanted)."""
    dec = random_decoder(qtype, cross_f16=cross_f16)
    rng = np.random.default_rng(5)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    tokens = rng.integers(0, VOCAB, (2, TEXT_CTX - 2))
    tol = 3e-3 if cross_f16 else 1e-4  # float16 keys/values in the cache
    set_threads(threads)
    try:
        for positions in ((-1,), (0, 5, -1)):
            want, want_cross = ref_forward(dec, tokens, features, positions)
            logits, crosses = dec.forward(tokens, dec.new_cache(features, 2), positions, want_cross=True)
            assert logits.shape == want.shape and rel(logits, want) < tol
            assert len(crosses) == len(want_cross)
            for c, w in zip(crosses, want_cross):
                assert c.shape == w.shape == (2, dec.dims.n_text_head, tokens.shape[1], AUDIO_CTX)
                assert np.abs(c - w).max() < tol
            cache = dec.new_cache(features, 2)
            dec.forward(tokens[:, :5], cache)
            logits, crosses = dec.forward(tokens[:, 5:], cache, [p - 5 if p > 0 else p for p in positions[-1:]])
            assert crosses == [] and cache.length == tokens.shape[1]
            assert rel(logits, want[:, -1:]) < tol
    finally:
        set_threads(2)


def test_weights_only_pass():
    """No positions: the cross-attention weights and the cache as with logits, no logits."""
    dec = random_decoder(QType.F16, cross_f16=True)
    rng = np.random.default_rng(6)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    tokens = rng.integers(0, VOCAB, (1, 9))
    full, short = dec.new_cache(features), dec.new_cache(features)
    _, want = dec.forward(tokens, full, want_cross=True)
    logits, got = dec.forward(tokens, short, positions=(), want_cross=True)
    assert logits.shape == (1, 0, VOCAB) and short.length == full.length == 9
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(short.k, full.k)
    logits, crosses = dec.forward(tokens, dec.new_cache(features), positions=())
    assert logits.shape == (1, 0, VOCAB) and crosses == []


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("qtype", [QType.F16, QType.Q5_0])
def test_cross_cache_is_keys_and_values_per_head(threads, qtype):
    """new_cache (rows shared out over the threads): each layer's cross-attention keys and
    values, biased, split per head."""
    dec = random_decoder(qtype, cross_f16=False)
    features = np.random.default_rng(3).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    set_threads(threads)
    try:
        cache = dec.new_cache(features)
    finally:
        set_threads(None)
    nh = dec.dims.n_text_head
    for li, b in enumerate(dec.blocks):
        kv = features.astype(np.float64) @ dense(b.cross_kv).T + b.cross_kv_b
        k, v = (m.reshape(AUDIO_CTX, nh, -1).transpose(1, 0, 2) for m in np.split(kv, 2, axis=1))
        np.testing.assert_allclose(cache.cross_k[li], k, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(cache.cross_v[li], v, rtol=1e-4, atol=1e-4)


def test_cross_cache_float16_is_numpy_rounding():
    """new_cache's float16 keys/values are numpy's rounding of the float32 ones, per head."""
    d16, d32 = random_decoder(QType.F16, cross_f16=True), random_decoder(QType.F16, cross_f16=False)
    features = np.random.default_rng(2).standard_normal((AUDIO_CTX, STATE)).astype(np.float32) * 30
    c16, c32 = d16.new_cache(features), d32.new_cache(features)
    assert c16.cross_k.dtype == np.float16 and c16.cross_k.shape == c32.cross_k.shape
    np.testing.assert_array_equal(c16.cross_k, c32.cross_k.astype(np.float16))
    np.testing.assert_array_equal(c16.cross_v, c32.cross_v.astype(np.float16))


def test_embed_gathers_rows():
    dec = random_decoder(QType.Q8_0)
    ids = np.asarray([3, 0, 3, VOCAB - 1])
    np.testing.assert_array_equal(dec.embed(ids), dec.token_embedding.dequantize()[ids])


def test_float16_conversions_are_exact():
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 65504, 65519, 65520, 1e6, -1e6, np.inf, -np.inf, 2**-24, 2**-25, 3 * 2**-26]
    x = np.concatenate([rng.standard_normal(4000 - len(special)) * 10 ** rng.uniform(-9, 5, 4000 - len(special)),
                        special]).astype(np.float32).reshape(50, 80)
    out = np.empty((4, 50, 20), np.uint16)
    mha.split_heads(x, np.zeros(80, np.float32), out, 0)
    with np.errstate(over="ignore"):  # numpy warns as it rounds the large values to inf
        want = x.astype(np.float16)
    np.testing.assert_array_equal(out.view(np.float16), want.reshape(50, 4, 20).transpose(1, 0, 2))
    wide = mha.widen_f16(out[1], np.empty((50, 20), np.float32))
    np.testing.assert_array_equal(wide, out[1].view(np.float16).astype(np.float32))


def test_softmax_prefix():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 9)).astype(np.float32)
    lengths = np.asarray([1, 3, 9, 9, 4])
    got = mha.softmax_prefix_(x.copy(), lengths)
    for i, m in enumerate(lengths):
        e = np.exp(x[i, :m].astype(np.float64) - x[i, :m].max())
        np.testing.assert_allclose(got[i, :m], e / e.sum(), rtol=1e-6)
        assert (got[i, m:] == 0).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_kernel_strided_views(threads):
    """Heads read as views of a (t, h*hd) cache, causal lengths, weights returned."""
    rng = np.random.default_rng(4)
    b, n, h, hd, t = 2, 7, 3, 16, 11
    q = rng.standard_normal((b, n, h * hd)).astype(np.float32)
    cache = rng.standard_normal((2, b, 20, h * hd)).astype(np.float32)
    kv = [c[:, :t].reshape(b, t, h, hd).transpose(0, 2, 1, 3) for c in cache]
    lengths = np.arange(t - n + 1, t + 1)
    out, w = np.empty_like(q), np.empty((b, h, n, t), np.float32)
    set_threads(threads)
    try:
        mha.SPLIT_MIN_MACS, saved = 0, mha.SPLIT_MIN_MACS  # the pool even for this small case
        mha.attention(q, kv[0], kv[1], out, lengths=lengths, weights=w)
    finally:
        mha.SPLIT_MIN_MACS = saved
        set_threads(2)
    for i in range(b):
        o, ww = ref_attention(q[i].reshape(n, h, hd).transpose(1, 0, 2).astype(np.float64) * np.sqrt(hd),
                              kv[0][i].astype(np.float64), kv[1][i].astype(np.float64), t - n)
        np.testing.assert_allclose(out[i], o.transpose(1, 0, 2).reshape(n, -1), atol=1e-5)
        np.testing.assert_allclose(w[i], ww, atol=1e-6)


@pytest.mark.slow
def test_real_model_prompt_pass(tiny_model):
    """tiny.en: the prompt pass and a continuation equal the float64 reference on the
    cache's float16 keys/values."""
    dec = tiny_model.model.decoder
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1500, dec.dims.n_text_state)).astype(np.float32)
    tokens = np.asarray([[50257, 50362] + list(rng.integers(0, 50000, 60))])
    want, want_cross = ref_forward(dec, tokens, features, (0, -1))
    logits, crosses = dec.forward(tokens, dec.new_cache(features), (0, -1), want_cross=True)
    assert rel(logits, want) < 2e-3 and (logits.argmax(-1) == want.argmax(-1)).all()
    assert max(np.abs(c - w).max() for c, w in zip(crosses, want_cross)) < 2e-3
