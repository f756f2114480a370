"""Model files are untrusted input: mutated GGUF, ggml and CTranslate2 files either load (and,
for GGUF, run a forward pass) or fail with one ModelFormatError line naming the file, never
another exception, in bounded time and memory. A seed corpus of crafted cases (the issue-24
probe's) runs as explicit tests; hypothesis mutates real small files around it."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from gguf import GGUFValueType as VT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_tiny import TinyDims, write_tiny_llama
from test_ggml import FTYPE_AT, HPARAMS_AT, tiny_checkpoint
from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.ct2 import load_ct2
from whisperlite.formats.ggml import read_ggml, token_bytes_from_tokenizer_json, write_ggml
from whisperlite.formats.gguf import read_gguf
from whisperlite.kernels import QTensor
from whisperlite.models.llama import Llama
from whisperlite.tokenizer.llama import LlamaTokenizer, _gpt2_byte_chars

# Every case's outcome, reported at the end of the module (pytest -s shows it).
OUTCOMES: Counter[str] = Counter()
EXTREMES = [0, 1, -1, 2**31 - 1, 2**32 - 1, 2**40, 2**63 - 1]
FUZZ = settings(max_examples=int(os.environ.get("WHISPERLITE_FUZZ_EXAMPLES", "120")), deadline=5000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nfuzz outcomes: {dict(OUTCOMES)}")


def expect_clean(load: Callable[[Path], Any], path: Path, named: Path | None = None) -> str:
    """Run `load`: a load, or one ModelFormatError line naming the file; anything else fails."""
    try:
        load(path)
    except ModelFormatError as e:
        msg = str(e)
        assert "\n" not in msg and str(named or path) in msg, msg
        OUTCOMES["clean error"] += 1
        return "error"
    OUTCOMES["loaded"] += 1
    return "loaded"


# --- GGUF: a writer for any header, so every field can be set to any value --------------------

_FMT = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
        VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}
_NP_VT = {np.dtype(np.int32): VT.INT32, np.dtype(np.float32): VT.FLOAT32, np.dtype(np.uint32): VT.UINT32}


def _gguf_string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _gguf_value(vt: VT, v: Any) -> bytes:
    if vt == VT.STRING:
        return _gguf_string(v)
    if vt == VT.ARRAY:
        inner, items = v
        return struct.pack("<IQ", inner, len(items)) + b"".join(_gguf_value(inner, x) for x in items)
    return struct.pack(_FMT[vt], v)


def gguf_bytes(kvs: dict[str, tuple[VT, Any]], tensors: list[tuple[str, list[int], int, bytes]],
               align: int = 32) -> bytes:
    """A GGUF v3 file: kvs as (type, value), tensors as (name, ne, type id, data)."""
    head = [struct.pack("<IIQQ", 0x46554747, 3, len(tensors), len(kvs))]
    for k, (vt, v) in kvs.items():
        head.append(_gguf_string(k) + struct.pack("<I", vt) + _gguf_value(vt, v))
    offset, blobs = 0, []
    for name, ne, qtype, data in tensors:
        head.append(_gguf_string(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, qtype, offset))
        pad = -len(data) % align
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    h = b"".join(head)
    return h + b"\0" * (-len(h) % max(align, 1)) + b"".join(blobs)


def _typed(v: Any) -> tuple[VT, Any]:
    if isinstance(v, bool):
        return VT.BOOL, v
    if isinstance(v, int):
        return VT.UINT32, v
    if isinstance(v, float):
        return VT.FLOAT32, v
    if isinstance(v, str):
        return VT.STRING, v
    if isinstance(v, list):
        return VT.ARRAY, (VT.STRING, v)
    return VT.ARRAY, (_NP_VT[v.dtype], v.tolist())


@pytest.fixture(scope="module")
def gguf_parts(tmp_path_factory):
    """The tiny Q8_0 LLaMA's metadata and tensors, to rewrite with any field changed."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_llama(path, QType.Q8_0, dims=TinyDims(n_embd=64, n_ff=96, n_layer=1, n_head=2, n_head_kv=1, n_ctx=32))
    g = read_gguf(path)
    kvs = {k: _typed(v) for k, v in g.metadata.items()}
    kvs["tokenizer.ggml.bos_token_id"] = (VT.UINT32, 1)
    tensors = []
    for name, w in g.tensors.items():
        data = w.data if isinstance(w, QTensor) else w
        qtype = int(getattr(w, "qtype", QType.F32))
        shape = tuple(w.shape)
        tensors.append((name, list(reversed(shape)), qtype, data.tobytes()))
    return kvs, tensors


