"""Products of several activation rows (a prompt's tokens) by a 32-weight block type
(Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) in ggml's integer arithmetic, a tile of weight rows by
activation rows at a time.

gemv.py's integer dots take one activation row per pass over a weight row, so a prompt
of n tokens unpacks every weight block n times; unpacking costs about as much as the
dot. Here each pass takes TILE_ROWS weight rows by TILE_TOKENS activation rows: every
block is unpacked once per tile and every activation block loaded once per tile (as
llama.cpp's tinyBLAS tiles its prompt products). Each (row, token) dot keeps the
arithmetic and order of gemv's one-row dot (`_row_idot`: per block the byte products
summed into 8 int32 lanes, acc = fma(lanes, d_w*d_x, acc), hsum_float_8, plus the "_1"
types' fma(m, s_x, ·) chain), so the results are the same bits.

Q4_0 and Q5_0 blocks are d * (q - zero) with signed q - zero in int8 range: for prompts
of WIDEN_MIN_TOKENS and more, each task first widens its weight rows into Q8_0 blocks
(the same d, the 32 values q - zero as bytes) and tiles over those, so the nibbles and
fifth bits are unpacked once per product instead of once per tile of tokens. A Q8_0 tile
takes the same integer lanes and float steps as the Q4_0 / Q5_0 one: the same bits.
"""
from __future__ import annotations

import numba
import numpy as np
from gguf import GGMLQuantizationType as QType
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from whisperlite.kernels.gemv import LEGACY_KIND, idot_range
from whisperlite.kernels.kquant import store_tile, tile_ptrs
from whisperlite.kernels.llvm_ir import (
    F32, HAS_AVX512_VNNI, I16, I32, I64, V8F, V64B, byte_dot, emit_block_i8, fma1, fma8, hsum, load, load_v32b,
    sign_split, splat, vec, wide_byte_dot, wide_sign_split)
from whisperlite.kernels.quant import KIND, KIND_Q8_0, QK, QUANT_TYPES
from whisperlite.kernels.share import share_rows, shared, worth_sharing
from whisperlite.kernels.variants import njit_variant

# 4 x 3 accumulators and their operands fill AVX2's 16 vector registers; AVX-512's 32
# hold 4 x 4, each block's weights then reused by one more token.
TILE_ROWS, TILE_TOKENS = 4, 4 if HAS_AVX512_VNNI else 3
# Weight rows per parallel task: a range that stays in L2 while every token passes over it.
ROWS_PER_TASK = 64
# The types widened to Q8_0 (their codes), from this many tokens: below two tiles of
# tokens the unpacking saved does not pay for the widened rows' stores.
WIDEN_KINDS = tuple(KIND[q] for q in (QType.Q4_0, QType.Q5_0))
WIDEN_MIN_TOKENS = 2 * TILE_TOKENS
Q8_0_BYTES = QUANT_TYPES[QType.Q8_0].size


