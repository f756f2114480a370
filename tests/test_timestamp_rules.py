"""The timestamp rules on hand-made logits: pairs, monotonic, bounded first timestamp."""
import numba
import numpy as np
import pytest

from whisperlite.transcription.decoding import TimestampRules, compression_ratio
from whisperlite.kernels.llvm_ir import range_max
from whisperlite.registry.embedded import embedded_model_dir
from whisperlite.transcription.logits import TOPK_BLOCK, row_logsumexp, row_topk
from whisperlite.tokenizer.whisper import WhisperTokenizer

TB = 50363


@pytest.fixture(scope="module")
def tok():
    return WhisperTokenizer.from_file(str(embedded_model_dir() / "tokenizer.json"), 51864)


def run(tok, sampled, logits=None, max_initial=50):
    rules = TimestampRules(tok, sample_begin=1, max_initial_index=max_initial)
    tokens = np.array([[tok.special.sot] + sampled])
    if logits is None:
        logits = np.zeros((1, 51864), np.float32)
    rules.apply(logits, tokens)
    return logits[0]


def test_first_token_is_a_timestamp_within_one_second(tok):
    out = run(tok, [])
    assert np.all(np.isneginf(out[:TB]))
    assert np.all(np.isfinite(out[TB : TB + 51])) and np.all(np.isneginf(out[TB + 51 :]))


def test_open_timestamp_must_be_closed_by_timestamp_or_eot(tok):
    logits = np.full((1, 51864), -10.0, np.float32)
    logits[0, tok.eot] = 5.0  # end of text likely: it must stay allowed
    out = run(tok, [TB + 10, 400, 500, TB + 30], logits)  # text then a timestamp: segment end
    assert np.all(np.isneginf(out[: tok.eot]))
    assert np.isfinite(out[tok.eot])
    # a pair may close at the same time or later, never earlier
    assert np.all(np.isneginf(out[TB : TB + 30])) and np.isfinite(out[TB + 30])


def test_after_a_pair_comes_text(tok):
    out = run(tok, [TB, 400, TB + 20, TB + 20])
    assert np.all(np.isneginf(out[TB:]))


def test_timestamps_never_decrease(tok):
    out = run(tok, [TB + 5, 400, 401])
    assert np.all(np.isneginf(out[TB : TB + 6]))  # strictly after the last one while text is open
    assert np.isfinite(out[TB + 6])


def test_timestamp_forced_when_timestamps_outweigh_text(tok):
    logits = np.full((1, 51864), -5.0, np.float32)
    logits[0, 400] = 1.0
    logits[0, TB + 10 : TB + 200] = 0.5  # many plausible timestamps: their sum wins
    out = run(tok, [TB, 400], logits)
    assert np.all(np.isneginf(out[:TB]))


def test_compression_ratio_flags_loops():
    assert compression_ratio("ask not what your country can do for you " * 20) > 2.4
    assert compression_ratio("And so my fellow Americans, ask not what your country can do for you.") < 2.4


def test_row_logsumexp_matches_float64_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 51864)) * 4).astype(np.float32)
    x[1, :100] = -np.inf  # suppressed tokens
    x[2, :] = -np.inf  # nothing allowed: log(0)
    x[3, ::7] = -np.inf
    got = row_logsumexp(x)
    finite = [0, 1, 3]
    m = x[finite].max(axis=-1, keepdims=True).astype(np.float64)
    ref = (m + np.log(np.exp(x[finite].astype(np.float64) - m).sum(axis=-1, keepdims=True)))[:, 0]
    np.testing.assert_allclose(got[finite], ref, rtol=1e-6)
    assert got[2] == -np.inf


@pytest.mark.parametrize("k", [1, 6])
def test_row_topk_matches_stable_argsort(k):
    """Largest first, ties to the lower index, over rows longer than a skip block, with
    suppressed (-inf) tokens and repeated values."""
    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal((4, 3 * TOPK_BLOCK + 17)) * 4).astype(np.float32)  # many ties
    x[:, ::5] = -np.inf
    x[1, -3:] = 50.0  # the best at the very end of the last, partial block
    np.testing.assert_array_equal(row_topk(x, k), np.argsort(-x, axis=1, kind="stable")[:, :k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_range_max_matches_numpy(dtype):
    """The vector maximum the rules, log-sum-exp and top-k share: every split of a range
    into 32-lane blocks and a tail, -inf entries, empty ranges, NaN ignored."""
    rng_max = numba.njit(lambda x, lo, hi: range_max(x, lo, hi))
    x = np.random.default_rng(1).standard_normal(1000).astype(dtype)
    x[::3] = -np.inf
    for lo, hi in [(0, 1000), (0, 31), (0, 32), (1, 33), (5, 100), (999, 1000), (7, 7)]:
        assert rng_max(x, lo, hi) == (x[lo:hi].max() if hi > lo else -np.inf)
    assert rng_max(np.full(64, -np.inf, dtype), 0, 64) == -np.inf
    x[10] = np.nan
    assert rng_max(x, 0, 1000) == np.nanmax(x)
