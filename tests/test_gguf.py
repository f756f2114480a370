"""GGUF reader: agrees with gguf.GGUFReader, returns views, and fails in one line."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from gguf import GGUFReader

from llama_tiny import write_tiny_llama
from conftest import run_cli
from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.gguf import read_gguf
from whisperlite.kernels import QTensor


@pytest.fixture(scope="module")
def q41_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny-q4_1.gguf"
    write_tiny_llama(path, QType.Q4_1)
    return path


@pytest.mark.parametrize("qtype", [QType.F32, QType.F16, QType.Q8_0, QType.Q4_1], ids=lambda q: q.name)
def test_matches_gguf_reader(tmp_path, qtype):
    path = tmp_path / "m.gguf"
    write_tiny_llama(path, qtype)
    ours = read_gguf(path)
    ref = GGUFReader(path)
    assert set(ours.tensors) == {t.name for t in ref.tensors}
    for t in ref.tensors:
        w = ours.tensors[t.name]
        data = w.data if isinstance(w, QTensor) else w
        # numpy orientation: rows = ne[1], cols = ne[0]
        assert (w.shape if isinstance(w, QTensor) else data.shape) == tuple(int(d) for d in t.shape[::-1])[-data.ndim:]
        assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(-1), data.view(np.uint8).reshape(-1))
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        val = field.contents()
        got = ours.metadata[key]
        if isinstance(got, np.ndarray):
            got = got.tolist()
        assert got == pytest.approx(val) if isinstance(val, float) else got == val, key


def test_tensors_are_views_of_the_file(q41_file):
    m = read_gguf(q41_file)
    w = m.tensors["blk.0.attn_q.weight"]
    assert isinstance(w, QTensor) and w.qtype == QType.Q4_1 and w.shape == (128, 128)
    assert not w.data.flags.owndata and not w.data.flags.writeable


def _one_line_error(path, match: str) -> None:
    with pytest.raises(ModelFormatError) as e:
        read_gguf(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg


@pytest.mark.parametrize("keep", [3, 24, 200, 2000, -10])
def test_truncated_file(tmp_path, q41_file, keep):
    data = q41_file.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    _one_line_error(path, "GGUF")


def test_wrong_magic(tmp_path, q41_file):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGML" + q41_file.read_bytes()[4:])
    _one_line_error(path, "not a GGUF file")


@pytest.mark.parametrize("case", ["truncated", "magic", "arch", "rope"])
@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, q41_file, case):
    path = tmp_path / f"{case}.gguf"
    if case == "truncated":
        path.write_bytes(q41_file.read_bytes()[:5000])
    elif case == "magic":
        path.write_bytes(b"\0\0\0\0" + q41_file.read_bytes()[4:])
    elif case == "arch":
        write_tiny_llama(path, arch="bert")
    else:  # the probe's heap overflow: llama.rope.dimension_count = 4096 (a UINT32 value)
        data = bytearray(q41_file.read_bytes())
        at = data.index(b"llama.rope.dimension_count") + len("llama.rope.dimension_count") + 4
        data[at:at + 4] = struct.pack("<I", 4096)
        path.write_bytes(bytes(data))
    r = run_cli("generate", "-m", str(path), "-p", "hi", "-n", "2", timeout=300)
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0]
