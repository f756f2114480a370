"""PyTorch checkpoints (`torch.save`) read without torch and without running their pickles.

A `.pt` file is a pickle whose tensors point into raw storages: in the legacy stream format
(torch < 1.6, as resemblyzer's `pretrained.pt`) the storages follow the pickles in the same
file, each as an int64 element count and its bytes; in the zip format (torch >= 1.6) the pickle
is `*/data.pkl` and each storage is a member `*/data/KEY`. A pickle can name any importable
callable, so the unpickler here resolves only the few names a state dict needs — an
OrderedDict, `torch._utils._rebuild_tensor_v2` and the typed storage classes — to inert
stand-ins, and refuses every other name with one line. Tensors come out as read-only numpy
views of the storages, after their offset, shape and strides are checked against the
storage's size.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisperlite.core.errors import ModelFormatError

# The legacy format's first pickle (torch/serialization.py MAGIC_NUMBER) and protocol version.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# Storage classes by name, and the dtype of their elements (torch's typed storages).
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
MAX_PICKLE_BYTES = 16 << 20  # a state dict's pickle holds names and shapes only


@dataclass(frozen=True)
class _StorageType:
    """Stands for `torch.FloatStorage` & co.: only its element type is used."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id: which storage, of what type and element count."""

    key: str
    type: _StorageType
    numel: int | None  # the legacy format's count; the zip format's is its member's size


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it, before its storage is read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, offset: Any, shape: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, _StorageRef):
        raise ModelFormatError("tensor without a storage")
    for what, value in (("shape", shape), ("stride", stride)):
        if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
            raise ModelFormatError(f"tensor {what} {value!r} is not a tuple of sizes")
    if not isinstance(offset, int) or offset < 0 or len(shape) != len(stride):
        raise ModelFormatError(f"tensor offset {offset!r} or rank is malformed")
    return TensorRef(storage, offset, shape, stride)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict needs; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ModelFormatError(f"refused to load '{module}.{name}': a checkpoint holds tensors only") from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ('storage', storage type, key, location, element count[, view metadata])
        if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)):
            raise ModelFormatError(f"unexpected persistent id {str(pid)[:60]}")
        numel = pid[4] if isinstance(pid[4], int) and pid[4] >= 0 else None
        return _StorageRef(pid[2], pid[1], numel)


def _load_pickle(data: io.BufferedIOBase | io.BytesIO, what: str) -> Any:
    try:
        return _StateDictUnpickler(data).load()
    except ModelFormatError as e:
        raise ModelFormatError(f"{what}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RecursionError, MemoryError, struct.error, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{what}: not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:80]})") from None


def _tensors(obj: Any, out: dict[int, TensorRef]) -> None:
    """Every TensorRef inside containers (by identity), to know which storages are used."""
    if isinstance(obj, TensorRef):
        out[id(obj)] = obj
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensors(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensors(v, out)


def _view(ref: TensorRef, storage: np.ndarray, name: str) -> np.ndarray:
    """The tensor as a read-only view of its storage, after checking it lies inside it."""
    if not ref.shape:
        last = ref.offset
    elif 0 in ref.shape:
        return np.zeros(ref.shape, storage.dtype)
    else:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if last >= len(storage):
        raise ModelFormatError(f"{name}: tensor {ref.shape} at offset {ref.offset} lies outside its storage "
                               f"of {len(storage)} elements")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[ref.offset:], ref.shape, tuple(s * item for s in ref.stride),
                                           writeable=False)
    return view


def _legacy_storages(fh: io.BufferedIOBase, refs: list[TensorRef], size: int, what: str) -> dict[str, np.ndarray]:
    keys = _load_pickle(fh, what)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ModelFormatError(f"{what}: malformed storage key list")
    types = {r.storage.key: r.storage for r in refs}
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFormatError(f"{what}: truncated (storage {key} is missing)")
        (numel,) = struct.unpack("<q", head)
        ref = types.get(key)
        if ref is None:  # its element size is unknown: the storages after it cannot be found
            raise ModelFormatError(f"{what}: storage {key} belongs to no tensor")
        dtype = ref.type.dtype
        nbytes = numel * dtype.itemsize
        if numel < 0 or fh.tell() + nbytes > size or ref.numel not in (None, numel):
            raise ModelFormatError(f"{what}: truncated or corrupt (storage {key} of {numel} elements)")
        data = fh.read(nbytes)
        storages[key] = np.frombuffer(data, dtype)
    return storages


