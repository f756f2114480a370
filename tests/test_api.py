"""The Python API the CLI is built on (faster-whisper style)."""
import types

import pytest

from conftest import FIXTURES, JFK_TEXT, normalize
from whisperlite import Segment, TranscribeOptions


@pytest.mark.slow
def test_transcribe_path_lazily(tiny_model):
    segments, info = tiny_model.transcribe(str(FIXTURES / "jfk.mp3"))
    assert isinstance(segments, types.GeneratorType)  # nothing decoded until iterated
    assert info.language == "en" and abs(info.duration - 11.0) < 0.1
    segs = list(segments)
    assert all(isinstance(s, Segment) for s in segs)
    assert normalize(" ".join(s.text for s in segs)) == normalize(JFK_TEXT)
    assert all(s.tokens and s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1 for s in segs)
    assert [s.id for s in segs] == list(range(len(segs)))
    assert all(a.end <= b.start + 1e-6 for a, b in zip(segs, segs[1:]))
    assert set(info.timings) >= {"encode", "decode"}


def test_transcribe_array_and_options(tiny_model, jfk_audio):
    segs, _ = tiny_model.transcribe(jfk_audio, TranscribeOptions(), without_timestamps=True)
    segs = list(segs)
    assert len(segs) == 1 and normalize(segs[0].text) == normalize(JFK_TEXT)

