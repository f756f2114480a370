"""The chunked, threaded encoder against a plain float64 numpy encoder on a tiny random model."""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from scipy.special import erf

from whisperlite.kernels import QTensor, set_threads
from whisperlite.kernels.quant import quantize
from whisperlite.models import whisper_encoder
from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims

N_MELS, CTX, STATE, HEADS, LAYERS = 16, 40, 64, 4, 2


def random_checkpoint(seed: int = 0) -> WhisperCheckpoint:
    rng = np.random.default_rng(seed)
    r = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    w = {
        "encoder.conv1.weight": r(STATE, N_MELS, 3), "encoder.conv1.bias": r(STATE),
        "encoder.conv2.weight": r(STATE, STATE, 3, s=0.1), "encoder.conv2.bias": r(STATE),
        "encoder.positional_embedding": r(CTX, STATE),
        "encoder.ln_post.weight": 1 + r(STATE), "encoder.ln_post.bias": r(STATE),
    }
    for i in range(LAYERS):
        p = f"encoder.blocks.{i}"
        for ln in ("attn_ln", "mlp_ln"):
            w[f"{p}.{ln}.weight"], w[f"{p}.{ln}.bias"] = 1 + r(STATE), r(STATE)
        for m in ("query", "key", "value", "out"):
            w[f"{p}.attn.{m}.weight"] = r(STATE, STATE)
            if m != "key":  # Whisper's key projection has no bias
                w[f"{p}.attn.{m}.bias"] = r(STATE)
        w[f"{p}.mlp.0.weight"], w[f"{p}.mlp.0.bias"] = r(4 * STATE, STATE), r(4 * STATE)
        w[f"{p}.mlp.2.weight"], w[f"{p}.mlp.2.bias"] = r(STATE, 4 * STATE, s=0.1), r(STATE)
    dims = WhisperDims(N_MELS, CTX, STATE, HEADS, LAYERS, 51864, 8, STATE, HEADS, 1)
    return WhisperCheckpoint(dims, w)


def reference_encoder(w: dict, mel: np.ndarray) -> np.ndarray:
    """openai/whisper's AudioEncoder.forward, written plainly in float64."""
    f = lambda k: np.asarray(w[k], np.float64)  # noqa: E731
    gelu = lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))  # noqa: E731

    def conv(x, wk, b, stride):  # x (c, t), wk (out, c, 3), padding 1
        xp = np.pad(x, ((0, 0), (1, 1)))
        t_out = (x.shape[1] - 1) // stride + 1
        taps = [xp[:, k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)]
        return sum(wk[:, :, k] @ taps[k] for k in range(3)) + b[:, None]

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * f(p + ".weight") + f(p + ".bias")

    x = gelu(conv(mel.astype(np.float64), f("encoder.conv1.weight"), f("encoder.conv1.bias"), 1))
    x = gelu(conv(x, f("encoder.conv2.weight"), f("encoder.conv2.bias"), 2)).T
    x = x + f("encoder.positional_embedding")[: x.shape[0]]
    hd = STATE // HEADS
    for i in range(LAYERS):
        p = f"encoder.blocks.{i}"
        h = ln(x, p + ".attn_ln")
        q = h @ f(p + ".attn.query.weight").T + f(p + ".attn.query.bias")
        k = h @ f(p + ".attn.key.weight").T
        v = h @ f(p + ".attn.value.weight").T + f(p + ".attn.value.bias")
        heads = []
        for j in range(HEADS):
            sl = slice(j * hd, (j + 1) * hd)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
            e = np.exp(s - s.max(-1, keepdims=True))
            heads.append(e / e.sum(-1, keepdims=True) @ v[:, sl])
        x = x + np.concatenate(heads, 1) @ f(p + ".attn.out.weight").T + f(p + ".attn.out.bias")
        h = gelu(ln(x, p + ".mlp_ln") @ f(p + ".mlp.0.weight").T + f(p + ".mlp.0.bias"))
        x = x + h @ f(p + ".mlp.2.weight").T + f(p + ".mlp.2.bias")
    return ln(x, "encoder.ln_post")


@pytest.fixture
def small_chunks(monkeypatch):
    # uneven chunks of 7 rows (4 with 2 threads): several per thread and a short last one
    monkeypatch.setattr(whisper_encoder, "CHUNKS_PER_THREAD", 6)
    yield
    set_threads(2)


def assert_close(y: np.ndarray, ref: np.ndarray, rel: float = 1e-4) -> None:
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.abs(y - ref).max() <= rel * np.abs(ref).max()


@pytest.mark.parametrize("threads", [1, 2])
def test_encoder_matches_numpy_reference(threads, small_chunks):
    set_threads(threads)
    ckpt = random_checkpoint()
    enc = whisper_encoder.AudioEncoder(ckpt)
    rng = np.random.default_rng(threads)
    mels = [rng.standard_normal((N_MELS, 2 * CTX)).astype(np.float32) for _ in range(2)]
    first = enc(mels[0])
    kept = first.copy()
    second = enc(mels[1])  # reused buffers: the first window's output must survive
    np.testing.assert_array_equal(first, kept)
    assert_close(first, reference_encoder(ckpt.weights, mels[0]))
    assert_close(second, reference_encoder(ckpt.weights, mels[1]))


def test_thread_counts_agree(small_chunks):
    ckpt = random_checkpoint(3)
    enc = whisper_encoder.AudioEncoder(ckpt)
    mel = np.random.default_rng(3).standard_normal((N_MELS, 2 * CTX)).astype(np.float32)
    outs = []
    for t in (1, 2):
        set_threads(t)
        outs.append(enc(mel))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_quantized_encoder_weights(small_chunks):
    """Block-quantized encoder matrices (ggml q8_0 … files) give the float encoder of their
    dequantized values."""
    ckpt = random_checkpoint(1)
    quantized, dequantized = dict(ckpt.weights), dict(ckpt.weights)
    for key, w in ckpt.weights.items():
        if ".attn." in key and key.endswith("weight") or ".mlp." in key and key.endswith("weight"):
            q = QTensor(QType.Q8_0, w.shape, quantize(w, QType.Q8_0))
            quantized[key], dequantized[key] = q, q.dequantize()
    enc = whisper_encoder.AudioEncoder(WhisperCheckpoint(ckpt.dims, quantized))
    mel = np.random.default_rng(1).standard_normal((N_MELS, 2 * CTX)).astype(np.float32)
    assert_close(enc(mel), reference_encoder(dequantized, mel))


def test_pickles_without_its_buffers():
    import pickle

    enc = whisper_encoder.AudioEncoder(random_checkpoint(2))
    mel = np.random.default_rng(2).standard_normal((N_MELS, 2 * CTX)).astype(np.float32)
    y = enc(mel)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(enc))(mel), y)