def _emit_tile(context, builder, sig, args, lay, nrows: int, ntok: int) -> None:
    """out[t + j, r + i] = weight row r + i · activation row t + j for i < nrows, j < ntok
    (args[1:]: w, r, nb, xq, xd, xs, t, out), each as gemv's `_row_idot` computes it for
    weights of layout `lay`.

    With AVX-512 VNNI the blocks go two at a time: one 64-byte vpdpbusd and one conversion
    give both blocks' integer lanes, which then enter the accumulator block by block (two
    fmas, in ggml's order), so the bits are those of one block at a time."""
    size = lay.size
    has_m = lay.offset("m") is not None
    nbv = args[3]
    bases, acts = tile_ptrs(context, builder, sig, args, 1, nrows, ntok)
    accs = [[cgutils.alloca_once_value(builder, ir.Constant(V8F, [0.0] * 8)) for _ in acts] for _ in bases]
    offs = [[cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0)) for _ in acts] for _ in bases]

    def scales(b):
        xd_b = [builder.load(builder.gep(xb, [b])) for _, xb, _ in acts]
        xs_b = [builder.load(builder.gep(xb, [b])) for _, _, xb in acts] if has_m else None
        return xd_b, xs_b

    def add_block(i, j, lanes, d, m, xd_b, xs_b):
        acc = accs[i][j]
        scale = builder.fmul(d, xd_b[j])
        builder.store(fma8(builder, lanes, splat(builder, scale, 8), builder.load(acc)), acc)
        if has_m:
            builder.store(fma1(builder, m, xs_b[j], builder.load(offs[i][j])), offs[i][j])

    def one_block(b):
        ys = [load_v32b(builder, qb, builder.mul(b, ir.Constant(I64, QK))) for qb, _, _ in acts]
        xd_b, xs_b = scales(b)
        for i in range(nrows):
            blk = builder.gep(bases[i], [builder.mul(b, ir.Constant(I64, size))])
            q, d, m, signed = emit_block_i8(builder, lay, blk)
            qabs, sign = sign_split(builder, q, signed)
            for j in range(ntok):
                add_block(i, j, builder.sitofp(byte_dot(builder, qabs, sign, ys[j]), V8F), d, m, xd_b, xs_b)

    def two_blocks(b):
        b1 = builder.add(b, ir.Constant(I64, 1))
        ys = [load(builder, qb, builder.mul(b, ir.Constant(I64, QK)), V64B) for qb, _, _ in acts]
        (xd0, xs0), (xd1, xs1) = scales(b), scales(b1)
        for i in range(nrows):
            blk = builder.gep(bases[i], [builder.mul(b, ir.Constant(I64, size))])
            q0, d0, m0, signed = emit_block_i8(builder, lay, blk)
            q1, d1, m1, _ = emit_block_i8(builder, lay, builder.gep(blk, [ir.Constant(I64, size)]))
            q = builder.shuffle_vector(q0, q1, ir.Constant(vec(I32, 64), list(range(64))))
            qabs, neg = wide_sign_split(builder, q, signed)
            for j in range(ntok):
                lanes = builder.sitofp(wide_byte_dot(builder, qabs, neg, ys[j]), vec(F32, 16))
                for half, d, m, xd_b, xs_b in ((0, d0, m0, xd0, xs0), (8, d1, m1, xd1, xs1)):
                    part = builder.shuffle_vector(lanes, lanes, ir.Constant(vec(I32, 8), list(range(half, half + 8))))
                    add_block(i, j, part, d, m, xd_b, xs_b)

    if HAS_AVX512_VNNI:
        with cgutils.for_range(builder, builder.udiv(nbv, ir.Constant(I64, 2))) as loop:
            two_blocks(builder.mul(loop.index, ir.Constant(I64, 2)))
        with builder.if_then(builder.trunc(nbv, ir.IntType(1))):
            one_block(builder.sub(nbv, ir.Constant(I64, 1)))
    else:
        with cgutils.for_range(builder, nbv) as loop:
            one_block(loop.index)
    totals = [[hsum(builder, builder.load(acc)) for acc in row] for row in accs]
    if has_m:
        totals = [[builder.fadd(v, builder.load(off)) for v, off in zip(row, orow)] for row, orow in zip(totals, offs)]
    store_tile(context, builder, sig, args, 1, totals)


def tile_idot(nrows: int, ntok: int):
    """Intrinsic f(kind, w, r, nb, xq, xd, xs, t, out): `_emit_tile` for the 32-weight
    type of code `kind` (gemv.LEGACY_KIND; any other writes nothing)."""

    @intrinsic
    def tile(typingctx, kind, w, r, nb, xq, xd, xs, t, out):
        def codegen(context, builder, sig, args):
            end = builder.append_basic_block("tile.end")
            switch = builder.switch(args[0], end)
            for qtype, code in LEGACY_KIND.items():
                block = builder.append_basic_block(f"tile.{qtype.name}")
                switch.add_case(ir.Constant(args[0].type, code), block)
                builder.position_at_end(block)
                _emit_tile(context, builder, sig, args, QUANT_TYPES[qtype], nrows, ntok)
                builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        return types.none(kind, w, r, nb, xq, xd, xs, t, out), codegen

    return tile


@intrinsic
def widen_rows(typingctx, kind, w, r0, r1, nb, dst):
    """dst[r - r0] = weight row r of w as nb Q8_0 blocks (the block's d bits, then its 32
    values q - zero as int8) for r0 <= r < r1, w of a type in WIDEN_KINDS (code `kind`;
    any other writes nothing)."""

    def codegen(context, builder, sig, args):
        kindv, wv, r0v, r1v, nbv, dv = args
        warr = context.make_array(sig.args[1])(context, builder, wv)
        darr = context.make_array(sig.args[5])(context, builder, dv)
        wstride = cgutils.unpack_tuple(builder, warr.strides, 2)[0]
        dstride = cgutils.unpack_tuple(builder, darr.strides, 2)[0]
        q8 = QUANT_TYPES[QType.Q8_0]
        end = builder.append_basic_block("widen.end")
        switch = builder.switch(kindv, end)
        for code in WIDEN_KINDS:
            lay = QUANT_TYPES[next(q for q, c in KIND.items() if c == code)]
            block = builder.append_basic_block(f"widen.{code}")
            switch.add_case(ir.Constant(kindv.type, code), block)
            builder.position_at_end(block)
            with cgutils.for_range(builder, builder.sub(r1v, r0v)) as rows:
                src_row = builder.gep(warr.data, [builder.mul(builder.add(r0v, rows.index), wstride)])
                dst_row = builder.gep(darr.data, [builder.mul(rows.index, dstride)])
                with cgutils.for_range(builder, nbv) as blocks:
                    blk = builder.gep(src_row, [builder.mul(blocks.index, ir.Constant(I64, lay.size))])
                    out = builder.gep(dst_row, [builder.mul(blocks.index, ir.Constant(I64, q8.size))])
                    q = emit_block_i8(builder, lay, blk)[0]
                    bits = load(builder, blk, lay.offset("d"), I16)
                    builder.store(bits, builder.bitcast(builder.gep(out, [ir.Constant(I64, q8.offset("d"))]),
                                                        I16.as_pointer()), align=1)
                    builder.store(q, builder.bitcast(builder.gep(out, [ir.Constant(I64, q8.offset("qs"))]),
                                                     q.type.as_pointer()), align=1)
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return types.none(kind, w, r0, r1, nb, dst), codegen


