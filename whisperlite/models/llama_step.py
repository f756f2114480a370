"""The LLaMA decoder's one-token step as one numba program, on one thread or two.

A 135M model's token is ~400 small operations (30 layers of norms, four products, rope,
a KV-cache write, attention, SwiGLU); as separate calls from Python their dispatch costs
about as much as their arithmetic, and at two threads each parallel kernel woke numba's
pool again, so two threads ran slower than one. Here `step_body` runs the whole step in
one call with ggml's arithmetic throughout (the same kernels as the general path in
llama.py, so the logits are the same bits): each thread (`tid` 0 or 1) walks every layer,
and the products' rows, the KV heads' cache writes and the attention heads come in chunks
that whichever thread gets there first claims (kernels/worksplit.py), so one thread alone
does the whole step and a late one only helps.

Each thread keeps its own residual stream and normalized, quantized rows (cheap to compute
twice); everything a chunk writes is per layer (nothing overwrites it within a step), so a
thread that arrives late replays the stream from finished results. The SiLU gate is taken
per chunk of the gate|up product (a chunk computes gate rows a..b and up rows a..b), so no
thread waits for the whole of it before the next product.

The program is not compiled with fast-math: the float steps between the products (RMSNorm,
rope, f16 rounding, softmax, SiLU) follow ggml's operation order, which reassociation or
contraction would change.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from whisperlite.kernels.ggml_order import attend_head, rms_norm_serial, round_f16, silu_mul_at
from whisperlite.kernels.gemv import idot_range
from whisperlite.kernels.quant import QK, quantize_rows_for
from whisperlite.kernels.rope import rotate_head
from whisperlite.kernels.rowdots import address, as_matrix
from whisperlite.kernels.worksplit import _await, _claim, _finish, slots_length

_SER = dict(error_model="numpy", nogil=True, cache=True)

# Chunks per product: enough that a thread arriving late still finds some.
QKV_CHUNKS, OUT_CHUNKS, GATE_UP_CHUNKS, DOWN_CHUNKS = 4, 4, 8, 4
VOCAB_CHUNKS = 16
# Matrix roles, in the order of Weights.kinds / shapes / addrs.
QKV, OUT, GATE_UP, DOWN = 0, 1, 2, 3


def step_slots(n_layer: int, n_head: int, n_head_kv: int) -> int:
    """Length of each of the int64 claim and done arrays the step takes."""
    per_layer = QKV_CHUNKS + n_head_kv + n_head + OUT_CHUNKS + GATE_UP_CHUNKS + DOWN_CHUNKS
    return slots_length(n_layer * per_layer + VOCAB_CHUNKS)


class Weights(NamedTuple):
    """The weights as the step reads them: each layer's matrices as int64 addresses of
    uint8 (rows, bytes) views (a tuple of arrays would compile once per model depth),
    with a kind code (quant.KIND) and shape per layer and role."""

    kinds: np.ndarray  # (L, 4) int64: qkv, out, gate|up, down
    shapes: np.ndarray  # (L, 4, 2) int64
    addrs: np.ndarray  # (L, 4) int64
    attn_norm: np.ndarray  # (L, d) float32
    ffn_norm: np.ndarray  # (L, d)
    out_norm: np.ndarray  # (d,)
    out_kind: int
    out: np.ndarray  # (vocab, bytes) uint8, maybe read-only
    n_head: int
    n_head_kv: int
    eps: float
    kv_pad: int
    lanes: int


class Scratch(NamedTuple):
    """Everything the step writes: chunk claims, per-layer phase outputs, per-thread rows."""

    claim: np.ndarray  # (step_slots,) int64, zero at first
    done: np.ndarray
    qkv: np.ndarray  # (L, 1, nq + 2 nkv)
    att: np.ndarray  # (L, 1, nq)
    o: np.ndarray  # (L, 1, d)
    gu: np.ndarray  # (L, 1, 2 n_ff)
    act: np.ndarray  # (L, 1, n_ff) silu(gate) * up
    down: np.ndarray  # (L, 1, d)
    x: np.ndarray  # (2, 1, d) each thread's residual stream
    h: np.ndarray  # (2, 1, d) and its normalized row
    xq: np.ndarray  # (2, max k) int8: a product's input quantized per block
    xd: np.ndarray  # (2, max k / 32) float32: the block scales
    xs: np.ndarray  # (2, max k / 32) float32: the block sums (Q8_1) or integer sums (Q8_0)
    head: np.ndarray  # (2, n_head * hd) a rotated query or key
    logits: np.ndarray  # (1, vocab)


@intrinsic
def f32_address(typingctx, addr):
    """An int64 address as a float32 pointer."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(types.float32)(addr), codegen


