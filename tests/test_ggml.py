"""whisper.cpp ggml .bin: round trips on a tiny random model, the real whisper.cpp-quantized
tiny.en, malformed files, and interop with a compiled whisper.cpp (pywhispercpp)."""
import struct
from pathlib import Path

import gguf.quants
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from whisperlite.core.errors import ModelFormatError, QuantizationError
from whisperlite.formats.ggml import (FTYPES, QUANT_FTYPES, QNT_VERSION, expected_shapes, read_ggml,
                                      write_ggml)
from whisperlite.kernels.tensor import QTensor
from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.registry.derived import quantize_checkpoint

REAL_Q5_0 = Path("/work/shared/models/ggml-tiny.en-q5_0.bin")
needs_real = pytest.mark.skipif(not REAL_Q5_0.is_file(), reason="whisper.cpp-quantized tiny.en not available")
# Byte offsets in the header: magic, then 11 i32 hparams with ftype last.
HPARAMS_AT = 4
FTYPE_AT = HPARAMS_AT + 4 * 10


def tiny_checkpoint(seed: int = 0) -> WhisperCheckpoint:
    """A 1-layer model with every tensor whisper.cpp expects; rows are whole quant blocks."""
    dims = WhisperDims(n_mels=8, n_audio_ctx=12, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                       n_vocab=40, n_text_ctx=8, n_text_state=64, n_text_head=2, n_text_layer=1)
    rng = np.random.default_rng(seed)
    weights = {name: (rng.standard_normal(shape) * 0.1).astype(np.float32)
               for name, shape in expected_shapes(dims).items()}
    tokens = [bytes([33 + i]) for i in range(30)] + [b" the", b"\xff\xfe", b"\xe2\x80"]  # not all UTF-8
    filters = rng.random((dims.n_mels, 201), dtype=np.float32)
    return WhisperCheckpoint(dims=dims, weights=weights, token_bytes=tokens, source="tiny-random",
                             extra={"mel_filters": filters})


@pytest.fixture(scope="module")
def tiny() -> WhisperCheckpoint:
    return tiny_checkpoint()


