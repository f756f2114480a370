"""whisper.cpp ggml model files (.bin): read into, and write from, a `WhisperCheckpoint`.

Layout (little endian, every integer i32):
  magic 0x67676d6c ("ggml")
  hparams: n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
           n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
  mel filters: n_mel, n_fft, f32[n_mel * n_fft]
  vocab: n_tokens, then (len, bytes) per regular token 0 … eot-1
  tensors until EOF: n_dims, name_len, type, ne[n_dims] (innermost first), name, data

Tensor types follow whisper.cpp's loader, which rejects a file whose tensor sizes differ
from what it expects: 2-D matrices have the file's weight type, conv kernels are f16
(f32 in f32 files), and 1-D tensors, conv biases and positional embeddings are f32.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QType

from whisperlite.core.atomic import atomic_output
from whisperlite.core.errors import (
    ModelFormatError,
    ModelNotFoundError,
    QuantizationError,
)
from whisperlite.formats.checkpoint import (
    WhisperCheckpoint,
    WhisperDims,
    preset_alignment_heads,
    release_range,
)
from whisperlite.kernels.quant import QUANT_TYPES, quantize
from whisperlite.kernels.tensor import QTensor, Weight

MAGIC = 0x67676D6C
# GGML_QNT_VERSION in ggml.h: 2 since Q8_0 scales became f16 (1 was the Q4/Q5 bit-layout
# change). Quantized files store 1000 * version + ftype, so older block layouts are detectable.
QNT_VERSION = 2
QNT_VERSION_FACTOR = 1000

# Type names as whisper.cpp's `quantize` spells them -> (ggml_ftype code in the header,
# ggml_type of the 2-D weight matrices). The ftype codes are ggml's enum, not the type ids.
FTYPES: dict[str, tuple[int, QType]] = {
    "f32": (0, QType.F32),
    "f16": (1, QType.F16),
    "q4_0": (2, QType.Q4_0),
    "q4_1": (3, QType.Q4_1),
    "q8_0": (7, QType.Q8_0),
    "q5_0": (8, QType.Q5_0),
    "q5_1": (9, QType.Q5_1),
}
QUANT_FTYPES = tuple(name for name in FTYPES if name.startswith("q"))
_FTYPE_CODES = {code for code, _ in FTYPES.values()}
_TENSOR_TYPES = {qtype for _, qtype in FTYPES.values()}
FTYPES_BY_CODE = {code: qtype for code, qtype in FTYPES.values()}

# 2-D tensors whisper.cpp keeps in f32 whatever the file type (examples/quantize `to_skip`;
# the conv biases are on that list too but are 1-D here).
_ALWAYS_F32 = frozenset({"encoder.positional_embedding", "decoder.positional_embedding"})
# Conv biases are 1-D in the checkpoint but stored (n_state, 1) in the file.
_CONV_BIASES = frozenset({"encoder.conv1.bias", "encoder.conv2.bias"})
_MAX_DIMS = 4  # GGML_MAX_DIMS
# The shortest tensor name of a whisper.cpp model: "decoder.ln.bias".
MIN_NAME = len("decoder.ln.bias")


def expected_shapes(dims: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Every tensor a whisper.cpp model has, in checkpoint (PyTorch) shapes and file order."""
    a, t = dims.n_audio_state, dims.n_text_state
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (a, dims.n_mels, 3),
        "encoder.conv1.bias": (a,),
        "encoder.conv2.weight": (a, a, 3),
        "encoder.conv2.bias": (a,),
        "encoder.positional_embedding": (dims.n_audio_ctx, a),
    }

    def block(prefix: str, n: int, attns: tuple[str, ...]) -> None:
        for attn in attns:
            shapes.update({
                f"{prefix}.{attn}.query.weight": (n, n), f"{prefix}.{attn}.query.bias": (n,),
                f"{prefix}.{attn}.key.weight": (n, n),  # Whisper's key projection has no bias
                f"{prefix}.{attn}.value.weight": (n, n), f"{prefix}.{attn}.value.bias": (n,),
                f"{prefix}.{attn}.out.weight": (n, n), f"{prefix}.{attn}.out.bias": (n,),
                f"{prefix}.{attn}_ln.weight": (n,), f"{prefix}.{attn}_ln.bias": (n,),
            })
        shapes.update({
            f"{prefix}.mlp.0.weight": (4 * n, n), f"{prefix}.mlp.0.bias": (4 * n,),
            f"{prefix}.mlp.2.weight": (n, 4 * n), f"{prefix}.mlp.2.bias": (n,),
            f"{prefix}.mlp_ln.weight": (n,), f"{prefix}.mlp_ln.bias": (n,),
        })

    for i in range(dims.n_audio_layer):
        block(f"encoder.blocks.{i}", a, ("attn",))
    shapes["encoder.ln_post.weight"] = shapes["encoder.ln_post.bias"] = (a,)
    shapes["decoder.token_embedding.weight"] = (dims.n_vocab, t)
    shapes["decoder.positional_embedding"] = (dims.n_text_ctx, t)
    for i in range(dims.n_text_layer):
        block(f"decoder.blocks.{i}", t, ("attn", "cross_attn"))
    shapes["decoder.ln.weight"] = shapes["decoder.ln.bias"] = (t,)
    return shapes


