"""Whisper encoder and decoder on the shared kernels.

Encoder: two GELU convolutions (the second with stride 2) as im2col matrix products, then
pre-LayerNorm transformer blocks. Decoder: the same blocks with cross-attention over the
encoder output; self-attention keys/values live in a preallocated cache so each new token
costs one row of work per layer, and a prompt of any length is one batched pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gguf import GGMLQuantizationType as QType

from whisperlite.kernels import QTensor, Weight, linear
from whisperlite.kernels.quant import dequantize_rows
from whisperlite.kernels.ops import add_, bias_gelu_, gelu_, layer_norm, softmax_
from whisperlite.kernels.threads import run_parallel
from whisperlite.models.checkpoint import WhisperCheckpoint, WhisperDims

LN_EPS = 1e-5


def _dense(w: Weight) -> Weight:
    """Encoder weights: every window multiplies 1500 rows by each matrix, so float16 is
    converted once to float32 for BLAS; block-quantized weights stay compact (tiled path)."""
    if isinstance(w, QTensor) and w.qtype == QType.F16:
        return w.dequantize()
    return w


def _fuse_rows(ws: list[Weight]) -> Weight:
    """Stack output rows of several linear weights into one matrix (one product instead of many)."""
    if all(isinstance(w, QTensor) for w in ws) and len({w.qtype for w in ws}) == 1:
        rows = sum(w.shape[0] for w in ws)
        return QTensor(ws[0].qtype, (rows, ws[0].shape[1]), np.concatenate([w.data for w in ws]))
    return np.ascontiguousarray(np.concatenate([w.dequantize() if isinstance(w, QTensor) else w for w in ws]))


@dataclass
class _Norm:
    g: np.ndarray
    b: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self.g, self.b, LN_EPS)


@dataclass
class _Block:
    attn_ln: _Norm
    qkv: Weight  # (3d, d): query | key | value rows
    qkv_b: np.ndarray
    out: Weight
    out_b: np.ndarray
    mlp_ln: _Norm
    fc1: Weight
    fc1_b: np.ndarray
    fc2: Weight
    fc2_b: np.ndarray
    # decoder only
    cross_ln: _Norm | None = None
    cross_q: Weight | None = None
    cross_q_b: np.ndarray | None = None
    cross_kv: Weight | None = None  # (2d, d): key | value rows
    cross_kv_b: np.ndarray | None = None
    cross_out: Weight | None = None
    cross_out_b: np.ndarray | None = None

    def mlp(self, x: np.ndarray) -> np.ndarray:
        h = bias_gelu_(linear(self.mlp_ln(x), self.fc1), self.fc1_b)
        return linear(h, self.fc2, self.fc2_b)


def _load_block(w: dict, p: str, cross: bool, d: int) -> _Block:
    norm = lambda n: _Norm(w[f"{n}.weight"], w[f"{n}.bias"])  # noqa: E731
    # Decoder weights stay as stored (few rows per product: GEMV reads fewer bytes);
    # encoder weights become BLAS-ready.
    mat = (lambda x: x) if cross else _dense
    blk = _Block(
        attn_ln=norm(f"{p}.attn_ln"),
        qkv=mat(_fuse_rows([w[f"{p}.attn.query.weight"], w[f"{p}.attn.key.weight"], w[f"{p}.attn.value.weight"]])),
        qkv_b=np.concatenate([w[f"{p}.attn.query.bias"], np.zeros(d, np.float32), w[f"{p}.attn.value.bias"]]),
        out=mat(w[f"{p}.attn.out.weight"]),
        out_b=w[f"{p}.attn.out.bias"],
        mlp_ln=norm(f"{p}.mlp_ln"),
        fc1=mat(w[f"{p}.mlp.0.weight"]),
        fc1_b=w[f"{p}.mlp.0.bias"],
        fc2=mat(w[f"{p}.mlp.2.weight"]),
        fc2_b=w[f"{p}.mlp.2.bias"],
    )
    if cross:
        blk.cross_ln = norm(f"{p}.cross_attn_ln")
        blk.cross_q = w[f"{p}.cross_attn.query.weight"]
        blk.cross_q_b = w[f"{p}.cross_attn.query.bias"]
        # keys/values of 1500 audio positions per window: a big product, BLAS-ready
        blk.cross_kv = _dense(_fuse_rows([w[f"{p}.cross_attn.key.weight"], w[f"{p}.cross_attn.value.weight"]]))
        blk.cross_kv_b = np.concatenate([np.zeros(d, np.float32), w[f"{p}.cross_attn.value.bias"]])
        blk.cross_out = w[f"{p}.cross_attn.out.weight"]
        blk.cross_out_b = w[f"{p}.cross_attn.out.bias"]
    return blk


def _heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """(n, h*64) -> (h, n, 64)"""
    n, d = x.shape
    return x.reshape(n, n_head, d // n_head).transpose(1, 0, 2)


def _merge(x: np.ndarray) -> np.ndarray:
    """(h, n, 64) -> (n, h*64), contiguous"""
    h, n, k = x.shape
    return np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(n, h * k)


def attention(q: np.ndarray, kt: np.ndarray, v: np.ndarray, mask_offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """q (..., n, dk), kt (..., dk, t) keys already transposed, v (..., t, dk)
    -> out (..., n, dk), weights (..., n, t).

    With `mask_offset`, query i sits at absolute position mask_offset + i and may only see
    keys at positions ≤ its own (causal).
    """
    n, dk = q.shape[-2:]
    t = kt.shape[-1]
    scores = np.matmul(q * np.float32(dk**-0.5), kt)
    if mask_offset is not None and n > 1:
        pos = mask_offset + np.arange(n)[:, None]
        scores[..., np.arange(t)[None, :] > pos] = -np.inf
    w = softmax_(scores.reshape(-1, t)).reshape(scores.shape)
    return np.matmul(w, v), w


class AudioEncoder:
    def __init__(self, ckpt: WhisperCheckpoint):
        d, w = ckpt.dims, ckpt.weights
        self.dims = d
        c1 = np.asarray(w["encoder.conv1.weight"], np.float32)  # (state, n_mels, 3)
        c2 = np.asarray(w["encoder.conv2.weight"], np.float32)  # (state, state, 3)
        # im2col column order is (tap, channel): weights reordered to match once here.
        self.conv1 = np.ascontiguousarray(c1.transpose(0, 2, 1).reshape(c1.shape[0], -1))
        self.conv2 = np.ascontiguousarray(c2.transpose(0, 2, 1).reshape(c2.shape[0], -1))
        self.conv1_b = np.asarray(w["encoder.conv1.bias"], np.float32).reshape(-1)
        self.conv2_b = np.asarray(w["encoder.conv2.bias"], np.float32).reshape(-1)
        self.pos = np.asarray(w["encoder.positional_embedding"], np.float32)
        self.blocks = [_load_block(w, f"encoder.blocks.{i}", False, d.n_audio_state) for i in range(d.n_audio_layer)]
        self.ln_post = _Norm(w["encoder.ln_post.weight"], w["encoder.ln_post.bias"])

    @staticmethod
    def _im2col(x: np.ndarray, stride: int) -> np.ndarray:
        """x (T, C), kernel 3, padding 1 -> (T_out, 3*C) rows [x[t-1], x[t], x[t+1]]."""
        t, c = x.shape
        xp = np.zeros((t + 2, c), np.float32)
        xp[1:-1] = x
        t_out = (t - 1) // stride + 1
        cols = np.empty((t_out, 3 * c), np.float32)
        for tap in range(3):
            cols[:, tap * c : (tap + 1) * c] = xp[tap : tap + stride * (t_out - 1) + 1 : stride]
        return cols

    @staticmethod
    def _self_attention(qkv: np.ndarray, nh: int) -> np.ndarray:
        """qkv (t, 3d) -> attention output (t, d), one head per task over the kernel threads:
        each head's (t, t) scores stay private to one thread from product to product."""
        t, d3 = qkv.shape
        d = d3 // 3
        hd = d // nh
        out = np.empty((t, d), np.float32)
        scale = np.float32(hd**-0.5)

        def head(h: int) -> None:
            q = qkv[:, h * hd : (h + 1) * hd] * scale
            k = qkv[:, d + h * hd : d + (h + 1) * hd]
            v = qkv[:, 2 * d + h * hd : 2 * d + (h + 1) * hd]
            w = softmax_.serial(q @ k.T)  # releases the GIL: heads run side by side
            np.matmul(w, v, out=out[:, h * hd : (h + 1) * hd])

        run_parallel(head, nh)
        return out

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """mel (n_mels, 2*n_audio_ctx) -> (n_audio_ctx, n_audio_state)"""
        x = gelu_(linear(self._im2col(np.ascontiguousarray(mel.T), 1), self.conv1, self.conv1_b))
        x = gelu_(linear(self._im2col(x, 2), self.conv2, self.conv2_b))
        x = add_(x, self.pos[: x.shape[0]])
        nh = self.dims.n_audio_head
        for b in self.blocks:
            qkv = linear(b.attn_ln(x), b.qkv, b.qkv_b)
            x = add_(linear(self._self_attention(qkv, nh), b.out, b.out_b), x)
            x = add_(b.mlp(x), x)
        return self.ln_post(x)