def read_state(path: str | Path) -> Any:
    """A `torch.save` file → its object, with every tensor a read-only numpy array.

    Raises ModelFormatError (one line) for anything but a plain object of containers, numbers
    and tensors, and for a truncated or inconsistent file."""
    p = Path(path)
    what = str(p)
    try:
        size = p.stat().st_size
        if zipfile.is_zipfile(p):
            return _read_zip(p, what)
        with open(p, "rb") as fh:
            magic = _load_pickle(fh, what)
            if magic != LEGACY_MAGIC:
                raise ModelFormatError(f"{what}: not a PyTorch checkpoint (bad magic number)")
            if _load_pickle(fh, what) != LEGACY_PROTOCOL:
                raise ModelFormatError(f"{what}: unsupported PyTorch serialization protocol")
            _load_pickle(fh, what)  # system info: endianness and type sizes
            start = fh.tell()
            obj = _load_pickle(fh, what)
            if fh.tell() - start > MAX_PICKLE_BYTES:
                raise ModelFormatError(f"{what}: pickle larger than a state dict's")
            found: dict[int, TensorRef] = {}
            _tensors(obj, found)
            storages = _legacy_storages(fh, list(found.values()), size, what)
    except OSError as e:
        raise ModelFormatError(f"{what}: cannot read ({e.strerror or e})") from None
    return _resolve(obj, storages, what)


def _read_zip(p: Path, what: str) -> Any:
    try:
        with zipfile.ZipFile(p) as z:
            pkls = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise ModelFormatError(f"{what}: not a PyTorch checkpoint (no data.pkl)")
            prefix = pkls[0][: -len("data.pkl")]
            if z.getinfo(pkls[0]).file_size > MAX_PICKLE_BYTES:
                raise ModelFormatError(f"{what}: pickle larger than a state dict's")
            obj = _load_pickle(io.BytesIO(z.read(pkls[0])), what)
            found: dict[int, TensorRef] = {}
            _tensors(obj, found)
            storages: dict[str, np.ndarray] = {}
            for ref in found.values():
                key = ref.storage.key
                if key in storages:
                    continue
                member = f"{prefix}data/{key}"
                try:
                    info = z.getinfo(member)
                except KeyError:
                    raise ModelFormatError(f"{what}: storage {key} is missing") from None
                dtype = ref.storage.type.dtype
                if info.file_size % dtype.itemsize or info.file_size > p.stat().st_size * 64:
                    raise ModelFormatError(f"{what}: storage {key} has {info.file_size} bytes, not whole elements")
                storages[key] = np.frombuffer(z.read(member), dtype)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise ModelFormatError(f"{what}: truncated or corrupt zip checkpoint ({str(e)[:80]})") from None
    return _resolve(obj, storages, what)


def _resolve(obj: Any, storages: dict[str, np.ndarray], what: str, name: str = "") -> Any:
    if isinstance(obj, TensorRef):
        storage = storages.get(obj.storage.key)
        if storage is None:
            raise ModelFormatError(f"{what}: storage {obj.storage.key} of {name or 'a tensor'} is missing")
        return _view(obj, storage, f"{what}: {name}")
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, storages, what, f"{name}.{k}" if name else str(k))) for k, v in obj.items())
    if isinstance(obj, list):
        return [_resolve(v, storages, what, name) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, storages, what, name) for v in obj)
    return obj


def state_dict(path: str | Path, key: str | None = None,
               expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint's state dict (the whole object, or its entry `key`), as
    float32 arrays; with `expected`, exactly those names with those shapes are required."""
    obj = read_state(path)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ModelFormatError(f"{path}: no '{key}' in the checkpoint")
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ModelFormatError(f"{path}: the checkpoint is not a state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if expected is not None:
        for name, shape in expected.items():
            if name not in tensors:
                raise ModelFormatError(f"{path}: tensor {name} is missing")
            if tensors[name].shape != shape:
                raise ModelFormatError(f"{path}: tensor {name} has shape {tensors[name].shape}, expected {shape}")
        tensors = {name: tensors[name] for name in expected}
    out = {}
    for name, t in tensors.items():
        if t.dtype.kind != "f":
            raise ModelFormatError(f"{path}: tensor {name} is {t.dtype}, not floating point")
        a = np.ascontiguousarray(t, dtype=np.float32)
        if not np.isfinite(a).all():
            raise ModelFormatError(f"{path}: tensor {name} holds NaN or infinite values")
        a.flags.writeable = False
        out[name] = a
    return out
