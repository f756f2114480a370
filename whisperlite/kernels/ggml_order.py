"""ggml's CPU arithmetic, operation for operation, so LLaMA logits match llama.cpp bit for bit.

Why bit for bit: SmolLM2's residual stream carries activations near 2e4. ggml quantizes
activations to 8 bits per 32-value block before every product, so a block holding one such
value has a coarse step, and one ulp of difference anywhere can flip a rounding there and
move the logits by 0.1-0.8 (measured: 1e-7 relative noise on the products moves them by
0.7). Matching llama.cpp's greedy text therefore needs the same float operations in the same
order, not merely accurate ones. That order depends on the llama.cpp build (`GgmlArith`):
the vector width of its float code (AVX-512 or AVX2) and its KV view padding. Followed here
(llama.cpp c392e509, which made the references in ../shared/reference/llama, and the
llama.cpp of llama-cpp-python 0.3.36 / ggml 0.25.3, on x86):

- quantized dot products: not here, the shared kernels' ggml mode (gemv.py, actquant.py)
  keeps ggml's lane order (the same AVX2 code in both builds) and is bit-exact;
- float16 products (K·Q and P·V in attention): one token uses ggml_vec_dot_f16 (four
  w-lane accumulators), a batch uses llamafile's tinyBLAS (one w-lane fma chain), reduced
  as the compiler/intrinsics do (_mm512_reduce_add_ps; AVX2 hadd or movehl/movehdup);
- exp in softmax and SiLU: ggml_v_expf (a polynomial, not libm's expf; its AVX2 and
  AVX-512 variants round differently);
- rms_norm: squares summed in double, scale in float, then (x*scale)*w;
- rope (kernels.rope, fused=True): libm cosf/sinf, rotation with GCC's FMA contraction.
An fma is computed exactly in float64 and rounded once to float32 (the product of two
float32 is exact in float64; the double rounding this leaves is below 2^-29 likely).
numpy references of the orders: tests/test_llama_kernels.py; end to end: tests/test_llama.py
(the stored c392e509 references) and tests/test_llama_kernels.py (the installed llama.cpp).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from whisperlite.kernels.ops import PARALLEL_MIN
from whisperlite.kernels.quant import f16_to_f32, f32_to_f16
from whisperlite.kernels.variants import njit_variant

_f32 = np.float32
_f64 = np.float64

# ggml_v_expf constants (ARM optimized-routines expf, as ggml spells them in hex floats).
_SHIFT = _f32(float.fromhex("0x1.8p23"))
_LOG2E = _f32(float.fromhex("0x1.715476p+0"))
_LN2_HI = _f32(float.fromhex("0x1.62e4p-1"))
_LN2_LO = _f32(float.fromhex("0x1.7f7d1cp-20"))
_C5 = _f32(float.fromhex("0x1.0e4020p-7"))
_C4 = _f32(float.fromhex("0x1.573e2ep-5"))
_C3 = _f32(float.fromhex("0x1.555e66p-3"))
_C2 = _f32(float.fromhex("0x1.fffdb6p-2"))
_C1 = _f32(float.fromhex("0x1.ffffecp-1"))

# 2^n for the n ggml_v_expf keeps (|n| <= 192), exact in float64: a table read where
# math.ldexp was a libm call per exp.
_POW2 = np.ldexp(1.0, np.arange(-192, 193))


@dataclass(frozen=True)
class GgmlArith:
    """Which llama.cpp build to reproduce: the vector width its float code runs at (16 with
    AVX-512F+DQ, 8 with AVX2+FMA) and how many KV cells it views at a time (padding)."""

    lanes: int
    kv_pad: int


# llama.cpp c392e509 on AVX-512, which made the references in ../shared/reference/llama
# (KV view padded to 32 cells then).
LLAMA_CPP_C392E509_AVX512 = GgmlArith(lanes=16, kv_pad=32)


def native_arith() -> GgmlArith:
    """llama.cpp as built for this CPU today (KV view padded to 256 cells since late 2025)."""
    return GgmlArith(lanes=16 if _has_avx512() else 8, kv_pad=256)


def _has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512f" in flags and "avx512dq" in flags


@numba.njit(inline="always", cache=True)
def fma32(a, b, c):
    """float32 fused multiply-add: a*b is exact in float64, so one rounding remains."""
    return _f32(_f64(a) * _f64(b) + _f64(c))


@numba.njit(inline="always", cache=True)
def round_f16(v):
    """float32 -> nearest float16 (half to even) -> float32."""
    return f16_to_f32(f32_to_f16(v))


@numba.njit(inline="always", cache=True)
def v_expf(x, lanes):
    """ggml_v_expf for one lane: exp(x) = 2^n * (1 + poly(b)), b = x - n*ln2.

    lanes 16 is the AVX-512 build (1 folded into the polynomial, then scalef), lanes 8 the
    AVX2 one (polynomial without the 1, then fma(j, 2^n, 2^n)): the roundings differ.
    Branch-free (ggml's out-of-range lanes and NaN by selects), so that loops over it
    vectorize.
    """
    x = _f32(x)
    z = fma32(x, _LOG2E, _SHIFT)
    n = _f32(z - _SHIFT)
    out_of_range = abs(n) > _f32(192.0)
    k = 0 if out_of_range or n != n else int(n)
    b = fma32(-n, _LN2_LO, fma32(-n, _LN2_HI, x))
    u = _f32(b * b)
    p = fma32(fma32(_C5, b, _C4), u, fma32(_C3, b, _C2))
    if lanes == 16:
        j = fma32(p, u, fma32(_C1, b, _f32(1.0)))
        # scalef(j, n) = j * 2^n, rounded once (float64 holds the exact product).
        r = _f32(_f64(j) * _POW2[k + 192])
    else:
        j = fma32(p, u, _f32(_C1 * b))
        # fma(j, k, k) with k = 2^n: k * (1 + j) rounded once (exact in float64 but for j
        # below 2^-29, where a tie cannot occur in practice).
        r = _f32((1.0 + _f64(j)) * _POW2[k + 192])
    if out_of_range:  # ggml's out-of-range lanes: 0 or inf
        r = _f32(0.0) if n <= 0 else _f32(np.inf)
    return x if x != x else r


@numba.njit(inline="always", cache=True)
def _reduce16(s):
    """GCC's _mm512_reduce_add_ps over s[0:16] (halves, quarters, then pairs)."""
    c0 = _f32(_f32(s[12] + s[4]) + _f32(s[8] + s[0]))
    c1 = _f32(_f32(s[13] + s[5]) + _f32(s[9] + s[1]))
    c2 = _f32(_f32(s[14] + s[6]) + _f32(s[10] + s[2]))
    c3 = _f32(_f32(s[15] + s[7]) + _f32(s[11] + s[3]))
    return _f32(_f32(c0 + c2) + _f32(c1 + c3))


@numba.njit(inline="always", cache=True)
def _halves8(s):
    """s[0:4] + s[4:8] lane by lane: the first step of both 8-lane reductions below."""
    return _f32(s[0] + s[4]), _f32(s[1] + s[5]), _f32(s[2] + s[6]), _f32(s[3] + s[7])


@numba.njit(inline="always", cache=True)
def _hsum8(s):
    """llamafile's hsum(__m256) and ggml's AVX2 softmax sum: halves, then movehl/movehdup."""
    t0, t1, t2, t3 = _halves8(s)
    return _f32(_f32(t0 + t2) + _f32(t1 + t3))


@numba.njit(inline="always", cache=True)
def _hadd8(s):
    """GGML_F32x8_REDUCE's last step: halves, then two _mm_hadd_ps (adjacent pairs)."""
    t0, t1, t2, t3 = _halves8(s)
    return _f32(_f32(t0 + t1) + _f32(t2 + t3))


def _lane_sums_intrinsic(w, accs=4):
    """Intrinsic f(a, a0, b, b0, stop, lanes): ggml_vec_dot_f16's four w-lane accumulators
    over a[a0:a0+stop] * b[b0:b0+stop] (stop a multiple of 4w), combined as
    (acc0+acc2)+(acc1+acc3) into lanes[0:w]; with accs=1 tinyBLAS's one w-lane accumulator
    (stop a multiple of w) into lanes[0:w]. One <accs*w x float> multiply-add per step,
    which LLVM does not produce from the loop in numba; float16-valued products are exact,
    so the adds are ggml's."""
    v = ir.VectorType(_IR_F32, accs * w)
    half = ir.VectorType(_IR_F32, w)

    @intrinsic
    def lane_sums(typingctx, a, a0, b, b0, stop, lanes):
        def codegen(context, builder, sig, args):
            av, a0v, bv, b0v, stopv, lv = args
            pa = _ptr(context, builder, sig.args[0], av, a0v)
            pb = _ptr(context, builder, sig.args[2], bv, b0v)
            acc = cgutils.alloca_once_value(builder, ir.Constant(v, [0.0] * (accs * w)))
            step = ir.Constant(stopv.type, accs * w)
            with cgutils.for_range_slice(builder, ir.Constant(stopv.type, 0), stopv, step) as (c, _):
                x = builder.load(builder.bitcast(builder.gep(pa, [c]), v.as_pointer()), align=4)
                y = builder.load(builder.bitcast(builder.gep(pb, [c]), v.as_pointer()), align=4)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(x, y)), acc)
            out = r = builder.load(acc)
            if accs == 4:
                part = [builder.shuffle_vector(r, r, ir.Constant(ir.VectorType(_IR_I32, w),
                                                                 list(range(j * w, j * w + w)))) for j in range(4)]
                out = builder.fadd(builder.fadd(part[0], part[2]), builder.fadd(part[1], part[3]))
            pl = _ptr(context, builder, sig.args[5], lv, ir.Constant(a0v.type, 0))
            builder.store(out, builder.bitcast(pl, half.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.none(a, a0, b, b0, stop, lanes), codegen

    return lane_sums


def _ptr(context, builder, aryty, ary, idx):
    """float* to element idx of a contiguous 1-D array."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [idx])


_IR_F32, _IR_I32 = ir.FloatType(), ir.IntType(32)
_lane_sums8 = _lane_sums_intrinsic(8)
_lane_sums16 = _lane_sums_intrinsic(16)
_lane_chain8 = _lane_sums_intrinsic(8, 1)
_lane_chain16 = _lane_sums_intrinsic(16, 1)


# ---------------------------------------------------------------- row operations


def _rms_norm_body(x, w, eps, out):
    """ggml_rms_norm then ggml_mul: x (n, d), w (d,) -> out (n, d)."""
    n, d = x.shape
    for t in prange(n):
        s = 0.0
        for j in range(d):
            s += _f64(_f32(x[t, j] * x[t, j]))
        mean = _f32(s / d)
        scale = _f32(_f32(1.0) / _f32(math.sqrt(_f32(mean + _f32(eps)))))
        for j in range(d):
            out[t, j] = _f32(_f32(x[t, j] * scale) * w[j])
    return out


@numba.njit(inline="always", cache=True)
def _silu_mul_exp(g, u, e):
    """silu(g) * u given e = exp(-g): g / (1 + e) * u in float32 steps."""
    return _f32(_f32(g / _f32(_f32(1.0) + e)) * u)


@numba.njit(inline="always", cache=True)
def _silu_mul_vec(g, u, lanes):
    """silu(g) * u with ggml_v_silu's arithmetic for an element of its vector loop."""
    return _silu_mul_exp(g, u, v_expf(_f32(_f32(0.0) - g), lanes))


@numba.njit(inline="always", cache=True)
def silu_mul_at(g, u, j, d, lanes):
    """silu(g) * u with ggml_v_silu's arithmetic for element j of a row of d."""
    if j < d - d % lanes:  # ggml's vector loop; leftovers use libm expf
        return _silu_mul_vec(g, u, lanes)
    return _silu_mul_exp(g, u, _f32(math.exp(-_f64(g))))


def _silu_mul_body(gate, up, lanes):
    """In place gate = silu(gate) * up with ggml_v_silu's arithmetic: (n, d) -> gate. The
    vector part is a loop of its own (it vectorizes: no branch, no division check under
    numpy's error model)."""
    n, d = gate.shape
    vec_end = d - d % lanes
    for t in prange(n):
        for j in range(vec_end):
            gate[t, j] = _silu_mul_vec(gate[t, j], up[t, j], lanes)
        for j in range(vec_end, d):
            gate[t, j] = silu_mul_at(gate[t, j], up[t, j], j, d, lanes)
    return gate


_rms_par = njit_variant(_rms_norm_body, "par", parallel=True, cache=True)
rms_norm_serial = njit_variant(_rms_norm_body, "seq", cache=True)
_silu_par = njit_variant(_silu_mul_body, "par", parallel=True, error_model="numpy", cache=True)
_silu_seq = njit_variant(_silu_mul_body, "seq", error_model="numpy", cache=True)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """ggml's RMSNorm times weight: x (n, d) -> new (n, d); a short prompt's rows run
    unthreaded (a prompt wakes the pool per kernel, which costs more than a short norm)."""
    out = np.empty_like(x)
    return (_rms_par if x.size >= PARALLEL_MIN else rms_norm_serial)(x, w, eps, out)


def silu_mul_(gate: np.ndarray, up: np.ndarray, arith: GgmlArith) -> np.ndarray:
    """In place SwiGLU with ggml's SiLU: gate (n, d), up (n, d) -> gate."""
    return (_silu_par if gate.size >= PARALLEL_MIN else _silu_seq)(gate, up, arith.lanes)


def _gelu_table() -> np.ndarray:
    """ggml_table_gelu_f16 as float32: for every float16 bit pattern, ggml_gelu_f32 of its
    value (0.5x(1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) in float32, the inner 1 + a*x*x
    contracted to an fma as GCC builds it) rounded to float16. tanh is taken in float64 and
    rounded once; a last-bit difference from libm's tanhf survives the float16 rounding
    only on a tie."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):
        inner = (_f64(_f32(0.044715) * x) * _f64(x) + 1.0).astype(np.float32)
        arg = (_f32(0.7978845608028654) * x) * inner
        th = np.tanh(arg.astype(np.float64)).astype(np.float32)
        y = (_f32(0.5) * x) * (_f32(1.0) + th)
    return y.astype(np.float16).astype(np.float32)


GELU_TABLE = _gelu_table()


@numba.njit(inline="always", cache=True)
def geglu_at(g, u, table):
    """gelu(g) * u as ggml_vec_geglu_f32 computes it (GGML_GELU_FP16): inputs in (-10, 10)
    rounded to float16 and looked up in `table` (GELU_TABLE), those at or below -10 give
    0, those at or above 10 pass through."""
    if g <= _f32(-10.0):
        return _f32(0.0)
    if g >= _f32(10.0):
        return g * u
    return table[f32_to_f16(g)] * u


def _geglu_body(gate, up, table):
    """In place gate = `geglu_at`(gate, up): gate, up (n, d)."""
    n, d = gate.shape
    for t in prange(n):
        for j in range(d):
            gate[t, j] = geglu_at(gate[t, j], up[t, j], table)
    return gate


_geglu_par = njit_variant(_geglu_body, "par", parallel=True, cache=True)
_geglu_seq = njit_variant(_geglu_body, "seq", cache=True)


def geglu_(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """In place GeGLU with ggml's table GELU: gate (n, d), up (n, d) -> gate."""
    return (_geglu_par if gate.size >= PARALLEL_MIN else _geglu_seq)(gate, up, GELU_TABLE)


# ---------------------------------------------------------------- attention


@numba.njit(inline="always", cache=True)
def _f16_dot(a, a0, b, b0, n, ne, batched, w, lanes):
    """sum(a[a0:a0+n] * b[b0:b0+n]) over float16-valued operands, in ggml's order for
    w-lane vectors (16: AVX-512, 8: AVX2); terms from ne on are zeros and skipped.

    batched with n % w == 0 (llamafile tinyBLAS, used for 2+ query rows): lane l chains
    l, l+w, l+2w, ..., then llamafile's hsum; otherwise ggml_vec_dot_f16: four w-lane
    accumulators take 4w-wide steps, combine as (acc0+acc2)+(acc1+acc3), reduce, and the
    n % 4w leftovers are added in double. Products of two float16 values are exact in
    float32, so each fma is a float32 add. lanes: scratch (16,) float32.
    """
    if batched and n % w == 0:
        stop = min(n, (ne + w - 1) // w * w)
        if w == 16:
            _lane_chain16(a, a0, b, b0, stop, lanes)
            return _reduce16(lanes)
        _lane_chain8(a, a0, b, b0, stop, lanes)
        return _hsum8(lanes)
    step = 4 * w
    full = n - n % step
    stop = min(full, (ne + step - 1) // step * step)
    total = 0.0
    if full:
        if w == 16:
            _lane_sums16(a, a0, b, b0, stop, lanes)
            total = _f64(_reduce16(lanes))
        else:
            _lane_sums8(a, a0, b, b0, stop, lanes)
            total = _f64(_hadd8(lanes))
    for i in range(full, min(n, max(ne, full))):
        total += _f64(_f32(a[a0 + i] * b[b0 + i]))
    return _f32(total)


@numba.njit(inline="always", cache=True)
def attend_head(q, k_cache, v_cache, pos0, scale, kv_pad, window, w, out, i, h):
    """Query row i, head h of `_attention_body` (arguments as its) -> out[i, h]: one
    thread's share of the heads, the same arithmetic wherever it runs."""
    n, n_head, hd = q.shape
    n_ctx = k_cache.shape[1]
    group = n_head // k_cache.shape[0]
    n_kv = min(n_ctx, (pos0 + n + kv_pad - 1) // kv_pad * kv_pad)
    batched = n > 1
    g = h // group
    length = pos0 + i + 1
    # A sliding window masks the cells more than window - 1 positions back: -inf scores,
    # zero probabilities, as llama.cpp's mask makes them.
    first = max(0, length - window) if window > 0 else 0
    qh = np.empty(hd, np.float32)
    for c in range(hd):
        qh[c] = round_f16(q[i, h, c])
    lanes = np.empty(16, np.float32)
    kg = k_cache[g].reshape(-1)
    p = np.zeros(n_kv, np.float32)
    m = _f32(-np.inf)
    for t in range(first):
        p[t] = _f32(-np.inf)
    for t in range(first, length):
        p[t] = _f32(_f16_dot(kg, t * hd, qh, 0, hd, hd, batched, w, lanes) * _f32(scale))
        m = max(m, p[t])
    # ggml_vec_soft_max_f32: w-lane exps, each vector's sum added in double; masked
    # cells are exp(-inf) = 0, so whole vectors of them add nothing.
    total = 0.0
    vec_end = n_kv - n_kv % w
    for c0 in range(0, min(vec_end, (length + w - 1) // w * w), w):
        for l in range(w):
            lanes[l] = v_expf(_f32(p[c0 + l] - m), w) if first <= c0 + l < length else _f32(0.0)
            p[c0 + l] = lanes[l]
        total += _f64(_reduce16(lanes) if w == 16 else _hsum8(lanes))
    for t in range(vec_end, length):
        p[t] = _f32(math.exp(_f64(_f32(p[t] - m)))) if t >= first else _f32(0.0)
        total += _f64(p[t])
    inv = _f32(1.0 / total)
    for t in range(length):
        p[t] = round_f16(_f32(p[t] * inv))
    # P·V: V is transposed in llama.cpp's cache, so each output dim is one dot over cells.
    vt = v_cache[g].reshape(-1)
    if batched and n_kv % w == 0:
        _tiny_blas_cols(vt, n_ctx, p, min(n_kv, (length + w - 1) // w * w), w, out[i, h])
        return
    for c in range(hd):
        out[i, h, c] = _f16_dot(vt, c * n_ctx, p, 0, n_kv, length, batched, w, lanes)


@numba.njit(inline="always", cache=True)
def _tiny_blas_cols(vt, n_ctx, p, stop, w, out):
    """out[c] = _f16_dot(vt, c * n_ctx, p, 0, ., stop, True, w, .) for every c (tinyBLAS's
    one-accumulator dots over cells [0, stop), stop a multiple of w), 16 columns at a time:
    their lane vectors are transposed so that the reduction trees run across columns as
    vector adds, where one column's tree is a chain of dependent scalar adds."""
    acc = np.empty((16, 16), np.float32)
    tr = np.empty((16, 16), np.float32)
    for c0 in range(0, out.shape[0], 16):
        nc = min(16, out.shape[0] - c0)
        for d in range(nc):
            if w == 16:
                _lane_chain16(vt, (c0 + d) * n_ctx, p, 0, stop, acc[d])
            else:
                _lane_chain8(vt, (c0 + d) * n_ctx, p, 0, stop, acc[d])
        for d in range(nc):
            for lane in range(w):
                tr[lane, d] = acc[d, lane]
        for d in range(nc):
            out[c0 + d] = _reduce16(tr[:, d]) if w == 16 else _hsum8(tr[:, d])


def _attention_body(q, k_cache, v_cache, pos0, scale, kv_pad, window, w, out):
    """Causal GQA over a float16-valued cache as llama.cpp computes it without flash attention.

    q (n, n_head, hd) float32; k_cache (n_kv_head, n_ctx, hd) and v_cache (n_kv_head, hd,
    n_ctx) (transposed, as llama.cpp keeps V) float32 holding f16-rounded values; query row
    i is at position pos0 + i; out (n, n_head, hd). llama.cpp views kv_pad-padded cells
    (masked ones give exact zeros, so they are skipped where that changes no sum); w is
    the vector width of the build (16 or 8). window > 0: each query sees only the last
    `window` positions (sliding-window layers); 0: all before it.
    """
    n, n_head, _ = q.shape
    for job in prange(n * n_head):
        attend_head(q, k_cache, v_cache, pos0, scale, kv_pad, window, w, out, job // n_head, job % n_head)
    return out


_attn_par = njit_variant(_attention_body, "par", parallel=True, cache=True)
_attn_seq = njit_variant(_attention_body, "seq", cache=True)

# Below this many query·key multiply-adds attention runs unthreaded (pool wake-up
# dominates: a short prompt's heads take less than waking the pool costs).
ATTN_PARALLEL_MIN = 1 << 20


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int, scale: float,
              out: np.ndarray, arith: GgmlArith, window: int = 0) -> np.ndarray:
    """llama.cpp's attention of q (n, n_head, hd) at positions pos0 … pos0+n-1 -> out
    (window > 0: a sliding window of that many positions)."""
    n, n_head, hd = q.shape
    work = n * n_head * (pos0 + n) * hd
    run = _attn_par if work >= ATTN_PARALLEL_MIN else _attn_seq
    return run(q, k_cache, v_cache, pos0, scale, arith.kv_pad, window, arith.lanes, out)
