"""K-quant row dots (Q4_K, Q5_K, Q6_K) on int8 activations, in ggml's arithmetic.

ggml multiplies K-quant weights by activations quantized per 256 values to Q8_K
(quant.quantize_rows_q8_k): the integer products are exact, and only the per-super-block
scaling rounds. Which float steps follow depends on the kernel llama.cpp runs for the
type, and the dots here take the same steps in the same order:
- Q4_K: on AVX2, llama.cpp repacks every Q4_K matrix whose row count is a multiple of 8
  (CPU_REPACK, on by default). One activation row takes ggml_gemv_q4_K_8x8_q8_K: per
  super-block the whole integer sum, converted once, acc = fma(sum, d_w*d_x, acc), the
  mins likewise into their own accumulator, then acc - acc_min. Activation rows in fours
  (a prompt's rows but its last n % 4) take ggml_gemm_q4_K_8x8_q8_K, the same steps per
  64 values (two blocks of 32) instead of per super-block (`order=GEMM` below), on
  activations from the four-row quantizer (quant.quantize_rows_q8_k_4x8).
- Batches of 8+ rows by a matrix not repacked (Q5_K, Q6_K; Q4_K whose row count is not a
  multiple of 8) take ggml's tiled K-quant matmul (ggml-cpu/tiled, on by default): per
  super-block the whole integer sum s1 (and the mins' sum s2), res = d_w * s1 (Q4_K/Q5_K:
  res = fma(-dmin_w, s2, res)), acc = fma(res, d_x, acc) (`order=TILED` below).
- Q5_K, Q6_K (not repacked on x86): ggml_vec_dot_q5_K/q6_K_q8_K's AVX2 order: per
  super-block 8 int32 lanes (lane m = the products 4m..4m+3 of each 32, times their
  scale), acc = fma(d_w*d_x, lanes, acc), the row hsum_float_8(acc); Q5_K adds
  summs = fma(-d_x*dmin_w, sum of mins times block sums, summs).
The integer sums are the same whatever computes them, so the byte products use AVX2's
vpmaddubsw/vpmaddwd where the CPU has them (llvm_ir.HAS_AVX2) and portable vector IR
elsewhere: one kernel, bit-equal results on every CPU.

Activations (see actquant.py): xq (n, k) int8, xd (n, k/32) the Q8_K scale of each 256
values repeated for its 8 blocks of 32, xs (n, k/32) each 32 values' integer sum.
"""
from __future__ import annotations

from gguf import GGMLQuantizationType as QType
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from whisperlite.kernels.llvm_ir import (
    F32, HAS_AVX2, I8, I16, I32, I64, V8F, V8I, V16W, V32B, elem_ptr, fma1, fma8, hsum, ir_f16_to_f32, load, splat,
    vec)
from whisperlite.kernels.quant import KIND, QK, QK_K, QUANT_TYPES

SUBS = QK_K // QK  # blocks of 32 per super-block
# the float orders a dot can take (module docstring): one-row kernels, Q4_K's four-row
# gemm, ggml's tiled batch kernel
ROW, GEMM, TILED = "row", "gemm", "tiled"


def _shuffle(builder: ir.IRBuilder, v: ir.Value, idx: list[int]) -> ir.Value:
    return builder.shuffle_vector(v, v, ir.Constant(vec(I32, len(idx)), idx))


