"""The speaker encoder against plain numpy (and librosa for its mel frames)."""
import numpy as np
import pytest

from whisperlite.kernels.recurrent import lstm_cell_
from whisperlite.models.speaker_encoder import (
    SpeakerEncoder,
    SpeakerEncoderDims,
    mel_frames,
    normalize_volume,
    slaney_mel_filters,
)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_reference(x, layers, linear_w, linear_b):
    """PyTorch's nn.LSTM (gates i, f, g, o) then Linear, ReLU and L2 norm, in float64."""
    x = x.astype(np.float64)
    for w_ih, w_hh, b_ih, b_hh in layers:
        b, t, _ = x.shape
        hidden = w_hh.shape[1]
        h, c = np.zeros((b, hidden)), np.zeros((b, hidden))
        out = np.zeros((b, t, hidden))
        for step in range(t):
            gates = x[:, step] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
            i, f, g, o = np.split(gates, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            out[:, step] = h
        x = out
    e = np.maximum(x[:, -1] @ linear_w.T + linear_b, 0)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.mark.parametrize("b", [1, 3, 40])
def test_lstm_cell_kernel(b):
    rng = np.random.default_rng(b)
    hidden = 16
    gx, gh = (rng.normal(0, 2, (b, 4 * hidden)).astype(np.float32) for _ in range(2))
    c = rng.normal(0, 1, (b, hidden)).astype(np.float32)
    h = np.zeros_like(c)
    g = (gx + gh).astype(np.float64)
    i, f, gg, o = np.split(g, 4, axis=1)
    c_ref = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
    h_ref = sigmoid(o) * np.tanh(c_ref)
    for run in (lstm_cell_.serial, lstm_cell_.parallel):
        c2, h2 = c.copy(), h.copy()
        run(gx, gh, c2, h2)
        np.testing.assert_allclose(c2, c_ref, atol=2e-6)
        np.testing.assert_allclose(h2, h_ref, atol=2e-6)


def test_encoder_matches_numpy_lstm():
    dims = SpeakerEncoderDims(n_mels=8, n_hidden=12, n_layer=3, n_embed=10)
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.4, shape).astype(np.float32) for k, shape in dims.shapes().items()}
    enc = SpeakerEncoder(weights, dims)
    mels = rng.random((5, 30, 8)).astype(np.float32)
    layers = [tuple(weights[f"lstm.{n}_l{k}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
              for k in range(dims.n_layer)]
    ref = lstm_reference(mels, layers, weights["linear.weight"], weights["linear.bias"])
    np.testing.assert_allclose(enc(mels), ref, atol=2e-5)
    # a batch gives each partial what it gives alone
    np.testing.assert_allclose(enc(mels[2:3]), enc(mels)[2:3], atol=1e-6)


def test_mel_frames_match_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(16000 * 2 + 123) * 0.1).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    got = mel_frames(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * float(ref.max()))
    np.testing.assert_allclose(slaney_mel_filters(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40).T, atol=1e-7)


def test_volume_is_only_raised():
    quiet = np.full(1600, 0.001, np.float32)
    loud = np.full(1600, 0.5, np.float32)
    assert np.sqrt(np.mean(normalize_volume(quiet) ** 2)) == pytest.approx(10 ** (-30 / 20), rel=1e-4)
    assert normalize_volume(loud) is loud
    assert not normalize_volume(np.zeros(10, np.float32)).any()
