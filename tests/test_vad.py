"""Voice activity: no text on silence, noise or music; cuts map back to input times; streaming."""
from __future__ import annotations

import numpy as np
import pytest

from whisperlite.audio.vad import FRAME, SpeechFilter, TimeMap
from whisperlite.transcription.options import VadOptions

SR = 16000


def tones(seconds: float) -> np.ndarray:
    """A music-like signal: a melody of decaying harmonic notes over a sustained chord."""
    t = np.arange(int(seconds * SR)) / SR
    x = 0.1 * np.sin(2 * np.pi * 130.8 * t) + 0.1 * np.sin(2 * np.pi * 196.0 * t)
    notes = [261.6, 329.6, 392.0, 523.3, 440.0, 349.2]
    for k in range(int(seconds * 2)):
        seg = (t >= k * 0.5) & (t < k * 0.5 + 0.5)
        env = np.exp(-3 * (t[seg] - k * 0.5))
        for harmonic, amp in ((1, 0.5), (2, 0.25), (3, 0.12)):
            x[seg] += amp * env * np.sin(2 * np.pi * notes[k % len(notes)] * harmonic * t[seg])
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


NON_SPEECH = {
    "silence": lambda: np.zeros(60 * SR, np.float32),
    "white noise": lambda: (0.1 * np.random.default_rng(0).standard_normal(60 * SR)).astype(np.float32),
    "music": lambda: tones(30),
}


@pytest.mark.parametrize("kind", list(NON_SPEECH))
def test_no_text_on_non_speech(tiny_model, kind):
    segments, info = tiny_model.transcribe(NON_SPEECH[kind]())
    assert [s.text for s in segments] == []
    assert info.duration == pytest.approx(60 if kind != "music" else 30)


def test_time_map():
    tm = TimeMap()
    tm.add(0, 16000)  # kept audio starts at input 1.0 s
    tm.add(32000, 160000, lead=3200)  # after 2 s kept, a cut: input resumes at 10.0 s, speech at 10.2 s
    assert tm.to_input(0.5) == 1.5
    assert tm.to_input(2.0) == 10.0  # a start on the cut belongs to the next stretch
    assert tm.to_input(2.0, is_end=True) == 3.0  # an end on the cut, to the previous one
    assert tm.to_input(2.1, is_end=True) == 3.0  # an end in the pause before the next speech too
    assert tm.to_input(2.5) == 10.5 and tm.to_input(2.5, is_end=True) == 10.5


@pytest.mark.slow
def test_pauses_cut_and_times_mapped_back(tiny_model, jfk_audio):
    gap = np.zeros(10 * SR, np.float32)
    audio = np.concatenate([gap[: 5 * SR], jfk_audio, gap, jfk_audio, gap[: 5 * SR]])
    segments, info = tiny_model.transcribe(audio, word_timestamps=True, beam_size=1)
    segments = list(segments)
    assert info.duration == pytest.approx(len(audio) / SR)
    second = 5 + len(jfk_audio) / SR + 10  # where the second copy starts in the input
    # (tiny.en greedy sometimes hears "asked")
    asks = [w.start for s in segments for w in s.words if w.word.strip(" ,").lower().startswith("ask")]
    # "ask" is spoken 3.3 s and 8.2 s into the clip, in both copies
    expected = [5 + 3.3, 5 + 8.2, second + 3.3, second + 8.2]
    assert len(asks) == 4
    assert all(abs(a - e) < 0.3 for a, e in zip(asks, expected)), asks
    for s in segments:
        assert all(s.start <= w.start <= w.end <= s.end for w in s.words)
        # no segment starts or ends inside the cut pause
        assert not (5 + 11.5 < s.start < second - 0.5) and not (5 + 11.5 < s.end < second - 0.5)


def test_filter_streams_with_bounded_memory(jfk_audio):
    """Output arrives while input is still being read, and nothing piles up in between."""
    pulled = 0
    speech_then_silence = np.concatenate([jfk_audio, np.zeros(20 * SR, np.float32)])

    def source():
        nonlocal pulled
        for _ in range(20):  # about 10 minutes, in 1-second chunks
            for i in range(0, len(speech_then_silence), SR):
                pulled += 1
                yield speech_then_silence[i : i + SR]

    filt = SpeechFilter(source(), VadOptions())
    first_output_at = None
    kept = 0
    for chunk in filt:
        if first_output_at is None:
            first_output_at = pulled
        kept += len(chunk)
    assert first_output_at is not None and first_output_at < 80  # well before the 620 chunks end
    assert filt.input_samples == 20 * len(speech_then_silence)
    # Each copy keeps its 11 s of speech plus pads, never the 20 s pauses.
    assert 20 * 10 * SR < kept < 20 * 13 * SR
    assert len(filt.time_map.out_starts) == 20


def test_frame_is_32_ms():
    assert FRAME / SR == 0.032


@pytest.mark.parametrize("kind", ["silence", "music"])
def test_no_text_without_vad(tiny_model, kind):
    # The decoder's own gates (digital silence, no-speech probability) without the VAD pass.
    segments, _ = tiny_model.transcribe(NON_SPEECH[kind](), vad=False)
    assert [s.text for s in segments] == []


def test_missing_model_is_vad_unavailable(monkeypatch):
    from whisperlite.audio import vad

    def missing():
        raise FileNotFoundError("silero_vad.onnx is missing")

    monkeypatch.setattr(vad, "_WEIGHTS", None)
    monkeypatch.setattr(vad, "load_weights", missing)
    with pytest.raises(vad.VadUnavailableError, match="--no-vad"):
        SpeechFilter(iter([np.zeros(SR, np.float32)]))


def test_filters_have_their_own_state(jfk_audio):
    """A stream keeps the same audio when other streams are filtered while it runs (each
    iteration has its own model state; one shared Silero session would be reset under it)."""
    def chunks(audio):
        return (audio[i : i + SR] for i in range(0, len(audio), SR))

    a = np.concatenate([jfk_audio, np.zeros(5 * SR, np.float32), jfk_audio])
    b = np.concatenate([np.zeros(3 * SR, np.float32), jfk_audio[::-1].copy()])
    alone = np.concatenate(list(SpeechFilter(chunks(a))))

    def interrupted():
        for chunk in chunks(a):
            list(SpeechFilter(chunks(b)))
            yield chunk

    assert np.array_equal(np.concatenate(list(SpeechFilter(interrupted()))), alone)
