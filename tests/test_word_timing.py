"""Word timestamps against published word alignments of real recordings ("word starts within
150 ms of the truth on average"): praatIO's two English sentences (tiny.en) and a WebMAUS
forced alignment of a 21 s German passage (Whisper base). References: fixtures/manifest.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES


def reference(name: str) -> list[tuple[str, float]]:
    entry = next(e for e in json.loads((FIXTURES / "manifest.json").read_text()) if e["file"] == name)
    return [(word, start) for word, start, _ in entry["word_times"]]


def _key(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


def matched_start_errors(ref: list[tuple[str, float]], words) -> np.ndarray:
    """Start errors (seconds) of the words both sequences share, paired by longest common
    subsequence of their spellings: misrecognized words are left out rather than mispaired."""
    a, b = [_key(w) for w, _ in ref], [_key(w.word) for w in words]
    lcs = np.zeros((len(a) + 1, len(b) + 1), np.int64)
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            lcs[i, j] = lcs[i + 1, j + 1] + 1 if a[i] == b[j] else max(lcs[i + 1, j], lcs[i, j + 1])
    i = j = 0
    errors = []
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            errors.append(words[j].start - ref[i][1])
            i, j = i + 1, j + 1
        elif lcs[i + 1, j] >= lcs[i, j + 1]:
            i += 1
        else:
            j += 1
    return np.asarray(errors)


def test_matching_skips_misrecognized_words():
    class W:
        def __init__(self, word, start):
            self.word, self.start = word, start

    ref = [("mein", 2.2), ("Wasserenthärter", 2.4), ("funktioniert", 3.2)]
    hyp = [W(" Mein", 2.1), W(" Wasserentherter", 2.5), W(" funktioniert.", 3.3)]
    np.testing.assert_allclose(matched_start_errors(ref, hyp), [-0.1, 0.1])


@pytest.mark.slow
def test_tiny_en_word_starts_near_alignment(tiny_model):
    errors = []
    for name in ("praatio-bobby.flac", "praatio-mary.flac"):
        segments, _ = tiny_model.transcribe(str(FIXTURES / name), word_timestamps=True)
        words = [w for s in segments for w in s.words]
        ref = reference(name)
        err = matched_start_errors(ref, words)
        assert len(err) == len(ref), [w.word for w in words]
        errors.extend(err)
    assert np.mean(np.abs(errors)) < 0.15 and np.max(np.abs(errors)) < 0.3


@pytest.mark.network
def test_base_german_word_starts_near_forced_alignment(base_model):
    name = "sppas-deu-DEU_F10_DEU_T02.flac"
    segments, info = base_model.transcribe(str(FIXTURES / name), word_timestamps=True)
    assert info.language == "de"
    err = np.abs(matched_start_errors(reference(name), [w for s in segments for w in s.words]))
    assert len(err) >= 30  # of 46 aligned words; the rest are misrecognized or split differently
    assert err.mean() < 0.15 and np.median(err) < 0.1
