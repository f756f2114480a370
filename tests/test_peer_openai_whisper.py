"""openai/whisper's own tests (tests/test_transcribe.py, test_tokenizer.py, test_audio.py,
test_timing.py at c0d2f62), their expectations ported to whisperlite: one test per expectation,
each naming the peer test it ports.

Where whisper's test runs every model of `whisper.available_models()`, this runs the two
installable here: tiny.en (embedded) and base (pulled from PyPI, `network`). Not ported:
test_dtw_cuda_equivalence and test_median_filter_equivalence (CUDA against CPU: whisperlite
runs on the CPU only), and test_utils.py (not in whisper's tests at that commit).
"""
import numpy as np
import pytest
import scipy.ndimage

from conftest import FIXTURES
from whisperlite.audio.ffmpeg import SAMPLE_RATE, load_audio
from whisperlite.audio.mel import log_mel_spectrogram
from whisperlite.registry import hub
from whisperlite.registry.embedded import embedded_model_dir
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcription.timing import dtw, median_filter

JFK = str(FIXTURES / "jfk.flac")  # the clip whisper's tests use


# --- tests/test_transcribe.py::test_transcribe[model_name] ---------------------------------

@pytest.fixture(scope="module", params=["tiny.en", pytest.param("base", marks=pytest.mark.network)])
def transcribed(request):
    """whisper's call: language "en" for .en models (else detected), temperature 0, word timestamps."""
    if request.param == "tiny.en":
        model = request.getfixturevalue("tiny_model")
        language = "en"
    else:
        model = request.getfixturevalue("base_model")
        language = None
    segments, info = model.transcribe(JFK, language=language, temperature=0.0, word_timestamps=True)
    return model, list(segments), info


def test_transcribe_language(transcribed):
    """test_transcribe: result["language"] == "en"."""
    _, _, info = transcribed
    assert info.language == "en"


def test_transcribe_text(transcribed):
    """test_transcribe: the text holds "my fellow americans", "your country", "do for you"."""
    _, segments, _ = transcribed
    text = "".join(s.text for s in segments).lower()
    assert "my fellow americans" in text and "your country" in text and "do for you" in text


def test_transcribe_tokens_decode_to_the_text(transcribed):
    """test_transcribe: the text is the segments' texts joined, and decoding all their tokens gives it."""
    model, segments, _ = transcribed
    all_tokens = [t for s in segments for t in s.tokens]
    assert model.tokenizer.decode(all_tokens) == "".join(s.text for s in segments)


def test_transcribe_tokens_start_at_zero(transcribed):
    """test_transcribe: decode_with_timestamps(all tokens) starts with <|0.00|>."""
    model, segments, _ = transcribed
    all_tokens = [t for s in segments for t in s.tokens]
    assert model.tokenizer.decode_with_timestamps(all_tokens).startswith("<|0.00|>")


def test_transcribe_words_have_positive_duration(transcribed):
    """test_transcribe: every word's start < end."""
    _, segments, _ = transcribed
    words = [w for s in segments for w in s.words]
    assert words and all(w.start < w.end for w in words)


def test_transcribe_americans_is_timed(transcribed):
    """test_transcribe: the word "Americans" starts by 1.8 s and ends after it."""
    _, segments, _ = transcribed
    timed = [w for s in segments for w in s.words if w.word.strip(" ,") == "Americans"]
    assert timed and all(w.start <= 1.8 <= w.end for w in timed)


# --- tests/test_tokenizer.py ---------------------------------------------------------------

@pytest.fixture(scope="module")
def english_tokenizer() -> WhisperTokenizer:
    return WhisperTokenizer.from_file(str(embedded_model_dir() / "tokenizer.json"), 51864)


@pytest.fixture(scope="module")
def multilingual_tokenizer(base_model) -> WhisperTokenizer:
    return WhisperTokenizer.from_file(str(hub.cached_path("base") / "tokenizer.json"), 51865)


@pytest.mark.parametrize("multilingual", [False, pytest.param(True, marks=pytest.mark.network)])
def test_tokenizer(request, multilingual):
    """test_tokenizer[multilingual]: sot is in the sot sequence, a token per language code, all
    below the timestamps. (whisper's test builds the English tokenizer for both parameters;
    here each parameter gets its own.)"""
    tok = request.getfixturevalue("multilingual_tokenizer" if multilingual else "english_tokenizer")
    assert tok.sot in tok.sot_sequence()
    assert len(tok.all_language_codes) == len(tok.all_language_tokens)
    assert all(c < tok.timestamp_begin for c in tok.all_language_tokens)


