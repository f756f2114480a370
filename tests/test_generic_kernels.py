"""The generic kernels (WHISPERLITE_GENERIC_KERNELS=1: the paths of CPUs without AVX2 and
F16C, such as ARM) against this machine's fast paths, each side in its own process.

Bit for bit where the design says so: float16 conversion either way is exact (F16C or bit
arithmetic, both round half to even), llama's ggml mode without AVX2 feeds the same Q8
integers, as floats, to the float-integer dots, whose sums are exact,  The Whisper
decoder's dots and attention are reassociated sums (fast-math) around float16 loads
(weights, the cross-attention cache) converted by different code, so LLVM may order them
differently: equal within float32 rounding. With AVX2
a block-quantized decoder quantizes activations to int8 (as ggml), without it it keeps
them in float32 (models/whisper_decoder.py): transcripts agree in tokens, text and word
times, probabilities within that rounding.

The full kernel suites under the switch are a separate pass: WHISPERLITE_GENERIC_KERNELS=1
python -m pytest tests/test_quant.py tests/test_matmul.py tests/test_decoder_step.py
tests/test_ops.py tests/test_llama_kernels.py tests/test_llama.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES, JFK_TEXT, Child, normalize

GENERIC = {"WHISPERLITE_GENERIC_KERNELS": "1"}


def kernel_outputs(tmp: Path) -> dict[str, np.ndarray]:
    """What the kernels that branch on AVX2/F16C compute on fixed inputs (run in a child)."""
    from gguf import GGMLQuantizationType as QType

    from llama_tiny import write_tiny_llama
    from test_decoder_step import AUDIO_CTX, STATE, VOCAB, random_decoder
    from whisperlite.formats.gguf import read_gguf
    from whisperlite.kernels import llvm_ir, mha
    from whisperlite.kernels.quant import dequantize
    from whisperlite.models.llama import Llama

    out = {"avx2": np.array(llvm_ir.HAS_AVX2), "f16c": np.array(llvm_ir.HAS_F16C)}
    every_f16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 32)
    out["f16_to_f32"] = dequantize(every_f16, QType.F16, every_f16.shape)
    rng = np.random.default_rng(0)
    # float32 values around every float16 range: normals, subnormals, halfway ties, overflow
    x = np.concatenate([rng.standard_normal(4000) * 10.0 ** rng.integers(-8, 6, 4000),
                        np.arange(-2048, 2048) + 0.5, np.arange(1, 33) * 2.0 ** -25,
                        [65504, 65519.99, 65520, 1e9, np.inf, -np.inf, np.nan, 0.0, -0.0]]).astype(np.float32)
    x = np.resize(x, 4096 + 32 * 4)[None, :]
    heads = np.empty((4, 1, x.shape[1] // 4), np.uint16)
    out["f32_to_f16"] = mha.split_heads(x, np.zeros(x.shape[1], np.float32), heads, 0).view(np.float16)
    for qtype in (QType.Q8_0, QType.Q4_1):  # ggml's Q8_0 and Q8_1 activations
        path = tmp / f"tiny-{qtype.name}.gguf"
        write_tiny_llama(path, qtype)
        model = Llama(read_gguf(path), ggml_exact=True)
        out[f"llama_ggml_{qtype.name}"] = model.forward([5, 80, 17, 200, 3, 44], model.new_cache(16), all_logits=True)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    for qtype, int8 in ((None, False), (QType.F16, False), (QType.Q5_0, False), (QType.Q5_0, True)):
        dec = random_decoder(qtype, int8=int8, cross_f16=True)
        cache = dec.new_cache(features, 2)
        steps = [dec.forward(np.array([[1, 2, 3], [4, 5, 6]]), cache)[0][:, -1].copy()]
        for t in range(3):
            steps.append(dec(np.array([[7 + t], [VOCAB - 1 - t]]), cache)[0][:, -1].copy())
        out[f"decoder_{qtype.name if qtype else 'F32'}_int8_{int8}"] = np.stack(steps)
    return out


def background_children(workdir: Path) -> list[Child]:
    """Each in a child of its own, this machine's paths, then the generic ones: the kernels
    on fixed inputs, then the README's transcription (greedy, JSON with words)."""
    kernels = [Child([sys.executable, __file__, str(workdir / f"{name}.npz")], env, Path(__file__).parent)
               for name, env in (("native", {}), ("generic", GENERIC))]
    jfk = [Child([sys.executable, "-m", "whisperlite", "transcribe", str(FIXTURES / "jfk.wav"), "-bs", "1", "-ojf",
                  "-of", str(workdir / name)], env) for name, env in (("native", {}), ("generic", GENERIC))]
    return kernels + jfk


