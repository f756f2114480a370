"""A tiny random LLaMA written as GGUF with gguf.GGUFWriter, and a plain numpy forward pass
to check whisperlite's against. Shared by the llama/gguf/CLI tests."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QType
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize

from whisperlite.kernels import get_threads, set_threads
from whisperlite.tokenizer.llama import _gpt2_byte_chars

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "Ġ w", "o r", "he ll", "hell o"]  # enough to exercise BPE merging
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyDims:
    n_embd: int = 128
    n_ff: int = 256
    n_layer: int = 2
    n_head: int = 2
    n_head_kv: int = 1
    n_ctx: int = 64
    rope_base: float = 10000.0
    eps: float = 1e-5


def tiny_vocab() -> tuple[list[str], list[int]]:
    tokens = SPECIALS + _gpt2_byte_chars() + ["".join(m.split(" ")) for m in MERGES]
    types = [3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS))
    return tokens, types


def weight_writers(w: GGUFWriter, qtype: QType, rng: np.random.Generator, stored: dict[str, np.ndarray]):
    """matrix(name, rows, cols, scale) and vector(name, n) adding random tensors to `w`
    (matrices as `qtype`, vectors float32 near 1), each as stored into `stored`."""

    def matrix(name: str, rows: int, cols: int, scale: float) -> None:
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if qtype == QType.F32:
            w.add_tensor(name, a)
            stored[name] = a
        elif qtype == QType.F16:
            w.add_tensor(name, a.astype(np.float16))
            stored[name] = a.astype(np.float16).astype(np.float32)
        else:
            q = quantize(a, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
            stored[name] = dequantize(q, qtype).reshape(rows, cols)

    def vector(name: str, n: int) -> None:
        v = (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
        w.add_tensor(name, v)
        stored[name] = v

    return matrix, vector


def write_tiny_llama(path: Path, qtype: QType = QType.F32, arch: str = "llama", seed: int = 0,
                     dims: TinyDims = TinyDims()) -> dict[str, np.ndarray]:
    """Write the model; returns the float32 weights as stored (after quantization round trip)."""
    rng = np.random.default_rng(seed)
    tokens, types = tiny_vocab()
    hd = dims.n_embd // dims.n_head
    w = GGUFWriter(str(path), arch)
    w.add_block_count(dims.n_layer)
    w.add_context_length(dims.n_ctx)
    w.add_embedding_length(dims.n_embd)
    w.add_feed_forward_length(dims.n_ff)
    w.add_head_count(dims.n_head)
    w.add_head_count_kv(dims.n_head_kv)
    w.add_rope_freq_base(dims.rope_base)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(dims.eps)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    stored: dict[str, np.ndarray] = {}
    matrix, vector = weight_writers(w, qtype, rng, stored)
    e, f, kv = dims.n_embd, dims.n_ff, dims.n_head_kv * hd
    matrix("token_embd.weight", len(tokens), e, 0.5)
    for i in range(dims.n_layer):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", e)
        matrix(p + "attn_q.weight", e, e, e ** -0.5)
        matrix(p + "attn_k.weight", kv, e, e ** -0.5)
        matrix(p + "attn_v.weight", kv, e, e ** -0.5)
        matrix(p + "attn_output.weight", e, e, e ** -0.5)
        vector(p + "ffn_norm.weight", e)
        matrix(p + "ffn_gate.weight", f, e, e ** -0.5)
        matrix(p + "ffn_up.weight", f, e, e ** -0.5)
        matrix(p + "ffn_down.weight", e, f, f ** -0.5)
    vector("output_norm.weight", e)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def reference_forward(wts: dict[str, np.ndarray], ids: list[int], dims: TinyDims = TinyDims()) -> np.ndarray:
    """Plain float64 LLaMA, all positions: logits (n, vocab). K, V, Q and the attention
    probabilities are rounded to float16 where llama.cpp's f16 KV cache rounds them."""
    r16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    hd = dims.n_embd // dims.n_head
    n = len(ids)

    def norm(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + dims.eps) * g

    def rope(x: np.ndarray) -> np.ndarray:  # x (n, heads, hd); pairs (2i, 2i+1)
        inv = dims.rope_base ** (-np.arange(0, hd, 2) / hd)
        ang = np.arange(n)[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        out = x.copy()
        out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
        return out

    x = wts["token_embd.weight"][ids].astype(np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    group = dims.n_head // dims.n_head_kv
    for i in range(dims.n_layer):
        p = f"blk.{i}."
        h = norm(x, wts[p + "attn_norm.weight"])
        q = rope((h @ wts[p + "attn_q.weight"].T).reshape(n, dims.n_head, hd))
        k = r16(rope((h @ wts[p + "attn_k.weight"].T).reshape(n, dims.n_head_kv, hd)))
        v = r16((h @ wts[p + "attn_v.weight"].T).reshape(n, dims.n_head_kv, hd))
        out = np.empty((n, dims.n_head, hd))
        for hh in range(dims.n_head):
            s = r16(q[:, hh]) @ k[:, hh // group].T / np.sqrt(hd) + mask
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr = r16(pr / pr.sum(-1, keepdims=True))
            out[:, hh] = pr @ v[:, hh // group]
        x = x + out.reshape(n, -1) @ wts[p + "attn_output.weight"].T
        h = norm(x, wts[p + "ffn_norm.weight"])
        g = h @ wts[p + "ffn_gate.weight"].T
        u = h @ wts[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ wts[p + "ffn_down.weight"].T
    return norm(x, wts["output_norm.weight"]) @ wts["token_embd.weight"].T


def assert_last_row_logits(model, path: Path, ids: list[int]) -> None:
    """Without all_logits only the last row goes on after the last layer's attention (as
    llama.cpp's inp_out_ids): the logits of the last row of all of them, bit for bit when the
    weights are quantized (a prompt's tiles give the one-row dots' bits); float products of
    one row and of many sum in other orders."""
    whole = model.forward(ids, model.new_cache(32), all_logits=True)
    last = model.forward(ids, model.new_cache(32))
    if "Q" in path.stem.rsplit("-", 1)[1]:
        np.testing.assert_array_equal(last, whole[-1])
    else:
        np.testing.assert_allclose(last, whole[-1], rtol=0, atol=1e-5 * np.abs(whole).max())


def assert_steps_equal(step, general, new_cache, ids: list[int], first: int, threads: int) -> None:
    """ids[:first] as one batch, then one token at a time, through `step` and `general`
    ((tokens, cache) -> logits) at `threads` threads: the same logits and KV caches, bit
    for bit."""
    before = get_threads()
    set_threads(threads)
    try:
        a, b = new_cache(), new_cache()
        step(ids[:first], a)
        general(ids[:first], b)
        for tok in ids[first:]:
            assert np.array_equal(step([tok], a), general([tok], b))
        assert a.n_past == b.n_past == len(ids)
        assert all(np.array_equal(x, y) for x, y in zip(a.k + a.v, b.k + b.v))
    finally:
        set_threads(before)
