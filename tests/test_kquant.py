"""K-quant weights (Q4_K, Q5_K, Q6_K) and their Q8_K activations against plain numpy ports
of ggml's code and, where llama-cpp-python is installed, against its ggml itself (ctypes).

The dots follow the kernels llama.cpp runs on x86 (kernels/kquant.py): Q4_K as the
repacked ggml_gemv_q4_K_8x8_q8_K (one row) and ggml_gemm_q4_K_8x8_q8_K (rows in fours),
Q5_K and Q6_K as ggml_vec_dot_q5_K/q6_K_q8_K (AVX2), and batches of 8+ rows by a matrix
not repacked as ggml's tiled K-quant matmul.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from gguf.quants import dequantize as gguf_dequantize

from whisperlite.kernels import gemv, quant
from whisperlite.kernels.actquant import ACTIVATION_TYPE, quantize_activations
from whisperlite.kernels.matmul import matmul
from whisperlite.kernels.tensor import QTensor

K_TYPES = (QType.Q4_K, QType.Q5_K, QType.Q6_K)
GEMMA = Path("/work/gemma3/gemma-3-270m-q4_k_m.gguf")
f32, f64 = np.float32, np.float64


def random_blocks(qtype: QType, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random bytes in every field, with float16 scales of a real model's size."""
    rng = np.random.default_rng(seed)
    lay = quant.QUANT_TYPES[qtype]
    nb = cols // lay.block
    w = rng.integers(0, 256, (rows, nb, lay.size), dtype=np.uint8)
    for field in ("d", "dmin"):
        at = lay.offset(field)
        if at is not None:
            scale = rng.uniform(1e-4, 0.05, (rows, nb)).astype(np.float16)
            w[:, :, at:at + 2] = scale.view(np.uint8).reshape(rows, nb, 2)
    return w.reshape(rows, nb * lay.size)


def activations(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, k)).astype(np.float32)
    return x * np.where(rng.random((n, k)) < 0.02, 300, 1).astype(np.float32)  # a few outliers, as real rows


# ---------------------------------------------------------------- numpy ports of ggml


def q8_k_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quantize_row_q8_K_ref on one row: (d (k/256,) float32, q (k,) int8, bsums (k/16,))."""
    k = x.size
    d = np.zeros(k // 256, np.float32)
    q = np.zeros(k, np.int8)
    for sb in range(k // 256):
        xs = x[sb * 256:(sb + 1) * 256].astype(np.float32)
        i = int(np.argmax(np.abs(xs)))  # the first of the largest magnitudes
        if xs[i] == 0:
            continue
        iscale = f32(-127.0) / xs[i]
        v = (iscale * xs).astype(np.float32)
        bits = (v + f32(12582912.0)).view(np.int32)  # nearest_int
        q[sb * 256:(sb + 1) * 256] = np.minimum(127, (bits & 0x007FFFFF) - 0x00400000)
        d[sb] = f32(1.0) / iscale
    return d, q, q.reshape(-1, 16).sum(axis=1, dtype=np.int64)


def _f16(b: np.ndarray) -> np.float32:
    return f32(np.ascontiguousarray(b).view(np.float16)[0])


def scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_scale_min_k4 for j = 0..7 over the 12 packed bytes s."""
    s = s.astype(np.int64)
    sc = np.concatenate([s[0:4] & 63, (s[8:12] & 15) | ((s[0:4] >> 6) << 4)])
    m = np.concatenate([s[4:8] & 63, (s[8:12] >> 4) | ((s[4:8] >> 6) << 4)])
    return sc, m


