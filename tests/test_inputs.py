"""Inputs are files: no name reaches ffmpeg as a URL, a protocol or an option, and names that
are not readable regular files fail in one line before the model loads."""
import os
import shutil

import pytest

from conftest import FIXTURES, run_cli
from whisperlite.audio.ffmpeg import load_audio, stream_audio
from whisperlite.core.errors import AudioDecodeError


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_names_that_are_not_files_fail_before_the_model_loads(tmp_path):
    shutil.copy(FIXTURES / "jfk.wav", tmp_path / "jfk.wav")
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo.wav")
    os.symlink("loop_b.wav", tmp_path / "loop_a.wav")
    os.symlink("loop_a.wav", tmp_path / "loop_b.wav")
    names = ["concat:jfk.wav", "file:jfk.wav", "http://127.0.0.1:9/jfk.wav", "folder", "fifo.wav", "loop_a.wav",
             "/dev/zero"]
    r = run_cli("transcribe", *names, "-otxt", cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "loaded" not in r.stderr and "compiling" not in r.stderr
    assert error_lines(r.stderr) == [
        "error: concat:jfk.wav: no such file (inputs are files, not URLs or ffmpeg protocols)",
        "error: file:jfk.wav: no such file (inputs are files, not URLs or ffmpeg protocols)",
        "error: http://127.0.0.1:9/jfk.wav: no such file (inputs are files, not URLs or ffmpeg protocols)",
        "error: folder: is a directory, not an audio file",
        "error: fifo.wav: is a FIFO, not a regular file",
        "error: loop_a.wav: symbolic link loop",
        "error: /dev/zero: is a device, not a regular file",
    ]
    assert sorted(os.listdir(tmp_path)) == ["fifo.wav", "folder", "jfk.wav", "loop_a.wav", "loop_b.wav"]


@pytest.mark.slow
def test_names_ffmpeg_would_reinterpret_are_read_literally(tmp_path):
    # Each file holds jfk; what ffmpeg would read instead (a.wav, b.wav, stdin, an option) does not exist.
    names = ["concat:a.wav", "file:b.wav", "-", "-c.wav"]
    for name in names:
        shutil.copy(FIXTURES / "jfk.wav", tmp_path / name)
    # a bad name among them fails alone, before the model loads; the others run
    r = run_cli("transcribe", "-otxt", "-t", "2", "--", "http://127.0.0.1:9/x.wav", *names, cwd=tmp_path)
    assert r.returncode == 1 and error_lines(r.stderr) == [
        "error: http://127.0.0.1:9/x.wav: no such file (inputs are files, not URLs or ffmpeg protocols)"], r.stderr
    for name in names:
        text = (tmp_path / (os.path.splitext(name)[0] + ".txt")).read_text()
        assert "ask not what your country can do for you" in text, name


def test_the_api_refuses_the_same_names(tmp_path):
    with pytest.raises(AudioDecodeError, match="^concat:x.wav: no such file"):
        next(stream_audio("concat:x.wav"))
    with pytest.raises(AudioDecodeError, match="is a directory"):
        load_audio(str(tmp_path))


def test_piped_inputs_still_decode():
    # bytes and file objects reach ffmpeg as pipe:0, which the protocol whitelist allows
    data = (FIXTURES / "jfk.wav").read_bytes()
    with open(FIXTURES / "jfk.wav", "rb") as fh:
        assert len(load_audio(data)) == len(load_audio(fh)) == 176000

