"""Whisper's tokenizer: byte-level BPE by rank (bpe.py), plus the special-token layout.

Special tokens follow the regular vocabulary in a fixed order (as whisper.cpp derives them
from n_vocab): eot, sot, one token per language, translate, transcribe, startoflm,
startofprev, nospeech, notimestamps, then 1501 timestamps <|0.00|> … <|30.00|>.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

from whisperlite.formats.ggml import token_bytes_from_tokenizer_json
from whisperlite.tokenizer.bpe import ByteBPE

# openai/whisper tokenizer.py LANGUAGES order: the position is the language token offset.
LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr "
    "bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn "
    "yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
).split()


def _packed_tokens(path: str) -> list[bytes]:
    """A tokenizer.json's tokens, copied into fresh memory: as parsed they lie scattered
    among the freed JSON objects and keep ~12 MB of allocator pages resident for the whole run."""
    tokens = token_bytes_from_tokenizer_json(path)
    blob, lengths = b"".join(tokens), [len(t) for t in tokens]
    del tokens  # the last reference: every page of the parse is free now
    packed, at = [], 0
    for n in lengths:
        packed.append(blob[at : at + n])
        at += n
    return packed


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

    def __init__(self, token_bytes: Sequence[bytes], n_vocab: int):
        """token_bytes: the regular tokens' bytes by id (entries from eot on are ignored)."""
        self.n_vocab = n_vocab
        self.multilingual = n_vocab >= 51865
        self.special = SpecialTokens.for_vocab(n_vocab)
        self._bpe = ByteBPE(token_bytes[: self.special.eot])

    @classmethod
    def from_file(cls, path: str, n_vocab: int) -> "WhisperTokenizer":
        """From a Hugging Face tokenizer.json (CTranslate2 and Transformers folders)."""
        return cls(_packed_tokens(path), n_vocab)

    @property
    def eot(self) -> int:
        return self.special.eot

    @property
    def timestamp_begin(self) -> int:
        return self.special.timestamp_begin

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as plain text (a special token's name in it is encoded as text)."""
        return self._bpe.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the regular tokens in `ids` (special and timestamp tokens dropped)."""
        eot = self.special.eot
        return self._bpe.decode([i for i in ids if i < eot])

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
