"""--zh: Chinese output converted to one script, words kept in step with the segment text."""
from __future__ import annotations

import pytest

from whisperlite.output.chinese import convert_segment, convert_text
from whisperlite.transcription.results import Segment, Word

SIMPLIFIED = "头发和发展都很重要。"
TRADITIONAL = "頭髮和發展都很重要。"


def test_convert_text_uses_phrases():
    # 发 is 髮 (hair) in 头发 but 發 in 发展: a character table alone gets one of them wrong.
    assert convert_text(SIMPLIFIED, "traditional") == TRADITIONAL
    assert convert_text(TRADITIONAL, "simplified") == SIMPLIFIED
    assert convert_text(SIMPLIFIED, "simplified") == SIMPLIFIED
    with pytest.raises(ValueError):
        convert_text(SIMPLIFIED, "pinyin")


def test_convert_segment_words_follow_the_text():
    chars = list(SIMPLIFIED)
    words = [Word(start=0.1 * i, end=0.1 * i + 0.1, word=c, probability=0.9, tokens=[i]) for i, c in enumerate(chars)]
    seg = Segment(id=0, seek=0, start=0.0, end=1.0, text=SIMPLIFIED, tokens=[1, 2], avg_logprob=-0.2,
                  no_speech_prob=0.0, temperature=0.0, compression_ratio=1.0, words=words)
    out = convert_segment(seg, "traditional")
    assert out.text == TRADITIONAL
    assert "".join(w.word for w in out.words) == TRADITIONAL
    assert [w.start for w in out.words] == [w.start for w in words]
    assert seg.text == SIMPLIFIED and seg.words[1].word == "发"  # the input is left alone
