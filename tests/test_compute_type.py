"""Compute types: which decoder matrices each one holds quantized."""
import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.registry import loader
from whisperlite.kernels import QTensor
from whisperlite.kernels.quant import quantize
from whisperlite.models.whisper import Whisper


def _qtype(w):
    return QType(w.qtype) if isinstance(w, QTensor) else None


def test_auto_quantizes_only_the_vocabulary_projection():
    stored = loader.read_checkpoint(loader.resolve("tiny.en"))
    auto = loader.apply_compute_type(stored, "auto")
    assert _qtype(auto.weights[loader.EMBEDDING]) == QType.Q8_0
    for key, w in auto.weights.items():
        if key != loader.EMBEDDING:
            assert w is stored.weights[key], key  # layers exactly as stored, not copied
    # the fused step takes the mixed types (float16 layers, Q8_0 vocabulary)
    assert Whisper(auto).decoder.step_weights is not None


def test_q8_0_and_f32():
    stored = loader.read_checkpoint(loader.resolve("tiny.en"))
    q8 = loader.apply_compute_type(stored, "q8_0")
    assert _qtype(q8.weights["decoder.blocks.0.mlp.0.weight"]) == QType.Q8_0
    assert _qtype(q8.weights["encoder.blocks.0.mlp.0.weight"]) != QType.Q8_0  # the encoder stays float
    f32 = loader.apply_compute_type(stored, "f32")
    assert not any(isinstance(w, QTensor) for w in f32.weights.values())



def test_q8_0_in_row_slices_equals_the_whole_matrix(monkeypatch):
    """The embedding is quantized a slice of rows at a time: the same blocks as at once."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((101, 64)).astype(np.float32)
    half = w.astype(np.float16)
    monkeypatch.setattr(loader, "_QUANT_SLICE_VALUES", 7 * 64)  # slices of 7 rows, the last of 3
    for src, ref in ((w, w), (QTensor(QType.F16, w.shape, half), half.astype(np.float32))):
        got = loader._quantize_q8_0(src)
        assert got.shape == w.shape and np.array_equal(got.data, quantize(ref, QType.Q8_0))


def test_quantized_matrix_is_cached_per_model_file(tmp_path, monkeypatch):
    """The Q8_0 copy is made once (the same bytes as quant.quantize) and mapped read-only
    from the cache at the next load; a changed model file gets a copy of its own."""
    monkeypatch.setattr(loader._env, "CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model.bin"
    model.write_bytes(b"one")
    w = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float16)
    src = QTensor(QType.F16, w.shape, w)
    made = loader._cached_q8_0(model, lambda: None)("emb", src)
    assert np.array_equal(made.data, quantize(w.astype(np.float32), QType.Q8_0))
    again = loader._cached_q8_0(model, lambda: None)("emb", src)
    assert np.array_equal(again.data, made.data)
    assert not again.data.flags.writeable and not made.data.flags.writeable  # one kernel type either way
    assert len(list((tmp_path / "cache" / "quantized").iterdir())) == 1
    model.write_bytes(b"other")
    loader._cached_q8_0(model, lambda: None)("emb", src)
    assert len(list((tmp_path / "cache" / "quantized").iterdir())) == 2


def test_quantized_matrix_without_a_writable_cache(tmp_path, monkeypatch):
    """A cache that cannot be written to: the matrix is quantized all the same, no file left."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(loader._env, "CACHE_DIR", str(blocker / "cache"))  # no directory inside a file
    w = np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)
    got = loader._cached_q8_0(blocker, lambda: None)("emb", w)
    assert np.array_equal(got.data, quantize(w, QType.Q8_0))
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