def load_llama(path: Path) -> None:
    g = read_gguf(path)
    model = Llama(g)
    LlamaTokenizer(g)
    model.forward([0, 1], model.new_cache(4))


def write_gguf(tmp_path: Path, parts, kv: dict | None = None, tensor_edit: Callable | None = None,
               align: int = 32, name: str = "m.gguf") -> Path:
    kvs, tensors = parts
    kvs = {**kvs, **(kv or {})}
    if tensor_edit:
        tensors = tensor_edit([list(t) for t in tensors])
    path = tmp_path / name
    path.write_bytes(gguf_bytes(kvs, tensors, align))
    return path


def test_rewritten_tiny_gguf_loads(tmp_path, gguf_parts):
    assert expect_clean(load_llama, write_gguf(tmp_path, gguf_parts)) == "loaded"


def _set_tensor(name: str, index: int, value: Any) -> Callable:
    def edit(tensors):
        for t in tensors:
            if t[0] == name:
                t[index] = value
        return tensors
    return edit


LL = "llama."
GGUF_SEEDS = {
    "rope 4096": dict(kv={LL + "rope.dimension_count": (VT.UINT32, 4096)}),
    "rope 66": dict(kv={LL + "rope.dimension_count": (VT.UINT32, 66)}),
    "rope 128": dict(kv={LL + "rope.dimension_count": (VT.UINT32, 128)}),
    "rope odd": dict(kv={LL + "rope.dimension_count": (VT.UINT32, 31)}),
    "ffn too large": dict(kv={LL + "feed_forward_length": (VT.UINT32, 4096)}),
    "ffn too small": dict(kv={LL + "feed_forward_length": (VT.UINT32, 32)}),
    "alignment 0": dict(kv={"general.alignment": (VT.UINT32, 0)}),
    "alignment 48": dict(kv={"general.alignment": (VT.UINT32, 48)}),
    "alignment string": dict(kv={"general.alignment": (VT.STRING, "32")}),
    "unknown type Q2_K": dict(tensor_edit=_set_tensor("blk.0.ffn_up.weight", 2, int(QType.Q2_K))),
    "unknown type IQ2_XXS": dict(tensor_edit=_set_tensor("blk.0.ffn_up.weight", 2, int(QType.IQ2_XXS))),
    "type id 9999": dict(tensor_edit=_set_tensor("blk.0.ffn_up.weight", 2, 9999)),
    "n_dims 0": dict(tensor_edit=_set_tensor("output_norm.weight", 1, [])),
    "n_dims 5": dict(tensor_edit=_set_tensor("output_norm.weight", 1, [64, 1, 1, 1, 1])),
    "overflowing shape": dict(tensor_edit=_set_tensor("blk.0.ffn_up.weight", 1, [64, 2**62, 2**62])),
    "zero dimension": dict(tensor_edit=_set_tensor("blk.0.ffn_up.weight", 1, [64, 0])),
    "head count 0": dict(kv={LL + "attention.head_count": (VT.UINT32, 0)}),
    "head count -1": dict(kv={LL + "attention.head_count": (VT.INT32, -1)}),
    "head count 3": dict(kv={LL + "attention.head_count": (VT.UINT32, 3)}),
    "kv heads 0": dict(kv={LL + "attention.head_count_kv": (VT.UINT32, 0)}),
    "kv heads 2^40": dict(kv={LL + "attention.head_count_kv": (VT.UINT64, 2**40)}),
    "head count a string": dict(kv={LL + "attention.head_count": (VT.STRING, "six")}),
    "short token array": dict(kv={"tokenizer.ggml.tokens": (VT.ARRAY, (VT.STRING, ["a", "b"]))}),
    "merge of unknown tokens": dict(kv={"tokenizer.ggml.merges": (VT.ARRAY, (VT.STRING, ["h e", "iel l"]))}),
    "merge without a space": dict(kv={"tokenizer.ggml.merges": (VT.ARRAY, (VT.STRING, ["he"]))}),
    "short token types": dict(kv={"tokenizer.ggml.token_type": (VT.ARRAY, (VT.INT32, [1, 1]))}),
    "bos beyond vocabulary": dict(kv={"tokenizer.ggml.bos_token_id": (VT.UINT32, 2**31 - 1)}),
    "context 2^40": dict(kv={LL + "context_length": (VT.UINT64, 2**40)}),
    "context 0": dict(kv={LL + "context_length": (VT.UINT32, 0)}),
    "block count 2^31-1": dict(kv={LL + "block_count": (VT.UINT32, 2**31 - 1)}),
    "block count 0": dict(kv={LL + "block_count": (VT.UINT32, 0)}),
    "eps nan": dict(kv={LL + "attention.layer_norm_rms_epsilon": (VT.FLOAT32, float("nan"))}),
    "freq base -1": dict(kv={LL + "rope.freq_base": (VT.FLOAT32, -1.0)}),
    "embedding 2^40": dict(kv={LL + "embedding_length": (VT.UINT64, 2**40)}),
    "embedding a bool": dict(kv={LL + "embedding_length": (VT.BOOL, True)}),
    "key length 8": dict(kv={LL + "attention.key_length": (VT.UINT32, 8)}),
    "vocab_size 2^31": dict(kv={LL + "vocab_size": (VT.UINT32, 2**31)}),
    "nested array": dict(kv={"x.nested": (VT.ARRAY, (VT.ARRAY, [(VT.UINT8, [1])]))}),
    "rope_freqs wrong length": dict(tensor_edit=lambda ts: ts + [["rope_freqs.weight", [3], int(QType.F32), b"\0" * 12]]),
    "duplicate tensor": dict(tensor_edit=lambda ts: ts + [ts[-1]]),
}


