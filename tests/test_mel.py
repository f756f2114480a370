"""Log-mel vs an independent reference: librosa's STFT (same centring, reflect padding,
periodic Hann as torch.stft) and the published Whisper formula."""
import librosa
import numpy as np
import pytest

from whisperlite.audio.mel import log_mel_spectrogram, mel_filters, pad_or_trim


def reference_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    stft = librosa.stft(audio.astype(np.float64), n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
    power = np.abs(stft[:, :-1]) ** 2
    filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=n_mels)
    log_spec = np.log10(np.clip(filters @ power, 1e-10, None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.slow
def test_log_mel_matches_reference(jfk_audio, n_mels):
    ours = log_mel_spectrogram(jfk_audio, n_mels)
    ref = reference_log_mel(jfk_audio, n_mels)
    assert ours.shape == ref.shape == (n_mels, len(jfk_audio) // 160)
    assert np.max(np.abs(ours - ref)) < 1e-4


def test_padding_and_trim(jfk_audio):
    mel = log_mel_spectrogram(jfk_audio[:16000], padding=480000)
    assert mel.shape == (80, (16000 + 480000) // 160)
    assert pad_or_trim(mel).shape == (80, 3000)
    assert pad_or_trim(mel[:, :100]).shape == (80, 3000)


def test_filters_match_librosa():
    assert np.array_equal(mel_filters(80), librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).astype(np.float32))
