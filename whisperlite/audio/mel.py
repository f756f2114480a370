"""Whisper's log-mel spectrogram: 25 ms Hann window, 10 ms hop, librosa's Slaney mel filters,
log10 clamped to (max − 8), then (x + 4) / 4 — as openai/whisper's `log_mel_spectrogram`."""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from whisperlite.audio.ffmpeg import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE, AudioSource, load_audio
from whisperlite.core.env import CACHE_DIR


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """(n_mels, 201) float32; equal to the filters stored in whisper.cpp/openai assets.

    The first librosa call costs ~2 s of imports, paid on every CLI start unless the bank
    is kept: it is saved once in the user cache directory.
    """
    cached = os.path.join(CACHE_DIR, f"mel_filters_{n_mels}.npy")
    try:
        return np.load(cached)
    except (OSError, ValueError):
        pass
    import librosa

    bank = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f"{cached}.{os.getpid()}.tmp.npy"
        np.save(tmp, bank)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the recomputation
    return bank


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    # torch.hann_window(400) is periodic: the N+1-point symmetric window without its last value.
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


# Frames transformed at a time. The float64 spectrum of a whole 30 s window and its squares
# were 30 MB of temporaries at every window start; per slice they are under 2 MB.
FFT_FRAMES = 256


def _power_spectrum(audio: np.ndarray) -> np.ndarray:
    """|STFT|² (201, frames), centred frames with reflect padding, last frame dropped (as torch.stft + [..., :-1])."""
    pad = N_FFT // 2
    x = np.pad(audio.astype(np.float32, copy=False), (pad, pad), mode="reflect")
    n_frames = (len(x) - N_FFT) // HOP_LENGTH  # 1 + that, less the last frame
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP_LENGTH, x.strides[0])
    )
    power = np.empty((N_FFT // 2 + 1, n_frames), np.float32)
    for a in range(0, n_frames, FFT_FRAMES):
        spec = np.fft.rfft(frames[a : a + FFT_FRAMES] * _hann(), axis=1)
        power[:, a : a + FFT_FRAMES] = (spec.real**2 + spec.imag**2).T
    return power


def log_mel_spectrogram(audio: np.ndarray | AudioSource, n_mels: int = 80, padding: int = 0) -> np.ndarray:
    """audio (n,) float32 at 16 kHz (or a path, bytes or file to decode) → (n_mels, n_frames)
    float32, n_frames = (n + padding) // 160."""
    if not isinstance(audio, np.ndarray):
        audio = load_audio(audio)
    if padding:
        audio = np.pad(audio, (0, padding))
    mel = mel_filters(n_mels) @ _power_spectrum(audio)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def pad_or_trim(mel: np.ndarray, n_frames: int = N_FRAMES) -> np.ndarray:
    """Pad with zeros or cut the frame axis to exactly `n_frames` (the encoder's 30 s input)."""
    if mel.shape[-1] > n_frames:
        return mel[..., :n_frames]
    if mel.shape[-1] < n_frames:
        return np.pad(mel, [(0, 0)] * (mel.ndim - 1) + [(0, n_frames - mel.shape[-1])])
    return mel


__all__ = ["log_mel_spectrogram", "pad_or_trim", "mel_filters", "N_SAMPLES"]
