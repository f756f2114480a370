"""Each numba kernel against a plain numpy reference, in both its serial and parallel build."""
import numpy as np
import pytest
from scipy.special import erf

from whisperlite.kernels import ops

rng = np.random.default_rng(0)


def variants(kernel):
    return [kernel.serial, kernel.parallel]


@pytest.mark.parametrize("shape", [(1, 384), (7, 33), (300, 1536)])
def test_gelu(shape):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    ref = lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))  # noqa: E731
    for k in variants(ops.gelu_):
        np.testing.assert_allclose(k(x.copy()), ref(x.astype(np.float64)), atol=2e-6, rtol=1e-5)
    for k in variants(ops.bias_gelu_):
        np.testing.assert_allclose(k(x.copy(), b), ref((x + b).astype(np.float64)), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", [(1, 384), (50, 576)])
def test_norms(shape):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    g, b = rng.standard_normal(shape[1]).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ln_ref = (x - mu) / np.sqrt(var + 1e-5) * g + b
    rms_ref = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g
    for k in variants(ops.layer_norm):
        np.testing.assert_allclose(k(x, g, b, 1e-5), ln_ref, atol=1e-5, rtol=1e-5)
    for k in variants(ops.rms_norm):
        np.testing.assert_allclose(k(x, g, 1e-5), rms_ref, atol=1e-5, rtol=1e-5)


def test_softmax_and_residuals():
    x = (rng.standard_normal((40, 1500)) * 5).astype(np.float32)
    x[3, :10] = -np.inf  # masked positions
    ref = np.exp(x - x.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    for k in variants(ops.softmax_):
        np.testing.assert_allclose(k(x.copy()), ref, atol=1e-7, rtol=1e-5)
    y = rng.standard_normal(x.shape).astype(np.float32)
    x[3, :10] = 0
    for k in variants(ops.add_):
        np.testing.assert_allclose(k(x.copy(), y), x + y, rtol=1e-6)
    g, u = rng.standard_normal((5, 64)).astype(np.float32), rng.standard_normal((5, 64)).astype(np.float32)
    for k in variants(ops.silu_mul_):
        np.testing.assert_allclose(k(g.copy(), u), g / (1 + np.exp(-g)) * u, rtol=1e-5, atol=1e-6)


def test_encoder_row_kernels():
    x = (rng.standard_normal((30, 96)) * 3).astype(np.float32)
    y, b = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    g, bb = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    gelu = lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))  # noqa: E731
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    for k in variants(ops.layer_norm_into):
        out = np.empty_like(x)
        assert k(x, g, bb, 1e-5, out) is out
        np.testing.assert_allclose(out, (x - mu) / np.sqrt(var + 1e-5) * g + bb, atol=1e-5, rtol=1e-5)
    for k in variants(ops.bias_gelu_add_):
        np.testing.assert_allclose(k(x.copy(), b, y), gelu((x + b).astype(np.float64)) + y, atol=3e-6, rtol=1e-5)
    for k in variants(ops.bias_residual_):
        np.testing.assert_allclose(k(x.copy(), y, b), x + (y + b), rtol=1e-6, atol=1e-6)
    for k in variants(ops.bias_scale_):
        ref = x.copy()
        ref[:, :40] = (ref[:, :40] + b[:40]) * np.float32(0.125)
        np.testing.assert_array_equal(k(x.copy(), b[:40].copy(), np.float32(0.125)), ref)


def test_unnormalized_softmax_and_head_division():
    s = (rng.standard_normal((20, 1500)) * 5).astype(np.float32)
    s[2, :7] = -np.inf
    e = np.exp(s.astype(np.float64) - s.max(-1, keepdims=True))
    for k in variants(ops.softmax_unnormalized_):
        sums = np.empty(20, np.float32)
        np.testing.assert_allclose(k(s.copy(), sums), e, atol=1e-7, rtol=1e-5)
        np.testing.assert_allclose(sums, e.sum(-1), rtol=1e-5)
    x = rng.standard_normal((20, 4 * 16)).astype(np.float32)
    sums = rng.uniform(1, 9, (4, 25)).astype(np.float32)  # wider than x has rows: a chunk's scratch
    ref = x / np.repeat(sums[:, :20].T, 16, axis=1)
    for k in variants(ops.divide_heads_):
        np.testing.assert_allclose(k(x.copy(), sums), ref, rtol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_im2col3(stride):
    x = rng.standard_normal((11, 5)).astype(np.float32)
    xp = np.pad(x, ((1, 1), (0, 0)))
    t_out = (11 - 1) // stride + 1
    full = np.concatenate([xp[k : k + stride * (t_out - 1) + 1 : stride] for k in range(3)], 1)
    for k in variants(ops.im2col3):
        for src in (x, np.asfortranarray(x)):  # the mel arrives transposed (a strided view)
            out = np.full((t_out - 2, 15), np.nan, np.float32)
            np.testing.assert_array_equal(k(src, stride, 2, out), full[2:])
