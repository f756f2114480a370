"""The d-vector speaker encoder of resemblyzer (GE2E, Wan et al. 2018): mel frames → a
256-wide unit vector that is close (cosine) for the same voice.

A 3-layer LSTM (hidden 256) over 40 mel power channels, its last hidden state through a
Linear 256→256 and a ReLU, L2-normalised. The input is resemblyzer's `wav_to_mel_spectrogram`
(librosa's melspectrogram with its defaults: centred frames, zero padding, a periodic Hann
window, power 2, Slaney mel filters), taken in partials of 160 frames (1.6 s).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisperlite.formats.torch_pt import state_dict
from whisperlite.kernels.recurrent import lstm_cell_

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window at 16 kHz
HOP = 160  # 10 ms step at 16 kHz
N_MELS = 40
PARTIAL_FRAMES = 160  # frames per partial utterance: 1.6 s
TARGET_DBFS = -30.0  # resemblyzer's audio_norm_target_dBFS
MEL_FRAMES_AT_ONCE = 400  # frames framed and transformed together: temporaries under 1 MB


@dataclass(frozen=True)
class SpeakerEncoderDims:
    n_mels: int = N_MELS
    n_hidden: int = 256
    n_layer: int = 3
    n_embed: int = 256

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """State-dict names (resemblyzer's `model_state`) and the shape each must have."""
        h4 = 4 * self.n_hidden
        out: dict[str, tuple[int, ...]] = {}
        for k in range(self.n_layer):
            out[f"lstm.weight_ih_l{k}"] = (h4, self.n_mels if k == 0 else self.n_hidden)
            out[f"lstm.weight_hh_l{k}"] = (h4, self.n_hidden)
            out[f"lstm.bias_ih_l{k}"] = (h4,)
            out[f"lstm.bias_hh_l{k}"] = (h4,)
        out["linear.weight"] = (self.n_embed, self.n_hidden)
        out["linear.bias"] = (self.n_embed,)
        return out


def slaney_mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Mel filterbank (n_fft//2+1, n_mels) as librosa.filters.mel with its defaults (Slaney's
    mel scale, linear below 1 kHz, logarithmic above; each filter normalised to unit area)."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        lin = f / (200.0 / 3)
        logstep = np.log(6.4) / 27.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        logstep = np.log(6.4) / 27.0
        return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))

    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return np.ascontiguousarray(weights.T, dtype=np.float32)


_FILTERS = slaney_mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def normalize_volume(samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Raise quiet audio to TARGET_DBFS RMS (never lowers it), as resemblyzer's preprocessing;
    into `out` (may be `samples`) when given, else into a new array when it raises it."""
    # summed in float64 a buffer at a time, without a float64 copy of the samples
    rms = float(np.sqrt(np.einsum("i,i->", samples, samples, dtype=np.float64) / len(samples))) if len(samples) else 0.0
    gain = 10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20) if rms > 0 else 1.0
    if gain <= 1:
        return samples
    return np.multiply(samples, np.float32(gain), out=out)


def mel_frames(samples: np.ndarray, centred: bool = False) -> np.ndarray:
    """16 kHz samples (n,) → mel power frames (1 + n // HOP, N_MELS), float32, centred frames.
    `centred`: float32 samples that already carry the N_FFT // 2 zeros of centring at both ends
    (n counts without them), so no padded copy is made."""
    x = samples if centred else np.pad(np.asarray(samples, np.float32), N_FFT // 2)
    n_frames = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n_frames, N_FFT), (x.strides[0] * HOP, x.strides[0]),
                                             writeable=False)
    out = np.empty((n_frames, N_MELS), np.float32)
    for a in range(0, n_frames, MEL_FRAMES_AT_ONCE):
        spec = np.fft.rfft(frames[a : a + MEL_FRAMES_AT_ONCE] * _WINDOW, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
        np.matmul(power, _FILTERS, out=out[a : a + MEL_FRAMES_AT_ONCE])
    return out


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder forward pass on numpy matrix products and the LSTM kernel."""

    def __init__(self, weights: dict[str, np.ndarray], dims: SpeakerEncoderDims = SpeakerEncoderDims()):
        self.dims = dims
        self.layers = []
        for k in range(dims.n_layer):
            # [input, h] @ [W_ih; W_hh]: a step's gates in one product
            self.layers.append((
                np.ascontiguousarray(np.vstack([weights[f"lstm.weight_ih_l{k}"].T, weights[f"lstm.weight_hh_l{k}"].T]),
                                     dtype=np.float32),  # (in + H, 4H)
                (weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"]).astype(np.float32),
            ))
        self.linear_t = np.ascontiguousarray(weights["linear.weight"].T)  # (H, E)
        self.linear_b = weights["linear.bias"]

    @classmethod
    def from_file(cls, path: str | Path) -> "SpeakerEncoder":
        """resemblyzer's `pretrained.pt` (its `model_state`), every tensor's shape checked."""
        dims = SpeakerEncoderDims()
        return cls(state_dict(path, "model_state", dims.shapes()), dims)

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """mels (b, t, n_mels) → embeddings (b, n_embed), unit length (zero rows stay zero)."""
        b, t, _ = mels.shape
        hidden = self.dims.n_hidden
        x = np.ascontiguousarray(mels.transpose(1, 0, 2), dtype=np.float32)  # (t, b, in): rows of a step together
        # Step by step through all layers (not layer by layer): nothing of size t x b is held
        # but the input, so a block of audio needs a few hundred kB beside its mel frames.
        xh = [np.zeros((b, w.shape[0]), np.float32) for w, _ in self.layers]  # [input, h] of each layer
        c = [np.zeros((b, hidden), np.float32) for _ in self.layers]
        h = [np.zeros((b, hidden), np.float32) for _ in self.layers]
        biases = [np.ascontiguousarray(np.broadcast_to(bias, (b, 4 * hidden))) for _, bias in self.layers]
        gates = np.empty((b, 4 * hidden), np.float32)
        for step in range(t):
            inp = x[step]
            for k, (w, _) in enumerate(self.layers):
                n_in = w.shape[0] - hidden
                xh[k][:, :n_in] = inp
                xh[k][:, n_in:] = h[k]
                np.matmul(xh[k], w, out=gates)
                lstm_cell_.serial(gates, biases[k], c[k], h[k])  # beside the decoder, on the embedding thread
                inp = h[k]
        e = np.maximum(h[-1] @ self.linear_t + self.linear_b, 0)
        norm = np.linalg.norm(e, axis=1, keepdims=True)
        return e / np.where(norm > 0, norm, 1)