def tensor_type(name: str, ndim: int, wtype: QType) -> QType:
    """The type whisper.cpp expects for tensor `name` (checkpoint rank `ndim`) in a file
    whose matrices are `wtype`. Its quantizer only touches 2-D tensors, so conv kernels
    (3-D) stay f16; its loader wants them f32 only in all-f32 files."""
    if ndim == 3:
        return QType.F32 if wtype == QType.F32 else QType.F16
    if ndim == 1 or name in _ALWAYS_F32:
        return QType.F32
    return wtype


def parse_ftype(ftype: str) -> QType:
    """'q5_0' -> QType.Q5_0; unknown names raise QuantizationError listing the choices."""
    try:
        return FTYPES[ftype.lower()][1]
    except KeyError:
        raise QuantizationError(f"unknown type {ftype!r}; choose one of {', '.join(FTYPES)}") from None


def file_data(w: Weight, qtype: QType) -> np.ndarray:
    """The data of weight `w` stored as `qtype` (f32, f16, or uint8 ggml blocks).
    A QTensor already of that type is passed through untouched, so re-writing a
    whisper.cpp-quantized file keeps its exact blocks."""
    if isinstance(w, QTensor):
        if w.qtype == qtype:
            return w.data
        w = w.dequantize()
    arr = np.asarray(w, dtype=np.float32)
    if qtype == QType.F32:
        return arr
    if qtype == QType.F16 and arr.ndim != 2:  # conv kernels; matrices go through the checked path
        return arr.astype(np.float16)
    return quantize(arr, qtype)


def as_file_weight(w: Weight, qtype: QType) -> Weight:
    """`w` as `read_ggml` would return it from a file that stores it as `qtype`:
    matrices in f16 or a block type become QTensors, everything else float32."""
    data = file_data(w, qtype)
    if len(w.shape) == 2 and qtype != QType.F32:
        return w if isinstance(w, QTensor) and w.data is data else QTensor(qtype, tuple(w.shape), data)
    return np.asarray(data, dtype=np.float32)


# --- reading -------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor over the mapped file; every failure names the file."""

    def __init__(self, buf: mmap.mmap, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {what}")

    def need(self, n: int, what: str) -> int:
        if n < 0:
            raise self.fail(f"bad {what} (negative length {n}) at byte {self.pos}")
        if self.pos + n > len(self.buf):
            raise self.fail(f"truncated {what} at byte {self.pos} "
                            f"(needs {n} bytes, file has {len(self.buf) - self.pos} left)")
        start = self.pos
        self.pos += n
        return start

    def i32s(self, n: int, what: str) -> tuple[int, ...]:
        return struct.unpack_from(f"<{n}i", self.buf, self.need(4 * n, what))

    def array(self, dtype: type, count: int, what: str) -> np.ndarray:
        start = self.need(count * np.dtype(dtype).itemsize, what)
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start)


def _read_dims(r: _Reader) -> tuple[WhisperDims, int]:
    magic = r.i32s(1, "header")[0] & 0xFFFFFFFF
    if magic != MAGIC:
        raise r.fail(f"not a whisper.cpp ggml model (magic {magic:#010x}, expected {MAGIC:#010x})")
    h = r.i32s(11, "hparams")
    if min(h[:10]) <= 0 or h[10] < 0:
        raise r.fail(f"bad hparams {list(h)}")
    dims = WhisperDims(n_vocab=h[0], n_audio_ctx=h[1], n_audio_state=h[2], n_audio_head=h[3],
                       n_audio_layer=h[4], n_text_ctx=h[5], n_text_state=h[6], n_text_head=h[7],
                       n_text_layer=h[8], n_mels=h[9])
    if dims.n_audio_state % dims.n_audio_head or dims.n_text_state % dims.n_text_head:
        raise r.fail(f"bad hparams: state sizes {dims.n_audio_state}/{dims.n_text_state} "
                     f"not divisible by head counts {dims.n_audio_head}/{dims.n_text_head}")
    qnt_version, ftype = divmod(h[10], QNT_VERSION_FACTOR)
    if ftype not in _FTYPE_CODES:
        raise r.fail(f"unsupported ftype {ftype}")
    if ftype > 1 and qnt_version != QNT_VERSION:
        raise r.fail(f"quantization version {qnt_version} is not {QNT_VERSION} (old block layout); "
                     "re-quantize it with a current whisper.cpp")
    return dims, ftype


