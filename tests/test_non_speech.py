"""No invented text on silence, noise or music: with default options (VAD on) and, for noise,
with --no-vad, where only the decoder's gates (no-speech, log-probability, compression ratio
driving temperature fallback) stand between noise and looping text."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import run_cli

SR = 16000


def white_noise(seconds: float) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal(int(seconds * SR))).astype(np.float32)


def pink_noise(seconds: float) -> np.ndarray:
    """1/f power: white noise shaped by 1/sqrt(f) in the frequency domain."""
    n = int(seconds * SR)
    spectrum = np.fft.rfft(np.random.default_rng(1).standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    x = np.fft.irfft(spectrum / np.sqrt(f), n)
    return (0.1 * x / x.std()).astype(np.float32)


def chords(seconds: float) -> np.ndarray:
    """Music-like: a new three-note chord with harmonics every second, each note decaying."""
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    progression = [(261.6, 329.6, 392.0), (220.0, 261.6, 329.6), (174.6, 220.0, 261.6), (196.0, 246.9, 293.7)]
    for k in range(int(seconds)):
        on = (t >= k) & (t < k + 1)
        env = np.exp(-2.5 * (t[on] - k))
        for f0 in progression[k % len(progression)]:
            for harmonic, amp in ((1, 1.0), (2, 0.4), (3, 0.2), (4, 0.1)):
                x[on] += amp * env * np.sin(2 * np.pi * f0 * harmonic * t[on])
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def test_pink_noise_has_the_intended_spectrum():
    x = pink_noise(10)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    low, high = power[(f > 100) & (f < 200)].mean(), power[(f > 1000) & (f < 2000)].mean()
    assert 7 < low / high < 13  # 1/f: ten times the power a decade lower


@pytest.mark.parametrize("kind", ["pink noise", "chords"])
def test_no_text_with_default_options(tiny_model, kind):
    audio = pink_noise(60) if kind == "pink noise" else chords(30)
    segments, _ = tiny_model.transcribe(audio)
    assert [s.text for s in segments] == []


@pytest.mark.parametrize("kind", ["white noise", "pink noise"])
@pytest.mark.slow
def test_no_text_on_noise_without_vad(tiny_model, kind):
    audio = white_noise(60) if kind == "white noise" else pink_noise(60)
    segments, _ = tiny_model.transcribe(audio, vad=False)
    assert [s.text for s in segments] == []


@pytest.mark.slow
def test_cli_writes_empty_subtitles_for_noise(tmp_path):
    wav = tmp_path / "noise.wav"
    sf.write(wav, pink_noise(60), SR, subtype="PCM_16")
    proc = run_cli("transcribe", str(wav), "-osrt", "-otxt", "-bs", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert (tmp_path / "noise.srt").read_text() == "" and (tmp_path / "noise.txt").read_text().strip() == ""
