"""Language: detection on the first speech (Whisper base, pulled from PyPI), forced and
invalid languages, translation requests on English-only models."""
from __future__ import annotations

import numpy as np
import pytest

import whisperlite
from whisperlite.errors import WhisperliteError
from whisperlite.transcribe import LanguageError

SR = 16000


@pytest.fixture(scope="module")
def base_model():
    from whisperlite import hub

    try:
        hub.pull("base", progress=lambda message: None)
    except (WhisperliteError, OSError) as e:  # no network to PyPI: nothing to test against
        pytest.skip(f"Whisper base not available: {e}")
    return whisperlite.load_model("base", threads=2)


def test_detects_english_after_a_silent_intro(base_model, jfk_audio):
    # Without VAD the first window is pure silence: detection must look past it.
    audio = np.concatenate([np.zeros(35 * SR, np.float32), jfk_audio])
    _, info = base_model.transcribe(audio, vad=False)  # detection runs before any segment
    assert info.language == "en" and info.language_probability > 0.8
    assert info.timings["encode"] > 0  # the windows looked at are encoded once, then reused


def test_detects_english_and_transcribes(base_model, jfk_audio):
    segments, info = base_model.transcribe(jfk_audio, beam_size=1)
    assert info.language == "en" and info.language_probability > 0.8
    assert "ask not what your country" in "".join(s.text for s in segments).lower()


def test_language_probabilities_sum_to_one(base_model, jfk_audio):
    from whisperlite.audio import N_SAMPLES

    _, features = base_model._encode(jfk_audio[:N_SAMPLES])
    probs, no_speech = base_model.language_probabilities(features)
    assert len(probs) == 99 and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert max(probs, key=probs.get) == "en" and no_speech < 0.3


def test_english_only_model_rejects_other_languages_and_translation(tiny_model, jfk_audio):
    with pytest.raises(LanguageError, match="English-only"):
        tiny_model.transcribe(jfk_audio, language="de")
    with pytest.raises(LanguageError, match="translation"):
        tiny_model.transcribe(jfk_audio, task="translate")
    _, info = tiny_model.transcribe(jfk_audio, language="auto")
    assert info.language == "en"


def test_unknown_language_code(base_model, jfk_audio):
    with pytest.raises(LanguageError, match="unknown language 'xx'"):
        base_model.transcribe(jfk_audio, language="xx")
