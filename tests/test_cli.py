"""End to end through the real CLI on real audio, and every bad input a user can give."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import srt

from conftest import FIXTURES, JFK_TEXT, normalize, run_cli
from whisperlite.audio.ffmpeg import ffmpeg_exe


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def jfk_variants(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(FIXTURES / "jfk.wav", d / "jfk.wav")
    shutil.copy(FIXTURES / "jfk.mp3", d / "jfk_mp3.mp3")
    ffmpeg("-i", str(FIXTURES / "jfk.wav"), "-c:a", "libvorbis", str(d / "jfk_ogg.ogg"))
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:r=10", "-i", str(FIXTURES / "jfk.wav"),
           "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(d / "jfk_video.mp4"))
    return d


@pytest.fixture(scope="module")
def transcribed(jfk_variants, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    names = ["jfk.wav", "jfk_mp3.mp3", "jfk_ogg.ogg", "jfk_video.mp4"]
    r = run_cli("transcribe", *[str(jfk_variants / n) for n in names], "-osrt", "-ovtt", "-otxt", "-oj",
                "-o", str(out), "-t", "2")
    return r, out, [os.path.splitext(n)[0] for n in names]


@pytest.mark.slow
def test_every_container_gives_the_known_sentence(transcribed):
    r, out, stems = transcribed
    assert r.returncode == 0, r.stderr
    for stem in stems:
        subs = list(srt.parse((out / f"{stem}.srt").read_text()))
        assert normalize(" ".join(s.content for s in subs)) == normalize(JFK_TEXT), stem
        assert subs[0].start.total_seconds() <= 0.4  # cues start on the first word (speech begins ~0.3 s)
        assert 10.0 <= subs[-1].end.total_seconds() <= 11.5
        assert normalize((out / f"{stem}.txt").read_text()) == normalize(JFK_TEXT)
        assert (out / f"{stem}.vtt").read_text().startswith("WEBVTT")
        doc = json.loads((out / f"{stem}.json").read_text())
        # timed words: a segment spans its words (as faster-whisper's and openai-whisper's do)
        first = doc["segments"][0]
        assert first["start"] == first["words"][0]["start"] and 0.2 <= first["start"] <= 0.4
        assert 10.0 <= doc["segments"][-1]["end"] <= 11.5
        for seg in doc["segments"]:
            assert {"start", "end", "text", "avg_logprob", "no_speech_prob"} <= set(seg)


def test_segments_printed_like_whisper_cpp(transcribed):
    r, _, _ = transcribed
    first = r.stdout.splitlines()[0]
    assert first.startswith("[00:00:00.330 --> 00:00:")  # the first word's start
    # Words, not punctuation: beam search may place a comma differently from greedy.
    assert normalize(first.split("]  ", 1)[1])[:5] == normalize("And so my fellow Americans")


@pytest.mark.slow
def test_output_beside_input_and_output_base(jfk_variants, tmp_path):
    src = tmp_path / "talk.wav"
    shutil.copy(jfk_variants / "jfk.wav", src)
    r = run_cli("transcribe", "-f", str(src), "-otxt", "-q")
    assert r.returncode == 0 and r.stdout == ""
    assert (tmp_path / "talk.txt").exists()
    r = run_cli("transcribe", str(src), "-osrt", "-of", str(tmp_path / "named"), "-q")
    assert r.returncode == 0 and (tmp_path / "named.srt").exists()


@pytest.mark.slow
def test_summary_line_counts_segments(tmp_path):
    short = tmp_path / "short.wav"
    ffmpeg("-i", str(FIXTURES / "jfk.wav"), "-t", "5", str(short))
    r = run_cli("transcribe", str(short), "-bs", "1", "-otxt", "-of", str(tmp_path / "s"))
    assert r.returncode == 0 and ": 1 segment in " in r.stderr, r.stderr


@pytest.mark.slow
def test_words_aligned_only_for_outputs_that_use_them(tmp_path):
    """Word alignment costs ~60 ms CPU a window: on for SRT/VTT/JSON, off for text alone,
    and the flag overrides either way."""
    wav = str(FIXTURES / "jfk.wav")
    r = run_cli("transcribe", wav, "-otxt", "-of", str(tmp_path / "t"), "-q", "--profile")
    assert r.returncode == 0 and "word timestamps" not in r.stderr and "encoder" in r.stderr
    r = run_cli("transcribe", wav, "-oj", "-of", str(tmp_path / "j"), "-q")
    assert r.returncode == 0 and all(seg["words"] for seg in json.loads((tmp_path / "j.json").read_text())["segments"])
    r = run_cli("transcribe", wav, "-oj", "-of", str(tmp_path / "n"), "-q", "--no-word-timestamps")
    assert r.returncode == 0 and all("words" not in seg for seg in json.loads((tmp_path / "n.json").read_text())["segments"])
    r = run_cli("transcribe", wav, "-otxt", "-of", str(tmp_path / "w"), "-q", "--profile", "--word-timestamps")
    assert r.returncode == 0 and "word timestamps" in r.stderr


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert lines, r.stderr
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert any(needle in ln for ln in lines), (needle, r.stderr)


@pytest.mark.slow
def test_bad_audio_inputs(tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.mp3").write_text("this is not audio\n" * 50)
    (bad / "truncated.wav").write_bytes((FIXTURES / "jfk.wav").read_bytes()[:20])
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=32x32:r=5:d=1", "-c:v", "mpeg4", str(bad / "silent_video.mp4"))
    out = tmp_path / "out"
    r = run_cli("transcribe", *[str(bad / n) for n in ["empty.wav", "notes.mp3", "truncated.wav", "silent_video.mp4"]],
                str(bad / "missing.wav"), "-osrt", "-o", str(out))
    one_line_error(r, "empty.wav: file is empty", "notes.mp3:", "truncated.wav:", "silent_video.mp4: no audio stream",
                   "missing.wav: no such file")
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 5
    assert os.listdir(out) == []  # no partial outputs


@pytest.mark.slow
def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_cli("transcribe", str(FIXTURES / "jfk.wav"), "-osrt", "-o", str(blocker / "sub"))
    one_line_error(r, "cannot create output directory")


@pytest.mark.slow
def test_unknown_model_name():
    r = run_cli("transcribe", str(FIXTURES / "jfk.wav"), "-m", "no-such-model")
    one_line_error(r, "unknown model 'no-such-model'")


@pytest.mark.parametrize("content", [b"lmgg" + b"\x01" * 20, b"\x06\x00\x00\x00garbage"])
@pytest.mark.slow
def test_corrupt_model_file(tmp_path, content):
    model = tmp_path / "model.bin"
    model.write_bytes(content)
    r = run_cli("transcribe", str(FIXTURES / "jfk.wav"), "-m", str(model), "-osrt", "-o", str(tmp_path / "o"))
    one_line_error(r, str(model))
    assert not (tmp_path / "o" / "jfk.srt").exists()


@pytest.mark.slow
def test_help_and_version():
    r = run_cli("transcribe", "--help")
    assert r.returncode == 0 and "Examples:" in r.stdout and "-osrt" in r.stdout
    r = run_cli("--version")
    assert r.returncode == 0 and "whisperlite" in r.stdout


@pytest.mark.slow
def test_missing_input_fails_before_loading_the_model(tmp_path):
    r = run_cli("transcribe", str(tmp_path / "nope.wav"), "-osrt")
    one_line_error(r, "nope.wav: no such file")
    assert "loaded" not in r.stderr and "compiling" not in r.stderr


def test_library_notices_reach_stderr_as_before(tmp_path):
    """The registry logs its notices; the CLI shows them on stderr as plain lines."""
    code = ("import sys; from whisperlite.cli.common import show_notices; show_notices(); "
            "from whisperlite.core import env; env.CACHE_DIR = sys.argv[1]; "
            "from whisperlite.registry import warmup; warmup.compile_once('k', lambda: None)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert r.stderr.splitlines() == ["whisperlite: compiling kernels for first use (cached afterwards)…",
                                     "whisperlite: kernels compiled in 0 s"]
    assert r.stdout == ""


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only(tmp_path):
    """stderr on a terminal gets a bar counting the audio seconds done (erased when the input is
    done); stdout keeps whole segment lines."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "whisperlite", "transcribe", str(FIXTURES / "jfk.wav"), "-bs", "1",
                             "-o", str(tmp_path)], stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    out, _ = proc.communicate(timeout=600)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child has gone and the terminal is drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert re.search(rb"\d+%\|.*\| \d+/11 s audio", seen), seen[-500:]
    assert "ask not what your country can do for you" in out
    assert all(line.startswith("[") for line in out.splitlines())
