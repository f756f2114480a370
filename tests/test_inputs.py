"""Inputs are files: no name reaches ffmpeg as a URL, a protocol or an option, and names that
are not readable regular files fail in one line before the model loads."""
import os
import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import FIXTURES, run_cli
from whisperlite.audio.ffmpeg import audio_url, load_audio, stream_audio
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
        "error: http://127.0.0.1:9/jfk.wav: no such file (inputs are files, not URLs or ffmpeg protocols; "
        "--allow-urls reads http and https URLs)",
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
        "error: http://127.0.0.1:9/x.wav: no such file (inputs are files, not URLs or ffmpeg protocols; "
        "--allow-urls reads http and https URLs)"], r.stderr
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



class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def web(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder: jfk.wav, and a playlist whose only
    segment is a local file (what a page on the web must never make ffmpeg open)."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(FIXTURES / "jfk.wav", root / "jfk.wav")
    (root / "local.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11.0,\n"
                                     f"file:{FIXTURES / 'jfk.wav'}\n#EXT-X-ENDLIST\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_url_decodes_only_as_an_audio_url(web):
    assert len(load_audio(audio_url(f"{web}/jfk.wav"))) == 176000
    assert len(load_audio(audio_url(f"HTTP{web[4:]}/jfk.wav"))) == 176000
    # a name is a file, whatever it looks like
    with pytest.raises(AudioDecodeError, match="no such file .*--allow-urls reads http and https URLs"):
        load_audio(f"{web}/jfk.wav")
    # fetched pages cannot open local files: file is not on a URL input's protocol whitelist
    with pytest.raises(AudioDecodeError, match="^http://127.0.0.1:[0-9]+/local.m3u8: "):
        load_audio(audio_url(f"{web}/local.m3u8"))
    for bad, why in [("ftp://127.0.0.1/jfk.wav", "not an http or https URL"), ("concat:a.wav", "not an http"),
                     ("file:///etc/passwd", "not an http"), ("http:///jfk.wav", "no host"),
                     ("http://a b/jfk.wav", "spaces or control characters")]:
        with pytest.raises(AudioDecodeError, match=why):
            audio_url(bad)


def test_no_server_field_asks_for_urls():
    # a server that fetched what a request names would fetch inside its own network for anyone
    from whisperlite.server.errors import ApiError
    from whisperlite.server.fields import flag_values

    with pytest.raises(ApiError) as e:
        flag_values({"allow_urls": "true"}, frozenset())
    assert e.value.status == 400 and e.value.code == "unsupported_field" and "never fetches a URL" in str(e.value)


def test_batch_refuses_allow_urls_by_name():
    r = run_cli("batch", "--allow-urls", "x", "-o", "out", "-otxt", timeout=60)
    assert r.returncode == 2 and "--allow-urls is not supported: batch reads files" in r.stderr, r.stderr


@pytest.mark.slow
def test_transcribe_allow_urls_fetches_http_and_nothing_else(web, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    names = [f"{web}/jfk.wav", "ftp://127.0.0.1/jfk.wav", "concat:jfk.wav", f"{web}/missing.wav"]
    r = run_cli("transcribe", "--allow-urls", *names, "-otxt", "-t", "2", cwd=out)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert error_lines(r.stderr) == [
        "error: ftp://127.0.0.1/jfk.wav: no such file (inputs are files, not URLs or ffmpeg protocols)",
        "error: concat:jfk.wav: no such file (inputs are files, not URLs or ffmpeg protocols)",
        f"error: {web}/missing.wav: cannot decode audio (Error opening input files: Server returned 404 Not Found)",
    ], r.stderr
    # named after the URL's last segment, in the current folder
    assert sorted(os.listdir(out)) == ["jfk.txt"]
    assert "ask not what your country can do for you" in (out / "jfk.txt").read_text()
