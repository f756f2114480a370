"""CTranslate2 Whisper model directories (model.bin + config.json + tokenizer.json).

model.bin layout (little endian, binary version ≤ 6):
  u32 version | str spec | u32 revision | u32 n_variables
  per variable: str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes
  u32 n_aliases | per alias: str alias | str target
  str = u16 length (including trailing NUL) + bytes
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.kernels import QTensor, Weight

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class _Cursor:
    def __init__(self, buf: memoryview, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise ModelFormatError(f"{self.path}: truncated CTranslate2 model (needs {self.pos + n} bytes, has {len(self.buf)})")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        return bytes(self.take(self.u16())).rstrip(b"\0").decode("utf-8", "replace")


def _map(path: str) -> mmap.mmap:
    try:
        with open(path, "rb") as fh:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"{path}: cannot read model file ({e})") from None


def read_ct2_variables(mm: mmap.mmap, path: str) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin (mapped as `mm`) as read-only views on it."""
    cur = _Cursor(memoryview(mm), path)
    version = cur.u32()
    if not 1 <= version <= 6:
        raise ModelFormatError(f"{path}: not a CTranslate2 model (binary version {version})")
    spec = cur.string() if version >= 2 else ""
    if version >= 2:
        cur.u32()  # spec revision: layouts we read are the same across revisions
    if spec and "Whisper" not in spec:
        raise ModelFormatError(f"{path}: CTranslate2 model is a {spec}, not Whisper")
    out: dict[str, np.ndarray] = {}
    for _ in range(cur.u32()):
        name = cur.string()
        shape = tuple(cur.u32() for _ in range(cur.u8()))
        dtype = cur.u8()
        if dtype not in _DTYPES:
            raise ModelFormatError(f"{path}: variable {name} has unsupported dtype {dtype}")
        nbytes = cur.u32()
        raw = cur.take(nbytes)
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype])
        if arr.size != int(np.prod(shape)):
            raise ModelFormatError(f"{path}: variable {name} size does not match its shape {shape}")
        out[name] = arr.reshape(shape)
    if version >= 3:
        for _ in range(cur.u32()):
            alias, target = cur.string(), cur.string()
            if target not in out:
                raise ModelFormatError(f"{path}: alias {alias} points to missing {target}")
            out[alias] = out[target]
    return out


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _mat(a: np.ndarray) -> Weight:
    """A 2-D weight: float16 stays float16 as a zero-copy QTensor view (as ggml f16 files
    load), so loading costs no conversion and decoding reads half the bytes."""
    if a.dtype == np.float16 and a.ndim == 2:
        return QTensor(QType.F16, (int(a.shape[0]), int(a.shape[1])), a)
    return _f32(a)


def _split(a: np.ndarray, n: int) -> list[np.ndarray]:
    return np.split(a, n, axis=0)


def _linear(w: dict, src: str, dst: str, out: dict, bias: bool = True) -> None:
    out[f"{dst}.weight"] = _mat(w[f"{src}/weight"])
    if bias:
        out[f"{dst}.bias"] = _f32(w[f"{src}/bias"])


def _norm(w: dict, src: str, dst: str, out: dict) -> None:
    out[f"{dst}.weight"] = _f32(w[f"{src}/gamma"])
    out[f"{dst}.bias"] = _f32(w[f"{src}/beta"])


def _fused_qkv(w: dict, src: str, dst: str, out: dict) -> None:
    q, k, v = _split(w[f"{src}/weight"], 3)
    qb, _kb, vb = _split(w[f"{src}/bias"], 3)  # key bias is stored as zeros: Whisper has none
    out[f"{dst}.query.weight"], out[f"{dst}.query.bias"] = _mat(q), _f32(qb)
    out[f"{dst}.key.weight"] = _mat(k)
    out[f"{dst}.value.weight"], out[f"{dst}.value.bias"] = _mat(v), _f32(vb)