@pytest.mark.parametrize("case", list(GGUF_SEEDS))
def test_gguf_seed_corpus(tmp_path, gguf_parts, case):
    path = write_gguf(tmp_path, gguf_parts, **GGUF_SEEDS[case])
    assert expect_clean(load_llama, path) == "error", case


def _raw(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_gguf_nested_arrays_200000_deep(tmp_path, gguf_parts):
    depth = 200_000
    nested = struct.pack("<IQ", VT.ARRAY, 1) * depth + struct.pack("<IQ", VT.UINT8, 0)
    head = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + _gguf_string("deep") + struct.pack("<I", VT.ARRAY)
    assert expect_clean(read_gguf, _raw(tmp_path, "deep.gguf", head + nested)) == "error"


@pytest.mark.parametrize("count_at, value", [(8, 2**63), (16, 2**63), (16, 2**32)], ids=["tensors", "kvs", "kvs 2^32"])
def test_gguf_header_counts(tmp_path, gguf_parts, count_at, value):
    data = bytearray(write_gguf(tmp_path, gguf_parts).read_bytes())
    data[count_at:count_at + 8] = struct.pack("<Q", value)
    assert expect_clean(read_gguf, _raw(tmp_path, "counts.gguf", bytes(data))) == "error"


def test_gguf_huge_array_lengths(tmp_path):
    for inner in (VT.UINT8, VT.STRING, VT.FLOAT64):
        head = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + _gguf_string("a") + struct.pack("<IIQ", VT.ARRAY, inner, 2**40)
        assert expect_clean(read_gguf, _raw(tmp_path, "huge.gguf", head + b"\0" * 64)) == "error"


def _mutations(size: int):
    """Truncate, flip a byte, or overwrite 4 or 8 bytes with an extreme value."""
    at = st.integers(0, size - 1)
    return st.one_of(
        st.tuples(st.just("truncate"), at, st.just(0)),
        st.tuples(st.just("flip"), at, st.integers(1, 255)),
        st.tuples(st.just("u32"), at, st.sampled_from(EXTREMES)),
        st.tuples(st.just("u64"), at, st.sampled_from(EXTREMES)),
    )


def mutate(data: bytes, how: tuple[str, int, int], header: int) -> bytes:
    """One mutation; positions land in the first `header` bytes, where the fields are, in
    three cases out of four."""
    kind, at, value = how
    at = at % header if at % 4 else at
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:at])
    if kind == "flip":
        b[at] ^= value
    else:
        fmt = "<I" if kind == "u32" else "<Q"
        packed = struct.pack(fmt, value % (1 << (8 * struct.calcsize(fmt))))
        b[at:at + len(packed)] = packed
    return bytes(b[:len(data)])


