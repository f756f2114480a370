"""Whisper's text decoder: pre-LN blocks with cross-attention over the encoder output.
Self-attention keys/values live in a preallocated cache so each new token costs one row of
work per layer, and a prompt of any length is one batched pass."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from whisperlite.kernels import QTensor, linear
from whisperlite.kernels.ops import add_
from whisperlite.kernels.quant import dequantize_rows
from whisperlite.models.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.models.whisper_blocks import Norm, attention, load_block, merge_heads, split_heads


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
        self.blocks = [load_block(w, f"decoder.blocks.{i}", True, d.n_text_state) for i in range(d.n_text_layer)]
        self.ln = Norm(w["decoder.ln.weight"], w["decoder.ln.bias"])

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
            cross.append((np.ascontiguousarray(split_heads(k, nh).transpose(0, 2, 1)), np.ascontiguousarray(split_heads(v, nh))))
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
            o, wts = attention(split_heads(qc, nh), ck, cv)
            if want_cross:
                crosses.append(wts.reshape(nh, bsz, n, -1).transpose(1, 0, 2, 3))
            x = add_(linear(merge_heads(o), b.cross_out, b.cross_out_b), x)
            x = add_(b.mlp(x), x)
        cache.length = t
        x = x.reshape(bsz, n, -1)[:, list(positions)]
        h = self.ln(np.ascontiguousarray(x.reshape(-1, x.shape[-1])))
        logits = linear(h, self.token_embedding).reshape(bsz, -1, self.dims.n_vocab)
        return logits, crosses
