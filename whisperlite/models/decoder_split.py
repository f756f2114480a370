"""The decoder step on two threads: buffers and the partner thread for
kernels/decoder_step.decoder_split.

A step reads ~40 MB of weights and keys/values for a few MFLOP: it is bound by how fast one
core streams memory, and a second core streaming the other half of every matrix nearly
doubles that. Waking numba's thread pool per product costs more than the product, so both
threads run the whole step in one kernel call each and hand work over through atomic
flags; the partner is a persistent thread woken once per step.
"""
from __future__ import annotations

import numpy as np

from whisperlite.kernels import decoder_step as fused
from whisperlite.kernels.threads import Partner
from whisperlite.models.checkpoint import WhisperDims


class SplitStep:
    """Everything `decoder_split` needs beyond the weights and the KV cache, for `batch`
    sequences; one per cache (its step counter only grows, and the logits it returns stay
    valid until the next step on that cache)."""

    def __init__(self, dims: WhisperDims, batch: int, partner: Partner):
        d, n_layer, f32 = dims.n_text_state, dims.n_text_layer, np.float32
        self.batch = batch
        self.partner = partner
        self.claim = np.zeros(fused.split_slots(n_layer), np.int64)
        self.done = np.zeros_like(self.claim)
        self.g = 0
        shared = lambda width, *lead: np.zeros((n_layer, *lead, batch, width), f32)  # noqa: E731
        self.qkv, self.att, self.q, self.catt = shared(3 * d), shared(d), shared(d), shared(d)
        self.y, self.mlp = shared(d, 3), shared(4 * d)
        self.x, self.h = np.zeros((2, batch, d), f32), np.zeros((2, batch, d), f32)
        self.xq = np.zeros((2, batch * 4 * d), np.int8)
        self.xd = np.zeros((2, batch * 4 * d // 32), f32)
        self.xs = np.zeros((2, batch * 4 * d // 32), f32)
        self.buf = np.zeros((2, 2, 4 * d), f32)
        self.scores = np.zeros((2, batch, max(dims.n_text_ctx, dims.n_audio_ctx)), f32)
        self.logits = np.zeros((batch, 1, dims.n_vocab), f32)

    def run(self, weights_args: tuple, cache_args: tuple, tokens: np.ndarray, pos: int, int8: bool) -> np.ndarray:
        """One step of tokens (B, 1) at `pos` -> logits (B, 1, vocab), valid until the next run."""
        self.g += 1
        (emb_kind, emb, pos_emb, kinds, ln_g, ln_b, qkv, b_qkv, out, b_out, cq, b_cq, co, b_co,
         fc1, b_fc1, fc2, b_fc2, lnf_g, lnf_b) = weights_args
        args = (self.g, self.claim, self.done, tokens, pos, emb_kind, emb, pos_emb, kinds, ln_g, ln_b,
                qkv, b_qkv, out, b_out, cq, b_cq, co, b_co, fc1, b_fc1, fc2, b_fc2, lnf_g, lnf_b, *cache_args,
                self.qkv, self.att, self.y, self.q, self.catt, self.mlp, self.x, self.h, self.xq, self.xd,
                self.xs, self.buf, self.scores, self.logits.reshape(self.batch, -1), int8)
        self.partner.start(fused.decoder_split, args)
        fused.decoder_split(0, *args)
        return self.logits
