"""A tiny random Gemma 3 written as GGUF with gguf.GGUFWriter (SentencePiece vocabulary),
and a plain numpy forward pass to check whisperlite's against."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QType
from gguf import GGUFWriter

from llama_tiny import weight_writers

# Gemma's special tokens at Gemma's ids, byte fallback, then a few scored pieces.
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
PIECES = {"▁": -1.0, "h": -2.0, "e": -2.0, "l": -2.0, "o": -2.0, "he": -3.0, "ll": -3.5, "llo": -4.0,
          "hello": -5.0, "▁hello": -4.5, "▁w": -3.0, "or": -3.0, "▁wor": -5.0, "\n": -1.0}


@dataclass(frozen=True)
class TinyGemmaDims:
    n_embd: int = 128
    n_ff: int = 256
    n_layer: int = 7  # layers 0-4 and 6 slide, 5 is global
    n_head: int = 2
    n_head_kv: int = 1
    head_dim: int = 48  # not n_embd / n_head, as in the real models
    n_ctx: int = 64
    window: int = 4
    rope_base: float = 1e6
    rope_base_swa: float = 1e4
    eps: float = 1e-6


def tiny_gemma_vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + list(PIECES)
    scores = [0.0] * len(SPECIALS) + [0.0] * 256 + list(PIECES.values())
    types = [3] * len(SPECIALS) + [6] * 256 + [1] * len(PIECES)
    types[3] = 2  # <unk>
    return tokens, scores, types


def write_tiny_gemma(path: Path, qtype: QType = QType.F32, seed: int = 0, dims: TinyGemmaDims = TinyGemmaDims(),
                     extra: dict | None = None) -> dict[str, np.ndarray]:
    """Write the model; returns the float32 weights as stored (after quantization round
    trip). `extra`: metadata written with GGUFWriter's add_<name>(value) calls."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = tiny_gemma_vocab()
    hd = dims.head_dim
    w = GGUFWriter(str(path), "gemma3")
    w.add_block_count(dims.n_layer)
    w.add_context_length(dims.n_ctx)
    w.add_embedding_length(dims.n_embd)
    w.add_feed_forward_length(dims.n_ff)
    w.add_head_count(dims.n_head)
    w.add_head_count_kv(dims.n_head_kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(dims.rope_base)
    w.add_layer_norm_rms_eps(dims.eps)
    w.add_sliding_window(dims.window)
    for name, value in (extra or {}).items():
        getattr(w, f"add_{name}")(value)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)

    stored: dict[str, np.ndarray] = {}
    matrix, vector = weight_writers(w, qtype, rng, stored)
    e, f, q, kv = dims.n_embd, dims.n_ff, dims.n_head * hd, dims.n_head_kv * hd
    matrix("token_embd.weight", len(tokens), e, 0.05)
    for i in range(dims.n_layer):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", e)
        matrix(p + "attn_q.weight", q, e, e ** -0.5)
        matrix(p + "attn_k.weight", kv, e, e ** -0.5)
        matrix(p + "attn_v.weight", kv, e, e ** -0.5)
        vector(p + "attn_q_norm.weight", hd)
        vector(p + "attn_k_norm.weight", hd)
        matrix(p + "attn_output.weight", e, q, q ** -0.5)
        vector(p + "post_attention_norm.weight", e)
        vector(p + "ffn_norm.weight", e)
        matrix(p + "ffn_gate.weight", f, e, e ** -0.5)
        matrix(p + "ffn_up.weight", f, e, e ** -0.5)
        matrix(p + "ffn_down.weight", e, f, f ** -0.5)
        vector(p + "post_ffw_norm.weight", e)
    vector("output_norm.weight", e)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def reference_gemma(wts: dict[str, np.ndarray], ids: list[int], dims: TinyGemmaDims = TinyGemmaDims()) -> np.ndarray:
    """Plain float64 Gemma 3, all positions: logits (n, vocab). K, V, Q and the attention
    probabilities are rounded to float16 where llama.cpp's f16 KV cache rounds them; GELU
    is the tanh formula (ggml's table differs from it in float16 rounding only)."""
    r16 = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    hd, n = dims.head_dim, len(ids)

    def norm(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + dims.eps) * g

    def rope(x: np.ndarray, base: float) -> np.ndarray:  # NEOX: pairs (i, i + hd/2)
        half = hd // 2
        ang = np.arange(n)[:, None] * base ** (-np.arange(half) * 2 / hd)[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

    def gelu(v: np.ndarray) -> np.ndarray:
        return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * v * (1 + 0.044715 * v * v)))

    x = wts["token_embd.weight"][ids].astype(np.float64) * np.sqrt(dims.n_embd)
    pos = np.arange(n)
    group = dims.n_head // dims.n_head_kv
    for i in range(dims.n_layer):
        p = f"blk.{i}."
        swa = i % 6 < 5
        base = dims.rope_base_swa if swa else dims.rope_base
        visible = (pos[None, :] <= pos[:, None]) & ((pos[:, None] - pos[None, :] < dims.window) | (not swa))
        h = norm(x, wts[p + "attn_norm.weight"])
        q = norm((h @ wts[p + "attn_q.weight"].T).reshape(n, dims.n_head, hd), wts[p + "attn_q_norm.weight"])
        k = norm((h @ wts[p + "attn_k.weight"].T).reshape(n, dims.n_head_kv, hd), wts[p + "attn_k_norm.weight"])
        q = rope(q, base) / np.sqrt(hd)
        k = r16(rope(k, base))
        v = r16((h @ wts[p + "attn_v.weight"].T).reshape(n, dims.n_head_kv, hd))
        out = np.empty((n, dims.n_head, hd))
        for hh in range(dims.n_head):
            s = np.where(visible, r16(q[:, hh]) @ k[:, hh // group].T, -np.inf)
            pr = np.exp(s - s.max(-1, keepdims=True))
            pr = r16(pr / pr.sum(-1, keepdims=True))
            out[:, hh] = pr @ v[:, hh // group]
        o = out.reshape(n, -1) @ wts[p + "attn_output.weight"].T
        x = x + norm(o, wts[p + "post_attention_norm.weight"])
        h = norm(x, wts[p + "ffn_norm.weight"])
        act = gelu(h @ wts[p + "ffn_gate.weight"].T) * (h @ wts[p + "ffn_up.weight"].T)
        x = x + norm(act @ wts[p + "ffn_down.weight"].T, wts[p + "post_ffw_norm.weight"])
    return norm(x, wts["output_norm.weight"]) @ wts["token_embd.weight"].T