def _checkpoint_weight(name: str, qtype: QType, shape: tuple[int, ...], raw: np.ndarray) -> Weight:
    if qtype == QType.F32:
        return raw.view(np.float32).reshape(shape)
    if qtype == QType.F16:
        f16 = raw.view(np.float16).reshape(shape)
        if len(shape) == 2 and name not in _ALWAYS_F32:
            return QTensor(QType.F16, shape, f16)
        return f16.astype(np.float32)  # the contract: only matrices stay in a compact type
    return QTensor(qtype, shape, raw.reshape(shape[0], -1))


def _tensor_count(dims: WhisperDims) -> int:
    """Tensors in a whisper.cpp model: 5 + 2 around the encoder's blocks of 15, 4 + 2
    around the decoder's blocks of 24 (see expected_shapes)."""
    return 5 + 15 * dims.n_audio_layer + 2 + 4 + 24 * dims.n_text_layer + 2


def _check_fits(r: _Reader, dims: WhisperDims, wtype: QType) -> None:
    """Hyperparameters the rest of the file can hold, checked before `expected_shapes`
    builds a table as long as they say (a header claiming 2^31 layers would build one of
    tens of GB first). Each tensor record is a 12-byte header, a dimension and a name of
    at least MIN_NAME bytes; the largest tensors must fit whole."""
    left = len(r.buf) - r.pos
    n = _tensor_count(dims)
    if n * (12 + 4 + MIN_NAME) > left:
        raise r.fail(f"n_audio_layer {dims.n_audio_layer} / n_text_layer {dims.n_text_layer}: "
                     f"{n} tensors cannot fit in the {left} bytes left")
    block, block_bytes = GGML_QUANT_SIZES[wtype]
    largest = {
        "n_vocab": dims.n_vocab * dims.n_text_state * block_bytes // block,
        "n_text_ctx": dims.n_text_ctx * dims.n_text_state * 4,
        "n_audio_ctx": dims.n_audio_ctx * dims.n_audio_state * 4,
        "n_mels": dims.n_audio_state * dims.n_mels * 3 * 2,
    }
    for field, n_bytes in largest.items():
        if n_bytes > left:
            raise r.fail(f"{field} {getattr(dims, field)}: its tensor needs {n_bytes} bytes, "
                         f"the file has {left} left")


# Exponent bits all set mark inf and NaN: (bit pattern view, exponent mask) per float type.
_EXPONENT = {QType.F32: (np.uint32, 0x7F800000), QType.F16: (np.uint16, 0x7C00)}
_FINITE_CHUNK = 1 << 22  # elements tested at a time: a bounded temporary


def _all_finite(raw: np.ndarray, qtype: QType) -> bool:
    """Whether a tensor's floats (every value of a float type; the float16 scales and
    minimums of a block type) are finite: a NaN weight makes every logit NaN downstream.
    Bit tests on integer views: a third of np.isfinite's time on float16."""
    if qtype in _EXPONENT:
        bits, mask = _EXPONENT[qtype]
        values = raw.view(bits)
    else:
        t = QUANT_TYPES[qtype]
        blocks = raw.reshape(-1, t.size)
        offsets = [t.offset(f) for f in ("d", "m") if t.offset(f) is not None]
        values = np.concatenate([np.ascontiguousarray(blocks[:, o:o + 2]).view(np.uint16).ravel() for o in offsets])
        mask = _EXPONENT[QType.F16][1]
    return not any(((values[i:i + _FINITE_CHUNK] & mask) == mask).any()
                   for i in range(0, len(values), _FINITE_CHUNK))


