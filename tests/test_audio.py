import subprocess

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES
from whisperlite.audio import DecodeReport, ffmpeg_exe, load_audio, stream_audio
from whisperlite.errors import AudioDecodeError


def test_wav_matches_soundfile(jfk_audio):
    ref, sr = sf.read(str(FIXTURES / "jfk.wav"), dtype="float32")
    assert sr == 16000 and np.array_equal(jfk_audio, ref)


def test_stereo_44k_flac_resampled_to_16k_mono():
    a = load_audio(str(FIXTURES / "jfk.flac"))
    assert a.dtype == np.float32 and a.ndim == 1
    assert abs(len(a) - 176000) <= 160


def test_streaming_chunks_cover_the_file(jfk_audio):
    chunks = list(stream_audio(str(FIXTURES / "jfk.wav"), chunk_samples=50000))
    assert [len(c) for c in chunks[:-1]] == [50000] * (len(chunks) - 1)
    assert np.array_equal(np.concatenate(chunks), jfk_audio)


def test_early_stop_does_not_hang():
    gen = stream_audio(str(FIXTURES / "jfk.wav"), chunk_samples=1000)
    next(gen)
    gen.close()


@pytest.mark.parametrize("bits,rate,channels", [("pcm_s24le", 48000, 2), ("pcm_u8", 8000, 1), ("pcm_f32le", 22050, 6)])
def test_any_rate_depth_channels(tmp_path, bits, rate, channels):
    out = tmp_path / "x.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(FIXTURES / "jfk.wav"), "-ar", str(rate), "-ac", str(channels),
                    "-c:a", bits, str(out)], check=True)
    a = load_audio(str(out))
    assert abs(len(a) / 16000 - 11.0) < 0.05


def test_damaged_tail_is_reported_not_fatal(tmp_path):
    cut = tmp_path / "cut.mp3"
    cut.write_bytes((FIXTURES / "jfk.mp3").read_bytes()[:30000])
    report = DecodeReport()
    a = load_audio(str(cut), report)
    assert 2.0 < len(a) / 16000 < 6.0
    assert "truncated" in report.warning


@pytest.mark.parametrize("content,message", [(b"", "empty"), (b"RIFF\x00\x00", "not an audio"),
                                             (b"hello, not audio at all" * 40, "audio")])
def test_bad_inputs_raise_one_line(tmp_path, content, message):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=message) as e:
        load_audio(str(p))
    assert "\n" not in str(e.value)


def test_missing_file():
    with pytest.raises(AudioDecodeError, match="no such file"):
        load_audio("/nonexistent/x.wav")