_tile = tile_idot(TILE_ROWS, TILE_TOKENS)
_tile2 = tile_idot(TILE_ROWS, 2)
_tile1 = tile_idot(TILE_ROWS, 1)


@numba.njit(inline="always", cache=True)
def _gemm_task(kind, xq, xd, xs, w, out, r0, r1):
    """out[:, r0:r1] of `_gemm_body`: tiles where they fit (over rows widened to Q8_0 where
    that applies), gemv's one-row dots for the rows and tokens left over."""
    n, k = xq.shape
    nb = k // QK
    r_full = r0 + (r1 - r0) // TILE_ROWS * TILE_ROWS
    if n >= WIDEN_MIN_TOKENS and (kind == WIDEN_KINDS[0] or kind == WIDEN_KINDS[1]):
        wide = np.empty((r_full - r0, nb * Q8_0_BYTES), np.uint8)
        widen_rows(kind, w, r0, r_full, nb, wide)
        _tiles(KIND_Q8_0, xq, xd, xs, wide, out[:, r0:r_full])
    else:
        _tiles(kind, xq, xd, xs, w[r0:r_full], out[:, r0:r_full])
    for t in range(n):
        idot_range(kind, w, r_full, r1, nb, xq, xd, xs, t, out)


def _gemm_body(kind, xq, xd, xs, w, out):
    """xq (n, k) int8 with block scales xd and sums xs (actquant.py) @ w (d, bytes).T ->
    out (n, d), w of the 32-weight type `kind` (gemv.LEGACY_KIND), ROWS_PER_TASK rows a
    task (`_gemm_task`)."""
    rows = w.shape[0]
    tasks = (rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for p in prange(tasks):
        _gemm_task(kind, xq, xd, xs, w, out, p * ROWS_PER_TASK, min(rows, (p + 1) * ROWS_PER_TASK))
    return out


@numba.njit(inline="always", cache=True)
def _tiles(kind, xq, xd, xs, w, out):
    """out = xq @ w.T for w's rows (a multiple of TILE_ROWS), in tiles of TILE_ROWS rows
    by TILE_TOKENS tokens, then two and one token for the tokens left over."""
    n, nb = xq.shape[0], xq.shape[1] // QK
    rows = w.shape[0]
    n_full = n - n % TILE_TOKENS
    for t in range(0, n_full, TILE_TOKENS):
        for r in range(0, rows, TILE_ROWS):
            _tile(kind, w, r, nb, xq, xd, xs, t, out)
    t = n_full
    while t + 2 <= n:
        for r in range(0, rows, TILE_ROWS):
            _tile2(kind, w, r, nb, xq, xd, xs, t, out)
        t += 2
    if t < n:
        for r in range(0, rows, TILE_ROWS):
            _tile1(kind, w, r, nb, xq, xd, xs, t, out)


_gemm_par = njit_variant(_gemm_body, "par", parallel=True, nogil=True, cache=True)
_gemm_seq = njit_variant(_gemm_body, "seq", nogil=True, cache=True)


@numba.njit(inline="always", cache=True)
def _gemm_rows(args, out, r0, r1):
    """out[:, r0:r1] of `_gemm_body` for args (kind, xq, xd, xs, w), r0 and r1 multiples of
    ROWS_PER_TASK (or r1 the last row), task by task as `_gemm_body` runs them."""
    kind, xq, xd, xs, w = args
    for t0 in range(r0, r1, ROWS_PER_TASK):
        _gemm_task(kind, xq, xd, xs, w, out, t0, min(r1, t0 + ROWS_PER_TASK))


_gemm_shared = share_rows(_gemm_rows, cache=True)


def gemm_i8(kind: int, xq: np.ndarray, xd: np.ndarray, xs: np.ndarray, w: np.ndarray, out: np.ndarray,
            parallel: bool) -> np.ndarray:
    """`_gemm_body` shared with the helper thread (share.py) where that is worth it, else
    on numba's pool (parallel) or on this thread."""
    if worth_sharing(w.size * xq.shape[0]):
        return shared(_gemm_shared, out, ROWS_PER_TASK, (kind, xq, xd, xs, w))
    return (_gemm_par if parallel else _gemm_seq)(kind, xq, xd, xs, w, out)
