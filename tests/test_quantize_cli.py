"""`whisperlite quantize` / `whisperlite convert` and the cached derived model names."""
import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as QType

import whisperlite.registry.embedded
from whisperlite.cli.main import main
from whisperlite.formats.ggml import read_ggml, write_ggml
from whisperlite.kernels.tensor import QTensor
from whisperlite.registry.derived import resolve_derived
from whisperlite.registry.embedded import DERIVED_NAMES

from test_ggml import tiny_checkpoint


def run(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture()
def tiny_f16(tmp_path):
    path = tmp_path / "tiny-f16.bin"
    write_ggml(tiny_checkpoint(), path, "f16")
    return path


def test_quantize_ggml_file(tiny_f16, tmp_path):
    out = tmp_path / "tiny-q5_1.bin"
    result = run("quantize", str(tiny_f16), str(out), "q5_1")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"wrote {out}" in result.output
    q = read_ggml(out)
    mlp = q.weights["encoder.blocks.0.mlp.0.weight"]
    assert isinstance(mlp, QTensor) and mlp.qtype == QType.Q5_1


def test_convert_embedded_model_to_f16(tmp_path):
    out = tmp_path / "ggml-tiny.en.bin"
    result = run("convert", "tiny.en", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    assert out.stat().st_size == 77_704_698  # whisper.cpp's f16 tiny.en size
    ckpt = read_ggml(out)
    assert ckpt.extra["ftype"] == "f16" and len(ckpt.weights) == 167
    assert len(ckpt.token_bytes) == 50256  # regular tokens only, from tokenizer.json
    assert ckpt.weights["decoder.token_embedding.weight"].qtype == QType.F16


def test_convert_to_f32_dequantizes(tiny_f16, tmp_path):
    q8 = tmp_path / "q8.bin"
    assert run("quantize", str(tiny_f16), str(q8), "Q8_0").exit_code == 0
    result = run("convert", str(q8), str(tmp_path / "f32.bin"), "--type", "f32")
    assert result.exit_code == 0, result.stderr
    w = read_ggml(tmp_path / "f32.bin").weights["decoder.blocks.0.mlp.2.weight"]
    np.testing.assert_array_equal(w, read_ggml(q8).weights["decoder.blocks.0.mlp.2.weight"].dequantize())


@pytest.mark.parametrize("args, expect", [
    (("quantize", "no-such-model", "{out}", "q5_0"), "no-such-model"),
    (("quantize", "{bad}", "{out}", "q5_0"), "bad.bin"),
    (("quantize", "{q8}", "{out}", "q5_0"), "already quantized"),
    (("quantize", "{f16}", "{tmp}/missing-dir/out.bin", "q5_0"), "missing-dir"),
    (("convert", "{bad}", "{out}"), "bad.bin"),
])
def test_errors_are_one_line_and_leave_no_output(tiny_f16, tmp_path, args, expect):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(tiny_f16.read_bytes()[:5000])
    q8 = tmp_path / "q8.bin"
    write_ggml(read_ggml(tiny_f16), q8, "q8_0")
    out = tmp_path / "out.bin"
    fill = dict(out=out, bad=bad, q8=q8, f16=tiny_f16, tmp=tmp_path)
    result = run(*(a.format(**fill) for a in args))
    assert result.exit_code == 1
    assert expect in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_unknown_type_is_a_usage_error(tiny_f16, tmp_path):
    result = run("quantize", str(tiny_f16), str(tmp_path / "o.bin"), "q3_0")
    assert result.exit_code == 2 and "q3_0" in result.stderr


def test_derived_model_is_made_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(whisperlite.registry.embedded, "CACHE_DIR", str(tmp_path))
    assert resolve_derived("tiny.en") is None and resolve_derived("base-q5_0") is None
    assert "tiny.en-q4_0" in DERIVED_NAMES
    path = resolve_derived("tiny.en-q4_0")
    assert path == tmp_path / "models" / "ggml-tiny.en-q4_0.bin"
    stamp = path.stat().st_mtime_ns
    assert resolve_derived("tiny.en-q4_0") == path and path.stat().st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    ckpt = read_ggml(path)
    assert ckpt.weights["encoder.blocks.0.attn.query.weight"].qtype == QType.Q4_0