class KVCache:
    """Self-attention keys/values for up to `batch` sequences, plus the cross-attention
    keys/values of the current audio window (computed once per window, shared by forks)."""

    def __init__(self, dims: WhisperDims, batch: int, cross: list[tuple[np.ndarray, np.ndarray]]):
        self.dims = dims
        shape = (dims.n_text_layer, batch, dims.n_text_ctx, dims.n_text_state)
        # np.zeros maps untouched pages lazily: a 448-token buffer costs only what is used.
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.length = 0
        self.cross = cross  # per layer: keys (h, 64, n_audio_ctx) pre-transposed, values (h, n_audio_ctx, 64)

    def fork(self, batch: int) -> "KVCache":
        """An empty self-attention cache for `batch` sequences over the same audio."""
        return KVCache(self.dims, batch, self.cross)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep/duplicate sequences (best-of, beams): new sequence i is old sequence rows[i].

        Only sequences whose source changed are copied (most beam steps move few or none).
        """
        rows = np.asarray(rows)
        moved = np.nonzero(rows != np.arange(len(rows)))[0]
        if not len(moved):
            return
        n = self.length
        self.k[:, moved, :n] = self.k[:, rows[moved], :n]
        self.v[:, moved, :n] = self.v[:, rows[moved], :n]

    def broadcast(self, batch: int) -> None:
        """Copy sequence 0 (a shared prompt) to sequences 1 … batch-1."""
        self.reorder(np.zeros(batch, dtype=np.int64))


class TextDecoder:
    def __init__(self, ckpt: WhisperCheckpoint):
        d, w = ckpt.dims, ckpt.weights
        self.dims = d
        self.token_embedding = w["decoder.token_embedding.weight"]  # also the output projection (tied)
        self.pos = np.asarray(w["decoder.positional_embedding"], np.float32)
        self.blocks = [_load_block(w, f"decoder.blocks.{i}", True, d.n_text_state) for i in range(d.n_text_layer)]
        self.ln = _Norm(w["decoder.ln.weight"], w["decoder.ln.bias"])

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Embedding rows for token ids (n,) -> (n, d) float32, dequantizing only those rows."""
        emb = self.token_embedding
        if not isinstance(emb, QTensor):
            return emb[ids]
        out = np.empty((len(ids), emb.shape[1]), np.float32)
        for i, t in enumerate(ids):
            dequantize_rows(emb.data, emb.qtype, emb.shape, int(t), int(t) + 1, out[i : i + 1])
        return out

    def new_cache(self, audio_features: np.ndarray, batch: int = 1) -> KVCache:
        """A cache for one window: cross-attention keys/values of `audio_features` (n_audio_ctx, d)."""
        nh = self.dims.n_text_head
        cross = []
        for b in self.blocks:
            kv = linear(audio_features, b.cross_kv, b.cross_kv_b)
            k, v = np.split(kv, 2, axis=1)
            # keys stored transposed once per window, not per token
            cross.append((np.ascontiguousarray(_heads(k, nh).transpose(0, 2, 1)), np.ascontiguousarray(_heads(v, nh))))
        return KVCache(self.dims, batch, cross)

    def __call__(self, tokens: np.ndarray, cache: KVCache, positions: Sequence[int] = (-1,),
                 want_cross: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """tokens (B, n) appended after cache.length -> logits (B, len(positions), vocab) at
        `positions` (indices into the n new tokens; the vocabulary projection is the most
        expensive product, so only the rows asked for are computed).

        With `want_cross`, also the cross-attention weights of every layer, each
        (B, h, n, n_audio_ctx), for word-level alignment.
        """
        bsz, n = tokens.shape
        start = cache.length
        if start + n > self.dims.n_text_ctx:
            raise ValueError(f"decoder context of {self.dims.n_text_ctx} tokens exceeded")
        nh = self.dims.n_text_head
        hd = self.dims.n_text_state // nh
        t = start + n
        x = self.embed(tokens.reshape(-1)) + np.tile(self.pos[start:t], (bsz, 1))
        crosses: list[np.ndarray] = []
        for li, b in enumerate(self.blocks):
            qkv = linear(b.attn_ln(x), b.qkv, b.qkv_b)
            q, k, v = np.split(qkv, 3, axis=1)
            cache.k[li, :bsz, start:t] = k.reshape(bsz, n, -1)
            cache.v[li, :bsz, start:t] = v.reshape(bsz, n, -1)
            # every sequence has the same length: one batched product over (B, h)
            qs = q.reshape(bsz, n, nh, hd).transpose(0, 2, 1, 3)
            ks = cache.k[li, :bsz, :t].reshape(bsz, t, nh, hd).transpose(0, 2, 3, 1)
            vs = cache.v[li, :bsz, :t].reshape(bsz, t, nh, hd).transpose(0, 2, 1, 3)
            o, _ = attention(qs, ks, vs, mask_offset=start)
            o = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(bsz * n, -1)
            x = add_(linear(o, b.out, b.out_b), x)

            qc = linear(b.cross_ln(x), b.cross_q, b.cross_q_b)
            ck, cv = cache.cross[li]
            # All sequences attend to the same audio: one product over every query row.
            o, wts = attention(_heads(qc, nh), ck, cv)
            if want_cross:
                crosses.append(wts.reshape(nh, bsz, n, -1).transpose(1, 0, 2, 3))
            x = add_(linear(_merge(o), b.cross_out, b.cross_out_b), x)
            x = add_(b.mlp(x), x)
        cache.length = t
        x = x.reshape(bsz, n, -1)[:, list(positions)]
        h = self.ln(np.ascontiguousarray(x.reshape(-1, x.shape[-1])))
        logits = linear(h, self.token_embedding).reshape(bsz, -1, self.dims.n_vocab)
        return logits, crosses


class Whisper:
    """Encoder + decoder for one checkpoint (weights are shared, not copied, where possible)."""

    def __init__(self, ckpt: WhisperCheckpoint):
        self.dims = ckpt.dims
        self.encoder = AudioEncoder(ckpt)
        self.decoder = TextDecoder(ckpt)
        self.alignment_heads = ckpt.alignment_heads
