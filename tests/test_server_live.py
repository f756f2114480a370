"""`whisperlite serve` as a user runs it: the real CLI in a child process on 127.0.0.1 with a
free port, whisper.cpp's curl recipe unchanged, the one-line failures of the command, and a
client that goes away freeing the engine."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import FIXTURES, JFK_TEXT, ROOT, edit_rate

JFK = FIXTURES / "jfk.wav"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "whisperlite", "serve", "--port", str(self.port), "-t", "2",
                                      *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server did not get ready")

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        return err


@pytest.fixture(scope="module")
def server():
    s = Server("--max-queue", "1", env={"WHISPERLITE_API_KEY": "sesame"})
    s.wait_ready()
    yield s
    err = s.stop()
    assert s.proc.returncode == 143, err  # stopped by SIGTERM as every command is: after a graceful shutdown
    assert f"serving tiny.en at {s.url}" in err  # the one line with the URL, once ready


AUTH = {"Authorization": "Bearer sesame"}


def test_whisper_cpp_curl_recipe_unchanged(server):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    recipe = [curl, "-s", f"127.0.0.1:{server.port}/inference", "-H", "Content-Type: multipart/form-data",
              "-F", f"file=@{JFK}", "-F", "temperature=0.0", "-F", "temperature_inc=0.2", "-F", "response_format=json"]
    denied = subprocess.run(recipe, capture_output=True, text=True, timeout=120)
    assert json.loads(denied.stdout)["error"]["code"] == "invalid_api_key"  # --api-key from the environment
    done = subprocess.run([*recipe, "-H", "Authorization: Bearer sesame"], capture_output=True, text=True, timeout=300)
    assert edit_rate(JFK_TEXT, json.loads(done.stdout)["text"]) < 0.15
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}  # public


def _long_file(tmp_path) -> str:
    """Five minutes of speech: the fixtures concatenated."""
    parts = [FIXTURES / "multilingual.mp3"] * 5
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    out = tmp_path / "long.wav"
    from whisperlite.audio.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000",
                    "-ac", "1", str(out)], check=True)
    return str(out)


def _admitted_after(server, seconds: float = 60) -> bool:
    """Whether the one queue slot (--max-queue 1) frees within `seconds`: a request is admitted."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = httpx.post(server.url + "/inference", headers=AUTH, files={"file": ("jfk.wav", JFK.read_bytes())},
                       data={"response_format": "text"}, timeout=300)
        if r.status_code != 503:
            return r.status_code == 200 and edit_rate(JFK_TEXT, r.text) < 0.15
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_a_streaming_client_that_goes_away_frees_the_engine(server, tmp_path):
    long = _long_file(tmp_path)
    with httpx.Client(timeout=300) as c:
        with open(long, "rb") as f, c.stream("POST", server.url + "/v1/audio/transcriptions", headers=AUTH,
                                              files={"file": ("long.wav", f)},
                                              data={"model": "whisper-1", "stream": "true"}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # held: a dropped line iterator would close the connection
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["type"] == "transcript.text.delta"
            busy = httpx.post(server.url + "/inference", headers=AUTH, files={"file": ("jfk.wav", JFK.read_bytes())})
            assert busy.status_code == 503 and busy.headers["Retry-After"]  # the one slot is taken
    assert _admitted_after(server)  # the long job was dropped, not run to its end (minutes)


@pytest.mark.slow
def test_a_waiting_client_that_goes_away_frees_the_engine(server, tmp_path):
    long = _long_file(tmp_path)
    with pytest.raises(httpx.ReadTimeout):
        with open(long, "rb") as f:
            httpx.post(server.url + "/inference", headers=AUTH, files={"file": ("long.wav", f)}, timeout=3)
    assert _admitted_after(server)


def test_bad_flags_and_a_port_in_use_are_one_line(server):
    taken = subprocess.run([sys.executable, "-m", "whisperlite", "serve", "--port", str(server.port)],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert taken.returncode != 0 and taken.stderr.strip().count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{server.port}" in taken.stderr
    bad = subprocess.run([sys.executable, "-m", "whisperlite", "serve", "--max-queue", "0"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and bad.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_a_model_that_cannot_load_ends_the_server_with_one_line():
    s = Server("-m", "no-such-model")
    _, err = s.proc.communicate(timeout=300)
    assert s.proc.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no-such-model" in lines[0]