@FUZZ
@given(data=st.data())
def test_gguf_mutations(tmp_path, gguf_parts, data):
    original = write_gguf(tmp_path, gguf_parts, name="orig.gguf").read_bytes()
    header = original.index(b"token_embd.weight") + 64
    how = data.draw(_mutations(len(original)))
    expect_clean(load_llama, _raw(tmp_path, "fuzz.gguf", mutate(original, how, header)))


@FUZZ
@given(key=st.sampled_from([LL + k for k in ("embedding_length", "feed_forward_length", "block_count", "context_length",
                                             "attention.head_count", "attention.head_count_kv", "rope.dimension_count",
                                             "attention.key_length", "vocab_size")]
                           + ["general.alignment", "tokenizer.ggml.eos_token_id"]),
       vt=st.sampled_from([VT.UINT32, VT.INT32, VT.UINT64, VT.INT64, VT.FLOAT32, VT.STRING]),
       value=st.sampled_from(EXTREMES + [2, 3, 7, 16, 32, 48, 64, 96]))
def test_gguf_hyperparameters_at_extremes(tmp_path, gguf_parts, key, vt, value):
    if vt == VT.STRING:
        v: Any = str(value)
    elif vt == VT.FLOAT32:
        v = float(value)
    else:
        bits = struct.calcsize(_FMT[vt]) * 8
        v = value % (1 << bits)
        if vt in (VT.INT32, VT.INT64) and v >= 1 << (bits - 1):
            v -= 1 << bits
    expect_clean(load_llama, write_gguf(tmp_path, gguf_parts, kv={key: (vt, v)}))


# --- ggml ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ggml_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ggml") / "tiny-q8_0.bin"
    write_ggml(tiny_checkpoint(), path, "q8_0")
    return path


def _hparam(data: bytes, index: int, value: int) -> bytes:
    b = bytearray(data)
    b[HPARAMS_AT + 4 * index:HPARAMS_AT + 4 * index + 4] = struct.pack("<i", value)
    return bytes(b)


# hparams order: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
# n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
GGML_SEEDS = {f"{name} {v}": (i, v) for i, name in enumerate(
    ["n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
     "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels"])
    for v in (2**31 - 1, 0, -1, 3)}


@pytest.mark.parametrize("case", list(GGML_SEEDS))
def test_ggml_seed_corpus(tmp_path, ggml_file, case):
    index, value = GGML_SEEDS[case]
    assert expect_clean(read_ggml, _raw(tmp_path, "h.bin", _hparam(ggml_file.read_bytes(), index, value))) == "error"


