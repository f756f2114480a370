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


class _Cursor:
    """Sequential little-endian reads over the mapped header."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def scalar(self, vt: VT) -> Any:
        fmt = _SCALAR[vt]
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.scalar(VT.UINT64)
        if self.pos + n > len(self.buf):
            raise EOFError("string runs past the end of the file")
        s = self.buf[self.pos : self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def value(self, vt: VT) -> Any:
        if vt == VT.STRING:
            return self.string()
        if vt == VT.ARRAY:
            inner = VT(self.scalar(VT.UINT32))
            n = self.scalar(VT.UINT64)
            if inner in _NUMPY:
                # Numeric arrays (token types, scores) stay numpy views of the map.
                dt = np.dtype(_NUMPY[inner])
                arr = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos)
                self.pos += n * dt.itemsize
                return arr
            if inner == VT.STRING:
                return self.strings(n)
            return [self.value(inner) for _ in range(n)]
        return self.scalar(vt)

    def strings(self, n: int) -> list[str]:
        """A string array in one tight loop: vocabularies hold ~50k to 250k entries."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        length = _U64.unpack_from
        out = []
        for _ in range(n):
            (k,) = length(buf, pos)
            pos += 8
            out.append(buf[pos : pos + k])
            pos += k
        if pos > end:
            raise EOFError("string array runs past the end of the file")
        self.pos = pos
        return [b.decode("utf-8", errors="replace") for b in out]


def _as_weight(path: str, name: str, qtype: QType, ne: list[int], raw: np.ndarray) -> Weight:
    """Wrap one tensor's bytes in the kernels' weight types (rows = ne[1:], cols = ne[0])."""
    cols = ne[0]
    rows = int(np.prod(ne[1:])) if len(ne) > 1 else 1
    if qtype == QType.F32:
        arr = raw.view(np.float32)
        return arr if len(ne) == 1 else arr.reshape(rows, cols)
    if qtype == QType.F16:
        arr = raw.view(np.float16)
        # 1-D F16 vectors (norms in some conversions) are tiny; kernels want float32 there.
        return arr.astype(np.float32) if len(ne) == 1 else QTensor(qtype, (rows, cols), arr.reshape(rows, cols))
    block, type_size = GGML_QUANT_SIZES[qtype]
    return QTensor(qtype, (rows, cols), raw.reshape(rows, cols // block * type_size))


def read_gguf(path: str | os.PathLike) -> GGUFModel:
    """Memory-map a GGUF file. Raises ModelFormatError (one line, naming the file) if the
    file is not GGUF, is truncated, or describes tensors it does not contain."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise ModelFormatError(f"{path}: not a GGUF file (only {size} bytes)")
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read model file ({e.strerror or e})") from e

    cur = _Cursor(buf)
    magic = cur.scalar(VT.UINT32)
    if magic != GGUF_MAGIC:
        raise ModelFormatError(f"{path}: not a GGUF file (bad magic {bytes(buf[:4])!r})")
    try:
        version = cur.scalar(VT.UINT32)
        if version not in (2, 3):
            raise ModelFormatError(f"{path}: unsupported GGUF version {version}")
        n_tensors = cur.scalar(VT.UINT64)
        n_kv = cur.scalar(VT.UINT64)
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(VT(cur.scalar(VT.UINT32)))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar(VT.UINT32)
            ne = [cur.scalar(VT.UINT64) for _ in range(n_dims)]
            qtype = QType(cur.scalar(VT.UINT32))
            infos.append((name, ne, qtype, cur.scalar(VT.UINT64)))
    except (struct.error, EOFError) as e:
        raise ModelFormatError(f"{path}: truncated GGUF header (file ends at byte {size})") from e
    except ValueError as e:  # an unknown value or tensor type enum
        raise ModelFormatError(f"{path}: corrupt GGUF header ({e})") from e

    align = int(metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT))
    data_start = -(-cur.pos // align) * align
    whole = np.frombuffer(buf, dtype=np.uint8)
    tensors: dict[str, Weight] = {}
    for name, ne, qtype, offset in infos:
        block, type_size = GGML_QUANT_SIZES[qtype]
        if ne[0] % block:
            raise ModelFormatError(f"{path}: tensor {name} row of {ne[0]} is not a multiple of {block}")
        n_bytes = int(np.prod(ne)) // block * type_size
        start = data_start + offset
        if start + n_bytes > size:
            raise ModelFormatError(
                f"{path}: truncated GGUF file (tensor {name} ends at byte {start + n_bytes}, file has {size})"
            )
        tensors[name] = _as_weight(path, name, qtype, ne, whole[start : start + n_bytes])
    return GGUFModel(path=path, metadata=metadata, tensors=tensors)
