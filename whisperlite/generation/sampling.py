"""Next-token sampling in llama.cpp's default order: repeat penalty, top-k, top-p, min-p,
temperature, then a seeded draw; temperature <= 0 is greedy (argmax after the penalty)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingOptions:
    """Defaults are llama.cpp's (common_params_sampling)."""

    temp: float = 0.8
    top_k: int = 40  # 0 disables
    top_p: float = 0.95  # 1.0 disables
    min_p: float = 0.05  # 0.0 disables
    repeat_penalty: float = 1.0  # 1.0 disables
    repeat_last_n: int = 64  # how many recent tokens the penalty looks at
    seed: int = -1  # -1: a fresh random seed each run; any other value reproduces a run


class Sampler:
    """Holds the random state and the recent-token window of one generation."""

    def __init__(self, opts: SamplingOptions) -> None:
        self.opts = opts
        self.rng = np.random.default_rng(None if opts.seed < 0 else opts.seed)
        self.recent: deque[int] = deque(maxlen=max(opts.repeat_last_n, 0))

    def accept(self, token: int) -> None:
        """Record a token that is now part of the context (prompt or generated)."""
        if self.recent.maxlen:
            self.recent.append(token)

    def sample(self, logits: np.ndarray) -> int:
        o = self.opts
        logits = apply_repeat_penalty(logits, self.recent, o.repeat_penalty)
        if o.temp <= 0:
            return int(np.argmax(logits))
        ids, probs = candidate_probs(logits, o.top_k, o.top_p, o.min_p, o.temp)
        return int(ids[self.rng.choice(len(ids), p=probs)])


def apply_repeat_penalty(logits: np.ndarray, recent: "deque[int] | list[int]", penalty: float) -> np.ndarray:
    """CTRL-style penalty on tokens seen recently: positive logits divided, negative ones
    multiplied (so both move toward less likely). Returns a copy when it changes anything."""
    if penalty == 1.0 or not recent:
        return logits
    out = logits.copy()
    ids = np.fromiter(set(recent), dtype=np.int64)
    v = out[ids]
    out[ids] = np.where(v > 0, v / penalty, v * penalty)
    return out


def candidate_probs(
    logits: np.ndarray, top_k: int, top_p: float, min_p: float, temp: float
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate ids (best first) and their renormalized probabilities after the filters."""
    n = len(logits)
    k = n if top_k <= 0 else min(top_k, n)
    # Only the top k need sorting: argpartition first keeps this cheap on a 50k vocabulary.
    ids = np.argpartition(-logits, k - 1)[:k] if k < n else np.arange(n)
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    z = logits[ids].astype(np.float64)
    p = np.exp(z - z[0])
    p /= p.sum()
    if top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (at least one token).
        keep = int(np.searchsorted(np.cumsum(p), top_p)) + 1
        ids, z, p = ids[:keep], z[:keep], p[:keep]
    if min_p > 0.0:
        # Drop tokens below min_p times the best token's probability.
        keep = max(1, int(np.sum(p >= min_p * p[0])))
        ids, z = ids[:keep], z[:keep]
    p = np.exp((z - z[0]) / temp)
    return ids, p / p.sum()
