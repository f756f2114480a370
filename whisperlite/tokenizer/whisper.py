"""Whisper's tokenizer: byte-level BPE through `tokenizers`, plus the special-token layout.

Special tokens follow the regular vocabulary in a fixed order (as whisper.cpp derives them
from n_vocab): eot, sot, one token per language, translate, transcribe, startoflm,
startofprev, nospeech, notimestamps, then 1501 timestamps <|0.00|> … <|30.00|>.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

# openai/whisper tokenizer.py LANGUAGES order: the position is the language token offset.
LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr "
    "bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
    "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
).split()


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte→printable-character map used by byte-level BPE vocabularies."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merges_from_ranks(vocab: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from a rank-ordered vocabulary (tiktoken style: rank = id).

    Each multi-byte token is the last merge of running BPE on its own bytes with only
    lower-ranked tokens allowed; the two parts left are its merge pair.
    """
    merges = []
    for token, rank in sorted(vocab.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = vocab.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def tokenizer_from_bytes(token_bytes: Sequence[bytes]) -> Tokenizer:
    """A `tokenizers` byte-level BPE from whisper.cpp's vocabulary (token i = token_bytes[i])."""
    b2u = _byte_to_unicode()
    to_str = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    ranks = {b: i for i, b in enumerate(token_bytes)}
    vocab = {to_str(b): i for b, i in ranks.items()}
    merges = [(to_str(a), to_str(b)) for a, b in _merges_from_ranks(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    languages: tuple[str, ...]
    translate: int
    transcribe: int
    startoflm: int
    startofprev: int
    nospeech: int
    notimestamps: int
    timestamp_begin: int

    @classmethod
    def for_vocab(cls, n_vocab: int) -> "SpecialTokens":
        multilingual = n_vocab >= 51865
        n_lang = n_vocab - 51765 - int(multilingual)
        eot = 50256 + int(multilingual)
        sot = eot + 1
        after = sot + n_lang
        return cls(eot, sot, tuple(LANGUAGES[:n_lang]), after + 1, after + 2, after + 3, after + 4, after + 5, after + 6, after + 7)

    def language_token(self, code: str) -> int:
        return self.sot + 1 + self.languages.index(code)


class WhisperTokenizer:
    """Text ↔ ids for one Whisper model, plus the prompt (sot) sequence and token classes."""

    def __init__(self, tokenizer: Tokenizer, n_vocab: int, multilingual: bool):
        self._tok = tokenizer
        self.n_vocab = n_vocab
        self.multilingual = multilingual
        self.special = SpecialTokens.for_vocab(n_vocab)

    @classmethod
    def from_file(cls, path: str, n_vocab: int) -> "WhisperTokenizer":
        return cls(Tokenizer.from_file(path), n_vocab, n_vocab >= 51865)

    @classmethod
    def from_bytes(cls, token_bytes: Sequence[bytes], n_vocab: int) -> "WhisperTokenizer":
        return cls(tokenizer_from_bytes(token_bytes), n_vocab, n_vocab >= 51865)

    @property
    def eot(self) -> int:
        return self.special.eot

    @property
    def timestamp_begin(self) -> int:
        return self.special.timestamp_begin

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the regular tokens in `ids` (special and timestamp tokens dropped)."""
        return self._tok.decode([i for i in ids if i < self.special.eot], skip_special_tokens=False)

    def sot_sequence(self, language: str | None = "en", task: str = "transcribe") -> list[int]:
        seq = [self.special.sot]
        if self.multilingual:
            if language is not None:
                seq.append(self.special.language_token(language))
            seq.append(self.special.translate if task == "translate" else self.special.transcribe)
        return seq

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens for symbols and music notes that are never speech (openai/whisper's list)."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        misc = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for sym in symbols + sorted(misc):
            for ids in (self.encode(sym), self.encode(" " + sym)):
                if len(ids) == 1 or sym in misc:
                    result.add(ids[0])
        return tuple(sorted(result))


def vocab_json_bytes(path: str) -> list[bytes]:
    """Regular-token byte strings from a tokenizer.json (for writing whisper.cpp vocabularies)."""
    data = json.loads(open(path, encoding="utf-8").read())
    vocab = data["model"]["vocab"]
    u2b = {v: k for k, v in _byte_to_unicode().items()}
    out = [b""] * len(vocab)
    for piece, i in vocab.items():
        if i < len(out):
            out[i] = bytes(u2b[c] for c in piece)
    return out
