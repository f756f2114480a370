"""The Python API the CLI is built on (faster-whisper style)."""
import io
import types

import numpy as np
import pytest

from conftest import FIXTURES, JFK_TEXT, normalize
from whisperlite import Segment, TranscribeOptions, WhisperModel
from whisperlite.core.errors import WhisperliteError
from whisperlite.output.writers import write_outputs
from whisperlite.transcription.decoding import suppressed_tokens
from whisperlite.transcription.options import OptionError, with_values
from whisperlite.transcription.timing import split_words


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



def test_inputs_bytes_file_object_and_stereo_array(tiny_model, jfk_audio):
    """The API takes the bytes of a file, a binary file object and stereo samples, as a path."""
    data = (FIXTURES / "jfk.wav").read_bytes()
    stereo = np.stack([jfk_audio, jfk_audio])
    with open(FIXTURES / "jfk.wav", "rb") as fh:
        for audio in (data, fh, stereo, stereo.T):
            segs, _ = tiny_model.transcribe(audio, without_timestamps=True, vad=False, word_timestamps=False)
            assert normalize(" ".join(s.text for s in segs)) == normalize(JFK_TEXT)


@pytest.mark.parametrize("audio, message", [
    (b"RIFF\x00\xff" + bytes(range(256)) * 4, "audio bytes (1030 bytes): not an audio or video file"),
    (b"", "audio bytes: empty"),
    (io.StringIO("text"), "opened in text mode"),
    (42, "cannot read audio from type int"),
    (np.zeros((3, 3, 3), np.float32), "audio array of shape (3, 3, 3)"),
])
def test_bad_inputs_are_one_line_without_their_bytes(tiny_model, audio, message):
    with pytest.raises(WhisperliteError) as e:
        tiny_model.transcribe(audio)
    text = str(e.value)
    assert message in text and "\n" not in text and "\\x" not in text and "RIFF" not in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="cuda"), "CPU only"),
    (dict(compute_type="float16"), "compute_type 'float16' is not supported"),
])
def test_model_refuses_gpus_and_half_precision_in_one_line(kwargs, message):
    with pytest.raises(WhisperliteError, match=message):
        WhisperModel("tiny.en", **kwargs)


def test_faster_whisper_names_map_onto_the_options_tree():
    opts = with_values(TranscribeOptions(), temperature=0.2, log_prob_threshold=-2.0, vad_filter=False,
                       vad_parameters={"min_silence_duration_ms": 500}, max_new_tokens=50, clip_timestamps="0,5,6",
                       initial_prompt=[1, 2], suppress_tokens=[-1], repetition_penalty=1)
    assert opts.fallback.temperatures == (0.2,) and opts.fallback.logprob_threshold == -2.0
    assert not opts.vad.enabled and opts.vad.min_silence_duration_ms == 500 and opts.decode.sample_len == 50
    assert opts.clip.clip_timestamps == (0.0, 5.0, 6.0) and opts.context.initial_prompt == (1, 2)
    assert with_values(TranscribeOptions(), temperature=[0, 0.5]).fallback.temperatures == (0.0, 0.5)
    for bad in (dict(clip_timestamps="5,1"), dict(temperature="hot"), dict(repetition_penalty=1.2),
                dict(vad_parameters={"window_size_samples": 512})):
        with pytest.raises(OptionError):
            with_values(TranscribeOptions(), **bad)


def test_suppress_minus_one_keeps_the_last_timestamp(tiny_model):
    """-1 is the non-speech set, not token id -1 (the last timestamp, <|30.00|>)."""
    ids = suppressed_tokens(tiny_model.tokenizer, [-1, 13])
    assert 13 in ids and set(tiny_model.tokenizer.non_speech_tokens) <= set(ids)
    assert tiny_model.tokenizer.n_vocab - 1 not in ids and -1 not in ids


def test_words_split_after_an_invalid_byte(tiny_model):
    """A byte that never completes a character does not glue the rest of the segment into one word."""
    tok = tiny_model.tokenizer
    tokens = tok.encode(" so") + [246] + tok.encode(" my fellow Americans")
    assert [tok.decode(w) for w in split_words(tok, tokens, "en")] == [" so\ufffd", " my", " fellow", " Americans"]


def test_segments_span_their_words(tiny_model):
    segs, _ = tiny_model.transcribe(str(FIXTURES / "jfk.wav"))
    segs = list(segs)
    assert 0.2 < segs[0].start < 0.5  # the first word, not the window's 0.0
    assert all(s.start == s.words[0].start and s.end == s.words[-1].end for s in segs)


def test_write_outputs_creates_its_folder(tiny_model, tmp_path):
    segs, info = tiny_model.transcribe(str(FIXTURES / "jfk.wav"), word_timestamps=False)
    paths = write_outputs(list(segs), info, str(tmp_path / "new" / "dir" / "jfk"), ["txt"])
    assert normalize(open(paths[0]).read()) == normalize(JFK_TEXT)
