"""CTranslate2 Whisper model directories (model.bin + config.json + tokenizer.json).

model.bin layout (little endian, binary version ≤ 6):
  u32 version | str spec | u32 revision | u32 n_variables
  per variable: str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes
  u32 n_aliases | per alias: str alias | str target
  str = u16 length (including trailing NUL) + bytes
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.formats.ggml import expected_shapes
from whisperlite.kernels import QTensor, Weight

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Variables and aliases a model.bin may declare: large-v3 has about 1,400; each becomes a
# Python object of ~200 bytes from as few as 8 bytes of file.
MAX_VARIABLES = 1 << 16


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

    def count(self, what: str) -> int:
        n = self.u32()
        if n > MAX_VARIABLES:
            raise ModelFormatError(f"{self.path}: {n} {what} (at most {MAX_VARIABLES})")
        return n

    def string(self) -> str:
        at = self.pos
        s = bytes(self.take(self.u16())).rstrip(b"\0").decode("utf-8", "replace")
        if not s.isprintable():  # names go into one-line messages
            raise ModelFormatError(f"{self.path}: the name at byte {at} is not printable text")
        return s


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
    for _ in range(cur.count("variables")):
        name = cur.string()
        shape = tuple(cur.u32() for _ in range(cur.u8()))
        dtype = cur.u8()
        if dtype not in _DTYPES:
            raise ModelFormatError(f"{path}: variable {name} has unsupported dtype {dtype}")
        nbytes = cur.u32()
        raw = cur.take(nbytes)
        itemsize = np.dtype(_DTYPES[dtype]).itemsize
        if nbytes != math.prod(shape) * itemsize:
            raise ModelFormatError(f"{path}: variable {name} size does not match its shape {shape}")
        out[name] = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape)
    if version >= 3:
        for _ in range(cur.count("aliases")):
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
    """Fused rows in n equal parts; a count that does not split surfaces as a shape error."""
    if a.ndim == 0 or a.shape[0] % n:
        return [a] * n
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


def _config(d: Path) -> dict:
    """config.json as a JSON object ({} when the folder has none)."""
    path = d / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelFormatError(f"{path}: not JSON ({e})".replace("\n", " ")) from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: not a JSON object (a {type(config).__name__})")
    return config


def _int_list(config: dict, key: str, path: Path, below: int, pairs: tuple[int, int] | None = None) -> list | None:
    """config[key] as a list of ints in 0..below-1 (or of [a, b] pairs within `pairs`)."""
    v = config.get(key)
    if v is None:
        return None
    def ok(x: object, hi: int) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < hi
    good = isinstance(v, list) and all(
        isinstance(x, list) and len(x) == 2 and ok(x[0], pairs[0]) and ok(x[1], pairs[1]) if pairs else ok(x, below)
        for x in v)
    if not good:
        what = f"[layer < {pairs[0]}, head < {pairs[1]}] pairs" if pairs else f"token ids below {below}"
        raise ModelFormatError(f"{path}: {key}: not a list of {what}")
    return v


def _var(w: dict, key: str, ndim: int, path: Path) -> np.ndarray:
    a = w[key]
    if a.ndim != ndim:
        raise ModelFormatError(f"{path}: variable {key} has shape {a.shape}, expected {ndim} dimensions")
    return a


def load_ct2(directory: str | os.PathLike) -> WhisperCheckpoint:
    """Read a CTranslate2 Whisper directory into a `WhisperCheckpoint` (matrices as stored).
    Every tensor is checked against the dimensions before the checkpoint is returned."""
    d = Path(directory)
    model_bin = d / "model.bin"
    if not model_bin.is_file():
        raise ModelFormatError(f"{d}: no model.bin (not a CTranslate2 model directory)")
    config = _config(d)
    mm = _map(str(model_bin))
    w = read_ct2_variables(mm, str(model_bin))
    try:
        n_audio_layer = _count_layers(w, "encoder")
        n_text_layer = _count_layers(w, "decoder")
        n_audio_state, n_mels, _ = _var(w, "encoder/conv1/weight", 3, model_bin).shape
        n_vocab, n_text_state = _var(w, "decoder/embeddings/weight", 2, model_bin).shape
        # Whisper's heads are 64 wide; config.json says so for models that differ.
        qkv = _var(w, "encoder/layer_0/self_attention/linear_0/weight", 2, model_bin)
        n_heads = config.get("num_heads", qkv.shape[0] // 3 // 64)
        if not isinstance(n_heads, int) or isinstance(n_heads, bool) or n_heads < 1 \
                or n_audio_state % n_heads or n_text_state % n_heads:
            raise ModelFormatError(f"{d / 'config.json'}: num_heads: {n_heads!r} is not a positive integer "
                                   f"dividing the widths {n_audio_state} and {n_text_state}")
        dims = WhisperDims(
            n_mels=int(n_mels),
            n_audio_ctx=int(_var(w, "encoder/position_encodings/encodings", 2, model_bin).shape[0]),
            n_audio_state=int(n_audio_state),
            n_audio_head=n_heads,
            n_audio_layer=n_audio_layer,
            n_vocab=int(n_vocab),
            n_text_ctx=int(_var(w, "decoder/position_encodings/encodings", 2, model_bin).shape[0]),
            n_text_state=int(n_text_state),
            n_text_head=n_heads,
            n_text_layer=n_text_layer,
        )
        if min(dims.n_audio_state, dims.n_text_state) < 4 or dims.n_audio_state % 2 or not n_audio_layer \
                or not n_text_layer:
            raise ModelFormatError(f"{model_bin}: not a Whisper model (dimensions {dims})")
        encodings = w["encoder/position_encodings/encodings"].shape
        if encodings[1] != dims.n_audio_state:  # checked before the sinusoids it sizes
            raise ModelFormatError(f"{model_bin}: encoder/position_encodings/encodings has shape {encodings}, "
                                   f"the conv1 width asks for ({dims.n_audio_ctx}, {dims.n_audio_state})")
        out: dict = {}
        out["encoder.conv1.weight"] = _f32(w["encoder/conv1/weight"])
        out["encoder.conv1.bias"] = _f32(w["encoder/conv1/bias"])
        out["encoder.conv2.weight"] = _f32(w["encoder/conv2/weight"])
        out["encoder.conv2.bias"] = _f32(w["encoder/conv2/bias"])
        out["encoder.positional_embedding"] = _sinusoids(dims.n_audio_ctx, dims.n_audio_state)
        for i in range(n_audio_layer):
            _block(w, f"encoder/layer_{i}", f"encoder.blocks.{i}", out, cross=False)
        _norm(w, "encoder/layer_norm", "encoder.ln_post", out)
        out["decoder.token_embedding.weight"] = _mat(w["decoder/embeddings/weight"])
        out["decoder.positional_embedding"] = _f32(w["decoder/position_encodings/encodings"])
        for i in range(n_text_layer):
            _block(w, f"decoder/layer_{i}", f"decoder.blocks.{i}", out, cross=True)
        _norm(w, "decoder/layer_norm", "decoder.ln", out)
    except KeyError as e:
        raise ModelFormatError(f"{model_bin}: missing variable {e.args[0]} (not a Whisper model)") from None
    for name, shape in expected_shapes(dims).items():
        if tuple(out[name].shape) != shape:
            raise ModelFormatError(f"{model_bin}: {name} has shape {tuple(out[name].shape)}, "
                                   f"the dimensions ask for {shape}")
    cfg = d / "config.json"
    heads = _int_list(config, "alignment_heads", cfg, 0, (n_text_layer, n_heads))
    tok = d / "tokenizer.json"
    return WhisperCheckpoint(
        dims=dims,
        weights=out,
        tokenizer_json=str(tok) if tok.is_file() else None,
        alignment_heads=np.asarray(heads, dtype=np.int64) if heads else None,
        source=str(d),
        mapping=mm,
        extra={key: _int_list(config, key, cfg, dims.n_vocab)
               for key in ("suppress_ids", "suppress_ids_begin", "lang_ids")},
    )


def _sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's encoder positions, recomputed exactly: CTranslate2 stores them as f16 (≈2.4e-4 off)."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2, dtype=np.float64))
    t = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)