def _block(w: dict, src: str, dst: str, out: dict, cross: bool) -> None:
    _fused_qkv(w, f"{src}/self_attention/linear_0", f"{dst}.attn", out)
    _linear(w, f"{src}/self_attention/linear_1", f"{dst}.attn.out", out)
    _norm(w, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", out)
    if cross:
        _linear(w, f"{src}/attention/linear_0", f"{dst}.cross_attn.query", out)
        k, v = _split(w[f"{src}/attention/linear_1/weight"], 2)
        _kb, vb = _split(w[f"{src}/attention/linear_1/bias"], 2)
        out[f"{dst}.cross_attn.key.weight"] = _mat(k)
        out[f"{dst}.cross_attn.value.weight"], out[f"{dst}.cross_attn.value.bias"] = _mat(v), _f32(vb)
        _linear(w, f"{src}/attention/linear_2", f"{dst}.cross_attn.out", out)
        _norm(w, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", out)
    _linear(w, f"{src}/ffn/linear_0", f"{dst}.mlp.0", out)
    _linear(w, f"{src}/ffn/linear_1", f"{dst}.mlp.2", out)
    _norm(w, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", out)


def _count_layers(w: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in w:
        n += 1
    return n


def load_ct2(directory: str | os.PathLike) -> WhisperCheckpoint:
    """Read a CTranslate2 Whisper directory into a `WhisperCheckpoint` (matrices as stored)."""
    d = Path(directory)
    model_bin = d / "model.bin"
    if not model_bin.is_file():
        raise ModelFormatError(f"{d}: no model.bin (not a CTranslate2 model directory)")
    mm = _map(str(model_bin))
    w = read_ct2_variables(mm, str(model_bin))
    try:
        config = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else {}
        n_audio_layer = _count_layers(w, "encoder")
        n_text_layer = _count_layers(w, "decoder")
        conv1 = w["encoder/conv1/weight"]
        n_audio_state, n_mels = conv1.shape[0], conv1.shape[1]
        emb = w["decoder/embeddings/weight"]
        n_vocab, n_text_state = emb.shape
        n_heads = int(w["encoder/layer_0/self_attention/linear_0/weight"].shape[0] // 3 // 64)
        dims = WhisperDims(
            n_mels=int(n_mels),
            n_audio_ctx=int(w["encoder/position_encodings/encodings"].shape[0]),
            n_audio_state=int(n_audio_state),
            n_audio_head=config.get("num_heads", n_heads),
            n_audio_layer=n_audio_layer,
            n_vocab=int(n_vocab),
            n_text_ctx=int(w["decoder/position_encodings/encodings"].shape[0]),
            n_text_state=int(n_text_state),
            n_text_head=config.get("num_heads", n_heads),
            n_text_layer=n_text_layer,
        )
        out: dict = {}
        out["encoder.conv1.weight"] = _f32(w["encoder/conv1/weight"])
        out["encoder.conv1.bias"] = _f32(w["encoder/conv1/bias"])
        out["encoder.conv2.weight"] = _f32(w["encoder/conv2/weight"])
        out["encoder.conv2.bias"] = _f32(w["encoder/conv2/bias"])
        out["encoder.positional_embedding"] = _sinusoids(dims.n_audio_ctx, dims.n_audio_state)
        for i in range(n_audio_layer):
            _block(w, f"encoder/layer_{i}", f"encoder.blocks.{i}", out, cross=False)
        _norm(w, "encoder/layer_norm", "encoder.ln_post", out)
        out["decoder.token_embedding.weight"] = _mat(emb)
        out["decoder.positional_embedding"] = _f32(w["decoder/position_encodings/encodings"])
        for i in range(n_text_layer):
            _block(w, f"decoder/layer_{i}", f"decoder.blocks.{i}", out, cross=True)
        _norm(w, "decoder/layer_norm", "decoder.ln", out)
    except KeyError as e:
        raise ModelFormatError(f"{model_bin}: missing variable {e.args[0]} (not a Whisper model)") from None
    heads = config.get("alignment_heads")
    tok = d / "tokenizer.json"
    return WhisperCheckpoint(
        dims=dims,
        weights=out,
        tokenizer_json=str(tok) if tok.is_file() else None,
        alignment_heads=np.asarray(heads, dtype=np.int64) if heads else None,
        source=str(d),
        mapping=mm,
        extra={"suppress_ids": config.get("suppress_ids"), "suppress_ids_begin": config.get("suppress_ids_begin"),
               "lang_ids": config.get("lang_ids")},
    )


def _sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's encoder positions, recomputed exactly: CTranslate2 stores them as f16 (≈2.4e-4 off)."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float64))
    t = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)