@pytest.fixture(scope="module")
def both(background) -> tuple[dict, dict]:
    outputs = []
    for r in background.wait()[:2]:
        assert r.returncode == 0, r.stdout[-5000:]
        with np.load(r.args[-1]) as f:
            outputs.append(dict(f))
    return outputs[0], outputs[1]


@pytest.mark.slow
@pytest.mark.background
def test_switch_takes_the_generic_paths(both):
    native, generic = both
    assert not generic["avx2"] and not generic["f16c"]
    if not native["avx2"]:
        pytest.skip("this CPU has no AVX2: both runs took the generic paths")


@pytest.mark.slow
@pytest.mark.background
@pytest.mark.parametrize("name", ["f16_to_f32", "f32_to_f16", "llama_ggml_Q8_0", "llama_ggml_Q4_1"])
def test_bit_exact_where_the_design_says_so(both, name):
    native, generic = both
    assert np.array_equal(native[name], generic[name], equal_nan=True)


@pytest.mark.slow
@pytest.mark.background
@pytest.mark.parametrize("name", ["decoder_F32_int8_False", "decoder_F16_int8_False", "decoder_Q5_0_int8_False"])
def test_reassociated_dots_within_float32_rounding(both, name):
    native, generic = both
    a, b = native[name], generic[name]
    assert np.abs(a - b).max() < 1e-6 * np.abs(a).max() * a.shape[-1]


@pytest.mark.slow
@pytest.mark.background
def test_float16_conversions_equal_numpy(both):
    _, generic = both
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    np.testing.assert_array_equal(generic["f16_to_f32"].ravel(), every.astype(np.float32))


@pytest.mark.slow
@pytest.mark.background
def test_int8_decoder_within_activation_rounding(both):
    """Without AVX2 a block-quantized decoder keeps float activations: close, not equal."""
    native, generic = both
    a, b = native["decoder_Q5_0_int8_True"], generic["decoder_Q5_0_int8_True"]
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()
    assert np.array_equal(b, generic["decoder_Q5_0_int8_False"])  # int8 is ignored without AVX2


@pytest.mark.slow
@pytest.mark.background
def test_jfk_transcript_equals_the_fast_paths(background):
    """tiny.en is q5_0: same tokens, text and word times; probabilities within the int8
    activations' rounding."""
    runs = background.wait()[2:]
    for r in runs:
        assert r.returncode == 0, r.stdout[-3000:]
    native, generic = (json.loads(Path(r.args[-1]).with_suffix(".json").read_text()) for r in runs)
    assert generic["text"] == native["text"]
    assert normalize(native["text"]) == normalize(JFK_TEXT)
    for a, b in zip(native["segments"], generic["segments"], strict=True):
        assert (a["start"], a["end"], a["tokens"]) == (b["start"], b["end"], b["tokens"])
        assert [(w["word"], w["start"], w["end"]) for w in a["words"]] == [(w["word"], w["start"], w["end"]) for w in b["words"]]
        np.testing.assert_allclose(a["token_probs"], b["token_probs"], atol=0.02)


def test_switch_moves_numba_cache(monkeypatch):
    """Compiled kernels keep the path they were built for: the switch keys the cache."""
    from whisperlite.core import env

    monkeypatch.delenv("WHISPERLITE_GENERIC_KERNELS", raising=False)
    native = env.kernel_digest.__wrapped__()
    monkeypatch.setenv("WHISPERLITE_GENERIC_KERNELS", "1")
    assert env.kernel_digest.__wrapped__() != native


if __name__ == "__main__":
    dest = Path(sys.argv[1])
    np.savez(dest, **kernel_outputs(dest.parent))
