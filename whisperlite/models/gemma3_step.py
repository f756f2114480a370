"""The Gemma 3 decoder's one-token step as one numba program, on one thread or two.

The same scheme as the LLaMA step (llama_step.py, whose phases this reuses): each thread
(`tid` 0 or 1) walks every layer, chunks of a product's rows and the attention heads go
to whichever thread claims them first, and each thread replays the residual stream from
the per-layer results, so one thread alone does the whole step. What Gemma adds, in the
order of models/gemma3.py (the same kernels, so the logits are the same bits): norms
after attention and after the feed-forward network, RMS-normalized query and key heads
before NEOX rope, queries scaled before attention, GeGLU with ggml's table GELU, and
sliding-window layers with their own rope base.

Q, K, V and gate, up stay separate matrices (a quantization mix may give them different
types): one phase claims chunks of all three (or both), each matrix's input quantized for
its own type. Their outputs are contiguous row views (reshaped slices), so the products
take the array types the LLaMA step compiled them for.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import prange

from whisperlite.kernels.ggml_order import attend_head, geglu_at, rms_norm_serial
from whisperlite.kernels.rope import rotate_head
from whisperlite.kernels.rowdots import as_matrix
from whisperlite.kernels.worksplit import _await, _claim, _finish, slots_length
from whisperlite.models.llama_step import (add_row, dot_rows, f32_address, layer_matrix, product_phase, quantize_input,
                                           store_kv)

_SER = dict(error_model="numpy", nogil=True, cache=True)

# Matrix roles, in the order of Weights.kinds / shapes / addrs.
Q, K, V, OUT, GATE, UP, DOWN = range(7)
ROLES = 7
# Rows per chunk of the Q|K|V phase (Gemma 3's heads are 256 wide: one head a chunk).
QKV_CHUNK_ROWS = 256
OUT_CHUNKS, GATE_UP_CHUNKS, DOWN_CHUNKS = 4, 8, 4
VOCAB_CHUNKS = 16


def qkv_chunks(rows: int) -> int:
    """Chunks of a Q, K or V matrix of `rows` rows."""
    return max(1, rows // QKV_CHUNK_ROWS)


def step_slots(n_layer: int, n_head: int, n_head_kv: int, qkv_rows: tuple[int, int, int]) -> int:
    """Length of each of the int64 claim and done arrays the step takes."""
    qkv = sum(qkv_chunks(r) for r in qkv_rows)
    per_layer = qkv + n_head_kv + n_head + OUT_CHUNKS + GATE_UP_CHUNKS + DOWN_CHUNKS
    return slots_length(n_layer * per_layer + VOCAB_CHUNKS)


class Weights(NamedTuple):
    """The weights as the step reads them (see llama_step.Weights), per layer and role."""

    kinds: np.ndarray  # (L, 7) int64: q, k, v, out, gate, up, down
    shapes: np.ndarray  # (L, 7, 2) int64
    addrs: np.ndarray  # (L, 7) int64
    chunks: np.ndarray  # (3,) int64: chunks of Q, K, V
    attn_norm: np.ndarray  # (L, d) float32
    q_norm: np.ndarray  # (L, hd)
    k_norm: np.ndarray  # (L, hd)
    post_attn_norm: np.ndarray  # (L, d)
    ffn_norm: np.ndarray  # (L, d)
    post_ffn_norm: np.ndarray  # (L, d)
    window: np.ndarray  # (L,) int64: the sliding window's length, 0 for global layers
    out_norm: np.ndarray  # (d,)
    out_kind: int
    out: np.ndarray  # (vocab, bytes) uint8, maybe read-only
    gelu: np.ndarray  # ggml_order.GELU_TABLE
    n_head: int
    n_head_kv: int
    eps: float
    attn_scale: float  # queries are multiplied by this (float32) before attention
    kv_pad: int
    lanes: int


@numba.njit(inline="always", **_SER)
def _norm_add(x, y, w, eps, tmp):
    """x += rms_norm(y) * w (ggml's order: the norm, then the residual add)."""
    rms_norm_serial(y, w, eps, tmp)
    add_row(x, tmp)


@numba.njit(inline="always", **_SER)
def _head_in(qkv, col, norm_w, eps, hb, hh, cos, sin):
    """Head hh of the row qkv from column col on, RMS-normalized by norm_w and rotated
    (NEOX, ggml's fused order) -> hb[0, hh]."""
    hd = hb.shape[2]
    rms_norm_serial(qkv[0, col : col + hd].reshape((1, hd)), norm_w, eps, hb[0, hh : hh + 1])
    rotate_head(hb, 0, hh, cos, sin, True, True)


@numba.njit(**_SER)
def step_body(tid, g, pos, x0, cos_g, sin_g, cos_s, sin_s, k_addrs, v_addrs, n_ctx, w, s):
    """Step g (growing from call to call on s.claim / s.done) for one token whose scaled
    embedding row is x0 (1, d), at position `pos`, by thread `tid` (0 or 1) alone or with
    the other -> s.logits. cos_g, sin_g / cos_s, sin_s (1, hd/2): the position's rope
    caches of the global and the sliding-window layers; k_addrs, v_addrs (L,) the
    addresses of each layer's KV cache, K (n_kv, n_ctx, hd) and V (n_kv, hd, n_ctx)
    float32; w `Weights`, s a llama_step.Scratch whose xq, xd, xs hold three inputs a
    thread (2, 3, ...) and head a thread's query heads (2, 1, n_head, hd)."""
    claim, done = s.claim, s.done
    x, h, hb = s.x[tid], s.h[tid], s.head[tid]
    xqf, xdf, xsf = s.xq[tid], s.xd[tid], s.xs[tid]
    n_head, n_kv, eps = w.n_head, w.n_head_kv, w.eps
    d = x.shape[1]
    nq = s.att.shape[2]
    hd = nq // n_head
    nkv = n_kv * hd
    n_ff = s.act.shape[2]
    scale = np.float32(w.attn_scale)
    nc_q, nc_k, nc_v = w.chunks[0], w.chunks[1], w.chunks[2]
    n_qkv = nc_q + nc_k + nc_v
    for j in range(d):
        x[0, j] = x0[0, j]
    slot = 0
    for li in range(w.kinds.shape[0]):
        kinds = w.kinds[li]
        window = w.window[li]
        cos, sin = (cos_s, sin_s) if window > 0 else (cos_g, sin_g)
        kc = numba.carray(f32_address(k_addrs[li]), (n_kv, n_ctx, hd))
        vc = numba.carray(f32_address(v_addrs[li]), (n_kv, hd, n_ctx))
        qkv = s.qkv[li]
        # Q|K|V: chunk c of the n_qkv is a range of Q's, K's or V's rows.
        rms_norm_serial(x, w.attn_norm[li], eps, h)
        xq_q, xd_q, xs_q = quantize_input(h, kinds[Q], xqf[0], xdf[0], xsf[0])
        xq_k, xd_k, xs_k = quantize_input(h, kinds[K], xqf[1], xdf[1], xsf[1])
        xq_v, xd_v, xs_v = quantize_input(h, kinds[V], xqf[2], xdf[2], xsf[2])
        for c in range(n_qkv):
            cc = (c + tid * (n_qkv // 2)) % n_qkv
            if _claim(claim, slot + cc, g):
                if cc < nc_q:
                    rows = w.shapes[li, Q, 0]
                    dot_rows(kinds[Q], layer_matrix(w, li, Q), rows * cc // nc_q, rows * (cc + 1) // nc_q,
                             xq_q, xd_q, xs_q, qkv[0, :nq].reshape((1, nq)))
                elif cc < nc_q + nc_k:
                    c1 = cc - nc_q
                    dot_rows(kinds[K], layer_matrix(w, li, K), nkv * c1 // nc_k, nkv * (c1 + 1) // nc_k,
                             xq_k, xd_k, xs_k, qkv[0, nq : nq + nkv].reshape((1, nkv)))
                else:
                    c1 = cc - nc_q - nc_k
                    dot_rows(kinds[V], layer_matrix(w, li, V), nkv * c1 // nc_v, nkv * (c1 + 1) // nc_v,
                             xq_v, xd_v, xs_v, qkv[0, nq + nkv :].reshape((1, nkv)))
                _finish(done, slot + cc, g)
        _await(done, slot, n_qkv, g)
        slot += n_qkv
        # Key heads normalized and rotated, then keys and values rounded to float16 into
        # the cache, one KV head a chunk.
        for c in range(n_kv):
            gh = (c + tid * (n_kv // 2)) % n_kv
            if _claim(claim, slot + gh, g):
                _head_in(qkv, nq + gh * hd, w.k_norm[li], eps, hb, gh, cos, sin)
                store_kv(kc, vc, hb, qkv, nq + nkv + gh * hd, gh, pos, hd)
                _finish(done, slot + gh, g)
        _await(done, slot, n_kv, g)
        slot += n_kv
        # Query heads: normalized, rotated, scaled, then attention over the cache.
        att = s.att[li].reshape((1, n_head, hd))
        for c in range(n_head):
            hh = (c + tid * (n_head // 2)) % n_head
            if _claim(claim, slot + hh, g):
                _head_in(qkv, hh * hd, w.q_norm[li], eps, hb, hh, cos, sin)
                for j in range(hd):
                    hb[0, hh, j] *= scale
                attend_head(hb, kc, vc, pos, 1.0, w.kv_pad, window, w.lanes, att, 0, hh)
                _finish(done, slot + hh, g)
        _await(done, slot, n_head, g)
        slot += n_head
        product_phase(tid, g, claim, done, slot, OUT_CHUNKS, kinds[OUT], layer_matrix(w, li, OUT), s.att[li],
                      xqf[0], xdf[0], xsf[0], s.o[li])
        slot += OUT_CHUNKS
        _norm_add(x, s.o[li], w.post_attn_norm[li], eps, h)
        # gate, up: chunk c computes gate rows a..b and up rows a..b, then their GeGLU.
        rms_norm_serial(x, w.ffn_norm[li], eps, h)
        gu, act = s.gu[li], s.act[li]
        xq_g, xd_g, xs_g = quantize_input(h, kinds[GATE], xqf[0], xdf[0], xsf[0])
        xq_u, xd_u, xs_u = quantize_input(h, kinds[UP], xqf[1], xdf[1], xsf[1])
        wg, wu = layer_matrix(w, li, GATE), layer_matrix(w, li, UP)
        for c in range(GATE_UP_CHUNKS):
            cc = (c + tid * (GATE_UP_CHUNKS // 2)) % GATE_UP_CHUNKS
            if _claim(claim, slot + cc, g):
                a, b = n_ff * cc // GATE_UP_CHUNKS, n_ff * (cc + 1) // GATE_UP_CHUNKS
                dot_rows(kinds[GATE], wg, a, b, xq_g, xd_g, xs_g, gu[0, :n_ff].reshape((1, n_ff)))
                dot_rows(kinds[UP], wu, a, b, xq_u, xd_u, xs_u, gu[0, n_ff:].reshape((1, n_ff)))
                for j in range(a, b):
                    act[0, j] = geglu_at(gu[0, j], gu[0, n_ff + j], w.gelu)
                _finish(done, slot + cc, g)
        _await(done, slot, GATE_UP_CHUNKS, g)
        slot += GATE_UP_CHUNKS
        product_phase(tid, g, claim, done, slot, DOWN_CHUNKS, kinds[DOWN], layer_matrix(w, li, DOWN), act,
                      xqf[0], xdf[0], xsf[0], s.down[li])
        slot += DOWN_CHUNKS
        _norm_add(x, s.down[li], w.post_ffn_norm[li], eps, h)
    rms_norm_serial(x, w.out_norm, eps, h)
    product_phase(tid, g, claim, done, slot, VOCAB_CHUNKS, w.out_kind, as_matrix(w.out), h, xqf[0], xdf[0], xsf[0],
                  s.logits)


@numba.njit(parallel=True, **_SER)
def step_parallel(g, pos, x0, cos_g, sin_g, cos_s, sin_s, k_addrs, v_addrs, n_ctx, w, s):
    """`step_body` on two threads of numba's pool (with a one-thread pool the two run in
    order: the second finds every chunk done)."""
    for p in prange(2):
        step_body(np.int64(p), g, pos, x0, cos_g, sin_g, cos_s, sin_s, k_addrs, v_addrs, n_ctx, w, s)
