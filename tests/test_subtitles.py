"""Subtitle cues: line width (-ml), line count, word splitting, times inside segments."""
from __future__ import annotations

import json

import pytest
import srt

from conftest import FIXTURES, JFK_TEXT, normalize, run_cli
from whisperlite.output.subtitles import SubtitleOptions, make_cues
from whisperlite.transcription.results import Segment, Word

TEXT = " And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def _segment(words: bool) -> Segment:
    seg = Segment(0, 0, 1.0, 11.0, TEXT, [], -0.2, 0.01, 0.0, 1.3)
    if words:
        parts = TEXT.split(" ")[1:]
        seg.words = [Word(1.0 + 0.45 * i, 1.0 + 0.45 * i + 0.4, " " + p, 0.9, []) for i, p in enumerate(parts)]
    return seg


@pytest.mark.parametrize("words", [True, False])
@pytest.mark.parametrize("width,count", [(42, 2), (16, 1), (20, 3), (1, 1)])
def test_cues_respect_width_and_count(words, width, count):
    seg = _segment(words)
    cues = make_cues([seg], SubtitleOptions(width, count))
    assert normalize(" ".join(c.text for c in cues)) == normalize(TEXT)
    longest_word = max(len(w) for w in TEXT.split())
    for c in cues:
        assert 1 <= len(c.lines) <= count
        assert all(len(line) <= max(width, longest_word) for line in c.lines)
    starts = [c.start for c in cues]
    assert starts == sorted(starts)
    assert all(seg.start <= c.start <= c.end <= seg.end for c in cues)
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))
    if words:  # cue boundaries fall on word times
        assert cues[0].start == seg.words[0].start and cues[-1].end == seg.words[-1].end


def test_no_split_on_word_cuts_long_words():
    cues = make_cues([_segment(True)], SubtitleOptions(5, 1, split_on_word=False))
    assert all(len(c.text) <= 5 for c in cues)
    assert "".join(c.text for c in cues).replace(" ", "") == TEXT.replace(" ", "")


def test_unlimited():
    cues = make_cues([_segment(False)], SubtitleOptions(0, 0))
    assert len(cues) == 1 and cues[0].text == TEXT.strip()


@pytest.mark.slow
def test_cli_max_len_and_words_in_json(tmp_path):
    r = run_cli("transcribe", str(FIXTURES / "jfk.wav"), "-osrt", "-ovtt", "-ojf", "-ml", "16", "-bs", "1",
                "-o", str(tmp_path), "-q")
    assert r.returncode == 0, r.stderr
    subs = list(srt.parse((tmp_path / "jfk.srt").read_text()))
    assert normalize(" ".join(s.content for s in subs)) == normalize(JFK_TEXT)
    for s in subs:
        lines = s.content.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 16 for line in lines), s.content
        assert s.start < s.end
    vtt = (tmp_path / "jfk.vtt").read_text()
    assert all(len(line) <= 16 for line in vtt.splitlines()[2:] if line and "-->" not in line)
    doc = json.loads((tmp_path / "jfk.json").read_text())
    words = [w for seg in doc["segments"] for w in seg["words"]]
    assert normalize(" ".join(w["word"] for w in words)) == normalize(JFK_TEXT)
    assert all({"word", "start", "end", "probability", "tokens"} <= set(w) for w in words)
    assert all(len(seg["token_probs"]) == len(seg["tokens"]) for seg in doc["segments"])
