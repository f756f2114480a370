"""scripts/bench_sizes.py: each size's hyperparameters and its random-weight ggml files."""
from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from whisperlite.formats.checkpoint import preset_alignment_heads
from whisperlite.formats.ggml import expected_shapes, read_ggml, write_ggml
from whisperlite.kernels.tensor import QTensor

_spec = importlib.util.spec_from_file_location(
    "bench_sizes", Path(__file__).resolve().parent.parent / "scripts" / "bench_sizes.py")
bench_sizes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_sizes)


@pytest.mark.parametrize("size, millions", [("tiny", 39), ("base", 74), ("small", 244), ("medium", 769),
                                            ("large-v3-turbo", 809), ("large-v3", 1550)])
def test_sizes_have_the_published_parameter_counts(size, millions):
    """openai/whisper's model card counts (rounded up there: within 5 %); the dims decide every tensor's shape."""
    n = sum(int(np.prod(s)) for s in expected_shapes(bench_sizes.dims_for(size)).values())
    assert abs(n / 1e6 - millions) / millions < 0.05
    assert preset_alignment_heads(bench_sizes.dims_for(size)) is not None  # the dims name a known model


@pytest.mark.parametrize("ftype, qtype", [("f16", QType.F16), ("q5_0", QType.Q5_0)])
def test_random_checkpoint_round_trips_through_ggml(tmp_path, ftype, qtype):
    """large-v3-turbo's layout (128 mel bins, 51866 tokens, fewer decoder than encoder
    layers) at a small width: the file reads back with those dims, weights of the
    intended scale, finite, layer norms 1."""
    dims = replace(bench_sizes.dims_for("large-v3-turbo"), n_audio_ctx=16, n_text_ctx=8, n_audio_state=64,
                   n_audio_head=2, n_audio_layer=2, n_text_state=64, n_text_head=2, n_text_layer=1)
    ckpt = bench_sizes.random_checkpoint(dims, [bytes([i]) for i in range(256)])
    path = tmp_path / "random.bin"
    write_ggml(ckpt, path, ftype)
    back = read_ggml(path)
    assert back.dims == dims
    q = back.weights["encoder.blocks.1.attn.query.weight"]
    assert isinstance(q, QTensor) and q.qtype == qtype
    assert abs(q.dequantize().std() - bench_sizes.WEIGHT_STD) < 0.002
    assert np.all(back.weights["decoder.blocks.0.cross_attn_ln.weight"] == 1)
    assert np.all(back.weights["encoder.ln_post.weight"] == 1)
    assert np.all(back.weights["decoder.ln.bias"] == 0)
