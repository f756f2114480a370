"""Resident memory of a loaded model, measured in a fresh process, and of a model file's
mapping while the model is read and built (Linux /proc)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import FIXTURES
from gguf import GGMLQuantizationType as QType

from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.formats.ggml import expected_shapes, read_ggml, write_ggml
from whisperlite.kernels.tensor import QTensor
from whisperlite.models.whisper import Whisper
from whisperlite.registry.loader import apply_compute_type

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")

# Run in a child: the test process has other models and buffers resident.
_CHILD = r"""
import json, sys
import whisperlite
from whisperlite.audio.ffmpeg import load_audio

def resident_mb():
    # resident pages of each mapped file of interest, from this process's smaps
    mb, name = {"model.bin": 0.0, "libllvmlite.so": 0.0}, None
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            name = next((n for n in mb if line.rstrip().endswith(n)), None)
        elif name and first == "Rss:":
            mb[name] += int(line.split()[1]) / 1024
    return mb

m = whisperlite.load_model("tiny.en", threads=2)
loaded = resident_mb()
segments, _ = m.transcribe(load_audio(sys.argv[1]), beam_size=1, vad=False, word_timestamps=False)
text = " ".join(s.text for s in segments)
print(json.dumps({"loaded": loaded, "transcribed": resident_mb(), "text": text}))
"""


@pytest.fixture(scope="module")
def resident():
    """Resident MB of model.bin and libllvmlite.so after load_model and after a transcription."""
    for _ in range(2):  # the first run compiles any kernel numba's cache lacks, in LLVM
        out = subprocess.run([sys.executable, "-c", _CHILD, str(FIXTURES / "jfk.wav")], check=False,
                             capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.splitlines()[-1])
    assert "ask not what your country can do for you" in r["text"]
    return r


@pytest.mark.slow
def test_model_file_pages_are_not_kept_resident(resident):
    """tiny.en's model.bin is 75 MB; once the model is built, only the float16 matrices read
    in place come back as they are used: the decoder's (about 13 MB). The encoder's are
    released again after each window once converted to its float32 operands."""
    assert resident["loaded"]["model.bin"] < 5
    assert resident["transcribed"]["model.bin"] < 18


def test_compiler_code_is_not_kept_resident(resident):
    """numba runs ~70 MB of LLVM's code to load the kernels; decoding does not need it."""
    assert resident["loaded"]["libllvmlite.so"] < 10
    assert resident["transcribed"]["libllvmlite.so"] < 30


def _mapped_mb(path) -> float:
    """Resident MB of this process's mappings of `path`."""
    mb, inside = 0.0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            mb += int(line.split()[1]) / 1024
    return mb


@pytest.fixture(scope="module")
def random_ggml(tmp_path_factory):
    """A 16 MB f16 ggml file: 2 + 2 layers of width 256 and a 16k-token vocabulary."""
    dims = WhisperDims(n_mels=80, n_audio_ctx=64, n_audio_state=256, n_audio_head=4, n_audio_layer=2,
                       n_vocab=16384, n_text_ctx=32, n_text_state=256, n_text_head=4, n_text_layer=2)
    rng = np.random.default_rng(0)
    weights = {}
    for name, shape in expected_shapes(dims).items():
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        matrix = len(shape) == 2 and "positional" not in name  # positions stay float32 in ggml files
        weights[name] = QTensor(QType.F16, shape, w.astype(np.float16)) if matrix else w
    ckpt = WhisperCheckpoint(dims=dims, weights=weights, token_bytes=[bytes([i]) for i in range(256)],
                             extra={"mel_filters": np.zeros((80, 201), np.float32)})
    path = tmp_path_factory.mktemp("ggml") / "random-f16.bin"
    write_ggml(ckpt, path, "f16")
    return path


def test_reading_a_ggml_file_leaves_its_pages_released(random_ggml):
    """The finite check reads every page; each tensor's pages are dropped once it is checked,
    so the whole file is never resident beside what the model builds from it."""
    ckpt = read_ggml(random_ggml)
    size_mb = random_ggml.stat().st_size / 2**20
    assert size_mb > 15
    assert _mapped_mb(random_ggml) < 1  # the header, vocabulary and pages shared by two tensors
    assert np.isfinite(ckpt.weights["decoder.token_embedding.weight"].data).all()  # pages fault back in


def test_building_the_model_releases_what_it_copied(random_ggml):
    """With every page faulted in, building the model (fused query|key|value rows, the Q8_0
    vocabulary projection) ends with the file's pages released: they are dropped block by
    block and slice by slice, not kept beside the copies."""
    ckpt = read_ggml(random_ggml)
    for w in ckpt.weights.values():
        np.asarray(getattr(w, "data", w)).sum()  # fault in every page
    assert _mapped_mb(random_ggml) > 15
    model = Whisper(apply_compute_type(ckpt, "auto"))
    assert model.decoder.token_embedding.qtype.name == "Q8_0"
    assert _mapped_mb(random_ggml) < 1


def test_a_window_leaves_the_encoders_matrices_released(random_ggml):
    """The encoder reads each stored matrix once per window (into its float32 operands) and
    keeps no fused copy of them: after a window none of the file's pages stays resident, so
    between windows the encoder holds no weights beside the decoder's."""
    ckpt = read_ggml(random_ggml)
    model = Whisper(ckpt)
    assert all(isinstance(layer.qkv, tuple) for layer in model.encoder.layers)  # no fused copy
    dims = model.dims
    features = model.encoder(np.zeros((dims.n_mels, 2 * dims.n_audio_ctx), np.float32))
    assert np.isfinite(features).all()
    assert _mapped_mb(random_ggml) < 1