def test_ggml_ftype_and_nan_weights(tmp_path, ggml_file):
    data = ggml_file.read_bytes()
    b = bytearray(data)
    b[FTYPE_AT:FTYPE_AT + 4] = struct.pack("<i", 99)
    assert expect_clean(read_ggml, _raw(tmp_path, "ftype.bin", bytes(b))) == "error"
    # The last tensor (decoder.ln.bias, f32): a NaN in its data.
    b = bytearray(data)
    b[-4:] = struct.pack("<f", float("nan"))
    assert "NaN" in _error_of(read_ggml, _raw(tmp_path, "nan.bin", bytes(b)))
    # A Q8_0 block's scale: bytes 0-1 of the first block of the first quantized matrix.
    name = b"encoder.blocks.0.attn.query.weight"
    at = data.index(name) + len(name)
    b = bytearray(data)
    b[at:at + 2] = np.float16(np.inf).tobytes()
    assert "NaN or infinite" in _error_of(read_ggml, _raw(tmp_path, "inf.bin", bytes(b)))


def _error_of(load: Callable, path: Path) -> str:
    with pytest.raises(ModelFormatError) as e:
        load(path)
    return str(e.value)


@FUZZ
@given(data=st.data())
def test_ggml_mutations(tmp_path, ggml_file, data):
    original = ggml_file.read_bytes()
    how = data.draw(_mutations(len(original)))
    expect_clean(read_ggml, _raw(tmp_path, "fuzz.bin", mutate(original, how, 2048)))


# --- CTranslate2 -----------------------------------------------------------------------------


