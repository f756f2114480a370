"""Sampling: greedy, the top-k / top-p / min-p filters, repeat penalty, seeded draws."""
from __future__ import annotations

import numpy as np

from whisperlite.generation.sampling import Sampler, SamplingOptions, apply_repeat_penalty, candidate_probs

LOGITS = np.array([1.0, 3.0, 2.0, -1.0, 0.5, 2.9], np.float32)


def test_greedy_is_argmax():
    assert Sampler(SamplingOptions(temp=0)).sample(LOGITS) == 1


def test_top_k_keeps_the_best_k():
    ids, p = candidate_probs(LOGITS, top_k=3, top_p=1.0, min_p=0.0, temp=1.0)
    assert ids.tolist() == [1, 5, 2] and np.isclose(p.sum(), 1)
    ref = np.exp(LOGITS[[1, 5, 2]] - 3.0)
    np.testing.assert_allclose(p, ref / ref.sum(), rtol=1e-6)


def test_top_p_smallest_prefix_reaching_mass():
    z = LOGITS.astype(np.float64)
    probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    order = np.argsort(-probs)
    mass = np.cumsum(probs[order])
    ids, _ = candidate_probs(LOGITS, top_k=0, top_p=0.8, min_p=0.0, temp=1.0)
    assert ids.tolist() == order[: int(np.searchsorted(mass, 0.8)) + 1].tolist()


def test_min_p_drops_unlikely_tokens():
    ids, _ = candidate_probs(LOGITS, top_k=0, top_p=1.0, min_p=0.5, temp=1.0)
    # p(i) / p(best) = exp(l_i - 3) >= 0.5  <=>  l_i >= 3 - ln 2
    assert sorted(ids.tolist()) == [1, 5]


def test_temperature_sharpens():
    _, hot = candidate_probs(LOGITS, 0, 1.0, 0.0, temp=2.0)
    _, cold = candidate_probs(LOGITS, 0, 1.0, 0.0, temp=0.5)
    assert cold[0] > hot[0]


def test_repeat_penalty_moves_both_signs_down():
    out = apply_repeat_penalty(LOGITS, [1, 3], 2.0)
    assert out[1] == 1.5 and out[3] == -2.0 and out[0] == LOGITS[0]
    assert apply_repeat_penalty(LOGITS, [1], 1.0) is LOGITS


def test_seed_reproduces_and_penalty_changes_greedy():
    opts = SamplingOptions(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    s1, s2 = Sampler(opts), Sampler(opts)
    assert [s1.sample(LOGITS) for _ in range(20)] == [s2.sample(LOGITS) for _ in range(20)]
    g = Sampler(SamplingOptions(temp=0, repeat_penalty=1.5))
    g.accept(1)
    assert g.sample(LOGITS) == 5
