"""The PyTorch checkpoint reader: tensors out, nothing else in (no torch installed)."""
import collections
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

from whisperlite.core.errors import ModelFormatError
from whisperlite.formats import torch_pt
from whisperlite.models.speaker_encoder import SpeakerEncoderDims
from whisperlite.registry import hub


class _Storage:
    def __init__(self, key, data):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride)

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict()))


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named as torch's, so that pickle writes the globals a real checkpoint holds."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_cls = type("FloatStorage", (), {"__module__": "torch", "__qualname__": "FloatStorage"})
    torch.FloatStorage = storage_cls

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return storage_cls


class _Pickler(pickle.Pickler):
    def __init__(self, fh, storage_cls):
        super().__init__(fh, protocol=2)
        self.storage_cls = storage_cls

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", self.storage_cls, obj.key, "cpu", len(obj.data))
        return None


def _state(storages):
    a, b = storages
    return {"step": 3, "model_state": collections.OrderedDict([
        ("w", _Tensor(a, 0, (2, 3), (3, 1))),
        ("wt", _Tensor(a, 0, (3, 2), (1, 3))),  # a transposed view of the same storage
        ("b", _Tensor(b, 1, (2,), (1,))),
    ])}


def _storages():
    return _Storage("0", np.arange(6, dtype=np.float32)), _Storage("1", np.array([9, 7, 8], np.float32))


def write_legacy(path, storage_cls, state=None, storages=None):
    storages = storages or _storages()
    buf = io.BytesIO()
    for header in (torch_pt.LEGACY_MAGIC, torch_pt.LEGACY_PROTOCOL, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    _Pickler(buf, storage_cls).dump(state if state is not None else _state(storages))
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(np.int64(len(s.data)).tobytes() + s.data.tobytes())
    path.write_bytes(buf.getvalue())
    return path


def write_zip(path, storage_cls):
    storages = _storages()
    buf = io.BytesIO()
    _Pickler(buf, storage_cls).dump(_state(storages))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data.tobytes())
    return path


@pytest.mark.parametrize("writer", [write_legacy, write_zip])
def test_reads_tensors_as_views_of_their_storages(writer, fake_torch, tmp_path):
    path = writer(tmp_path / "ckpt.pt", fake_torch)
    for name in ("torch", "torch._utils"):
        sys.modules.pop(name)  # read as without torch
    obj = torch_pt.read_state(path)
    assert obj["step"] == 3
    state = obj["model_state"]
    np.testing.assert_array_equal(state["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(state["wt"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
    np.testing.assert_array_equal(state["b"], [7, 8])
    assert not state["w"].flags.writeable
    tensors = torch_pt.state_dict(path, "model_state", {"w": (2, 3), "b": (2,)})
    assert set(tensors) == {"w", "b"} and tensors["w"].dtype == np.float32


def _one_line_error(path, match=None):
    with pytest.raises(ModelFormatError) as e:
        torch_pt.read_state(path)
    assert "\n" not in str(e.value)
    if match:
        assert match in str(e.value)
    return str(e.value)


def test_refuses_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    legacy = io.BytesIO()
    for header in (torch_pt.LEGACY_MAGIC, torch_pt.LEGACY_PROTOCOL, {}):
        pickle.dump(header, legacy, protocol=2)
    (tmp_path / "evil.pt").write_bytes(legacy.getvalue() + payload)
    _one_line_error(tmp_path / "evil.pt", "refused to load 'os.system'")
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("archive/data.pkl", payload)
    _one_line_error(tmp_path / "evil.zip", "refused to load 'os.system'")
    assert not marker.exists()


@pytest.mark.parametrize("global_", [b"builtins\neval", b"torch.nn.modules.linear\nLinear", b"torch\nload",
                                     b"numpy.core.multiarray\n_reconstruct", b"__builtin__\ngetattr"])
def test_refuses_every_other_global(global_, tmp_path):
    with zipfile.ZipFile(tmp_path / "x.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02c" + global_ + b"\n)R.")
    _one_line_error(tmp_path / "x.pt", "refused to load")


def test_refuses_objects_built_with_reduce_on_allowed_names(fake_torch, tmp_path):
    # the storage class is a marker: calling it (REDUCE) builds nothing usable
    state = {"model_state": {"x": _Tensor("not a storage", 0, (1,), (1,))}}
    path = write_legacy(tmp_path / "x.pt", fake_torch, state=state, storages=[])
    _one_line_error(path, "tensor without a storage")


def test_tensor_outside_its_storage_is_refused(fake_torch, tmp_path):
    s = _Storage("0", np.zeros(4, np.float32))
    path = write_legacy(tmp_path / "x.pt", fake_torch, state={"w": _Tensor(s, 2, (2, 2), (2, 1))}, storages=[s])
    _one_line_error(path, "outside its storage")


def test_every_truncation_is_one_line(fake_torch, tmp_path):
    data = write_legacy(tmp_path / "full.pt", fake_torch).read_bytes()
    cut = tmp_path / "cut.pt"
    for n in sorted({0, 1, 8, 30, 60, 100, len(data) // 2, len(data) - 9, len(data) - 1, *range(0, len(data), 37)}):
        cut.write_bytes(data[:n])
        _one_line_error(cut)


def test_corrupt_bytes_never_escape_as_other_errors(fake_torch, tmp_path):
    data = bytearray(write_legacy(tmp_path / "full.pt", fake_torch).read_bytes())
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.pt"
    for _ in range(300):
        mutated = bytearray(data)
        for at in rng.integers(0, len(data), 3):
            mutated[at] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(mutated))
        try:
            torch_pt.read_state(bad)
        except ModelFormatError as e:
            assert "\n" not in str(e)


def test_shapes_are_checked(fake_torch, tmp_path):
    path = write_legacy(tmp_path / "x.pt", fake_torch)
    with pytest.raises(ModelFormatError, match=r"tensor w has shape \(2, 3\), expected \(3, 3\)"):
        torch_pt.state_dict(path, "model_state", {"w": (3, 3)})
    with pytest.raises(ModelFormatError, match="tensor lstm.weight_ih_l0 is missing"):
        torch_pt.state_dict(path, "model_state", SpeakerEncoderDims().shapes())


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"hello world, not a pickle")
    _one_line_error(tmp_path / "x.pt")
    _one_line_error(tmp_path / "missing.pt", "cannot read")


@pytest.mark.skipif(not hub.is_cached("resemblyzer"), reason="resemblyzer not pulled")
def test_resemblyzer_checkpoint():
    tensors = torch_pt.state_dict(hub.cached_path("resemblyzer"), "model_state", SpeakerEncoderDims().shapes())
    assert tensors["lstm.weight_ih_l0"].shape == (1024, 40)
    assert all(np.isfinite(t).all() for t in tensors.values())
    assert os.path.getsize(hub.cached_path("resemblyzer")) == hub.MODELS["resemblyzer"].files[0].size