def read_ggml(path: str | os.PathLike) -> WhisperCheckpoint:
    """Load a whisper.cpp ggml .bin. Tensors are read-only views on a memory map."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise ModelNotFoundError(f"{path}: no such model file") from None
    except (OSError, ValueError) as e:  # mmap raises ValueError on an empty file
        raise ModelFormatError(f"{path}: cannot read model file ({e})") from None
    r = _Reader(buf, path)
    dims, ftype = _read_dims(r)

    n_mel, n_fft = r.i32s(2, "mel filters")
    if n_mel <= 0 or n_fft <= 0:
        raise r.fail(f"bad mel filter shape {n_mel}x{n_fft}")
    mel_filters = r.array(np.float32, n_mel * n_fft, "mel filters").reshape(n_mel, n_fft)

    (n_tokens,) = r.i32s(1, "vocab")
    if not 0 < n_tokens <= dims.n_vocab:
        raise r.fail(f"bad vocab size {n_tokens} (n_vocab {dims.n_vocab})")
    token_bytes = []
    for _ in range(n_tokens):
        (length,) = r.i32s(1, "vocab")
        start = r.need(length, "vocab")
        token_bytes.append(bytes(buf[start:start + length]))

    _check_fits(r, dims, FTYPES_BY_CODE[ftype])
    shapes = expected_shapes(dims)
    weights: dict[str, Weight] = {}
    while r.pos < len(buf):
        n_dims, name_len, type_id = r.i32s(3, "tensor header")
        if not 1 <= n_dims <= _MAX_DIMS or not 0 < name_len <= 256:
            raise r.fail(f"bad tensor header at byte {r.pos - 12} (n_dims {n_dims}, name length {name_len})")
        ne = r.i32s(n_dims, "tensor header")
        start = r.need(name_len, "tensor name")
        name = bytes(buf[start:start + name_len]).decode("utf-8", "replace")
        try:
            qtype = QType(type_id)
        except ValueError:
            qtype = None
        if qtype not in _TENSOR_TYPES:
            raise r.fail(f"tensor {name!r} has unknown or unsupported type {type_id}")
        if name not in shapes:
            raise r.fail(f"unknown tensor {name!r}")
        if name in weights:
            raise r.fail(f"duplicate tensor {name}")
        file_shape = tuple(reversed(ne))
        shape = shapes[name]
        if file_shape != (shape + (1,) if name in _CONV_BIASES else shape):
            raise r.fail(f"tensor {name} has shape {file_shape}, expected {shape}")
        if qtype not in (QType.F32, QType.F16) and len(shape) != 2:
            raise r.fail(f"tensor {name} is {len(shape)}-D but quantized ({qtype.name})")
        block, block_bytes = GGML_QUANT_SIZES[qtype]
        if shape[-1] % block:
            raise r.fail(f"tensor {name}: rows of {shape[-1]} do not split into {qtype.name} blocks")
        raw = r.array(np.uint8, int(np.prod(shape)) // block * block_bytes, f"data of tensor {name}")
        if not _all_finite(raw, qtype):
            raise r.fail(f"tensor {name} holds NaN or infinite values (a damaged file)")
        weights[name] = _checkpoint_weight(name, qtype, shape, raw)
        # The check read every page of the tensor; left resident, the whole file would be
        # by the end of the read, on top of what the model then builds from it. Weights
        # used in place fault their pages back in when they are first used.
        release_range(buf, r.pos - raw.nbytes, r.pos)

    missing = [name for name in shapes if name not in weights]
    if missing:
        raise r.fail(f"missing {len(missing)} tensors (first: {missing[0]})")
    ftype_name = next(n for n, (code, _) in FTYPES.items() if code == ftype)
    return WhisperCheckpoint(dims=dims, weights=weights, token_bytes=token_bytes, source=path,
                             alignment_heads=preset_alignment_heads(dims),
                             extra={"mel_filters": mel_filters, "ftype": ftype_name}, mapping=buf)


# --- writing -------------------------------------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-level alphabet: printable bytes stand for themselves and the
    other 68 bytes are shifted, in order, to code points 256 and up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in printable}
    shifted = (b for b in range(256) if b not in set(printable))
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


def token_bytes_from_tokenizer_json(path: str | os.PathLike) -> list[bytes]:
    """Regular tokens 0 … eot-1 of a byte-level BPE tokenizer.json, as raw bytes; a file
    without that structure is a one-line ModelFormatError naming the field."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelFormatError(f"{path}: not JSON ({e})".replace("\n", " ")) from None
    model = spec.get("model") if isinstance(spec, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
        raise ModelFormatError(f"{path}: model.vocab: not an object of token ids")
    added = spec.get("added_tokens", [])
    if not isinstance(added, list) or not all(
            isinstance(t, dict) and isinstance(t.get("content"), str) and type(t.get("id")) is int for t in added):
        raise ModelFormatError(f"{path}: added_tokens: not a list of {{content, id}} objects")
    specials = {t["content"]: t["id"] for t in added}
    eot = specials.get("<|endoftext|>", vocab.get("<|endoftext|>"))
    if eot is None:
        raise ModelFormatError(f"{path}: no <|endoftext|> token")
    if not 0 < eot <= len(vocab):  # ids 0 … eot-1 must all be in the vocabulary
        raise ModelFormatError(f"{path}: <|endoftext|> id {eot} is not in 1..{len(vocab)}")
    decode = _byte_decoder()
    tokens: list[bytes | None] = [None] * eot
    for text, i in vocab.items():
        if 0 <= i < eot:
            if not all(c in decode for c in text):
                raise ModelFormatError(f"{path}: model.vocab: token {i} is not byte-level BPE text")
            tokens[i] = bytes(decode[c] for c in text)
    if any(t is None for t in tokens):
        raise ModelFormatError(f"{path}: token ids 0…{eot - 1} are not all present")
    return tokens


def _mel_filters(ckpt: WhisperCheckpoint) -> np.ndarray:
    filters = ckpt.extra.get("mel_filters")
    if filters is None:
        import librosa  # the same bank whisper.cpp files carry, bit for bit

        filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=ckpt.dims.n_mels)
    return np.asarray(filters, dtype=np.float32)


