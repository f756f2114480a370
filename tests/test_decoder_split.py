"""The decoder step split between two threads (decoder_step.decoder_split via
decoder_split.SplitStep) against the step on one thread, for every weight type, and its
hand-over when the partner thread starts late or never."""
import threading
import time

import numpy as np
import pytest
from test_decoder_step import AUDIO_CTX, STATE, TYPES, VOCAB, random_decoder

from whisperlite.kernels import decoder_step as fused
from whisperlite.kernels.threads import Partner
from whisperlite.models.decoder_split import SplitStep


class _Absent:
    """A partner that never runs: the calling thread must do every chunk itself."""

    def start(self, fn, args) -> None:
        pass


class _Late:
    """A partner that starts each job only after `delay` seconds, by which time the caller
    has finished the step alone: its run must change nothing."""

    def __init__(self, delay: float):
        self.delay = delay
        self.threads: list[threading.Thread] = []

    def start(self, fn, args) -> None:
        t = threading.Thread(target=lambda: (time.sleep(self.delay), fn(1, *args)))
        t.start()
        self.threads.append(t)


def _weights(dec):
    w = dec.step_weights
    return (w.emb_kind, w.emb, dec.pos, w.kinds, w.ln_g, w.ln_b,
            *(a for mat, bias in zip(w.mats, w.biases) for a in (mat, bias)), w.lnf_g, w.lnf_b)


def _run(dec, partner, batch: int, steps: int, seed: int = 3) -> list[np.ndarray]:
    """Logits of `steps` split steps after a 3-token prompt, with beam-style reorders."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    cache = dec.new_cache(features, batch)
    dec.forward(np.tile(rng.integers(0, VOCAB, (1, 3)), (batch, 1)), cache)
    split = SplitStep(dec.dims, batch, partner)
    out = []
    for _ in range(steps):
        tokens = rng.integers(0, VOCAB, (batch, 1))
        args = (cache.k, cache.v, cache.cross_k_in, cache.cross_v_in, dec.dims.n_text_head)
        out.append(split.run(_weights(dec), args, tokens, cache.length, dec.int8).copy())
        cache.length += 1
        cache.reorder(rng.integers(0, batch, batch))
    return out


def _reference(dec, batch: int, steps: int, seed: int = 3) -> list[np.ndarray]:
    """The same steps on one thread (decoder_layers + the vocabulary projection)."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    cache = dec.new_cache(features, batch)
    dec.forward(np.tile(rng.integers(0, VOCAB, (1, 3)), (batch, 1)), cache)
    out = []
    for _ in range(steps):
        tokens = rng.integers(0, VOCAB, (batch, 1))
        out.append(dec._step_here(tokens, cache, 1).copy())
        cache.length += 1
        cache.reorder(rng.integers(0, batch, batch))
    return out


@pytest.mark.parametrize("int8", [False, True], ids=["float", "int8"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: "F32" if q is None else q.name)
@pytest.mark.parametrize("batch", [1, 3])
def test_split_step_matches_one_thread(qtype, batch, int8):
    if int8 and not fused.HAS_AVX2:
        pytest.skip("int8 activations need AVX2")
    dec = random_decoder(qtype, int8=int8)
    ref = _reference(dec, batch, 6)
    alone = _run(dec, _Absent(), batch, 6)
    paired = _run(dec, Partner(), batch, 6)
    # Against one thread the sums are the same but vectorized by LLVM in other orders; int8
    # activations can round the other way at a half step, which moves a logit further.
    tol = 1e-2 if int8 and qtype not in (None, TYPES[1]) else 1e-5
    for r, a, p in zip(ref, alone, paired):
        # Same chunks, same arithmetic whichever thread runs them: identical bits.
        np.testing.assert_array_equal(a, p)
        assert np.abs(a - r).max() <= tol * np.abs(r).max()


def test_late_partner_changes_nothing():
    dec = random_decoder(None)
    late = _Late(0.05)
    got = _run(dec, late, 2, 4)
    for t in late.threads:
        t.join()
    for g, want in zip(got, _run(dec, _Absent(), 2, 4)):
        np.testing.assert_array_equal(g, want)


def test_two_threads_choose_between_step_variants():
    """With two threads TextDecoder.step runs the split or the one-thread step, whichever
    was faster lately (re-trying the other now and then), each giving the one-thread result."""
    from whisperlite.kernels import set_threads

    dec = random_decoder(TYPES[1])  # float16 weights, as tiny.en
    windows, steps = 4, 10  # 3 prompt tokens + 10 steps fit the 16-token context
    refs = [_reference(dec, 1, steps, seed=s) for s in range(windows)]
    set_threads(2)
    try:
        for seed, ref in enumerate(refs):
            rng = np.random.default_rng(seed)
            features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
            cache = dec.new_cache(features, 1)
            dec.forward(np.tile(rng.integers(0, VOCAB, (1, 3)), (1, 1)), cache)
            for want in ref:
                got = dec.step(rng.integers(0, VOCAB, (1, 1)), cache).copy()
                cache.reorder(rng.integers(0, 1, 1))
                assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
            assert cache.split is not None
        chooser = dec._step_choice[1]
        assert chooser.calls == windows * steps and all(chooser.avg)  # both variants ran
    finally:
        set_threads(None)
