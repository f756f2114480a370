import os
import subprocess
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import FIXTURES
from whisperlite.audio.ffmpeg import DecodeReport, ffmpeg_exe, load_audio, prefetch, stream_audio
from whisperlite.core.errors import AudioDecodeError


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


def _close_or_fail(gen, seconds: float = 60) -> None:
    """gen.close() on a helper thread: a close that hangs (a reader blocked on a full pipe, a
    thread never joined) fails this test instead of stopping the suite."""
    closer = threading.Thread(target=gen.close, daemon=True)
    closer.start()
    closer.join(seconds)
    assert not closer.is_alive(), f"close() still running after {seconds} s"


def test_early_stop_does_not_hang():
    gen = stream_audio(str(FIXTURES / "jfk.wav"), chunk_samples=1000)
    next(gen)
    _close_or_fail(gen)


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


def _audio_threads() -> list:
    return [t for t in threading.enumerate() if t.name == "whisperlite-audio"]


def _child_pids() -> set[int]:
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as fh:
            pids.update(int(p) for p in fh.read().split())
    return pids


def test_prefetch_yields_in_order_and_raises_errors_where_they_occur():
    def items():
        yield 1
        yield 2
        raise AudioDecodeError("x.mp3: cannot decode audio (broken)")

    got = []
    with pytest.raises(AudioDecodeError, match="broken"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]
    assert not _audio_threads()


def test_prefetch_stops_and_closes_its_source_when_the_consumer_stops():
    closed = threading.Event()

    def endless():
        try:
            while True:
                yield np.zeros(10, np.float32)
        finally:
            closed.set()

    gen = prefetch(endless(), depth=1)
    next(gen)
    time.sleep(0.3)  # the producer is now blocked on the full queue
    _close_or_fail(gen)
    assert closed.is_set() and not _audio_threads()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc to list child processes")
@pytest.mark.slow
def test_stopping_a_transcription_early_leaves_no_thread_or_ffmpeg(tiny_model, tmp_path):
    # Long enough that ffmpeg is still running when the first segment arrives.
    long = tmp_path / "long.wav"
    sf.write(str(long), np.tile(load_audio(str(FIXTURES / "jfk.wav")), 12), 16000)
    before = _child_pids()
    segments, _ = tiny_model.transcribe(str(long), beam_size=1)
    next(segments)
    assert _audio_threads()  # decoding ahead on its thread
    _close_or_fail(segments)
    assert not _audio_threads()
    assert _child_pids() <= before