def _pair_sums(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """<2n x iN> -> <n x iN>: lane i = v[2i] + v[2i+1]."""
    n = v.type.count // 2
    return builder.add(_shuffle(builder, v, list(range(0, 2 * n, 2))), _shuffle(builder, v, list(range(1, 2 * n, 2))))


def dot32(builder: ir.IRBuilder, q: ir.Value, y: ir.Value, scale16: ir.Value) -> ir.Value:
    """32 unsigned weights q (<32 x i8>) times int8 activations y -> <8 x i32>, lane m =
    Σ_{i=4m..4m+3} q_i y_i times scale16[2m] (the i16 scale of those weights; scale16[2m] =
    scale16[2m+1]). AVX2: vpmaddubsw then vpmaddwd by the scales, as ggml; no step
    saturates for weights below 64 and |y| <= 127."""
    if HAS_AVX2:
        mod = builder.module
        maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(V16W, [V32B, V32B]), "llvm.x86.avx2.pmadd.ub.sw")
        maddwd = cgutils.get_or_insert_function(mod, ir.FunctionType(V8I, [V16W, V16W]), "llvm.x86.avx2.pmadd.wd")
        return builder.call(maddwd, [builder.call(maddubs, [q, y]), scale16])
    w16 = vec(I16, 32)
    p16 = _pair_sums(builder, builder.mul(builder.zext(q, w16), builder.sext(y, w16)))
    w32 = vec(I32, 16)
    return _pair_sums(builder, builder.mul(builder.sext(p16, w32), builder.sext(scale16, w32)))


def lane_totals(builder: ir.IRBuilder, vs: list[ir.Value]) -> ir.Value:
    """8 integer <8 x i32> vectors -> <8 x i32>, lane c = the sum of vs[c]'s lanes (4
    vectors: lanes 2c and 2c+1 hold vs[c]'s sum in two parts)."""
    join = ir.Constant(vec(I32, 16), list(range(16)))
    while len(vs) > 1:
        vs = [_pair_sums(builder, builder.shuffle_vector(a, b, join)) for a, b in zip(vs[0::2], vs[1::2])]
    return vs[0]


