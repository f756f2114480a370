"""ggml quant block layouts, quantize and dequantize (numba, parallel over rows).

Every block type here is byte-for-byte the ggml layout, and `quantize`/`dequantize` agree
bit for bit with gguf-py's numpy reference (`gguf.quants`): the same float32 operations in
the same order, float32 -> float16 with round-half-to-even, no fused multiply-adds.
Rows are independent, so every kernel runs `prange` over rows and any row range can be
(de)quantized alone (the tiled matmul path relies on that).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from gguf import GGMLQuantizationType as QType
from numba import prange

from whisperlite.core.errors import QuantizationError
from whisperlite.kernels.llvm_ir import f16_bits_to_f32
from whisperlite.kernels.variants import njit_variant

QK = 32  # weights per block of the "legacy" quants
QK_K = 256  # weights per K-quant super-block


@dataclass(frozen=True)
class QuantTraits:
    """One stored weight type (ggml's type traits): `block` weights per block, stored as
    `fields`, (name, bytes) in storage order."""

    block: int
    fields: tuple[tuple[str, int], ...]
    zero: int = 0  # the "_0" types store w = d * (q - zero)
    dot_with: QType | None = None  # the activation type of ggml's integer dots (its vec_dot_type)
    kernels: bool = True  # the fused row kernels take it (gemv; rowdots, the decoder step, all but K-quants)

    @property
    def size(self) -> int:
        """Bytes per block: the sum of its fields."""
        return sum(n for _, n in self.fields)

    def offset(self, name: str) -> int | None:
        """Byte offset of field `name` in a block, or None when the type has no such field."""
        at = 0
        for field, n in self.fields:
            if field == name:
                return at
            at += n
        return None

    @property
    def bits(self) -> int:
        """Bits per weight of its quants (the qs or ql bytes, plus the high bits in qh)."""
        nbytes = dict(self.fields)
        return 8 * (nbytes.get("qs", 0) + nbytes.get("ql", 0) + nbytes.get("qh", 0)) // self.block


# The one table of stored types, byte-for-byte ggml's blocks; every other enumeration of
# them (kernel codes, LLVM block decoders, integer-dot types, activation types) derives
# from it. d: float16 scale, m: float16 min, qh: the fifth bits, qs: the quants (4-bit
# types: low nibbles hold w0-15, high nibbles w16-31).
QUANT_TYPES: dict[QType, QuantTraits] = {
    QType.F32: QuantTraits(1, (("w", 4),)),
    QType.F16: QuantTraits(1, (("w", 2),)),
    QType.Q8_0: QuantTraits(QK, (("d", 2), ("qs", QK)), dot_with=QType.Q8_0),
    QType.Q4_0: QuantTraits(QK, (("d", 2), ("qs", QK // 2)), zero=8, dot_with=QType.Q8_0),
    QType.Q4_1: QuantTraits(QK, (("d", 2), ("m", 2), ("qs", QK // 2)), dot_with=QType.Q8_1),
    QType.Q5_0: QuantTraits(QK, (("d", 2), ("qh", 4), ("qs", QK // 2)), zero=16, dot_with=QType.Q8_0),
    QType.Q5_1: QuantTraits(QK, (("d", 2), ("m", 2), ("qh", 4), ("qs", QK // 2)), dot_with=QType.Q8_1),
    # s = d * sum(q) as float16 too: today's ggml block (36 bytes); gguf-py's
    # GGML_QUANT_SIZES still says 40 (the old float d, float s block). Activations only.
    QType.Q8_1: QuantTraits(QK, (("d", 2), ("s", 2), ("qs", QK)), kernels=False),
    # K-quants: 256-weight super-blocks of 8 (Q4_K, Q5_K: 32-weight sub-blocks, a 6-bit scale
    # and min each, packed in 12 bytes, times the f16 d and dmin) or 16 sub-blocks (Q6_K: an
    # int8 scale each); qs nibbles: bytes 32c..32c+31 hold sub-block 2c low, 2c+1 high.
    QType.Q4_K: QuantTraits(QK_K, (("d", 2), ("dmin", 2), ("scales", 12), ("qs", QK_K // 2)), dot_with=QType.Q8_K),
    QType.Q5_K: QuantTraits(QK_K, (("d", 2), ("dmin", 2), ("scales", 12), ("qh", QK_K // 8), ("qs", QK_K // 2)),
                            dot_with=QType.Q8_K),
    QType.Q6_K: QuantTraits(QK_K, (("ql", QK_K // 2), ("qh", QK_K // 4), ("scales", QK_K // 16), ("d", 2)),
                            dot_with=QType.Q8_K),
    # The K-quants' activations: float32 d = 1/iscale, int8 quants, int16 sums per 16.
    QType.Q8_K: QuantTraits(QK_K, (("d", 4), ("qs", QK_K), ("bsums", QK_K // 16 * 2)), kernels=False),
}

# Kernel codes: the types the fused row kernels take, numbered in the table's order (float
# types first, so `kind >= FIRST_BLOCK_KIND` tells block types). The codes are module-level
# ints because numba freezes globals into compiled code as constants.
KIND: dict[QType, int] = {q: i for i, q in enumerate(q for q, t in QUANT_TYPES.items() if t.kernels)}
KIND_F32 = KIND[QType.F32]
KIND_F16 = KIND[QType.F16]
KIND_Q8_0 = KIND[QType.Q8_0]
KIND_Q4_0 = KIND[QType.Q4_0]
KIND_Q4_1 = KIND[QType.Q4_1]
KIND_Q5_0 = KIND[QType.Q5_0]
KIND_Q5_1 = KIND[QType.Q5_1]
KIND_Q4_K = KIND[QType.Q4_K]
KIND_Q5_K = KIND[QType.Q5_K]
KIND_Q6_K = KIND[QType.Q6_K]
FIRST_BLOCK_KIND = min(k for q, k in KIND.items() if QUANT_TYPES[q].block > 1)
FIRST_K_KIND = min(k for q, k in KIND.items() if QUANT_TYPES[q].block == QK_K)  # the super-block kinds follow

# Types `quantize` can produce (K-quants are read-only here: dequantize and matmul only).
QUANTIZABLE = (QType.F16, QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1, QType.Q8_1)
# Types ggml makes only for activations, never stored as weights.
ACTIVATION_ONLY = (QType.Q8_1, QType.Q8_K)


def layout(qtype: QType) -> tuple[int, int]:
    """(weights per block, bytes per block) of `qtype`, or QuantizationError if unsupported."""
    try:
        t = QUANT_TYPES[QType(qtype)]
    except (KeyError, ValueError):
        name = getattr(qtype, "name", str(qtype))
        raise QuantizationError(f"unsupported quantization type {name}") from None
    return t.block, t.size


def bytes_per_row(qtype: QType, cols: int) -> int:
    """Bytes of one stored row of `cols` weights; cols must be a whole number of blocks."""
    block, size = layout(qtype)
    if cols % block:
        raise QuantizationError(
            f"{QType(qtype).name} needs rows whose length is a multiple of {block}, got {cols}"
        )
    return cols // block * size


def cols_from_bytes(qtype: QType, nbytes: int) -> int:
    """Weights in a stored row of `nbytes` bytes (the inverse of `bytes_per_row`)."""
    block, size = layout(qtype)
    if nbytes % size:
        raise QuantizationError(
            f"{QType(qtype).name} rows are whole {size}-byte blocks, got {nbytes} bytes"
        )
    return nbytes // size * block


# ---------------------------------------------------------------- float16 <-> float32 bits


@numba.njit(inline="always", cache=True)
def f16_to_f32(h: int) -> np.float32:
    """Exact float16 (given as its uint16 bits) -> float32."""
    h = np.uint32(h)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exp = (h >> np.uint32(10)) & np.uint32(0x1F)
    mant = h & np.uint32(0x3FF)
    if exp == 0:  # zero or subnormal: mant * 2^-24 is exact in float32
        v = np.float32(mant) * np.float32(5.9604644775390625e-08)
        return -v if sign else v
    if exp == 31:  # inf / nan
        bits = sign | np.uint32(0x7F800000) | (mant << np.uint32(13))
    else:  # rebias the exponent 15 -> 127
        bits = sign | ((exp + np.uint32(112)) << np.uint32(23)) | (mant << np.uint32(13))
    return np.uint32(bits).view(np.float32)


@numba.njit(inline="always", cache=True)
def f32_to_f16(f: np.float32) -> np.uint16:
    """float32 -> float16 bits, round half to even (as numpy's astype and ggml's FP32_TO_FP16).

    Callers reject NaN first; values at or above 65520 become inf, as in numpy.
    """
    x = np.float32(f).view(np.uint32)
    sign = (x >> np.uint32(16)) & np.uint32(0x8000)
    ax = x & np.uint32(0x7FFFFFFF)
    if ax >= np.uint32(0x47800000):  # >= 65536 (or inf): inf
        return np.uint16(sign | np.uint32(0x7C00))
    if ax < np.uint32(0x38800000):  # below 2^-14: float16 subnormal, units of 2^-24
        v = abs(np.float32(f)) * np.float32(16777216.0)  # exact power-of-2 scale
        return np.uint16(sign | np.uint32(np.rint(v)))
    m = ax - np.uint32(112 << 23)  # rebias 127 -> 15; then round 13 dropped bits to even
    m = m + np.uint32(0xFFF) + ((m >> np.uint32(13)) & np.uint32(1))
    return np.uint16(sign | (m >> np.uint32(13)))


@numba.njit(inline="always", cache=True)
def _load_f16(row: np.ndarray, off: int) -> np.float32:
    """float16 stored little-endian at row[off:off+2] -> float32."""
    return f16_to_f32(np.uint32(row[off]) | (np.uint32(row[off + 1]) << np.uint32(8)))


@numba.njit(inline="always", cache=True)
def _store_f16(row: np.ndarray, off: int, v: np.float32) -> None:
    h = f32_to_f16(v)
    row[off] = np.uint8(h & np.uint16(0xFF))
    row[off + 1] = np.uint8(h >> np.uint16(8))


@numba.njit(inline="always", cache=True)
def _round_away(v: np.float32) -> int:
    """roundf (half away from zero) as an int; float64 holds every step exactly."""
    a = abs(np.float64(v))
    fl = math.floor(a)
    q = fl + (1.0 if a - fl >= 0.5 else 0.0)
    return int(-q if v < 0 else q)


# ---------------------------------------------------------------- checks


@numba.njit(cache=True)
def _count_nonfinite(x: np.ndarray) -> int:
    """Number of NaN/inf values: x (rows, cols) -> int. Serial: it reads at memory speed
    anyway, and a parallel loop's compile cost seconds of every first run (quantizing
    Whisper's token embedding at load)."""
    rows, cols = x.shape
    bad = 0
    for r in range(rows):
        for c in range(cols):
            if not np.isfinite(x[r, c]):
                bad += 1
    return bad


# ---------------------------------------------------------------- quantize kernels
# Each: x (rows, cols) float32 -> out (rows, cols // 32 * type_size) uint8, plus a per-row
# flag set when a block scale overflows float16 (checked by the caller, no raising in prange).


@numba.njit(parallel=True, cache=True)
def _quantize_q8_0(x, out, overflow):
    rows, cols = x.shape
    for r in prange(rows):
        row = out[r]
        for b in range(cols // QK):
            o = b * 34
            amax = np.float32(0.0)
            for j in range(QK):
                amax = max(amax, abs(x[r, b * QK + j]))
            d = amax / np.float32(127.0)
            inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            _store_f16(row, o, d)
            overflow[r] |= np.isinf(f16_to_f32(f32_to_f16(d)))
            for j in range(QK):
                row[o + 2 + j] = np.uint8(np.int8(_round_away(x[r, b * QK + j] * inv)))


@numba.njit(inline="always", cache=True)
def _absmax_signed(x, r, start):
    """The value of largest magnitude in x[r, start:start+32] (first one on ties), sign kept."""
    m = np.float32(0.0)
    amax = np.float32(-1.0)
    for j in range(QK):
        v = x[r, start + j]
        if abs(v) > amax:
            amax = abs(v)
            m = v
    return m


@numba.njit(parallel=True, cache=True)
def _quantize_q4_0(x, out, overflow):
    rows, cols = x.shape
    for r in prange(rows):
        row = out[r]
        for b in range(cols // QK):
            o = b * 18
            d = _absmax_signed(x, r, b * QK) / np.float32(-8.0)
            inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            _store_f16(row, o, d)
            overflow[r] |= np.isinf(f16_to_f32(f32_to_f16(d)))
            for j in range(QK // 2):
                q0 = min(int(x[r, b * QK + j] * inv + np.float32(8.5)), 15)
                q1 = min(int(x[r, b * QK + j + 16] * inv + np.float32(8.5)), 15)
                row[o + 2 + j] = np.uint8(q0 | (q1 << 4))


@numba.njit(parallel=True, cache=True)
def _quantize_q5_0(x, out, overflow):
    rows, cols = x.shape
    for r in prange(rows):
        row = out[r]
        for b in range(cols // QK):
            o = b * 22
            d = _absmax_signed(x, r, b * QK) / np.float32(-16.0)
            inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            _store_f16(row, o, d)
            overflow[r] |= np.isinf(f16_to_f32(f32_to_f16(d)))
            qh = 0
            for j in range(QK // 2):
                q0 = min(int(x[r, b * QK + j] * inv + np.float32(16.5)), 31)
                q1 = min(int(x[r, b * QK + j + 16] * inv + np.float32(16.5)), 31)
                row[o + 6 + j] = np.uint8((q0 & 15) | ((q1 & 15) << 4))
                qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16))
            for i in range(4):
                row[o + 2 + i] = np.uint8((qh >> (8 * i)) & 0xFF)


@numba.njit(inline="always", cache=True)
def _min_max(x, r, start):
    lo = x[r, start]
    hi = x[r, start]
    for j in range(1, QK):
        v = x[r, start + j]
        lo = min(lo, v)
        hi = max(hi, v)
    return lo, hi


@numba.njit(parallel=True, cache=True)
def _quantize_q4_1(x, out, overflow):
    rows, cols = x.shape
    for r in prange(rows):
        row = out[r]
        for b in range(cols // QK):
            o = b * 20
            lo, hi = _min_max(x, r, b * QK)
            d = (hi - lo) / np.float32(15.0)
            inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            _store_f16(row, o, d)
            _store_f16(row, o + 2, lo)
            overflow[r] |= np.isinf(f16_to_f32(f32_to_f16(d))) | np.isinf(f16_to_f32(f32_to_f16(lo)))
            for j in range(QK // 2):
                q0 = min(int((x[r, b * QK + j] - lo) * inv + np.float32(0.5)), 15)
                q1 = min(int((x[r, b * QK + j + 16] - lo) * inv + np.float32(0.5)), 15)
                row[o + 4 + j] = np.uint8(q0 | (q1 << 4))


@numba.njit(parallel=True, cache=True)
def _quantize_q5_1(x, out, overflow):
    rows, cols = x.shape
    for r in prange(rows):
        row = out[r]
        for b in range(cols // QK):
            o = b * 24
            lo, hi = _min_max(x, r, b * QK)
            d = (hi - lo) / np.float32(31.0)
            inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            _store_f16(row, o, d)
            _store_f16(row, o + 2, lo)
            overflow[r] |= np.isinf(f16_to_f32(f32_to_f16(d))) | np.isinf(f16_to_f32(f32_to_f16(lo)))
            qh = 0
            for j in range(QK // 2):
                q0 = min(int((x[r, b * QK + j] - lo) * inv + np.float32(0.5)), 31)
                q1 = min(int((x[r, b * QK + j + 16] - lo) * inv + np.float32(0.5)), 31)
                row[o + 8 + j] = np.uint8((q0 & 15) | ((q1 & 15) << 4))
                qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16))
            for i in range(4):
                row[o + 4 + i] = np.uint8((qh >> (8 * i)) & 0xFF)


def _quantize_rows_q8_body(x, q8_1, q, d, s):
    """Activations as ggml's x86 CPU backend quantizes them for its integer dot products
    (quantize_row_q8_0 / q8_1): x (n, k) float32 -> q (n, k) integers (int8, or float32
    holding them), d (n, k//32) the block scale rounded through float16, s (n, k//32).
    Per block: amax = max|x|, d = amax/127, q = round-half-even(x * (127/amax));
    s = f16(d * sum q) for Q8_1 (d before its f16 rounding), the exact integer sum(q) for Q8_0."""
    n, k = x.shape
    for t in prange(n):
        for b in range(k // QK):
            amax = np.float32(0.0)
            for j in range(QK):
                amax = max(amax, abs(x[t, b * QK + j]))
            dd = amax / np.float32(127.0)
            inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
            qsum = 0
            for j in range(QK):
                v = np.int32(np.rint(x[t, b * QK + j] * inv))
                q[t, b * QK + j] = v
                qsum += v
            d[t, b] = f16_to_f32(f32_to_f16(dd))
            s[t, b] = f16_to_f32(f32_to_f16(dd * np.float32(qsum))) if q8_1 else np.float32(qsum)


quantize_rows_q8 = njit_variant(_quantize_rows_q8_body, "par", parallel=True, cache=True)
quantize_rows_q8_serial = njit_variant(_quantize_rows_q8_body, "seq", nogil=True, cache=True)


def _q8_k_body(positive_ties: bool):
    """The quantizer of activations as ggml quantizes them for the K-quants' dots (quantize_row_q8_K_ref, which
    x86 builds use): x (n, k) float32 -> q (n, k) int8, d (n, k/32) float32 the super-block
    scale (repeated for its 8 blocks of 32), s (n, k/32) each 32 values' integer sum (the
    bsums, added in pairs). Per 256 values: max = the first value of largest magnitude,
    iscale = -127/max, q = min(127, round-half-even(iscale * x)), d = 1/iscale; d = 0 and
    q = 0 for an all-zero super-block. positive_ties: ggml_quantize_mat_q8_K_4x8's AVX2
    rule for its four-row blocks, max = +amax whenever +amax occurs (whatever comes first)."""

    def body(x, q, d, s):
        n, k = x.shape
        for t in prange(n):
            for sb in range(k // QK_K):
                o = sb * QK_K
                amax = np.float32(0.0)
                vmax = np.float32(0.0)
                for j in range(QK_K):
                    a = abs(x[t, o + j])
                    if a > amax:
                        amax = a
                        vmax = x[t, o + j]
                if amax == 0:
                    for j in range(QK_K):
                        q[t, o + j] = 0
                    for b in range(QK_K // QK):
                        d[t, sb * 8 + b] = np.float32(0.0)
                        s[t, sb * 8 + b] = np.float32(0.0)
                    continue
                if positive_ties and vmax < 0:
                    for j in range(QK_K):
                        if x[t, o + j] == amax:
                            vmax = amax
                            break
                iscale = np.float32(-127.0) / vmax
                dd = np.float32(1.0) / iscale
                for b in range(QK_K // QK):
                    qsum = 0
                    for j in range(QK):
                        v = min(127, int(np.rint(np.float32(iscale * x[t, o + b * QK + j]))))
                        q[t, o + b * QK + j] = v
                        qsum += v
                    d[t, sb * 8 + b] = dd
                    s[t, sb * 8 + b] = np.float32(qsum)

    return body


quantize_rows_q8_k = njit_variant(_q8_k_body(False), "par", parallel=True, cache=True)
quantize_rows_q8_k_serial = njit_variant(_q8_k_body(False), "seq", nogil=True, cache=True)
# ggml_quantize_mat_q8_K_4x8's tie rule: what llama.cpp runs on the rows that go to
# ggml_gemm_q4_K_8x8_q8_K (all but a batch's last n % 4)
quantize_rows_q8_k_4x8 = njit_variant(_q8_k_body(True), "par", parallel=True, cache=True)
quantize_rows_q8_k_4x8_serial = njit_variant(_q8_k_body(True), "seq", nogil=True, cache=True)


@numba.njit(nogil=True, cache=True)
def quantize_rows_for(kind, x, q, d, s):
    """x (n, k) quantized on this thread as ggml does for a product with weights of `kind`
    (KIND code): Q8_K for the K-quants, Q8_1 for the "_1" types, else Q8_0 -> q, d, s as the
    integer dots read them (quantize_rows_q8 / quantize_rows_q8_k)."""
    if kind >= FIRST_K_KIND:
        quantize_rows_q8_k_serial(x, q, d, s)
    else:
        quantize_rows_q8_serial(x, kind == KIND_Q4_1 or kind == KIND_Q5_1, q, d, s)


@numba.njit(parallel=True, cache=True)
def _pack_q8_1(d, s, q, out):
    """Unpacked Q8_1 (d, s (rows, nb) float32, q (rows, cols) int8) -> out (rows, nb*36) uint8."""
    rows, nb = d.shape
    for r in prange(rows):
        row = out[r]
        for b in range(nb):
            o = b * 36
            _store_f16(row, o, d[r, b])
            _store_f16(row, o + 2, s[r, b])
            for j in range(QK):
                row[o + 4 + j] = np.uint8(q[r, b * QK + j])


# ---------------------------------------------------------------- dequantize kernels
# Each: data (rows, bytes) uint8, rows [r0, r1) -> out (r1 - r0, cols) float32. Arithmetic
# order as gguf-py: d*q (+ m) in float32, products rounded before the add.


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_f16(data, r0, r1, out):
    # F16C's vcvtph2ps (the bit arithmetic where the CPU lacks it): 6x the scalar decode,
    # and these tiles feed every float16 product of the prompt pass.
    cols = data.shape[1]
    for r in prange(r1 - r0):
        for c in range(cols):
            out[r, c] = f16_bits_to_f32(data[r0 + r, c])


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q8_0(data, r0, r1, out):
    nb = data.shape[1] // 34
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            d = _load_f16(row, b * 34)
            for j in range(QK):
                out[r, b * QK + j] = np.float32(np.int8(row[b * 34 + 2 + j])) * d


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q8_1(data, r0, r1, out):
    nb = data.shape[1] // 36
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            d = _load_f16(row, b * 36)
            for j in range(QK):
                out[r, b * QK + j] = np.float32(np.int8(row[b * 36 + 4 + j])) * d


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q4_0(data, r0, r1, out):
    nb = data.shape[1] // 18
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            d = _load_f16(row, b * 18)
            for j in range(QK // 2):
                v = row[b * 18 + 2 + j]
                out[r, b * QK + j] = d * np.float32(np.int32(v & 15) - 8)
                out[r, b * QK + j + 16] = d * np.float32(np.int32(v >> 4) - 8)


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q4_1(data, r0, r1, out):
    nb = data.shape[1] // 20
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            d = _load_f16(row, b * 20)
            m = _load_f16(row, b * 20 + 2)
            for j in range(QK // 2):
                v = row[b * 20 + 4 + j]
                out[r, b * QK + j] = d * np.float32(v & 15) + m
                out[r, b * QK + j + 16] = d * np.float32(v >> 4) + m


@numba.njit(inline="always", cache=True)
def _load_u32(row, off):
    return (
        np.uint32(row[off])
        | (np.uint32(row[off + 1]) << np.uint32(8))
        | (np.uint32(row[off + 2]) << np.uint32(16))
        | (np.uint32(row[off + 3]) << np.uint32(24))
    )


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q5_0(data, r0, r1, out):
    nb = data.shape[1] // 22
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            d = _load_f16(row, b * 22)
            qh = _load_u32(row, b * 22 + 2)
            for j in range(QK // 2):
                v = np.int32(row[b * 22 + 6 + j])
                h0 = np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
                h1 = np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
                out[r, b * QK + j] = d * np.float32(((v & 15) | h0) - 16)
                out[r, b * QK + j + 16] = d * np.float32(((v >> 4) | h1) - 16)


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q5_1(data, r0, r1, out):
    nb = data.shape[1] // 24
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            d = _load_f16(row, b * 24)
            m = _load_f16(row, b * 24 + 2)
            qh = _load_u32(row, b * 24 + 4)
            for j in range(QK // 2):
                v = np.int32(row[b * 24 + 8 + j])
                h0 = np.int32((qh >> np.uint32(j)) & np.uint32(1)) << 4
                h1 = np.int32((qh >> np.uint32(j + 16)) & np.uint32(1)) << 4
                out[r, b * QK + j] = d * np.float32((v & 15) | h0) + m
                out[r, b * QK + j + 16] = d * np.float32((v >> 4) | h1) + m


@numba.njit(inline="always", nogil=True, cache=True)
def _scale_min_k4(sc, sub):
    """Sub-block `sub`'s six-bit scale and min from the 12 packed bytes `sc` (ggml's
    get_scale_min_k4): 0-3 in the low six bits of bytes 0-3 / 4-7, 4-7 in the nibbles of
    bytes 8-11 with their top two bits from the high bits of bytes 0-3 / 4-7."""
    if sub < 4:
        return sc[sub] & 63, sc[sub + 4] & 63
    return (sc[sub + 4] & 15) | ((sc[sub - 4] >> 2) & 48), (sc[sub + 4] >> 4) | ((sc[sub] >> 2) & 48)


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q4_k(data, r0, r1, out):
    nb = data.shape[1] // 144
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            o = b * 144
            d = _load_f16(row, o)
            dmin = _load_f16(row, o + 2)
            sc = row[o + 4 : o + 16]  # 8 six-bit scales and 8 six-bit mins, packed in 12 bytes
            for sub in range(8):
                s6, m6 = _scale_min_k4(sc, sub)
                dl = d * np.float32(s6)
                ml = dmin * np.float32(m6)
                # sub-blocks 2c and 2c+1 are the low and high nibbles of bytes 32c..32c+31
                qoff = o + 16 + (sub // 2) * 32
                shift = 4 * (sub % 2)
                for j in range(32):
                    q = (row[qoff + j] >> shift) & 15
                    out[r, b * QK_K + sub * 32 + j] = dl * np.float32(q) - ml


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q5_k(data, r0, r1, out):
    nb = data.shape[1] // 176
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            o = b * 176
            d = _load_f16(row, o)
            dmin = _load_f16(row, o + 2)
            sc = row[o + 4 : o + 16]
            for sub in range(8):
                s6, m6 = _scale_min_k4(sc, sub)
                dl = d * np.float32(s6)
                ml = dmin * np.float32(m6)
                # Q4_K's nibbles, plus bit `sub` of qh byte j as the fifth bit of weight j
                qoff = o + 48 + (sub // 2) * 32
                shift = 4 * (sub % 2)
                for j in range(32):
                    q = ((row[qoff + j] >> shift) & 15) | (((row[o + 16 + j] >> sub) & 1) << 4)
                    out[r, b * QK_K + sub * 32 + j] = dl * np.float32(q) - ml


@numba.njit(parallel=True, nogil=True, cache=True)
def _dequantize_q6_k(data, r0, r1, out):
    nb = data.shape[1] // 210
    for r in prange(r1 - r0):
        row = data[r0 + r]
        for b in range(nb):
            o = b * 210
            d = _load_f16(row, o + 208)
            for f in range(QK_K):
                half = f // 128  # each 128-weight half uses 64 ql bytes and 32 qh bytes
                e = f % 128
                lo = (row[o + 64 * half + e % 64] >> (4 * (e // 64))) & 15
                hi = (row[o + 128 + 32 * half + e % 32] >> (2 * (e // 32))) & 3
                q = np.int32(lo | (hi << 4)) - 32
                scale = np.float32(np.int8(row[o + 192 + f // 16]))
                out[r, b * QK_K + f] = (d * scale) * np.float32(q)


_QUANTIZERS = {
    QType.Q8_0: _quantize_q8_0,
    QType.Q4_0: _quantize_q4_0,
    QType.Q4_1: _quantize_q4_1,
    QType.Q5_0: _quantize_q5_0,
    QType.Q5_1: _quantize_q5_1,
}

_DEQUANTIZERS = {
    QType.F16: _dequantize_f16,
    QType.Q8_0: _dequantize_q8_0,
    QType.Q8_1: _dequantize_q8_1,
    QType.Q4_0: _dequantize_q4_0,
    QType.Q4_1: _dequantize_q4_1,
    QType.Q5_0: _dequantize_q5_0,
    QType.Q5_1: _dequantize_q5_1,
    QType.Q4_K: _dequantize_q4_k,
    QType.Q5_K: _dequantize_q5_k,
    QType.Q6_K: _dequantize_q6_k,
}


# ---------------------------------------------------------------- public API


def _check_input(x: np.ndarray, qtype: QType) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise QuantizationError(f"quantize expects a 2-D (rows, cols) array, got shape {x.shape}")
    bytes_per_row(qtype, x.shape[1])  # raises on a partial block
    bad = _count_nonfinite(x)
    if bad:
        raise QuantizationError(
            f"cannot quantize to {QType(qtype).name}: {bad} of {x.size} values are NaN or inf"
        )
    return x


def quantize(x: np.ndarray, qtype: QType) -> np.ndarray:
    """float32 (rows, cols) -> stored blocks: uint8 (rows, bytes_per_row), or float16 (rows,
    cols) for F16 (the `QTensor` data layout). Bit-exact with `gguf.quants.quantize`.

    Q8_1 (ggml's activation-only type, absent from gguf-py) gives the bytes ggml's x86 CPU
    backend makes for activations. Raises QuantizationError on NaN/inf input, on rows that
    are not whole blocks, and where a block scale (or an F16 value) overflows float16.
    """
    qtype = QType(qtype)
    layout(qtype)
    if qtype not in QUANTIZABLE:
        raise QuantizationError(f"quantizing to {qtype.name} is not supported (dequantize only)")
    x = _check_input(x, qtype)
    rows, cols = x.shape
    if qtype == QType.F16:
        if rows * cols and np.abs(x).max() >= 65520:  # rounds to inf in float16
            raise QuantizationError("values beyond ±65504 do not fit in F16")
        return x.astype(np.float16)
    if qtype == QType.Q8_1:
        d = np.empty((rows, cols // QK), np.float32)
        s = np.empty_like(d)
        q = np.empty((rows, cols), np.int8)
        quantize_rows_q8(x, True, q, d, s)
        if np.isinf(s).any():
            raise QuantizationError("Q8_1 block sums overflow the float16 range")
        out = np.empty((rows, bytes_per_row(qtype, cols)), np.uint8)
        _pack_q8_1(d, s, q, out)
        return out
    out = np.empty((rows, bytes_per_row(qtype, cols)), np.uint8)
    overflow = np.zeros(rows, np.bool_)
    _QUANTIZERS[qtype](x, out, overflow)
    if overflow.any():
        r = int(np.argmax(overflow))
        raise QuantizationError(
            f"cannot quantize to {qtype.name}: values in row {r} are too large for a float16 "
            f"block scale (max |x| {float(np.abs(x[r]).max()):.4g})"
        )
    return out


def _as_blocks(data: np.ndarray, qtype: QType) -> np.ndarray:
    """Stored rows as the uint8/uint16 array the kernels read (F16 as its uint16 bits)."""
    if qtype == QType.F16:
        return data.view(np.uint16)
    return data.view(np.uint8)


def dequantize_rows(
    data: np.ndarray, qtype: QType, shape: tuple[int, int], r0: int, r1: int, out: np.ndarray
) -> np.ndarray:
    """Rows [r0, r1) of a stored weight into out (r1 - r0, cols) float32 (no allocation)."""
    _DEQUANTIZERS[QType(qtype)](_as_blocks(data, QType(qtype)), r0, r1, out)
    return out


def dequantize(data: np.ndarray, qtype: QType, shape: tuple[int, int]) -> np.ndarray:
    """Stored blocks (rows, bytes) uint8, or float16 (rows, cols) for F16 -> float32 `shape`.

    Bit-exact with `gguf.quants.dequantize`.
    """
    qtype = QType(qtype)
    rows, cols = shape
    if qtype not in _DEQUANTIZERS:
        raise QuantizationError(f"dequantizing {qtype.name} is not supported")
    expect = (rows, cols) if qtype == QType.F16 else (rows, bytes_per_row(qtype, cols))
    if tuple(data.shape) != expect:
        raise QuantizationError(
            f"{qtype.name} data of shape {tuple(data.shape)} does not hold a {rows}x{cols} "
            f"tensor (expected {expect})"
        )
    data = np.ascontiguousarray(data)
    out = np.empty((rows, cols), np.float32)
    return dequantize_rows(data, qtype, shape, 0, rows, out)