@numba.njit(inline="always", **_SER)
def layer_matrix(w, li, role):
    return numba.carray(address(w.addrs[li, role]), (w.shapes[li, role, 0], w.shapes[li, role, 1]))


@numba.njit(**_SER)
def dot_rows(kind, w, r0, r1, xq, xd, xs, out):
    """out[0, r] = W[r] · x for r0 <= r < r1 with ggml's integer dots (gemv.idot_range)."""
    idot_range(kind, w, r0, r1, xq.shape[1] // QK, xq, xd, xs, 0, out)


@numba.njit(inline="always", **_SER)
def quantize_input(x, kind, xqf, xdf, xsf):
    """x (1, k) as ggml quantizes a product's input for weights of `kind` (Q8_K for the
    K-quants, Q8_1 for the "_1" types, else Q8_0) -> (1, k) int8, (1, k/32) scales and
    sums: views of the flat scratch."""
    k = x.shape[1]
    xq = xqf[:k].reshape((1, k))
    xd = xdf[: k // QK].reshape((1, k // QK))
    xs = xsf[: k // QK].reshape((1, k // QK))
    quantize_rows_for(kind, x, xq, xd, xs)
    return xq, xd, xs


@numba.njit(inline="always", **_SER)
def product_phase(tid, g, claim, done, slot0, chunks, kind, w, x, xqf, xdf, xsf, out):
    """out (1, rows) = x @ W.T in `chunks` chunks of rows from slot0 on: those this thread
    claims (its own half first), then wait for the rest."""
    xq, xd, xs = quantize_input(x, kind, xqf, xdf, xsf)
    rows = w.shape[0]
    for c in range(chunks):
        cc = (c + tid * (chunks // 2)) % chunks
        if _claim(claim, slot0 + cc, g):
            dot_rows(kind, w, rows * cc // chunks, rows * (cc + 1) // chunks, xq, xd, xs, out)
            _finish(done, slot0 + cc, g)
    _await(done, slot0, chunks, g)


@numba.njit(inline="always", **_SER)
def store_kv(kc, vc, k, qkv, v_at, gh, pos, hd):
    """KV head `gh`'s key (from `k`) and value (from `qkv` at `v_at`) at `pos`, rounded to
    float16 as ggml's cache holds them; values transposed, as attend_head reads them."""
    for j in range(hd):
        kc[gh, pos, j] = round_f16(k[0, gh, j])
        vc[gh, j, pos] = round_f16(qkv[0, v_at + j])


@numba.njit(inline="always", **_SER)
def add_row(x, y):
    for j in range(x.shape[1]):
        x[0, j] += y[0, j]


@numba.njit(**_SER)
def step_body(tid, g, pos, x0, cos, sin, k_addrs, v_addrs, n_ctx, w, s):
    """Step g (growing from call to call on s.claim / s.done) for one token whose embedding
    row is x0 (1, d), at position `pos`, by thread `tid` (0 or 1) alone or with the other
    -> s.logits. cos, sin (1, hd/2): the position's rope cache; k_addrs, v_addrs (L,) the
    addresses of each layer's KV cache, K (n_kv, n_ctx, hd) and V (n_kv, hd, n_ctx)
    float32; w `Weights`, s `Scratch`."""
    claim, done = s.claim, s.done
    x, h, xqf, xdf, xsf, hb = s.x[tid], s.h[tid], s.xq[tid], s.xd[tid], s.xs[tid], s.head[tid]
    n_head, n_kv = w.n_head, w.n_head_kv
    d = x.shape[1]
    nq = s.att.shape[2]
    hd = nq // n_head
    nkv = n_kv * hd
    n_ff = s.act.shape[2]
    scale = 1.0 / np.sqrt(np.float64(hd))
    for j in range(d):
        x[0, j] = x0[0, j]
    slot = 0
    for li in range(w.kinds.shape[0]):
        kinds = w.kinds[li]
        kc = numba.carray(f32_address(k_addrs[li]), (n_kv, n_ctx, hd))
        vc = numba.carray(f32_address(v_addrs[li]), (n_kv, hd, n_ctx))
        qkv = s.qkv[li]
        rms_norm_serial(x, w.attn_norm[li], w.eps, h)
        product_phase(tid, g, claim, done, slot, QKV_CHUNKS, kinds[QKV], layer_matrix(w, li, QKV), h, xqf, xdf, xsf, qkv)
        slot += QKV_CHUNKS
        # Keys rotated, then keys and values rounded to float16 into the cache, one KV head a chunk.
        kb = hb[:nkv].reshape((1, n_kv, hd))
        for c in range(n_kv):
            gh = (c + tid * (n_kv // 2)) % n_kv
            if _claim(claim, slot + gh, g):
                for j in range(hd):
                    kb[0, gh, j] = qkv[0, nq + gh * hd + j]
                rotate_head(kb, 0, gh, cos, sin, True, False)
                store_kv(kc, vc, kb, qkv, nq + nkv + gh * hd, gh, pos, hd)
                _finish(done, slot + gh, g)
        _await(done, slot, n_kv, g)
        slot += n_kv
        # Query heads: rotated, then attention over the cache, one head a chunk.
        qb = hb[:nq].reshape((1, n_head, hd))
        att = s.att[li].reshape((1, n_head, hd))
        for c in range(n_head):
            hh = (c + tid * (n_head // 2)) % n_head
            if _claim(claim, slot + hh, g):
                for j in range(hd):
                    qb[0, hh, j] = qkv[0, hh * hd + j]
                rotate_head(qb, 0, hh, cos, sin, True, False)
                attend_head(qb, kc, vc, pos, scale, w.kv_pad, 0, w.lanes, att, 0, hh)
                _finish(done, slot + hh, g)
        _await(done, slot, n_head, g)
        slot += n_head
        product_phase(tid, g, claim, done, slot, OUT_CHUNKS, kinds[OUT], layer_matrix(w, li, OUT), s.att[li], xqf, xdf, xsf,
                 s.o[li])
        slot += OUT_CHUNKS
        add_row(x, s.o[li])
        rms_norm_serial(x, w.ffn_norm[li], w.eps, h)
        # gate|up: chunk c computes gate rows a..b and up rows a..b, then their SwiGLU.
        gu, act = s.gu[li], s.act[li]
        xq, xd, xs = quantize_input(h, kinds[GATE_UP], xqf, xdf, xsf)
        wgu = layer_matrix(w, li, GATE_UP)
        for c in range(GATE_UP_CHUNKS):
            cc = (c + tid * (GATE_UP_CHUNKS // 2)) % GATE_UP_CHUNKS
            if _claim(claim, slot + cc, g):
                a, b = n_ff * cc // GATE_UP_CHUNKS, n_ff * (cc + 1) // GATE_UP_CHUNKS
                dot_rows(kinds[GATE_UP], wgu, a, b, xq, xd, xs, gu)
                dot_rows(kinds[GATE_UP], wgu, n_ff + a, n_ff + b, xq, xd, xs, gu)
                for j in range(a, b):
                    act[0, j] = silu_mul_at(gu[0, j], gu[0, n_ff + j], j, n_ff, w.lanes)
                _finish(done, slot + cc, g)
        _await(done, slot, GATE_UP_CHUNKS, g)
        slot += GATE_UP_CHUNKS
        product_phase(tid, g, claim, done, slot, DOWN_CHUNKS, kinds[DOWN], layer_matrix(w, li, DOWN), act, xqf, xdf, xsf,
                 s.down[li])
        slot += DOWN_CHUNKS
        add_row(x, s.down[li])
    rms_norm_serial(x, w.out_norm, w.eps, h)
    product_phase(tid, g, claim, done, slot, VOCAB_CHUNKS, w.out_kind, as_matrix(w.out), h, xqf, xdf, xsf, s.logits)


@numba.njit(parallel=True, **_SER)
def step_parallel(g, pos, x0, cos, sin, k_addrs, v_addrs, n_ctx, w, s):
    """`step_body` on two threads of numba's pool (with a one-thread pool the two run in
    order: the second finds every chunk done)."""
    for p in prange(2):
        step_body(np.int64(p), g, pos, x0, cos, sin, k_addrs, v_addrs, n_ctx, w, s)