def hsum_int(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """Sum of an integer vector's lanes (exact)."""
    n = v.type.count
    while n > 1:
        n //= 2
        v = builder.add(_shuffle(builder, v, list(range(n))), _shuffle(builder, v, list(range(n, 2 * n))))
    return builder.extract_element(v, ir.Constant(I32, 0))


def scales_mins_k4(builder: ir.IRBuilder, blk: ir.Value, off: int) -> tuple[ir.Value, ir.Value]:
    """The 12 bytes at blk+off -> (scales, mins) <8 x i8>, six bits each (ggml's
    get_scale_min_k4: 0-3 in the low six bits of bytes 0-3 / 4-7, 4-7 in the nibbles of
    bytes 8-11 with their top two bits from the high bits of bytes 0-3 / 4-7)."""
    v4 = vec(I8, 4)
    a, b, c = (load(builder, blk, off + 4 * i, v4) for i in range(3))
    c4 = lambda x: ir.Constant(v4, [x] * 4)  # noqa: E731
    top = lambda x: builder.shl(builder.lshr(x, c4(6)), c4(4))  # noqa: E731
    sc_hi = builder.or_(builder.and_(c, c4(15)), top(a))
    m_hi = builder.or_(builder.lshr(c, c4(4)), top(b))
    join = ir.Constant(vec(I32, 8), list(range(8)))
    return (builder.shuffle_vector(builder.and_(a, c4(63)), sc_hi, join),
            builder.shuffle_vector(builder.and_(b, c4(63)), m_hi, join))


def _splat_scale(builder: ir.IRBuilder, sc: ir.Value, i: int) -> ir.Value:
    """Unsigned scale i of sc (<8 x i8>) as <16 x i16>."""
    return splat(builder, builder.zext(builder.extract_element(sc, ir.Constant(I32, i)), I16), 16)


def _nibbles32(builder: ir.IRBuilder, raw: ir.Value) -> tuple[ir.Value, ir.Value]:
    """<32 x i8> -> (low nibbles, high nibbles)."""
    return builder.and_(raw, ir.Constant(V32B, [15] * 32)), builder.lshr(raw, ir.Constant(V32B, [4] * 32))


def _bits(builder: ir.IRBuilder, v: ir.Value, shift: int, mask: int, to: int) -> ir.Value:
    """((v >> shift) & mask) << to on <32 x i8>."""
    c = lambda x: ir.Constant(V32B, [x] * 32)  # noqa: E731
    return builder.shl(builder.and_(builder.lshr(v, c(shift)), c(mask)), c(to))


def _q6_superblock(builder, blk, y, xd_b, acc8, acc, order):
    """One Q6_K super-block at blk with its activations y (8 <32 x i8>) into acc8. ggml
    adds (q - 32) y as q y in lanes of 4 products, minus, in lane c, 32 times block c's
    activations weighted by their scales (its bsums times scales)."""
    lay = QUANT_TYPES[QType.Q6_K]
    lanes = ir.Constant(V8I, [0] * 8)
    sc16 = load(builder, blk, lay.offset("scales"), vec(I8, 16))
    offsets = [None] * SUBS
    for h in range(2):
        qh = load(builder, blk, lay.offset("qh") + 32 * h, V32B)
        lo0, hi0 = _nibbles32(builder, load(builder, blk, 64 * h, V32B))
        lo1, hi1 = _nibbles32(builder, load(builder, blk, 64 * h + 32, V32B))
        for j, nib in enumerate((lo0, lo1, hi0, hi1)):
            c = 4 * h + j
            q = builder.or_(nib, _bits(builder, qh, 2 * j, 3, 4))
            scale = builder.sext(_shuffle(builder, sc16, [2 * c] * 8 + [2 * c + 1] * 8), V16W)
            lanes = builder.add(lanes, dot32(builder, q, y[c], scale))
            offsets[c] = dot32(builder, ir.Constant(V32B, [32] * 32), y[c], scale)
    lanes = builder.sub(lanes, lane_totals(builder, offsets))
    d_w = ir_f16_to_f32(builder, load(builder, blk, lay.offset("d"), I16))
    if order == TILED:
        res = builder.fmul(d_w, builder.sitofp(hsum_int(builder, lanes), F32))
        builder.store(fma1(builder, res, xd_b, builder.load(acc)), acc)
        return
    d = builder.fmul(xd_b, d_w)
    builder.store(fma8(builder, splat(builder, d, 8), builder.sitofp(lanes, V8F), builder.load(acc8)), acc8)


def _emit_rows(builder, qtype, bases, nbv, acts, order=ROW):
    """The dots of the weight rows at i8* bases with activation rows (each its int8 values,
    scales and block sums pointers in `acts`) -> totals[row][activation row], one float
    each. Rows share each super-block's activation loads and activation rows each weight
    super-block's (LLVM computes a block's unpacking once for all of them); each dot's
    arithmetic is that of `order`."""
    size = QUANT_TYPES[qtype].size
    accs = [[tuple(cgutils.alloca_once_value(builder, ir.Constant(ty, zero)) for ty, zero in
                   ((V8F, [0.0] * 8), (F32, 0.0), (F32, 0.0))) for _ in acts] for _ in bases]
    with cgutils.for_range(builder, builder.sdiv(nbv, ir.Constant(I64, SUBS))) as loop:
        sb = loop.index
        ys = []
        for qbase, xdbase, _ in acts:
            yb = builder.gep(qbase, [builder.mul(sb, ir.Constant(I64, QK_K))])
            ys.append(([load(builder, yb, QK * c, V32B) for c in range(SUBS)],
                       builder.load(builder.gep(xdbase, [builder.mul(sb, ir.Constant(I64, SUBS))]))))
        for base, row_accs in zip(bases, accs):
            blk = builder.gep(base, [builder.mul(sb, ir.Constant(I64, size))])
            for (y, xd_b), (_, _, xsbase), (acc8, acc, accm) in zip(ys, acts, row_accs):
                if qtype == QType.Q6_K:
                    _q6_superblock(builder, blk, y, xd_b, acc8, acc, order)
                else:
                    _q45_superblock(builder, qtype, blk, y, xsbase, sb, xd_b, acc8, acc, accm, order)
    return [[_total(builder, qtype, order, *a) for a in row_accs] for row_accs in accs]


def _total(builder, qtype, order, acc8, acc, accm):
    """A dot's accumulators -> its value, in `order`."""
    if order == TILED:
        return builder.load(acc)
    if qtype == QType.Q4_K:
        return builder.fsub(builder.load(acc), builder.load(accm))
    total = hsum(builder, builder.load(acc8))
    return builder.fadd(total, builder.load(accm)) if qtype == QType.Q5_K else total


def tile_ptrs(context, builder, sig, args, at: int, nrows: int, ntok: int):
    """For an intrinsic whose args[at:at+8] are (w, r, nb, xq, xd, xs, t, out): i8* to
    weight rows r..r+nrows-1, and (int8 values, scales, sums) pointers of activation rows
    t..t+ntok-1."""
    wv, rv, nbv, tv = args[at], args[at + 1], args[at + 2], args[at + 6]
    warr = context.make_array(sig.args[at])(context, builder, wv)
    rowstride = cgutils.unpack_tuple(builder, warr.strides, 2)[0]
    bases = [builder.gep(warr.data, [builder.mul(builder.add(rv, ir.Constant(I64, i)), rowstride)])
             for i in range(nrows)]
    acts = [_activation_ptrs(context, builder, sig, args, at + 3, builder.add(tv, ir.Constant(I64, j)), nbv)
            for j in range(ntok)]
    return bases, acts


def store_tile(context, builder, sig, args, at: int, totals) -> None:
    """out[t + j, r + i] = totals[i][j], args as `tile_ptrs` takes them."""
    rv, tv, outv = args[at + 1], args[at + 6], args[at + 7]
    oarr = context.make_array(sig.args[at + 7])(context, builder, outv)
    ostride = cgutils.unpack_tuple(builder, oarr.strides, 2)[0]
    for j in range(len(totals[0])):
        tj = builder.add(tv, ir.Constant(I64, j))
        orow = builder.bitcast(builder.gep(builder.bitcast(oarr.data, I8.as_pointer()), [builder.mul(tj, ostride)]),
                               F32.as_pointer())
        for i, row in enumerate(totals):
            builder.store(row[j], builder.gep(orow, [builder.add(rv, ir.Constant(I64, i))]))


def _activation_ptrs(context, builder, sig, args, at, tv, nbv):
    """(int8 values, scales, sums) pointers of activation row t; args[at:at+3] = xq, xd, xs."""
    qbase = elem_ptr(context, builder, sig.args[at], args[at], builder.mul(tv, builder.mul(nbv, ir.Constant(I64, QK))))
    xdbase = elem_ptr(context, builder, sig.args[at + 1], args[at + 1], builder.mul(tv, nbv))
    xsbase = elem_ptr(context, builder, sig.args[at + 2], args[at + 2], builder.mul(tv, nbv))
    return qbase, xdbase, xsbase


def row_idot_k(qtype: QType, order: str = ROW):
    """Intrinsic f(row, nb, xq, xd, xs, t) -> float32: one K-quant weight row (nb/8
    super-blocks of `qtype`) · activation row t, in ggml's `order` (module docstring)."""

    @intrinsic
    def dot(typingctx, row, nb, xq, xd, xs, t):
        def codegen(context, builder, sig, args):
            base = elem_ptr(context, builder, sig.args[0], args[0], ir.Constant(I64, 0))
            ptrs = _activation_ptrs(context, builder, sig, args, 2, args[5], args[1])
            return _emit_rows(builder, qtype, [base], args[1], [ptrs], order)[0][0]

        return types.float32(row, nb, xq, xd, xs, t), codegen

    return dot


def rows_idot_k(qtype: QType, nrows: int, order: str = ROW, ntok: int = 1):
    """Intrinsic f(w, r, nb, xq, xd, xs, t, out): out[t + j, r + i] = `row_idot_k` of
    weight row r + i with activation row t + j, for i < nrows, j < ntok, in one pass over
    the super-blocks (bit-equal to one dot at a time)."""

    @intrinsic
    def dots(typingctx, w, r, nb, xq, xd, xs, t, out):
        def codegen(context, builder, sig, args):
            bases, acts = tile_ptrs(context, builder, sig, args, 0, nrows, ntok)
            store_tile(context, builder, sig, args, 0, _emit_rows(builder, qtype, bases, args[2], acts, order))
            return context.get_dummy_value()

        return types.none(w, r, nb, xq, xd, xs, t, out), codegen

    return dots


def _q45_superblock(builder, qtype, blk, y, xsbase, sb, xd_b, acc8, acc, accm, order):
    """One Q4_K / Q5_K super-block at blk with its activations y (8 <32 x i8>) into the
    accumulators (`row_idot_k`) in `order`."""
    lay = QUANT_TYPES[qtype]
    lanes = ir.Constant(V8I, [0] * 8)
    d_w = ir_f16_to_f32(builder, load(builder, blk, lay.offset("d"), I16))
    dmin_w = ir_f16_to_f32(builder, load(builder, blk, lay.offset("dmin"), I16))
    sc, mins = scales_mins_k4(builder, blk, lay.offset("scales"))
    qoff = lay.offset("qs")
    qh = load(builder, blk, lay.offset("qh"), V32B) if qtype == QType.Q5_K else None
    bsums = builder.load(builder.bitcast(builder.gep(xsbase, [builder.mul(sb, ir.Constant(I64, SUBS))]),
                                         V8F.as_pointer()), align=4)
    min_terms = builder.mul(builder.zext(mins, V8I), builder.fptosi(bsums, V8I))
    if order == GEMM:  # ggml_gemm_q4_K_8x8_q8_K: per 64 values (blocks 2c, 2c+1) both fmas
        dd, ddmin = builder.fmul(d_w, xd_b), builder.fmul(dmin_w, xd_b)
        pairs = []
        for c in range(SUBS // 2):
            lo, hi = _nibbles32(builder, load(builder, blk, qoff + 32 * c, V32B))
            pairs.append(builder.add(dot32(builder, lo, y[2 * c], _splat_scale(builder, sc, 2 * c)),
                                     dot32(builder, hi, y[2 * c + 1], _splat_scale(builder, sc, 2 * c + 1))))
        # the four 64-value sums and their mins' sums reduced side by side (integers: exact
        # in any order), then the fmas one 64 values at a time as ggml takes them
        sums = builder.sitofp(_pair_sums(builder, lane_totals(builder, pairs)), vec(F32, SUBS // 2))
        msums = builder.sitofp(_pair_sums(builder, min_terms), vec(F32, SUBS // 2))
        for c in range(SUBS // 2):
            at = ir.Constant(I32, c)
            builder.store(fma1(builder, builder.extract_element(sums, at), dd, builder.load(acc)), acc)
            builder.store(fma1(builder, builder.extract_element(msums, at), ddmin, builder.load(accm)), accm)
        return
    for c in range(SUBS // 2):
        lo, hi = _nibbles32(builder, load(builder, blk, qoff + 32 * c, V32B))
        if qh is not None:  # bit s of qh byte i: the fifth bit of weight i of block s
            lo = builder.or_(lo, _bits(builder, qh, 2 * c, 1, 4))
            hi = builder.or_(hi, _bits(builder, qh, 2 * c + 1, 1, 4))
        lanes = builder.add(lanes, dot32(builder, lo, y[2 * c], _splat_scale(builder, sc, 2 * c)))
        lanes = builder.add(lanes, dot32(builder, hi, y[2 * c + 1], _splat_scale(builder, sc, 2 * c + 1)))
    msum = hsum_int(builder, min_terms)
    if order == TILED:  # ggml's tiled kernel: res = d_w*s1 - dmin_w*s2 (fused), acc = fma(res, d_x, acc)
        res = builder.fmul(d_w, builder.sitofp(hsum_int(builder, lanes), F32))
        res = fma1(builder, builder.fsub(ir.Constant(F32, -0.0), dmin_w), builder.sitofp(msum, F32), res)
        builder.store(fma1(builder, res, xd_b, builder.load(acc)), acc)
    elif qtype == QType.Q4_K:  # the repacked one-row kernel: whole sums, then acc - acc_min
        total = builder.sitofp(hsum_int(builder, lanes), F32)
        builder.store(fma1(builder, total, builder.fmul(d_w, xd_b), builder.load(acc)), acc)
        builder.store(fma1(builder, builder.sitofp(msum, F32), builder.fmul(dmin_w, xd_b),
                           builder.load(accm)), accm)
    else:  # Q5_K: ggml_vec_dot_q5_K_q8_K
        d = builder.fmul(xd_b, d_w)
        builder.store(fma8(builder, splat(builder, d, 8), builder.sitofp(lanes, V8F), builder.load(acc8)),
                      acc8)
        dmin = builder.fsub(ir.Constant(F32, -0.0), builder.fmul(xd_b, dmin_w))  # exactly (-d_x)*dmin_w
        builder.store(fma1(builder, dmin, builder.sitofp(msum, F32), builder.load(accm)), accm)

idot_q4_k = row_idot_k(QType.Q4_K)
idot_q5_k = row_idot_k(QType.Q5_K)
idot_q6_k = row_idot_k(QType.Q6_K)
ROWS_PER_PASS = 4
idots_q4_k = rows_idot_k(QType.Q4_K, ROWS_PER_PASS)
idots_q5_k = rows_idot_k(QType.Q5_K, ROWS_PER_PASS)
idots_q6_k = rows_idot_k(QType.Q6_K, ROWS_PER_PASS)
# A batch kernel's float order by code (`batch_tokens_k` takes the code): Q4_K's four-row
# gemm, ggml's tiled matmul, the one-row kernels (a gemm batch's last n % 4 rows).
BATCH_ORDERS = (GEMM, TILED, ROW)
BATCH_GEMM, BATCH_TILED, BATCH_ROW = range(len(BATCH_ORDERS))


def batch_tokens_k(ntok: int):
    """Intrinsic f(kind, order, w, r, nb, xq, xd, xs, t, out): `rows_idot_k` of weight row r
    by activation rows t..t+ntok-1 (one pass, each weight super-block unpacked once) for the
    K-quant code `kind` in the order BATCH_ORDERS[order] (GEMM: Q4_K only)."""

    @intrinsic
    def dots(typingctx, kind, order, w, r, nb, xq, xd, xs, t, out):
        def codegen(context, builder, sig, args):
            end = builder.append_basic_block("batch.end")
            by_order = builder.switch(args[1], end)
            for code, name in enumerate(BATCH_ORDERS):
                block = builder.append_basic_block(f"batch.{name}")
                by_order.add_case(ir.Constant(args[1].type, code), block)
                builder.position_at_end(block)
                by_kind = builder.switch(args[0], end)
                for qtype in (QType.Q4_K,) if name == GEMM else (QType.Q4_K, QType.Q5_K, QType.Q6_K):
                    block = builder.append_basic_block(f"batch.{name}.{qtype.name}")
                    by_kind.add_case(ir.Constant(args[0].type, KIND[qtype]), block)
                    builder.position_at_end(block)
                    bases, acts = tile_ptrs(context, builder, sig, args, 2, 1, ntok)
                    store_tile(context, builder, sig, args, 2, _emit_rows(builder, qtype, bases, args[4], acts, name))
                    builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        return types.none(kind, order, w, r, nb, xq, xd, xs, t, out), codegen

    return dots


# A prompt's rows: one weight row by TOKENS_PER_PASS activation rows a pass, the last
# n % TOKENS_PER_PASS by two and one.
TOKENS_PER_PASS = 4
batch_tokens = batch_tokens_k(TOKENS_PER_PASS)
batch_two = batch_tokens_k(2)
batch_one = batch_tokens_k(1)