def unpack(qtype: QType, blk: np.ndarray):
    """One super-block -> (d, dmin or None, per-weight integer q (256,), scales)."""
    if qtype == QType.Q6_K:
        ql, qh = blk[0:128].astype(np.int64), blk[128:192].astype(np.int64)
        q = np.empty(256, np.int64)
        for h in range(2):
            for j, (lo, shift) in enumerate(((ql[64 * h:64 * h + 32] & 15, 0), (ql[64 * h + 32:64 * h + 64] & 15, 2),
                                             (ql[64 * h:64 * h + 32] >> 4, 4), (ql[64 * h + 32:64 * h + 64] >> 4, 6))):
                q[128 * h + 32 * j:128 * h + 32 * j + 32] = lo | (((qh[32 * h:32 * h + 32] >> shift) & 3) << 4)
        return _f16(blk[208:210]), None, q, blk[192:208].view(np.int8).astype(np.int64)
    sc, m = scale_min_k4(blk[4:16])
    qs = blk[-128:].astype(np.int64)
    q = np.empty(256, np.int64)
    for s in range(8):
        q[32 * s:32 * s + 32] = (qs[32 * (s // 2):32 * (s // 2) + 32] >> (4 * (s % 2))) & 15
        if qtype == QType.Q5_K:
            q[32 * s:32 * s + 32] |= ((blk[16:48].astype(np.int64) >> s) & 1) << 4
    return _f16(blk[0:2]), _f16(blk[2:4]), q, (sc, m)


def fma(a, b, c):
    """float32 fused multiply-add (the product is exact in float64)."""
    return (np.asarray(a, f64) * np.asarray(b, f64) + np.asarray(c, f64)).astype(np.float32)


def hsum_float_8(v: np.ndarray) -> np.float32:
    return f32(f32(f32(v[0] + v[4]) + f32(v[2] + v[6])) + f32(f32(v[1] + v[5]) + f32(v[3] + v[7])))


def dot_ref(qtype: QType, row: np.ndarray, d8: np.ndarray, q8: np.ndarray, bsums: np.ndarray) -> np.float32:
    """One weight row · one Q8_K row as the llama.cpp kernel of its type computes it."""
    size = quant.QUANT_TYPES[qtype].size
    acc8 = np.zeros(8, np.float32)
    acc = accm = f32(0.0)
    for sb in range(row.size // size):
        d_w, dmin_w, q, sc = unpack(qtype, row[sb * size:(sb + 1) * size])
        y = q8[sb * 256:(sb + 1) * 256].astype(np.int64)
        bs = bsums[sb * 16:(sb + 1) * 16]
        dy = d8[sb]
        prods = (q * y).reshape(8, 8, 4).sum(axis=2)  # [block of 32, lane]
        if qtype == QType.Q6_K:  # (q - 32) y, the 32 y taken off lane c from the bsums
            lane_scale = sc.reshape(8, 2)[:, np.arange(8) // 4]
            lanes = (lane_scale * prods).sum(axis=0) - 32 * (sc * bs).reshape(8, 2).sum(axis=1)
            acc8 = fma(np.full(8, f32(dy * d_w)), lanes.astype(np.float32), acc8)
            continue
        scales, mins = sc
        msum = int((mins * bs.reshape(8, 2).sum(axis=1)).sum())
        if qtype == QType.Q4_K:  # ggml_gemv_q4_K_8x8_q8_K: whole sums
            total = int((scales[:, None] * prods).sum())
            acc = fma(f32(total), f32(d_w * dy), acc)
            accm = fma(f32(msum), f32(dmin_w * dy), accm)
        else:  # ggml_vec_dot_q5_K_q8_K
            lanes = (scales[:, None] * prods).sum(axis=0)
            acc8 = fma(np.full(8, f32(dy * d_w)), lanes.astype(np.float32), acc8)
            accm = fma(f32(-dy * dmin_w), f32(msum), accm)
    if qtype == QType.Q4_K:
        return f32(acc - accm)
    return f32(hsum_float_8(acc8) + accm) if qtype == QType.Q5_K else hsum_float_8(acc8)


def tiled_dot_ref(qtype: QType, row: np.ndarray, d8: np.ndarray, q8: np.ndarray, bsums: np.ndarray) -> np.float32:
    """One weight row · one Q8_K row as ggml's tiled matmul (ggml-cpu/tiled, AVX2) computes
    it: per super-block res = d_w * s1 (minus dmin_w * s2, fused), acc = fma(res, d_x, acc)."""
    size = quant.QUANT_TYPES[qtype].size
    acc = f32(0.0)
    for sb in range(row.size // size):
        d_w, dmin_w, q, sc = unpack(qtype, row[sb * size:(sb + 1) * size])
        y = q8[sb * 256:(sb + 1) * 256].astype(np.int64)
        if qtype == QType.Q6_K:
            res = f32(d_w * f32(int((sc * ((q - 32) * y).reshape(16, 16).sum(axis=1)).sum())))
        else:
            scales, mins = sc
            s1 = int((scales * (q * y).reshape(8, 32).sum(axis=1)).sum())
            s2 = int((mins * bsums[sb * 16:(sb + 1) * 16].reshape(8, 2).sum(axis=1)).sum())
            res = fma(-dmin_w, f32(s2), f32(d_w * f32(s1)))
        acc = fma(res, d8[sb], acc)
    return acc


def kernel_rows(qtype: QType, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    xq, xd, xs = quantize_activations(x, qtype, np.int8)
    return gemv.gemv_i8(gemv.I8_KIND[qtype], xq, xd, xs, w, np.empty((x.shape[0], w.shape[0]), np.float32))


# ---------------------------------------------------------------- layouts, dequantize, Q8_K


def test_table_rows_are_ggml_blocks():
    from gguf import GGML_QUANT_SIZES

    for qtype in (*K_TYPES, QType.Q8_K):
        assert quant.layout(qtype) == GGML_QUANT_SIZES[qtype]
    for qtype in K_TYPES:
        assert ACTIVATION_TYPE[qtype] == QType.Q8_K
        assert quant.QUANT_TYPES[qtype].bits == {QType.Q4_K: 4, QType.Q5_K: 5, QType.Q6_K: 6}[qtype]
    from whisperlite.formats.gguf import WEIGHT_TYPES

    assert set(K_TYPES) <= WEIGHT_TYPES and QType.Q8_K not in WEIGHT_TYPES


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_gguf_py(qtype):
    w = random_blocks(qtype, 9, 1024, int(qtype))
    got = quant.dequantize(w, qtype, (9, 1024))
    ref = gguf_dequantize(w, qtype)
    assert got.dtype == np.float32 and np.array_equal(got, ref)


def test_q8_k_matches_the_c_reference():
    x = activations(3, 1024, 5)
    x[1, 256:512] = 0  # an all-zero super-block
    x[2, 512:768] *= 0.001
    x[2, 600], x[2, 700] = -9.0, 9.0  # a magnitude tie: the first one sets the sign
    xq, xd, xs = quantize_activations(x, QType.Q4_K, np.int8)
    for t in range(3):
        d, q, bsums = q8_k_ref(x[t])
        assert np.array_equal(xq[t], q)
        assert np.array_equal(xd[t], np.repeat(d, 8))
        assert np.array_equal(xs[t], bsums.reshape(-1, 2).sum(axis=1).astype(np.float32))
    assert xd[2, 16] > 0 > xd[0, 0] * np.sign(x[0, np.argmax(np.abs(x[0, :256]))])  # d = -max/127


# ---------------------------------------------------------------- the dots


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("k", [512, 1024])  # rows four per pass (plus one alone), and one at a time
def test_dots_equal_the_numpy_port_of_ggml(qtype, n, k):
    rows = 21
    w = random_blocks(qtype, rows, k, 10 + int(qtype))
    x = activations(n, k, n)
    got = kernel_rows(qtype, w, x)
    for t in range(n):
        d, q, bsums = q8_k_ref(x[t])
        ref = np.array([dot_ref(qtype, w[r], d, q, bsums) for r in range(rows)], np.float32)
        assert np.array_equal(got[t], ref)


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
def test_dots_near_the_float_product(qtype):
    """Sanity: the integer dots are the dequantized weights times the Q8_K activations."""
    rows, k = 16, 512
    w = random_blocks(qtype, rows, k, 30 + int(qtype))
    x = activations(2, k, 7)
    xq, xd, _ = quantize_activations(x, qtype, np.int8)
    exact = (xq * xd.repeat(32, axis=1)).astype(f64) @ quant.dequantize(w, qtype, (rows, k)).astype(f64).T
    got = kernel_rows(qtype, w, x)
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())


# ---------------------------------------------------------------- the installed llama.cpp


class Ggml:
    """The installed llama-cpp-python's libggml-cpu through ctypes."""

    def __init__(self) -> None:
        llama_cpp = pytest.importorskip("llama_cpp")
        lib = Path(llama_cpp.__file__).parent / "lib"
        ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        self.cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"))
        self.cpu.ggml_cpu_init()

    @staticmethod
    def _p(a: np.ndarray) -> ctypes.c_void_p:
        return a.ctypes.data_as(ctypes.c_void_p)

    def q8_k(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros(x.size // 256 * 292, np.uint8)
        self.cpu.quantize_row_q8_K(self._p(x), self._p(out), ctypes.c_int64(x.size))
        return out

    def vec_dot(self, qtype: QType, row: np.ndarray, y: np.ndarray, k: int) -> np.float32:
        s = np.zeros(1, np.float32)
        fn = getattr(self.cpu, f"ggml_vec_dot_{qtype.name[:2].lower()}_K_q8_K")
        fn(ctypes.c_int(k), self._p(s), ctypes.c_size_t(0), self._p(np.ascontiguousarray(row)), ctypes.c_size_t(0),
           self._p(y), ctypes.c_size_t(0), ctypes.c_int(1))
        return s[0]

    def gemv_q4_k_8x8(self, w: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
        s = np.zeros(w.shape[0], np.float32)
        packed = repack_q4_k_8x8(w)
        self.cpu.ggml_gemv_q4_K_8x8_q8_K(ctypes.c_int(k), self._p(s), ctypes.c_size_t(w.shape[0]), self._p(packed),
                                         self._p(y), ctypes.c_int(1), ctypes.c_int(w.shape[0]))
        return s


def repack_q4_k_8x8(w: np.ndarray) -> np.ndarray:
    """llama.cpp's block_q4_Kx8 layout (repack.cpp make_block_q4_Kx8, interleave 8) of a
    Q4_K matrix whose rows are a multiple of 8."""
    rows, nb = w.shape[0], w.shape[1] // 144
    blk = w.reshape(rows, nb, 144)
    out = []
    for g in range(0, rows, 8):
        for b in range(nb):
            eight = blk[g:g + 8, b]
            sm = [scale_min_k4(eight[j, 4:16]) for j in range(8)]
            scales = np.zeros(96, np.uint8)
            for sub in range(8):
                s = [sm[j][0][sub] for j in range(8)]
                m = [sm[j][1][sub] for j in range(8)]
                for j in range(4):
                    scales[12 * sub + j] = (s[j] & 63) + ((s[j + 4] & 48) << 2)
                    scales[12 * sub + 4 + j] = (m[j] & 63) + ((m[j + 4] & 48) << 2)
                    scales[12 * sub + 8 + j] = (s[j + 4] & 15) + ((m[j + 4] & 15) << 4)
            qs = np.concatenate([eight[i % 8, 16 + (i // 8) * 8:24 + (i // 8) * 8] for i in range(128)])
            out.append(np.concatenate([eight[:, 0:2].ravel(), eight[:, 2:4].ravel(), scales, qs]))
    return np.concatenate(out)


@pytest.fixture(scope="module")
def ggml() -> Ggml:
    return Ggml()


def _against_ggml(ggml: Ggml, qtype: QType, w: np.ndarray, x: np.ndarray) -> None:
    k = w.shape[1] // quant.QUANT_TYPES[qtype].size * 256
    got = kernel_rows(qtype, w, x)
    for t in range(x.shape[0]):
        y = ggml.q8_k(x[t])
        if qtype == QType.Q4_K:
            ref = ggml.gemv_q4_k_8x8(w, y, k)
        else:
            ref = np.array([ggml.vec_dot(qtype, w[r], y, k) for r in range(w.shape[0])], np.float32)
        assert np.array_equal(got[t], ref)


def gemm_q4_k_ggml(ggml: Ggml, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """llama.cpp's batch with a repacked Q4_K matrix (repack.cpp forward_mul_mat): rows in
    fours by ggml_quantize_mat_q8_K_4x8 and ggml_gemm_q4_K_8x8_q8_K, the last n % 4 by
    quantize_row_q8_K and the gemv."""
    p = ggml._p
    n, k = x.shape
    rows, m = w.shape[0], n - n % 4
    packed = repack_q4_k_8x8(w)
    out = np.zeros((n, rows), np.float32)
    for a in range(0, m, 4):
        yq = np.zeros(k // 256 * 1168, np.uint8)  # block_q8_Kx4
        ggml.cpu.ggml_quantize_mat_q8_K_4x8(p(np.ascontiguousarray(x[a:a + 4])), p(yq), ctypes.c_int64(k))
        four = np.zeros((4, rows), np.float32)
        ggml.cpu.ggml_gemm_q4_K_8x8_q8_K(ctypes.c_int(k), p(four), ctypes.c_size_t(rows), p(packed), p(yq),
                                         ctypes.c_int(4), ctypes.c_int(rows))
        out[a:a + 4] = four
    for t in range(m, n):
        out[t] = ggml.gemv_q4_k_8x8(w, ggml.q8_k(x[t]), k)
    return out


def ties(n: int, k: int, seed: int) -> np.ndarray:
    """Activations whose super-blocks hold -max before +max (where ggml's two Q8_K
    quantizers part), or only -max."""
    x = activations(n, k, seed)
    for t in range(n):
        for sb in range(0, k, 256):
            top = np.abs(x[t, sb:sb + 256]).max()
            x[t, sb + 3] = -top
            if (t + sb // 256) % 2 == 0:
                x[t, sb + 200] = top
    return x


def test_q8_k_4x8_equals_ggml(ggml):
    """The four-row quantizer: block_q8_Kx4 holds the four rows' values interleaved 8 at a
    time; +max wins a tie with -max wherever it stands."""
    k = 512
    x = ties(4, k, 21)
    q, d, s = np.empty((4, k), np.int8), np.empty((4, k // 32), np.float32), np.empty((4, k // 32), np.float32)
    quant.quantize_rows_q8_k_4x8(x, q, d, s)
    yq = np.zeros(k // 256 * 1168, np.uint8)
    ggml.cpu.ggml_quantize_mat_q8_K_4x8(ggml._p(x), ggml._p(yq), ctypes.c_int64(k))
    for sb, blk in enumerate(yq.reshape(-1, 1168)):
        assert np.array_equal(np.repeat(blk[:16].copy().view(np.float32), 8), d[:, sb * 8:(sb + 1) * 8].ravel())
        vals = blk[16:1040].view(np.int8).reshape(32, 4, 8).transpose(1, 0, 2).reshape(4, 256)
        assert np.array_equal(vals, q[:, sb * 256:(sb + 1) * 256])
    one = quantize_activations(x, QType.Q4_K, np.int8)[0]
    assert not np.array_equal(one, q)  # the one-row quantizer breaks these ties the other way


@pytest.mark.parametrize("n", [4, 6, 9])
@pytest.mark.parametrize("k", [768, 1024])  # rows four per pass; rows by four activation rows
def test_q4_k_batches_equal_ggml_gemm(ggml, n, k):
    w = random_blocks(QType.Q4_K, 24, k, 33)
    x = ties(n, k, n)
    wt = QTensor(QType.Q4_K, (24, k), w)
    assert gemv.batch_kernel(n, wt) == "gemm"
    assert np.array_equal(gemv.k_batch(x, wt, np.empty((n, 24), np.float32)), gemm_q4_k_ggml(ggml, w, x))


@pytest.mark.parametrize("qtype,rows", [(QType.Q4_K, 20), (QType.Q5_K, 24), (QType.Q6_K, 24)],
                         ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("k", [512, 1024])  # rows four per pass; wide rows by four activation rows
def test_tiled_batches_equal_the_numpy_port(qtype, rows, k):
    """8+ rows by a matrix llama.cpp does not repack (Q4_K: rows not a multiple of 8):
    ggml's tiled order; fewer rows stay with the one-row kernels."""
    n = 9
    w = QTensor(qtype, (rows, k), random_blocks(qtype, rows, k, 40 + int(qtype)))
    x = activations(n, k, 8)
    assert gemv.batch_kernel(n, w) == "tiled" and gemv.batch_kernel(7, w) is None
    got = gemv.k_batch(x, w, np.empty((n, rows), np.float32))
    for t in range(n):
        d, q, bsums = q8_k_ref(x[t])
        want = [tiled_dot_ref(qtype, w.data[r], d, q, bsums) for r in range(rows)]
        assert np.array_equal(got[t], np.array(want, np.float32))
    assert np.array_equal(matmul(x, w, ggml_exact=True), got)


def test_q8_k_equals_ggml(ggml):
    x = activations(2, 2048, 11)
    xq, xd, xs = quantize_activations(x, QType.Q6_K, np.int8)
    for t in range(2):
        blk = ggml.q8_k(x[t]).reshape(-1, 292)
        assert np.array_equal(blk[:, 4:260].view(np.int8).ravel(), xq[t])
        assert np.array_equal(np.repeat(blk[:, :4].copy().view(np.float32).ravel(), 8), xd[t])
        bsums = blk[:, 260:].copy().view(np.int16).reshape(-1, 2).sum(axis=1)
        assert np.array_equal(bsums.astype(np.float32), xs[t])


@pytest.mark.parametrize("qtype", K_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("k", [512, 1536])
def test_dots_equal_ggml(ggml, qtype, k):
    _against_ggml(ggml, qtype, random_blocks(qtype, 24, k, 50 + int(qtype)), activations(2, k, 3))


@pytest.fixture(scope="module")
def gemma():
    if not GEMMA.exists():
        pytest.skip(f"{GEMMA} not present")
    from whisperlite.formats.gguf import read_gguf

    return read_gguf(GEMMA)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", [QType.Q4_K, QType.Q6_K], ids=lambda t: t.name)
def test_real_tensors(gemma, ggml, qtype):
    """The Gemma 3 270M Q4_K_M file: dequantized as gguf-py, dotted as its llama.cpp."""
    names = [n for n, w in gemma.tensors.items() if isinstance(w, QTensor) and w.qtype == qtype]
    assert names
    for name in names[:3]:
        w = gemma.tensors[name]
        part = np.ascontiguousarray(w.data[:64])
        assert np.array_equal(quant.dequantize(part, qtype, (64, w.shape[1])), gguf_dequantize(part, qtype))
        _against_ggml(ggml, qtype, part, activations(1, w.shape[1], 1) * 3)


# ---------------------------------------------------------------- the entry points the models use


@pytest.mark.parametrize("qtype", [QType.Q4_K, QType.Q6_K], ids=lambda t: t.name)
def test_llama_calls_take_k_quant_weights(qtype):
    """Llama._mm (ggml mode: one-call and two-call products, matmul's ggml_exact path) and
    the one-token step's _quantize/_rows give the same bits for a K-quant weight."""
    from whisperlite.models import llama_step
    from whisperlite.models.llama import Llama

    rows, k = 40, 768
    w = QTensor(qtype, (rows, k), random_blocks(qtype, rows, k, 70 + int(qtype)))
    kind = gemv.I8_KIND[qtype]
    x = activations(1, k, 9)
    ref = kernel_rows(qtype, w.data, x)
    layer = types.SimpleNamespace(ggml_exact=True)
    assert np.array_equal(Llama._mm(layer, x, w), ref)  # what every LLaMA layer product calls
    assert np.array_equal(matmul(x, w, ggml_exact=True), ref)
    assert np.array_equal(gemv.gemv_i8_f32(kind, x, w.data, np.empty((1, rows), np.float32)), ref)
    xqf, xdf, xsf = np.empty(k, np.int8), np.empty(k // 32, np.float32), np.empty(k // 32, np.float32)
    xq, xd, xs = llama_step.quantize_input(x, kind, xqf, xdf, xsf)
    out = np.full((1, rows), np.nan, np.float32)
    llama_step.dot_rows(kind, w.data, 0, 17, xq, xd, xs, out)
    llama_step.dot_rows(kind, w.data, 17, rows, xq, xd, xs, out)
    assert np.array_equal(out, ref)
    big = activations(40, k, 4)  # the prompt pass: llama.cpp's batch kernels
    want = gemv.k_batch(big, w, np.empty((40, rows), np.float32))
    assert np.array_equal(Llama._mm(layer, big, w), want)
    assert np.array_equal(matmul(big, w, ggml_exact=True), want)


def test_float_activations_keep_the_dequantized_tiles():
    w = QTensor(QType.Q6_K, (8, 256), random_blocks(QType.Q6_K, 8, 256, 3))
    x = activations(2, 256, 2)
    np.testing.assert_allclose(matmul(x, w), x @ w.dequantize().T, rtol=1e-5, atol=1e-4)


def _generic_child() -> dict[str, np.ndarray]:
    out = {"avx2": np.array(gemv.HAS_AVX2)}
    for qtype in K_TYPES:
        w = random_blocks(qtype, 24, 512, int(qtype))
        out[qtype.name] = kernel_rows(qtype, w, activations(3, 512, 1))
        # the batch kernels: Q4_K's four-row gemm, the others' tiled order
        out[qtype.name + "-batch"] = gemv.k_batch(ties(9, 512, 2), QTensor(qtype, (24, 512), w),
                                                  np.empty((9, 24), np.float32))
    return out


@pytest.mark.slow
def test_generic_kernels_give_the_same_bits(tmp_path):
    """WHISPERLITE_GENERIC_KERNELS=1 (no AVX2 byte multiply-adds): portable vector IR, the
    same integer sums, so the same results."""
    dest = tmp_path / "generic.npz"
    src = str(Path(__file__).parents[1])  # this checkout's whisperlite, installed or not
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    subprocess.run([sys.executable, __file__, str(dest)], check=True, timeout=1200, cwd=Path(__file__).parent,
                   env={**os.environ, "WHISPERLITE_GENERIC_KERNELS": "1", "PYTHONPATH": path})
    with np.load(dest) as f:
        generic = dict(f)
    assert not generic.pop("avx2")
    native = _generic_child()
    for name, got in generic.items():
        assert np.array_equal(got, native[name]), name


if __name__ == "__main__":
    np.savez(Path(sys.argv[1]), **_generic_child())
