"""Language: detection on the first speech (Whisper base, pulled from PyPI), forced and
invalid languages, translation requests on English-only models."""
from __future__ import annotations

import numpy as np
import pytest

from whisperlite.transcription.transcribe import LanguageError

SR = 16000


@pytest.mark.network
def test_detects_english_after_a_silent_intro(base_model, jfk_audio):
    # Without VAD the first window is pure silence: detection must look past it.
    audio = np.concatenate([np.zeros(35 * SR, np.float32), jfk_audio])
    _, info = base_model.transcribe(audio, vad=False)  # detection runs before any segment
    assert info.language == "en" and info.language_probability > 0.8
    assert info.timings["encode"] > 0  # the windows looked at are encoded once, then reused


@pytest.mark.network
def test_detects_english_and_transcribes(base_model, jfk_audio):
    segments, info = base_model.transcribe(jfk_audio, beam_size=1)
    assert info.language == "en" and info.language_probability > 0.8
    assert "ask not what your country" in "".join(s.text for s in segments).lower()


@pytest.mark.network
def test_detect_language_from_audio_and_from_features(base_model, jfk_audio):
    """faster-whisper's detect_language: (language, probability, all languages most probable first)."""
    from whisperlite.audio.mel import log_mel_spectrogram

    language, probability, ranked = base_model.detect_language(jfk_audio)
    assert (language, probability) == ranked[0] and language == "en" and probability > 0.8
    assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
    from_features = base_model.detect_language(features=log_mel_spectrogram(jfk_audio, padding=30 * SR - len(jfk_audio)))
    assert from_features[0] == "en" and from_features[1] == pytest.approx(probability, abs=1e-4)
    padded = np.concatenate([np.zeros(35 * SR, np.float32), jfk_audio])  # a silent first window, cut by the VAD
    assert base_model.detect_language(padded, vad_filter=True)[0] == "en"


@pytest.mark.network
def test_language_probabilities_sum_to_one(base_model, jfk_audio):
    from whisperlite.audio.ffmpeg import N_SAMPLES

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


@pytest.mark.network
def test_unknown_language_code(base_model, jfk_audio):
    with pytest.raises(LanguageError, match="unknown language 'xx'"):
        base_model.transcribe(jfk_audio, language="xx")


# Real read speech with its transcripts (SPPAS samples, see fixtures/manifest.json): the same
# passage in German and English, and a Mandarin news-style passage in simplified characters.
def _manifest(name: str) -> dict:
    import json

    from conftest import FIXTURES

    return next(e for e in json.loads((FIXTURES / "manifest.json").read_text()) if e["file"] == name)


def _chars(text: str) -> list[str]:
    import unicodedata

    return [c for c in text.lower() if not (c.isspace() or unicodedata.category(c)[0] == "P")]


@pytest.mark.parametrize("name, language, min_prob, max_cer", [
    ("sppas-deu-DEU_F10_DEU_T02.flac", "de", 0.95, 0.10),
    ("sppas-cmn-f2_P7.flac", "zh", 0.95, 0.25),
    ("sppas-eng-ENG_M15_ENG_T02.flac", "en", 0.80, 0.05),
])
@pytest.mark.network
def test_detects_real_speech_language(base_model, name, language, min_prob, max_cer):
    from conftest import FIXTURES, edit_rate

    from whisperlite.output.chinese import convert_text

    segments, info = base_model.transcribe(str(FIXTURES / name), beam_size=1)
    text = "".join(s.text for s in segments)
    assert info.language == language and info.language_probability > min_prob
    if language == "zh":  # Whisper writes this Mandarin partly in traditional characters
        text = convert_text(text, "simplified")
    ref = _manifest(name)["transcript"].replace(" / ", " ")
    assert edit_rate(_chars(ref), _chars(text)) < max_cer, text


@pytest.mark.network
def test_cli_zh_simplified_and_traditional(base_model, tmp_path):
    import json

    from conftest import FIXTURES, run_cli

    for script, want, unwanted in (("simplified", "这里", "這裡"), ("traditional", "這裡", "这里")):
        proc = run_cli("transcribe", str(FIXTURES / "sppas-cmn-f2_P7.flac"), "-m", "base", "-bs", "1", "--zh", script,
                       "-otxt", "-oj", "-o", str(tmp_path / script))
        assert proc.returncode == 0, proc.stderr
        assert "detected language zh" in proc.stderr
        text = (tmp_path / script / "sppas-cmn-f2_P7.txt").read_text()
        assert want in text and unwanted not in text
        result = json.loads((tmp_path / script / "sppas-cmn-f2_P7.json").read_text())
        words = "".join(w["word"] for s in result["segments"] for w in s["words"])
        assert want in words and unwanted not in words