def _checked_weights(ckpt: WhisperCheckpoint) -> dict[str, Weight]:
    shapes = expected_shapes(ckpt.dims)
    for name in ckpt.weights:
        if name not in shapes:
            raise ModelFormatError(f"{ckpt.source}: tensor {name} has no place in a whisper.cpp model")
    for name, shape in shapes.items():
        if name not in ckpt.weights:
            raise ModelFormatError(f"{ckpt.source}: missing tensor {name}")
        if tuple(ckpt.weights[name].shape) != shape:
            raise ModelFormatError(f"{ckpt.source}: tensor {name} has shape "
                                   f"{tuple(ckpt.weights[name].shape)}, expected {shape}")
    return {name: ckpt.weights[name] for name in shapes}


def write_ggml(ckpt: WhisperCheckpoint, path: str | os.PathLike, ftype: str = "f16") -> None:
    """Write `ckpt` as a whisper.cpp ggml .bin with matrices in `ftype` ('f32', 'f16',
    'q8_0', 'q5_0', 'q5_1', 'q4_0', 'q4_1'). Atomic: readers never see a partial file."""
    wtype = parse_ftype(ftype)
    code = FTYPES[ftype.lower()][0]
    header_ftype = code + (QNT_VERSION * QNT_VERSION_FACTOR if ftype.lower() in QUANT_FTYPES else 0)
    weights = _checked_weights(ckpt)
    if ckpt.token_bytes is not None:
        tokens = ckpt.token_bytes
    elif ckpt.tokenizer_json:
        tokens = token_bytes_from_tokenizer_json(ckpt.tokenizer_json)
    else:
        raise ModelFormatError(f"{ckpt.source}: no vocabulary to write (neither token bytes nor tokenizer.json)")
    filters = _mel_filters(ckpt)
    d = ckpt.dims

    with atomic_output(path, "wb") as fh:
        fh.write(struct.pack("<12i", MAGIC, d.n_vocab, d.n_audio_ctx, d.n_audio_state, d.n_audio_head,
                             d.n_audio_layer, d.n_text_ctx, d.n_text_state, d.n_text_head,
                             d.n_text_layer, d.n_mels, header_ftype))
        fh.write(struct.pack("<2i", *filters.shape))
        fh.write(filters.tobytes())
        fh.write(struct.pack("<i", len(tokens)))
        fh.write(b"".join(struct.pack("<i", len(t)) + t for t in tokens))
        for name, w in weights.items():
            qtype = tensor_type(name, len(w.shape), wtype)
            data = np.ascontiguousarray(file_data(w, qtype))
            shape = tuple(w.shape) + ((1,) if name in _CONV_BIASES else ())
            encoded = name.encode()
            fh.write(struct.pack(f"<{3 + len(shape)}i", len(shape), len(encoded), int(qtype), *reversed(shape)))
            fh.write(encoded)
            fh.write(memoryview(data).cast("B"))

