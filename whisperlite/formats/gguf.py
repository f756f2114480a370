"""GGUF reader: metadata plus tensors as views of one memory map.

The header is parsed here against the `gguf` package's constants (value types, quant block
sizes, magic, alignment) rather than with `gguf.GGUFReader`: the reader makes a numpy
memmap view per array element, about a million views for a 49k-token vocabulary, which
measured 30 s for SmolLM2-135M on this machine; this parser takes well under a second.
tests/test_gguf.py checks it against GGUFReader on files written by `gguf.GGUFWriter`.

Tensors come back in the numpy orientation the kernels expect: a GGUF tensor with
ne = [ne0, ne1] (ne0 innermost) is a matrix of ne1 rows by ne0 columns, i.e. the
nn.Linear (out, in) layout. Nothing is copied: F32 tensors are float32 views, every other
2-D type is a `QTensor` whose `data` is a view of the raw ggml blocks.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as QType
from gguf import GGUFValueType as VT
from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC

from whisperlite.core.errors import ModelFormatError
from whisperlite.kernels.quant import ACTIVATION_ONLY, QUANT_TYPES
from whisperlite.kernels.tensor import QTensor, Weight

# Little-endian struct formats of the fixed-size GGUF value types.
_SCALAR = {
    VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h",
    VT.UINT32: "<I", VT.INT32: "<i", VT.FLOAT32: "<f", VT.BOOL: "<?",
    VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d",
}
_U64 = struct.Struct("<Q")
_NUMPY = {
    VT.UINT8: np.uint8, VT.INT8: np.int8, VT.UINT16: np.uint16, VT.INT16: np.int16,
    VT.UINT32: np.uint32, VT.INT32: np.int32, VT.FLOAT32: np.float32, VT.BOOL: np.bool_,
    VT.UINT64: np.uint64, VT.INT64: np.int64, VT.FLOAT64: np.float64,
}
_INTS = (VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64)

# Stored types the kernels run (Q8_1 and Q8_K are activation types only; gguf-py's and
# ggml's Q8_1 blocks differ in size, so a file claiming one cannot be trusted either way).
WEIGHT_TYPES = frozenset(q for q in QUANT_TYPES if q not in ACTIVATION_ONLY)
MAX_DIMS = 4  # GGML_MAX_DIMS
# The fewest bytes a header record can take: a key-value pair is a string length (8), a
# key of at least one byte and a type (4); a tensor record is a name length (8), a name,
# n_dims (4), one dimension (8), a type (4) and an offset (8).
MIN_KV_BYTES = 8 + 1 + 4
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8
# Array elements across all metadata: a 262k-token vocabulary with its token types, scores
# and merges stays far below; each string element becomes a Python object (~60 bytes).
MAX_ARRAY_ELEMENTS = 1 << 22
# What the header's Python objects may take: half the file's size (the file's own map is the
# other half of a 2x bound), or this much for small files. Each record is charged an upper
# bound of its objects before they are made: a string its object and list or dict slot
# (76 bytes for one of 4-byte characters, +8) plus 4 bytes a character (k bytes of UTF-8 are
# at most k characters); a metadata entry its dict slot, key and value object; a tensor its
# name, shape, records and view. SmolLM2's header charges about a tenth of its half.
MIN_HEADER_MEMORY = 32 << 20
_STR_BYTES = 84
_ENTRY_BYTES = 200
_TENSOR_BYTES = 600
# Special token ids the tokenizer reads (others, such as padding, converters may set to
# 0xFFFFFFFF for "none").
_TOKEN_ID_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in ("bos", "eos", "unknown", "eot", "eom"))


@dataclass(frozen=True)
class GGUFModel:
    """A parsed GGUF file: metadata by key, tensors by name (views of the file's map)."""

    path: str
    metadata: dict[str, Any]
    tensors: dict[str, Weight]

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value the model cannot do without: its absence is a format error."""
        if key not in self.metadata:
            raise ModelFormatError(f"{self.path}: missing GGUF metadata key {key!r}")
        return self.metadata[key]

    def integer(self, key: str, default: int | None = None, lo: int = 1, hi: int = 1 << 31) -> int:
        """An integer hyperparameter in lo..hi; absent (without a default), of another type
        or out of range is a format error naming the key."""
        v = self.require(key) if default is None else self.metadata.get(key, default)
        if not _is_int(v) or not lo <= v <= hi:
            raise ModelFormatError(f"{self.path}: {key}: {v!r} is not an integer in {lo}..{hi}")
        return int(v)

    def number(self, key: str, default: float | None = None, lo: float = -math.inf, hi: float = math.inf) -> float:
        """A finite real hyperparameter in lo..hi (integers accepted)."""
        v = self.require(key) if default is None else self.metadata.get(key, default)
        if not (_is_int(v) or isinstance(v, (float, np.floating))) or not (math.isfinite(v) and lo <= v <= hi):
            raise ModelFormatError(f"{self.path}: {key}: {v!r} is not a finite number in {lo}..{hi}")
        return float(v)


class _Cursor:
    """Sequential little-endian reads over the mapped header."""

    def __init__(self, buf: mmap.mmap, budget: int) -> None:
        self.buf = buf
        self.pos = 0
        self.elements = 0  # array elements read so far
        self.memory = 0  # bytes charged for the objects made so far
        self.budget = budget

    def charge(self, nbytes: int) -> None:
        """Count `nbytes` of objects about to be made: past the budget, the field is refused."""
        self.memory += nbytes
        if self.memory > self.budget:
            raise _Bad("", f"the header's metadata would take more than {self.budget} bytes of memory "
                           f"(half the file's {len(self.buf)} bytes, at least {MIN_HEADER_MEMORY})")

    def scalar(self, vt: VT) -> Any:
        fmt = _SCALAR[vt]
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.scalar(VT.UINT64)
        if self.pos + n > len(self.buf):
            raise EOFError("string runs past the end of the file")
        self.charge(_STR_BYTES + 4 * n)
        s = self.buf[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise EOFError(f"{what} runs past the end of the file")

    def value(self, vt: VT, key: str) -> Any:
        if vt == VT.STRING:
            return self.string()
        if vt != VT.ARRAY:
            return self.scalar(vt)
        inner = VT(self.scalar(VT.UINT32))
        n = self.scalar(VT.UINT64)
        if inner == VT.ARRAY:
            # llama.cpp's gguf.cpp rejects arrays of arrays too; none of its keys holds one.
            raise _Bad(key, "nested arrays are not supported")
        self.elements += n
        if self.elements > MAX_ARRAY_ELEMENTS:
            raise _Bad(key, f"array of {n} elements exceeds the metadata limit of {MAX_ARRAY_ELEMENTS} in all")
        if inner in _NUMPY:
            # Numeric arrays (token types, scores) stay numpy views of the map.
            dt = np.dtype(_NUMPY[inner])
            self.need(n * dt.itemsize, f"array {key!r}")
            self.charge(_ENTRY_BYTES)
            arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos)
            self.pos += n * dt.itemsize
            return arr
        # Strings: each at least its 8-byte length, so a count the file cannot hold fails here.
        self.need(n * 8, f"array {key!r}")
        return self.strings(n)

    def strings(self, n: int) -> list[str]:
        """A string array in one tight loop: vocabularies hold ~50k to 250k entries. Each
        string is charged before it is made, so a bomb stops at the budget."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        length = _U64.unpack_from
        memory, budget = self.memory + _ENTRY_BYTES, self.budget
        out = []
        for _ in range(n):
            (k,) = length(buf, pos)
            pos += 8
            if pos + k > end:
                raise EOFError("string array runs past the end of the file")
            memory += _STR_BYTES + 4 * k
            if memory > budget:
                self.charge(memory - self.memory)  # raises
            out.append(buf[pos : pos + k].decode("utf-8", errors="replace"))
            pos += k
        self.pos, self.memory = pos, memory
        return out


class _Bad(Exception):
    """A header field with a value no GGUF file may hold: (field, reason)."""


def _as_weight(qtype: QType, ne: list[int], raw: np.ndarray) -> Weight:
    """Wrap one tensor's bytes in the kernels' weight types (rows = ne[1:], cols = ne[0])."""
    cols = ne[0]
    rows = math.prod(ne[1:])
    if qtype == QType.F32:
        arr = raw.view(np.float32)
        return arr if len(ne) == 1 else arr.reshape(rows, cols)
    if qtype == QType.F16:
        arr = raw.view(np.float16)
        # 1-D F16 vectors (norms in some conversions) are tiny; kernels want float32 there.
        return arr.astype(np.float32) if len(ne) == 1 else QTensor(qtype, (rows, cols), arr.reshape(rows, cols))
    t = QUANT_TYPES[qtype]
    return QTensor(qtype, (rows, cols), raw.reshape(rows, cols // t.block * t.size))


def read_gguf(path: str | os.PathLike) -> GGUFModel:
    """Memory-map a GGUF file and check every header field against the file before any
    tensor is touched. Raises ModelFormatError (one line, naming the file and the field) if
    the file is not GGUF, is truncated, or holds a value no GGUF file may hold."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ModelFormatError(f"{path}: not a GGUF file (only {size} bytes)")
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read model file ({e.strerror or e})") from e

    def bad(field: str, why: str) -> ModelFormatError:
        return ModelFormatError(f"{path}: {field}: {why}")

    cur = _Cursor(buf, max(size // 2, MIN_HEADER_MEMORY))
    magic = cur.scalar(VT.UINT32)
    if magic != GGUF_MAGIC:
        raise ModelFormatError(f"{path}: not a GGUF file (bad magic {bytes(buf[:4])!r})")
    field = "header"
    try:
        version = cur.scalar(VT.UINT32)
        if version not in (2, 3):
            raise ModelFormatError(f"{path}: unsupported GGUF version {version}")
        n_tensors = cur.scalar(VT.UINT64)
        n_kv = cur.scalar(VT.UINT64)
        if n_kv * MIN_KV_BYTES > size:
            raise bad("header", f"{n_kv} metadata entries cannot fit in a GGUF file of {size} bytes")
        if n_tensors * MIN_TENSOR_INFO_BYTES > size:
            raise bad("header", f"{n_tensors} tensors cannot fit in a GGUF file of {size} bytes")
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            field = f"metadata entry {i}"
            key = cur.string()
            if not key.isprintable():  # it goes into one-line messages
                raise bad(field, "key is not printable text")
            field = key
            if key in metadata:
                raise bad(key, "duplicate metadata key")
            cur.charge(_ENTRY_BYTES)
            metadata[key] = cur.value(VT(cur.scalar(VT.UINT32)), key)
        infos = []
        names: set[str] = set()
        for i in range(n_tensors):
            field = f"tensor {i}"
            name = cur.string()
            if not name.isprintable():
                raise bad(field, "name is not printable text")
            field = f"tensor {name}"
            if name in names:
                raise bad(field, "duplicate tensor name")
            names.add(name)
            cur.charge(_TENSOR_BYTES)
            n_dims = cur.scalar(VT.UINT32)
            if not 1 <= n_dims <= MAX_DIMS:
                raise bad(field, f"n_dims {n_dims} is not in 1..{MAX_DIMS}")
            ne = [cur.scalar(VT.UINT64) for _ in range(n_dims)]
            type_id = cur.scalar(VT.UINT32)
            infos.append((name, ne, type_id, cur.scalar(VT.UINT64)))
    except (struct.error, EOFError) as e:
        raise ModelFormatError(f"{path}: {field}: truncated GGUF header (file ends at byte {size})") from e
    except _Bad as e:
        raise bad(e.args[0] or field, e.args[1]) from e
    except ValueError as e:  # an unknown value type enum
        raise bad(field, f"corrupt GGUF header ({e})") from e

    align = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not _is_int(align) or align <= 0 or align & (align - 1) or align > size:
        raise bad("general.alignment", f"{align!r} is not a positive power of two")
    _check_vocabulary(metadata, bad)
    data_start = -(-cur.pos // align) * align
    whole = np.frombuffer(buf, dtype=np.uint8)
    tensors: dict[str, Weight] = {}
    for name, ne, type_id, offset in infos:
        field = f"tensor {name}"
        try:
            qtype = QType(type_id)
        except ValueError:
            raise bad(field, f"unknown tensor type {type_id}") from None
        if qtype not in WEIGHT_TYPES:
            supported = ", ".join(sorted(q.name for q in WEIGHT_TYPES))
            raise bad(field, f"type {qtype.name} is not supported (supported: {supported})")
        t = QUANT_TYPES[qtype]
        if min(ne) < 1:
            raise bad(field, f"shape {ne} has an empty dimension")
        if ne[0] % t.block:
            raise bad(field, f"row of {ne[0]} is not a multiple of {qtype.name}'s block of {t.block}")
        n_bytes = math.prod(ne) // t.block * t.size
        if offset % align:
            raise bad(field, f"offset {offset} is not a multiple of the alignment {align}")
        start = data_start + offset
        if start + n_bytes > size:
            raise bad(field, f"truncated GGUF file: data (shape {ne}, {qtype.name}) ends at byte "
                             f"{start + n_bytes}, the file has {size}")
        tensors[name] = _as_weight(qtype, ne, whole[start : start + n_bytes])
    return GGUFModel(path=path, metadata=metadata, tensors=tensors)


def _is_int(v: Any) -> bool:
    """An integer metadata value (bool is an int to Python, never to GGUF)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_vocabulary(metadata: dict[str, Any], bad) -> None:
    """The tokenizer.ggml arrays: types as llama.cpp reads them, per-token arrays as long as
    the token list, special token ids inside it."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is None:
        return
    if not isinstance(tokens, list) or not tokens:
        raise bad("tokenizer.ggml.tokens", "not a non-empty array of strings")
    n = len(tokens)
    for key, kinds in (("tokenizer.ggml.token_type", "iu"), ("tokenizer.ggml.scores", "f")):
        v = metadata.get(key)
        if v is None:
            continue
        if not isinstance(v, np.ndarray) or v.dtype.kind not in kinds:
            raise bad(key, "not an array of " + ("integers" if kinds == "iu" else "floats"))
        if len(v) != n:
            raise bad(key, f"has {len(v)} entries for {n} tokens")
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is not None and not isinstance(merges, list):
        raise bad("tokenizer.ggml.merges", "not an array of strings")
    for key in _TOKEN_ID_KEYS:
        v = metadata.get(key, -1)
        if not _is_int(v) or not -1 <= v < n:
            raise bad(key, f"{v!r} is not a token id below {n}")
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"):
        if key in metadata and not isinstance(metadata[key], str):
            raise bad(key, "not a string")
