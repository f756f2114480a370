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
