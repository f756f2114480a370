"""Word timestamps: the numba DTW against a numpy reference, and words on real speech."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from whisperlite.transcription.timing import align_words, alignment_matrix, dtw, median_filter, split_words


def dtw_reference(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same recursion computed one anti-diagonal at a time (vectorized), then backtraced."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    move = np.zeros((n + 1, m + 1), np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        cand = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])
        best = np.argmin(cand, axis=0)  # first minimum: diagonal, then token step, then time step
        acc[i, j] = cost[i - 1, j - 1] + cand[best, np.arange(len(i))]
        move[i, j] = best
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        i, j = {0: (i - 1, j - 1), 1: (i - 1, j), 2: (i, j - 1)}[int(move[i, j])]
    rows, cols = np.array(path[::-1]).T
    return rows, cols


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 40), (40, 40), (23, 300)])
def test_dtw_matches_reference(shape):
    rng = np.random.default_rng(sum(shape))
    cost = rng.random(shape)
    got, want = dtw(cost), dtw_reference(cost)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_dtw_ties_and_path_shape():
    rows, cols = dtw(np.zeros((3, 5)))  # all ties: diagonal first, then time steps
    assert rows.tolist() == [0, 0, 0, 1, 2] and cols.tolist() == [0, 1, 2, 3, 4]
    # A path visits every row and every column, moving forward by at most one in each.
    rows, cols = dtw(np.random.default_rng(0).random((9, 31)))
    assert rows[0] == 0 and cols[0] == 0 and rows[-1] == 8 and cols[-1] == 30
    assert set(np.diff(rows)) <= {0, 1} and set(np.diff(cols)) <= {0, 1}


def median_reference(x: np.ndarray, width: int = 7) -> np.ndarray:
    """np.median over each reflect-padded window of the last axis."""
    if x.shape[-1] <= width // 2:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(width // 2, width // 2)], mode="reflect")
    return np.stack([np.median(padded[..., k : k + width], axis=-1) for k in range(x.shape[-1])], axis=-1)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 7, 8, 50, 1500])
def test_median_filter_matches_numpy(n):
    rng = np.random.default_rng(n)
    x = rng.random((3, 4, n))
    x[1] = rng.integers(0, 3, (4, n))  # many ties
    np.testing.assert_array_equal(median_filter(x), median_reference(x))


def alignment_reference(weights: list[np.ndarray]) -> np.ndarray:
    """The plain numpy formulation: all heads at once in float64."""
    w = np.stack(weights).astype(np.float64)
    w /= np.maximum(w.sum(axis=-1, keepdims=True), 1e-12)
    w = (w - w.mean(axis=-2, keepdims=True)) / np.maximum(w.std(axis=-2, keepdims=True), 1e-12)
    return median_reference(w).mean(axis=0)


@pytest.mark.parametrize("shape", [(1, 2), (5, 3), (5, 4), (9, 130), (40, 1500), (61, 257)])
def test_alignment_matrix_equals_numpy_bit_for_bit(shape):
    # Softmax rows over a full window cut to the frames that hold audio, as the decoder
    # returns them (views with the window's row stride); bit-equal, so DTW paths cannot move.
    rng = np.random.default_rng(shape[1])
    full = rng.random((4, shape[0], 1500), dtype=np.float32) ** 8
    full /= full.sum(axis=-1, keepdims=True)
    weights = [full[h, :, : shape[1]] for h in range(4)]
    np.testing.assert_array_equal(alignment_matrix(weights), alignment_reference(weights))


def test_split_words(tiny_model):
    tok = tiny_model.tokenizer
    words = split_words(tok, tok.encode(" And so, my fellow Americans"), "en")
    assert [tok.decode(w) for w in words] == [" And", " so,", " my", " fellow", " Americans"]


@pytest.fixture(scope="module")
def jfk_words(tiny_model, jfk_audio):
    segments, _ = tiny_model.transcribe(jfk_audio, word_timestamps=True, beam_size=1)
    return list(segments)


def test_words_monotonic_and_inside_their_segment(jfk_words):
    assert jfk_words
    prev = 0.0
    for seg in jfk_words:
        assert seg.words, seg.text
        assert "".join(w.word for w in seg.words).strip() == seg.text.strip()
        for w in seg.words:
            assert seg.start <= w.start <= w.end <= seg.end
            assert w.start >= prev
            assert 0.0 <= w.probability <= 1.0
            prev = w.end


def test_words_land_near_known_times(jfk_words):
    # Onsets of words that follow a pause in jfk.wav, read off its frame energy (10 ms
    # frames, about 30 dB above the pauses): "And" 0.30, "ask" 3.30, "not" 4.00,
    # "what" 5.40, "ask" 8.20.
    words = [w for seg in jfk_words for w in seg.words]
    truth = {("and", 0): 0.30, ("ask", 0): 3.30, ("not", 0): 4.00, ("what", 0): 5.40, ("ask", 1): 8.20}
    seen: dict[str, int] = {}
    errors = []
    for w in words:
        key = w.word.strip(" ,.").lower()
        n = seen.get(key, 0)
        seen[key] = n + 1
        if (key, n) in truth:
            errors.append(abs(w.start - truth[(key, n)]))
    assert len(errors) == len(truth)
    assert max(errors) < 0.25 and sum(errors) / len(errors) < 0.1


def test_alignment_head_presets_match_ct2_config(tiny_model):
    # ggml files store no heads: the preset for tiny.en must be the one the CTranslate2
    # model carries in its config.json.
    from whisperlite.formats.checkpoint import preset_alignment_heads

    dims = tiny_model.model.dims
    np.testing.assert_array_equal(preset_alignment_heads(dims), tiny_model.model.alignment_heads)
    large_v2 = type(dims)(n_mels=80, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                          n_vocab=51865, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32)
    assert preset_alignment_heads(large_v2) is None  # v1 and v2 cannot be told apart


@pytest.mark.slow
def test_ggml_model_words_match_ct2_words(jfk_words, jfk_audio):
    import whisperlite

    q5 = whisperlite.load_model("tiny.en-q5_0", threads=2)
    assert q5.model.alignment_heads is not None
    segments, _ = q5.transcribe(jfk_audio, word_timestamps=True, beam_size=1)
    got = [w for s in segments for w in s.words]
    want = [w for s in jfk_words for w in s.words]
    assert [w.word for w in got] == [w.word for w in want]
    errors = np.abs([g.start - w.start for g, w in zip(got, want)])
    assert errors.mean() < 0.03 and errors.max() < 0.1


# Words aligned on a worker thread (more than one thread) while the next window decodes.

def _worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "whisperlite-words"]


@pytest.fixture(scope="module")
def long_audio(jfk_audio):
    return np.concatenate([jfk_audio] * 4)  # 44 s: several windows


def _words(segments) -> list[tuple]:
    # not the probabilities: the vocabulary projection may sum in another order run to run
    return [(s.id, s.start, s.end, s.text, [(w.word, w.start, w.end) for w in s.words]) for s in segments]


@pytest.mark.slow
def test_background_alignment_equals_inline(tiny_model, long_audio, monkeypatch):
    segments, info = tiny_model.transcribe(long_audio, word_timestamps=True, beam_size=1, vad=False)
    behind = list(segments)
    assert len({s.seek for s in behind}) >= 2 and info.profile.stages["words"].background
    assert info.profile.stages["words"].items == len({s.seek for s in behind})
    monkeypatch.setattr(tiny_model, "threads", 1)
    segments, info = tiny_model.transcribe(long_audio, word_timestamps=True, beam_size=1, vad=False)
    assert _words(segments) == _words(behind)
    assert not info.profile.stages["words"].background and "words wait" not in info.profile.stages
    assert not _worker_threads()


@pytest.mark.slow
def test_alignment_error_is_raised_by_the_iterator(tiny_model, long_audio, monkeypatch):
    import whisperlite.transcription.transcribe as transcribe

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("alignment failed")
        return align_words(*args, **kwargs)

    monkeypatch.setattr(transcribe, "align_words", failing)
    segments, _ = tiny_model.transcribe(long_audio, word_timestamps=True, beam_size=1, vad=False)
    with pytest.raises(RuntimeError, match="alignment failed"):
        list(segments)
    assert not _worker_threads()


@pytest.mark.slow
def test_closing_the_iterator_early_ends_the_worker(tiny_model, long_audio):
    segments, _ = tiny_model.transcribe(long_audio, word_timestamps=True, beam_size=1, vad=False)
    first = next(segments)
    assert first.words and _worker_threads()
    segments.close()
    assert not _worker_threads()