def _ct2_variables(ckpt) -> dict[str, np.ndarray]:
    """The inverse of load_ct2's mapping, for a float32 checkpoint."""
    w, d = ckpt.weights, ckpt.dims
    out = {"encoder/conv1/weight": w["encoder.conv1.weight"], "encoder/conv1/bias": w["encoder.conv1.bias"],
           "encoder/conv2/weight": w["encoder.conv2.weight"], "encoder/conv2/bias": w["encoder.conv2.bias"],
           "encoder/position_encodings/encodings": w["encoder.positional_embedding"],
           "decoder/embeddings/weight": w["decoder.token_embedding.weight"],
           "decoder/position_encodings/encodings": w["decoder.positional_embedding"]}

    def lin(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}/weight"] = w[f"{src}.weight"]
        if bias:
            out[f"{dst}/bias"] = w[f"{src}.bias"]

    def norm(src: str, dst: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = w[f"{src}.weight"], w[f"{src}.bias"]

    def block(src: str, dst: str, cross: bool) -> None:
        a = f"{src}.attn"
        zeros = np.zeros_like(w[f"{a}.query.bias"])
        out[f"{dst}/self_attention/linear_0/weight"] = np.concatenate([w[f"{a}.query.weight"], w[f"{a}.key.weight"], w[f"{a}.value.weight"]])
        out[f"{dst}/self_attention/linear_0/bias"] = np.concatenate([w[f"{a}.query.bias"], zeros, w[f"{a}.value.bias"]])
        lin(f"{a}.out", f"{dst}/self_attention/linear_1")
        norm(f"{src}.attn_ln", f"{dst}/self_attention/layer_norm")
        if cross:
            c = f"{src}.cross_attn"
            lin(f"{c}.query", f"{dst}/attention/linear_0")
            out[f"{dst}/attention/linear_1/weight"] = np.concatenate([w[f"{c}.key.weight"], w[f"{c}.value.weight"]])
            out[f"{dst}/attention/linear_1/bias"] = np.concatenate([zeros, w[f"{c}.value.bias"]])
            lin(f"{c}.out", f"{dst}/attention/linear_2")
            norm(f"{src}.cross_attn_ln", f"{dst}/attention/layer_norm")
        lin(f"{src}.mlp.0", f"{dst}/ffn/linear_0")
        lin(f"{src}.mlp.2", f"{dst}/ffn/linear_1")
        norm(f"{src}.mlp_ln", f"{dst}/ffn/layer_norm")

    for i in range(d.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", False)
    norm("encoder.ln_post", "encoder/layer_norm")
    for i in range(d.n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", True)
    norm("decoder.ln", "decoder/layer_norm")
    return out


def _ct2_string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def ct2_model_bin(variables: dict[str, np.ndarray]) -> bytes:
    parts = [struct.pack("<I", 6), _ct2_string("WhisperSpec"), struct.pack("<II", 1, len(variables))]
    for name, a in variables.items():
        a = np.ascontiguousarray(a, np.float32)
        parts += [_ct2_string(name), struct.pack(f"<B{a.ndim}IBI", a.ndim, *a.shape, 0, a.nbytes), a.tobytes()]
    parts.append(struct.pack("<I", 0))
    return b"".join(parts)


def ct2_tokenizer() -> dict:
    chars = _gpt2_byte_chars()
    vocab = {chars[33 + i]: i for i in range(30)} | {"<|endoftext|>": 30}
    return {"model": {"type": "BPE", "vocab": vocab, "merges": []},
            "added_tokens": [{"id": 30, "content": "<|endoftext|>", "special": True}]}


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ct2") / "tiny-ct2"
    d.mkdir()
    ckpt = tiny_checkpoint()
    (d / "model.bin").write_bytes(ct2_model_bin(_ct2_variables(ckpt)))
    (d / "config.json").write_text(json.dumps({"num_heads": 2, "alignment_heads": [[0, 1]], "suppress_ids": [3],
                                               "suppress_ids_begin": [30], "lang_ids": [31]}))
    (d / "tokenizer.json").write_text(json.dumps(ct2_tokenizer()))
    return d


def load_ct2_dir(d: Path) -> None:
    ckpt = load_ct2(d)
    token_bytes_from_tokenizer_json(ckpt.tokenizer_json)


def _ct2_copy(tmp_path: Path, ct2_dir: Path, config: Any = None, tokenizer: Any = None, model: bytes | None = None) -> Path:
    d = tmp_path / "m"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(ct2_dir, d)
    for name, value in (("config.json", config), ("tokenizer.json", tokenizer)):
        if value is not None:
            (d / name).write_text(value if isinstance(value, str) else json.dumps(value))
    if model is not None:
        (d / "model.bin").write_bytes(model)
    return d


def test_ct2_tiny_loads_as_written(ct2_dir):
    ckpt = load_ct2(ct2_dir)
    ref = tiny_checkpoint()
    assert ckpt.dims == ref.dims and ckpt.alignment_heads.tolist() == [[0, 1]]
    np.testing.assert_array_equal(ckpt.weights["decoder.blocks.0.cross_attn.value.weight"],
                                  ref.weights["decoder.blocks.0.cross_attn.value.weight"])
    assert expect_clean(load_ct2_dir, ct2_dir) == "loaded"


CT2_SEEDS = {
    "config not JSON": dict(config="{num_heads: 6"),
    "config a list": dict(config=[1, 2]),
    "num_heads 0": dict(config={"num_heads": 0}),
    "num_heads 7": dict(config={"num_heads": 7}),
    "num_heads six": dict(config={"num_heads": "six"}),
    "num_heads 2^40": dict(config={"num_heads": 2**40}),
    "num_heads -2": dict(config={"num_heads": -2}),
    "num_heads true": dict(config={"num_heads": True}),
    "alignment layer out of range": dict(config={"num_heads": 2, "alignment_heads": [[5, 0]]}),
    "alignment head out of range": dict(config={"num_heads": 2, "alignment_heads": [[0, 2]]}),
    "alignment heads not pairs": dict(config={"num_heads": 2, "alignment_heads": [0, 1]}),
    "suppress id out of range": dict(config={"num_heads": 2, "suppress_ids": [2**40]}),
    "tokenizer {}": dict(tokenizer={}),
    "tokenizer a list": dict(tokenizer=[]),
    "tokenizer not JSON": dict(tokenizer="{"),
    "tokenizer eot 2^40": dict(tokenizer={"model": {"vocab": {"a": 0}}, "added_tokens": [{"id": 2**40, "content": "<|endoftext|>"}]}),
    "tokenizer vocab ids strings": dict(tokenizer={"model": {"vocab": {"a": "0"}}}),
    "tokenizer not byte-level": dict(tokenizer={"model": {"vocab": {"\u4e00": 0, "<|endoftext|>": 1}}}),
}


@pytest.mark.parametrize("case", list(CT2_SEEDS))
def test_ct2_seed_corpus(tmp_path, ct2_dir, case):
    d = _ct2_copy(tmp_path, ct2_dir, **CT2_SEEDS[case])
    assert expect_clean(load_ct2_dir, d) == "error", case


def test_ct2_variable_shapes_checked(tmp_path, ct2_dir):
    variables = _ct2_variables(tiny_checkpoint())
    variables["decoder/layer_0/ffn/linear_1/weight"] = variables["decoder/layer_0/ffn/linear_1/weight"][:, :32]
    d = _ct2_copy(tmp_path, ct2_dir, model=ct2_model_bin(variables))
    assert "decoder.blocks.0.mlp.2.weight" in _error_of(load_ct2, d)
    variables = _ct2_variables(tiny_checkpoint())
    variables["encoder/layer_0/self_attention/linear_0/weight"] = variables["encoder/layer_0/self_attention/linear_0/weight"][:190]
    d = _ct2_copy(tmp_path, ct2_dir, model=ct2_model_bin(variables))
    assert expect_clean(load_ct2, d) == "error"


@FUZZ
@given(data=st.data())
def test_ct2_model_bin_mutations(tmp_path, ct2_dir, data):
    original = (ct2_dir / "model.bin").read_bytes()
    how = data.draw(_mutations(len(original)))
    d = _ct2_copy(tmp_path, ct2_dir, model=mutate(original, how, 4096))
    expect_clean(load_ct2_dir, d)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**41, 2**41) | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=8)


@FUZZ
@given(key=st.sampled_from(["num_heads", "alignment_heads", "suppress_ids", "suppress_ids_begin", "lang_ids"]),
       value=json_values)
def test_ct2_config_values(tmp_path, ct2_dir, key, value):
    expect_clean(load_ct2_dir, _ct2_copy(tmp_path, ct2_dir, config={"num_heads": 2, key: value}))


# --- memory: the bombs of the issue, each in a child process with a capped address space -----

_CHILD = """
import resource, sys
sys.path[:0] = {paths!r}
from whisperlite.core.errors import ModelFormatError
{imports}
pages = int(open("/proc/self/statm").read().split()[0])
limit = pages * resource.getpagesize() + {budget}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    {call}
except ModelFormatError as e:
    print("error:", e)
"""


def _bounded(imports: str, call: str, budget: int = 256 << 20) -> str:
    """Run `call` with `budget` bytes of address space beyond what the imports took."""
    code = _CHILD.format(paths=[str(Path(__file__).parent), str(Path(__file__).parents[1])],
                         imports=imports, call=call, budget=budget)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_memory_bounded_gguf_bombs(tmp_path, gguf_parts):
    paths = [write_gguf(tmp_path, gguf_parts, name="ctx.gguf", **GGUF_SEEDS["context 2^40"]),
             write_gguf(tmp_path, gguf_parts, name="layers.gguf", **GGUF_SEEDS["block count 2^31-1"])]
    nested = struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + _gguf_string("deep") + struct.pack("<I", VT.ARRAY)
    paths.append(_raw(tmp_path, "deep.gguf", nested + struct.pack("<IQ", VT.ARRAY, 1) * 200_000))
    # 4M empty arrays in one array: the 48 MB file of the issue, at a third of the size.
    flat = nested + struct.pack("<IQ", VT.ARRAY, 1 << 22) + struct.pack("<IQ", VT.UINT8, 0) * (1 << 22)
    paths.append(_raw(tmp_path, "flat.gguf", flat))
    for p in paths:
        out = _bounded("from whisperlite.formats.gguf import read_gguf\nfrom whisperlite.models.llama import LlamaConfig",
                       f"LlamaConfig.from_gguf(read_gguf({str(p)!r}))")
        assert out.startswith("error:") and str(p) in out, out
        OUTCOMES["clean error"] += 1


def test_memory_bounded_ggml_layers(tmp_path, ggml_file):
    path = _raw(tmp_path, "layers.bin", _hparam(ggml_file.read_bytes(), 8, 2**31 - 1))
    out = _bounded("from whisperlite.formats.ggml import read_ggml", f"read_ggml({str(path)!r})")
    assert out.startswith("error:") and "n_text_layer" in out, out
    OUTCOMES["clean error"] += 1


def _gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return struct.pack("<IIQQ", 0x46554747, 3, n_tensors, n_kv)


def _string_bombs(tmp_path: Path) -> dict[str, Path]:
    """Headers whose Python objects would outgrow the file many times over, each ~40 MB:
    the most string elements the count cap lets through (2 bytes each), one string as long
    as the file, two million one-byte entries, a million tensor records."""
    n = 1 << 22
    array = _gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", VT.ARRAY, VT.STRING, n)
    bombs = {"strings.gguf": _gguf_header(0, 1) + array + _gguf_string("ab") * n}
    long = 40 << 20
    bombs["long.gguf"] = _gguf_header(0, 1) + _gguf_string("t") + struct.pack("<I", VT.STRING) + _gguf_string(b"x" * long)
    bombs["entries.gguf"] = _gguf_header(0, 2_000_000) + b"".join(
        _gguf_string(f"{i:07d}") + struct.pack("<IB", VT.UINT8, 0) for i in range(2_000_000))
    bombs["tensors.gguf"] = _gguf_header(1_000_000, 0) + b"".join(
        _gguf_string(f"{i:07d}") + struct.pack("<IQIQ", 1, 32, 0, 0) for i in range(1_000_000))
    return {name: _raw(tmp_path, name, data) for name, data in bombs.items()}


@pytest.mark.slow
def test_gguf_header_memory_stays_under_twice_the_file(tmp_path):
    """Each bomb is refused in one line naming the file, in a child whose address space may
    grow by no more than twice the file's size (the map of the file is one of the two)."""
    for name, path in _string_bombs(tmp_path).items():
        size = path.stat().st_size
        start = time.perf_counter()
        out = _bounded("from whisperlite.formats.gguf import read_gguf", f"read_gguf({str(path)!r})", budget=2 * size)
        took = time.perf_counter() - start
        assert out.startswith("error:") and str(path) in out and "bytes of memory" in out, (name, out)
        assert took < 20, (name, took)  # the child's imports included; the parse stops early
        OUTCOMES["clean error"] += 1


def test_a_real_vocabulary_loads_under_twice_the_file(tmp_path, gguf_parts):
    """What a model needs passes the same budget: SmolLM2's 49k tokens and 48k merges if
    pulled, else the tiny model's; read under an address space of twice the file."""
    from whisperlite.registry import hub

    path = hub.cached_path("smollm2") if hub.is_cached("smollm2") else write_gguf(tmp_path, gguf_parts)
    size = max(path.stat().st_size, 32 << 20)  # the budget's floor for small files
    out = _bounded("from whisperlite.formats.gguf import read_gguf",
                   f"print(len(read_gguf({str(path)!r}).metadata['tokenizer.ggml.tokens']))", budget=2 * size)
    assert int(out) > 0, out
    OUTCOMES["loaded"] += 1