@pytest.fixture(scope="module")
def tiny_f32_file(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ggml") / "tiny-f32.bin"
    write_ggml(tiny, path, "f32")
    return path


def test_f32_round_trip_is_exact_and_memory_mapped(tiny, tiny_f32_file):
    back = read_ggml(tiny_f32_file)
    assert back.dims == tiny.dims
    assert back.token_bytes == tiny.token_bytes
    np.testing.assert_array_equal(back.extra["mel_filters"], tiny.extra["mel_filters"])
    assert list(back.weights) == list(expected_shapes(tiny.dims))
    for name, w in tiny.weights.items():
        got = back.weights[name]
        assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == w.shape, name
        np.testing.assert_array_equal(got, w)
        assert not got.flags.owndata and not got.flags.writeable, f"{name} is a copy, not a view on the map"


def test_f16_round_trip(tiny, tmp_path):
    path = tmp_path / "tiny-f16.bin"
    write_ggml(tiny, path, "f16")
    back = read_ggml(path)
    for name, w in tiny.weights.items():
        got = back.weights[name]
        if w.ndim == 2 and "positional_embedding" not in name:
            assert isinstance(got, QTensor) and got.qtype == QType.F16, name
            np.testing.assert_array_equal(got.data, w.astype(np.float16))
        elif w.ndim == 3:  # conv kernels are stored f16 and handed back as float32
            assert isinstance(got, np.ndarray) and got.dtype == np.float32
            np.testing.assert_array_equal(got, w.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(got, w)


@pytest.mark.parametrize("ftype", QUANT_FTYPES)
def test_quantized_round_trip_bit_exact_with_gguf(tiny, tmp_path, ftype):
    qtype = FTYPES[ftype][1]
    path = tmp_path / f"tiny-{ftype}.bin"
    write_ggml(tiny, path, ftype)
    raw = path.read_bytes()
    (header_ftype,) = struct.unpack_from("<i", raw, FTYPE_AT)
    assert header_ftype == 1000 * QNT_VERSION + FTYPES[ftype][0]
    back = read_ggml(path)
    for name, w in tiny.weights.items():
        got = back.weights[name]
        if w.ndim == 2 and "positional_embedding" not in name:
            assert isinstance(got, QTensor) and got.qtype == qtype and got.shape == w.shape, name
            np.testing.assert_array_equal(got.data, gguf.quants.quantize(w, qtype), err_msg=name)
        elif w.ndim == 3:
            np.testing.assert_array_equal(got, w.astype(np.float16).astype(np.float32))
        else:
            assert isinstance(got, np.ndarray) and got.dtype == np.float32, name
            np.testing.assert_array_equal(got, w)
    # writing what was read passes the blocks through: byte-identical file
    write_ggml(back, tmp_path / "again.bin", ftype)
    assert (tmp_path / "again.bin").read_bytes() == raw


def test_quantize_checkpoint_matches_what_the_file_holds(tiny, tmp_path):
    q = quantize_checkpoint(tiny, QType.Q5_0)
    write_ggml(tiny, tmp_path / "direct.bin", "q5_0")
    write_ggml(q, tmp_path / "via.bin", "q5_0")
    assert (tmp_path / "direct.bin").read_bytes() == (tmp_path / "via.bin").read_bytes()
    back = read_ggml(tmp_path / "direct.bin")
    for name, w in q.weights.items():
        if isinstance(w, QTensor):
            np.testing.assert_array_equal(w.data, back.weights[name].data)
        else:
            np.testing.assert_array_equal(w, back.weights[name])
    assert isinstance(q.weights["decoder.token_embedding.weight"], QTensor)  # whisper.cpp quantizes it too
    assert isinstance(q.weights["encoder.conv1.weight"], np.ndarray)
    assert isinstance(q.weights["decoder.positional_embedding"], np.ndarray)


def test_failed_write_leaves_nothing_behind(tiny, tmp_path):
    out = tmp_path / "model.bin"
    out.write_bytes(b"previous")
    bad = WhisperCheckpoint(tiny.dims, dict(tiny.weights), tiny.token_bytes, extra=tiny.extra)
    w = bad.weights["decoder.blocks.0.mlp.2.weight"].copy()
    w[3, 5] = np.nan
    bad.weights["decoder.blocks.0.mlp.2.weight"] = w
    with pytest.raises(QuantizationError):
        write_ggml(bad, out, "q8_0")
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_writer_rejects_incomplete_checkpoint(tiny, tmp_path):
    weights = dict(tiny.weights)
    del weights["decoder.ln.bias"]
    with pytest.raises(ModelFormatError, match="decoder.ln.bias"):
        write_ggml(WhisperCheckpoint(tiny.dims, weights, tiny.token_bytes), tmp_path / "x.bin", "f16")
    assert not list(tmp_path.iterdir())


# --- malformed files --------------------------------------------------------------------------


def _vocab_end(raw: bytes) -> int:
    n_mel, n_fft = struct.unpack_from("<2i", raw, 48)
    pos = 56 + 4 * n_mel * n_fft
    (n_tokens,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    for _ in range(n_tokens):
        pos += 4 + struct.unpack_from("<i", raw, pos)[0]
    return pos


def _corrupt(raw: bytes) -> dict[str, bytes]:
    first = _vocab_end(raw)  # the first tensor header: n_dims, name_len, type
    bad_hparams = bytearray(raw)
    struct.pack_into("<i", bad_hparams, HPARAMS_AT + 4 * 3, 0)  # n_audio_head = 0
    old_quant = bytearray(raw)
    struct.pack_into("<i", old_quant, FTYPE_AT, 1000 * 1 + FTYPES["q8_0"][0])
    unknown_type = bytearray(raw)
    struct.pack_into("<i", unknown_type, first + 8, 99)
    negative_token = bytearray(raw)
    n_mel, n_fft = struct.unpack_from("<2i", raw, 48)
    struct.pack_into("<i", negative_token, 56 + 4 * n_mel * n_fft + 4, -5)  # first token's length
    kquant_type = bytearray(raw)
    struct.pack_into("<i", kquant_type, first + 8, int(QType.Q2_K))
    return {
        "magic": b"GGUF" + raw[4:],
        "hparams": bytes(bad_hparams),
        "quantization version": bytes(old_quant),
        "truncated": raw[:-7],
        "truncated header": raw[:30],
        "truncated vocab": raw[:first - 3],
        "negative token length": bytes(negative_token),
        "type 99": bytes(unknown_type),
        "type 10": bytes(kquant_type),
        "empty": b"",
    }


@pytest.mark.parametrize("case", ["magic", "hparams", "quantization version", "truncated", "truncated header",
                                  "truncated vocab", "negative token length", "type 99", "type 10", "empty"])
def test_malformed_files_raise_one_line_naming_the_file(tiny, tmp_path, case):
    good = tmp_path / "good.bin"
    write_ggml(tiny, good, "q8_0")
    bad = tmp_path / f"bad {case}.bin"
    bad.write_bytes(_corrupt(good.read_bytes())[case])
    with pytest.raises(ModelFormatError) as err:
        read_ggml(bad)
    message = str(err.value)
    assert str(bad) in message and "\n" not in message


def test_missing_tensor_is_reported(tiny, tmp_path):
    good = tmp_path / "good.bin"
    write_ggml(tiny, good, "f32")
    raw = good.read_bytes()
    last = 4 * tiny.dims.n_text_state + 3 * 4 + 4 + len(b"decoder.ln.bias")  # the final tensor
    (tmp_path / "short.bin").write_bytes(raw[:-last])
    with pytest.raises(ModelFormatError, match="missing 1 tensors.*decoder.ln.bias"):
        read_ggml(tmp_path / "short.bin")


# --- the real whisper.cpp-quantized tiny.en ---------------------------------------------------


@needs_real
def test_real_whisper_cpp_q5_0_file_loads(tmp_path):
    ckpt = read_ggml(REAL_Q5_0)
    assert ckpt.dims == WhisperDims(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    assert len(ckpt.weights) == 167 and len(ckpt.token_bytes) == 50256
    assert ckpt.token_bytes[:2] == [b"!", b'"'] and ckpt.extra["mel_filters"].shape == (80, 201)
    kinds = [w.qtype.name if isinstance(w, QTensor) else "f32" for w in ckpt.weights.values()]
    assert kinds.count("Q5_0") == 65 and kinds.count("f32") == 102
    emb = ckpt.weights["decoder.token_embedding.weight"]
    assert emb.shape == (51864, 384) and emb.data.shape == (51864, 384 // 32 * 22)
    # a whisper.cpp file written back out is the same file
    write_ggml(ckpt, tmp_path / "copy.bin", "q5_0")
    assert (tmp_path / "copy.bin").read_bytes() == REAL_Q5_0.read_bytes()


@pytest.fixture(scope="module")
def embedded_q5_0():
    from whisperlite.formats.ct2 import load_ct2
    from whisperlite.registry.embedded import embedded_model_dir

    return quantize_checkpoint(load_ct2(embedded_model_dir()), "q5_0")


@needs_real
def test_our_q5_0_blocks_equal_whisper_cpp_quantize(embedded_q5_0):
    """Both were made from the same f16 weights (CTranslate2 tiny.en): every quantized
    tensor must match whisper.cpp's `quantize` bit for bit."""
    theirs = read_ggml(REAL_Q5_0)
    quantized = [n for n, w in theirs.weights.items() if isinstance(w, QTensor)]
    assert len(quantized) == 65
    for name in quantized:
        assert np.array_equal(embedded_q5_0.weights[name].data, theirs.weights[name].data), name


def test_whisper_cpp_transcribes_our_q5_0_file(embedded_q5_0, tmp_path):
    pywhispercpp = pytest.importorskip("pywhispercpp.model")
    from conftest import FIXTURES, JFK_TEXT, normalize

    path = tmp_path / "ggml-tiny.en-q5_0.bin"
    write_ggml(embedded_q5_0, path, "q5_0")
    model = pywhispercpp.Model(str(path), n_threads=2, print_progress=False, print_realtime=False)
    text = " ".join(s.text for s in model.transcribe(str(FIXTURES / "jfk.wav")))
    assert normalize(text) == normalize(JFK_TEXT)
