"""Byte-level BPE by token rank, the algorithm of tiktoken (which openai/whisper uses).

A Whisper vocabulary is rank-ordered: token id = merge priority. So encoding needs only the
tokens' bytes: text is split by GPT-2's pattern, each piece's UTF-8 bytes start as single
bytes, and the adjacent pair whose concatenation has the lowest rank merges until no pair
is a token. Decoding joins the tokens' bytes. The ids equal tiktoken's over openai/whisper's
rank files (gpt2 and multilingual: same tokens by id as the models' vocabularies; checked on
the fixtures' transcripts and mixed scripts), where the `tokenizers` BPE of the CTranslate2
multilingual tokenizer.json differs (its merges split " the" into " " + "the").

Pure Python on purpose: a transcription encodes only its prompt and a few symbols, and the
`tokenizers` BPE rebuilt for that from a rank vocabulary (merges recovered first) left a
loaded model ~16 MB larger (143 vs 159 MB resident for tiny.en). The transcription's peak
is the same either way: by then its windows reuse that memory.
"""
from __future__ import annotations

from typing import Sequence

import regex

# GPT-2's pre-tokenizer pattern (tiktoken's "gpt2" and "multilingual" encodings use it too).
_SPLIT = regex.compile(r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class ByteBPE:
    """Text <-> ids over a rank-ordered byte-level vocabulary (token i = token_bytes[i])."""

    def __init__(self, token_bytes: Sequence[bytes]):
        self._bytes = list(token_bytes)
        self._ranks: dict[bytes, int] = {}
        for i, b in enumerate(self._bytes):
            self._ranks.setdefault(b, i)  # a repeated token keeps its first (lowest) rank
        missing = [b for b in range(256) if bytes([b]) not in self._ranks]
        if missing:
            raise ValueError(f"vocabulary lacks {len(missing)} single bytes (first: {missing[0]:#04x})")

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _SPLIT.findall(text):
            ids.extend(self._merge(piece.encode("utf-8")))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids; bytes that are not valid UTF-8 (a character cut between tokens) become U+FFFD."""
        table = self._bytes
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")

    def _merge(self, piece: bytes) -> list[int]:
        ranks = self._ranks
        whole = ranks.get(piece)
        if whole is not None:  # most words are one token
            return [whole]
        parts = [piece[i : i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, best_rank = -1, len(self._bytes)
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best_rank:
                    best, best_rank = i, r
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        return [ranks[p] for p in parts]