@pytest.mark.network
def test_multilingual_tokenizer(english_tokenizer, multilingual_tokenizer):
    """test_multilingual_tokenizer: both round-trip Korean, the multilingual one in fewer tokens."""
    text = "다람쥐 헌 쳇바퀴에 타고파"
    gpt2_tokens = english_tokenizer.encode(text)
    multilingual_tokens = multilingual_tokenizer.encode(text)
    assert english_tokenizer.decode(gpt2_tokens) == text
    assert multilingual_tokenizer.decode(multilingual_tokens) == text
    assert len(gpt2_tokens) > len(multilingual_tokens)


@pytest.mark.network
def test_split_on_unicode(multilingual_tokenizer):
    """test_split_on_unicode: an invalid byte (token 246) is a word of its own, the rest split per token."""
    tokens = [8404, 871, 287, 6, 246, 526, 3210, 20378]
    words, word_tokens = multilingual_tokenizer.split_tokens_on_unicode(tokens)
    assert words == [" elle", " est", " l", "'", "\ufffd", "é", "rit", "oire"]
    assert word_tokens == [[8404], [871], [287], [6], [246], [526], [3210], [20378]]


# --- tests/test_audio.py::test_audio -------------------------------------------------------

@pytest.fixture(scope="module")
def jfk_flac() -> np.ndarray:
    return load_audio(JFK)


def test_audio_is_mono_and_11_seconds(jfk_flac):
    """test_audio: load_audio gives one dimension, between 10 and 12 s at SAMPLE_RATE."""
    assert jfk_flac.ndim == 1
    assert SAMPLE_RATE * 10 < jfk_flac.shape[0] < SAMPLE_RATE * 12


def test_audio_level(jfk_flac):
    """test_audio: 0 < std < 1 (samples scaled to [-1, 1])."""
    assert 0 < jfk_flac.std() < 1


def test_audio_mel_from_path_equals_mel_from_samples(jfk_flac):
    """test_audio: log_mel_spectrogram of the path equals that of the decoded samples."""
    assert np.allclose(log_mel_spectrogram(jfk_flac), log_mel_spectrogram(JFK))


def test_audio_mel_range(jfk_flac):
    """test_audio: the log-mel spans at most 2.0 (clamped to 8 decades below its maximum, / 4)."""
    mel = log_mel_spectrogram(jfk_flac)
    assert mel.max() - mel.min() <= 2.0


# --- tests/test_timing.py ------------------------------------------------------------------

@pytest.mark.parametrize("N, M", [(10, 20), (32, 16), (123, 1500), (234, 189)])
def test_dtw(N: int, M: int):
    """test_dtw: on random costs with a planted cheaper path, dtw finds that path."""
    rng = np.random.default_rng(N * M)
    steps = np.concatenate([np.zeros(N - 1), np.ones(M - 1)])
    rng.shuffle(steps)
    x = rng.random((N, M)).astype(np.float32)
    i, j, k = 0, 0, 0
    trace = []
    while True:
        x[i, j] -= 1
        trace.append((i, j))
        if k == len(steps):
            break
        if k + 1 < len(steps) and steps[k] != steps[k + 1]:
            i += 1
            j += 1
            k += 2
            continue
        if steps[k] == 0:
            i += 1
        if steps[k] == 1:
            j += 1
        k += 1
    assert np.allclose(np.array(trace).T, np.array(dtw(x)))


@pytest.mark.parametrize("shape", [(10,), (1, 15), (4, 5, 345), pytest.param((6, 12, 240, 512), marks=pytest.mark.slow)])
def test_median_filter(shape):
    """test_median_filter: widths 3, 5, 7, 13 along the last axis equal scipy's median filter
    on the reflect-padded input."""
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    for filter_width in [3, 5, 7, 13]:
        filtered = median_filter(x, filter_width)
        pad_width = filter_width // 2
        padded_x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad_width, pad_width)], mode="reflect")
        scipy_filtered = scipy.ndimage.median_filter(padded_x, [1] * (x.ndim - 1) + [filter_width])
        scipy_filtered = scipy_filtered[..., pad_width:-pad_width]
        assert np.allclose(filtered, scipy_filtered)
