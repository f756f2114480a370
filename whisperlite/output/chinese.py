"""Chinese output in one script: Whisper writes Mandarin in simplified or traditional
characters (often mixed within a recording); `--zh simplified|traditional` converts it.

Conversion uses OpenCC's phrase and character tables through `opencc-python-reimplemented`
(pure Python, Apache-2.0, no dependencies): phrases decide characters whose conversion
depends on the word (头发 → 頭髮 but 发展 → 發展), which is why whole segments are converted
rather than the one-character words of a segment one by one.
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import TYPE_CHECKING

from whisperlite.core.errors import WhisperliteError

if TYPE_CHECKING:
    from whisperlite.transcription.results import Segment

SCRIPTS = ("simplified", "traditional")
# Languages written in Chinese characters whose output is converted (Cantonese too).
CHINESE_LANGUAGES = frozenset({"zh", "yue"})
_OPENCC_CONFIG = {"simplified": "t2s", "traditional": "s2t"}


@lru_cache(maxsize=None)
def _converter(script: str):
    try:
        from opencc import OpenCC
    except ImportError:
        raise WhisperliteError("--zh needs the opencc-python-reimplemented package "
                               "(pip install opencc-python-reimplemented)") from None
    return OpenCC(_OPENCC_CONFIG[script])


def convert_text(text: str, script: str) -> str:
    """`text` written in `script` ("simplified" or "traditional")."""
    if script not in _OPENCC_CONFIG:
        raise ValueError(f"unknown Chinese script {script!r} (expected one of {', '.join(SCRIPTS)})")
    return _converter(script).convert(text)


def convert_segment(segment: Segment, script: str) -> Segment:
    """A copy of `segment` whose text and words are in `script`; word times are kept.

    Words are converted together, in context, and cut back at the original word lengths
    when the conversion kept the length (OpenCC's simplified↔traditional tables map
    phrases to phrases of equal length); otherwise each word is converted on its own.
    """
    text = convert_text(segment.text, script)
    words = segment.words
    if words:
        joined = "".join(w.word for w in words)
        converted = convert_text(joined, script)
        if len(converted) == len(joined):
            pieces, pos = [], 0
            for w in words:
                pieces.append(converted[pos:pos + len(w.word)])
                pos += len(w.word)
        else:
            pieces = [convert_text(w.word, script) for w in words]
        words = [dataclasses.replace(w, word=p) for w, p in zip(words, pieces)]
    return dataclasses.replace(segment, text=text, words=words)
