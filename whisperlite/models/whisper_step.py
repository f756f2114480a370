"""Whisper's decoder step — one new token per sequence — as one numba kernel.

Per token the tiny decoder does ~80 small products and elementwise steps; as separate
numpy/numba calls each costs more in dispatch and temporaries than in arithmetic. Here
`step_body` runs the whole step for B sequences in one call (embedding, layer norms, QKV +
bias, KV-cache write, self-attention, out-proj + residual, cross-attention over the window's
audio, MLP with GELU, final norm, vocabulary projection) into caller-owned scratch, on one
thread or on two at once (TextDecoder.step_parallel, two Python threads): the step streams
~47 MB of weights and audio keys/values per token, and one core cannot pull that from memory
as fast as two. The threads split every product's rows and every attention's heads by claiming
chunks (kernels/worksplit.py), so the logits are the same bits on one thread or two.

This module is the program: Whisper's layer structure over model-free kernels, the row
products of any weight kind (kernels/rowdots.py) and the one-row attentions (kernels/mha.py).

Cross-attention keys/values may be float32 or float16 bits (uint16): they are the largest
per-token read after the weights (1500 audio positions x d per layer, keys and values:
18 MB per token for tiny in float32), and both are read row by row, once for all B.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from whisperlite.kernels.mha import cross_attention_heads, self_attention_heads
from whisperlite.kernels.ops import layer_norm_row
from whisperlite.kernels.rowdots import address, as_matrix, decode_row, float_views, rows_kernel
from whisperlite.kernels.worksplit import heads_phase, rows_phase, runtime, slots_length

_SER = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy", nogil=True, cache=True)

PRODUCT_CHUNKS = 4  # per layer product: a thread that arrives late can still take some
VOCAB_CHUNKS = 16


def step_slots(n_layer: int, n_head: int) -> int:
    """Length of each of the int64 claim and done arrays the step takes."""
    return slots_length(n_layer * (6 * PRODUCT_CHUNKS + 2 * n_head) + VOCAB_CHUNKS)


@numba.njit(inline="always", **_SER)
def _matrix(addrs, shapes, role, li):
    """Layer li's matrix of `role`: (rows, bytes) uint8 at addrs[li], shaped shapes[role].

    The layers' matrices are passed as addresses, not as a tuple of arrays: a tuple's type
    holds its length, so every model depth (tiny 4 layers, base 6, small 12 …) compiled the
    whole step again (~75 s), inside its first tokens."""
    return numba.carray(address(addrs[li]), (shapes[role, 0], shapes[role, 1]))


@numba.njit(inline="always", **_SER)
def _layer_norm(x, g, b, out):
    """LayerNorm of each row of x (B, d) -> out, as ops.layer_norm (Whisper's eps 1e-5)."""
    for i in range(x.shape[0]):
        layer_norm_row(x, i, g, b, 1e-5, out)


@numba.njit(inline="always", **_SER)
def _residual(y, res):
    """res += y."""
    n, d = y.shape
    for b in range(n):
        for j in range(d):
            res[b, j] += y[b, j]


@numba.njit(inline="always", **_SER)
def _product(tid, g, claim, done, slot, chunks, fns, kind, w, bias, gelu, x, xq, xd, xs, buf, out, int8):
    """worksplit.rows_phase, compiled once for all its calls: its slot, chunk count and GELU
    flag passed as runtime values."""
    rows_phase(tid, g, claim, done, runtime(slot), runtime(chunks), fns, kind, w, bias, runtime(gelu), x, xq, xd, xs,
               buf, out, int8)


# numba links every compiled callee into its caller's module and optimizes and emits the whole
# again, so each level of compiled function between step_body and the row kernels cost their
# compile once more (~290 s with the phases as functions, ~110 s inlined). The row kernels are
# therefore called through their addresses (rowdots.call_rows), which links nothing: the step
# compiles without them, each weight kind's kernel compiles once and only for a model that has
# it, and rows_phase is one compiled function of its own again (the attention block below
# stays inlined).


@numba.njit(inline="always", **_SER)
def _attention_block(tid, g, claim, done, slot, fns, n_head, attend, x, ln_g, ln_b, h, kind_in, w_in, b_in, s_in,
                     k, v, src, pos, scores, s_heads, kind_out, w_out, b_out, s_y, scratch, int8):
    """x += out-projection of attention over layer-normed x: the input product (query|key|value,
    or the cross-attention query) into s_in, the heads into s_heads, the output product into
    s_y; chunks from slot on (2 * PRODUCT_CHUNKS + n_head of them). scratch: (xq, xd, xs,
    buf) (a tuple: more than 30 arguments make Python pass them as *args, which numba cannot
    inline); the others as worksplit.heads_phase and worksplit.rows_phase take them."""
    xq, xd, xs, buf = scratch
    _layer_norm(x, ln_g, ln_b, h)
    _product(tid, g, claim, done, slot, PRODUCT_CHUNKS, fns, kind_in, w_in, b_in, False, h, xq, xd, xs, buf, s_in, int8)
    heads_phase(tid, g, claim, done, slot + PRODUCT_CHUNKS, n_head, attend, s_in, k, v, src, pos, scores, s_heads)
    _product(tid, g, claim, done, slot + PRODUCT_CHUNKS + n_head, PRODUCT_CHUNKS, fns, kind_out, w_out, b_out, False,
             s_heads, xq, xd, xs, buf, s_y, int8)
    _residual(s_y, x)


class Weights(NamedTuple):
    """The decoder's weights as the step reads them. Matrices are uint8 (rows, bytes) views
    of a kind code (rowdots.weight_kind); the layers' matrices of each role as int64
    addresses (see `_matrix`)."""

    emb_kind: int  # the token embedding's kind
    emb: np.ndarray  # (vocab, bytes) the token embedding, also the vocabulary projection
    pos_emb: np.ndarray  # (n_ctx, d)
    kinds: np.ndarray  # (6,) the kinds of qkv, out, cross query, cross out, fc1, fc2
    shapes: np.ndarray  # (6, 2) their (rows, bytes)
    ln_g: np.ndarray  # (L, 3, d) the attention, cross-attention and MLP norms
    ln_b: np.ndarray
    w_qkv: np.ndarray  # (L,) int64 addresses of each layer's C-contiguous matrix of a role
    b_qkv: np.ndarray  # (L, rows) its biases
    w_out: np.ndarray
    b_out: np.ndarray
    w_cq: np.ndarray
    b_cq: np.ndarray
    w_co: np.ndarray
    b_co: np.ndarray
    w_fc1: np.ndarray
    b_fc1: np.ndarray
    w_fc2: np.ndarray
    b_fc2: np.ndarray
    lnf_g: np.ndarray  # (d,) the final norm
    lnf_b: np.ndarray
    n_head: int
    row_fns: np.ndarray  # (2, kinds) int64: [int8, kind] the address of its row kernel (`link_rows`), else 0


def link_rows(w: Weights, int8: bool) -> None:
    """Fill w.row_fns[int8] for the kinds w holds: the row kernel of each, compiled now (or
    loaded from numba's cache) before a step calls it through its address."""
    for kind in {*(int(k) for k in w.kinds), int(w.emb_kind)}:
        if not w.row_fns[int(int8), kind]:
            w.row_fns[int(int8), kind] = rows_kernel(kind, int8)


class Cache(NamedTuple):
    """Keys and values: this window's audio, and the self-attention cache."""

    k_self: np.ndarray  # (L, ≥B, n_ctx, d): sequence b's position t in row src[b, t]
    v_self: np.ndarray
    src: np.ndarray  # (≥B, n_ctx) int32
    k_cross: np.ndarray  # (L, h, n_audio, hd) float32, or float16 as its bits (uint16)
    v_cross: np.ndarray


class Scratch(NamedTuple):
    """Everything the step writes: chunk claims, per-layer phase outputs (nothing overwrites
    them within a step, so a late thread replays the stream from them), per-thread rows."""

    claim: np.ndarray  # (step_slots,) int64, zero at first: the chunks' claims and completions
    done: np.ndarray
    qkv: np.ndarray  # (L, B, 3d)
    att: np.ndarray  # (L, B, d)
    y: np.ndarray  # (L, 3, B, d) the three residual branches' outputs
    q: np.ndarray  # (L, B, d)
    catt: np.ndarray  # (L, B, d)
    mlp: np.ndarray  # (L, B, 4d)
    x: np.ndarray  # (2, B, d) each thread's residual stream
    h: np.ndarray  # (2, B, d) and its normalized rows
    xq: np.ndarray  # (2, B*4d) int8: activations quantized per block
    xd: np.ndarray  # (2, B*4d/32) their scales
    xs: np.ndarray  # (2, B*4d/32) block sums
    buf: np.ndarray  # (2, 2, 4d) decoded weight rows
    scores: np.ndarray  # (2, B, max(n_ctx, n_audio))
    logits: np.ndarray  # (B, vocab)


@numba.njit(**_SER)
def step_body(tid, g, tokens, pos, int8, w, kv, s):
    """Decoder step g for tokens (B, 1), one per sequence, at position `pos` -> s.logits
    (B, vocab), run by thread `tid` (0 or 1) alone or by both at once; w `Weights`, kv
    `Cache` (position pos is written in row b, and src[b, pos] must already be b), s
    `Scratch`. int8: products on block-type weights take integer dots over per-block int8
    activations.

    Every product's rows and every attention's heads come in chunks that whichever thread
    gets there first claims (worksplit.py; g must grow from call to call on s.claim and
    s.done), so a thread that starts late — waking a pool thread costs ~0.1-0.2 ms on a
    shared VM, a twentieth of the step — leaves its work to the other, and one thread alone
    does the whole step. Each chunk is computed by one thread with the same code, so the
    logits are the same bits whoever computes what. Each thread keeps its own residual
    stream s.x[tid] and normalized rows s.h[tid] (recomputed by both: cheaper than a
    hand-off), read from per-layer phase outputs that nothing overwrites within the step,
    so a late thread replays the stream from finished results.
    """
    claim, done, n_head, kinds, shapes, fns = s.claim, s.done, w.n_head, w.kinds, w.shapes, w.row_fns
    x, h, xq, xd, xs, buf, scores = s.x[tid], s.h[tid], s.xq[tid], s.xd[tid], s.xs[tid], s.buf[tid], s.scores[tid]
    emb = as_matrix(w.emb)
    n = tokens.shape[0]
    d = x.shape[1]
    no_bias = w.b_qkv[0, :0]
    e16, e32 = float_views(w.emb_kind, emb)
    for b in range(n):
        decode_row(w.emb_kind, emb, e16, e32, tokens[b, 0], d, buf[0])
        for j in range(d):
            x[b, j] = buf[0, j] + w.pos_emb[pos, j]
    slot = 0
    for li in range(w.w_qkv.shape[0]):
        _attention_block(tid, g, claim, done, slot, fns, n_head, self_attention_heads, x, w.ln_g[li, 0],
                         w.ln_b[li, 0], h, kinds[0], _matrix(w.w_qkv, shapes, 0, li), w.b_qkv[li], s.qkv[li],
                         kv.k_self[li], kv.v_self[li], kv.src, pos, scores, s.att[li], kinds[1],
                         _matrix(w.w_out, shapes, 1, li),
                         w.b_out[li], s.y[li, 0], (xq, xd, xs, buf), int8)
        slot += 2 * PRODUCT_CHUNKS + n_head
        _attention_block(tid, g, claim, done, slot, fns, n_head, cross_attention_heads, x, w.ln_g[li, 1],
                         w.ln_b[li, 1], h, kinds[2], _matrix(w.w_cq, shapes, 2, li), w.b_cq[li], s.q[li],
                         kv.k_cross[li], kv.v_cross[li], kv.src, pos, scores, s.catt[li], kinds[3],
                         _matrix(w.w_co, shapes, 3, li),
                         w.b_co[li], s.y[li, 1], (xq, xd, xs, buf), int8)
        slot += 2 * PRODUCT_CHUNKS + n_head
        _layer_norm(x, w.ln_g[li, 2], w.ln_b[li, 2], h)
        _product(tid, g, claim, done, slot, PRODUCT_CHUNKS, fns, kinds[4], _matrix(w.w_fc1, shapes, 4, li),
                 w.b_fc1[li], True, h, xq, xd, xs, buf, s.mlp[li], int8)
        slot += PRODUCT_CHUNKS
        _product(tid, g, claim, done, slot, PRODUCT_CHUNKS, fns, kinds[5], _matrix(w.w_fc2, shapes, 5, li),
                 w.b_fc2[li], False, s.mlp[li], xq, xd, xs, buf, s.y[li, 2], int8)
        slot += PRODUCT_CHUNKS
        _residual(s.y[li, 2], x)
    _layer_norm(x, w.lnf_g, w.lnf_b, h)
    _product(tid, g, claim, done, slot, VOCAB_CHUNKS, fns, w.emb_kind, emb, no_bias, False, h, xq, xd, xs, buf,
             s.logits, int8)
