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
    def sot(self) -> int:
        return self.special.sot

    @property
    def timestamp_begin(self) -> int:
        return self.special.timestamp_begin

    @property
    def all_language_codes(self) -> tuple[str, ...]:
        """The language codes the model has a token for, in token order."""
        return self.special.languages

    @property
    def all_language_tokens(self) -> tuple[int, ...]:
        return tuple(self.special.language_token(code) for code in self.special.languages)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as plain text (a special token's name in it is encoded as text)."""
        return self._bpe.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the regular tokens in `ids` (special and timestamp tokens dropped)."""
        eot = self.special.eot
        return self._bpe.decode([i for i in ids if i < eot])

    def decode_with_timestamps(self, ids: Sequence[int]) -> str:
        """Text of `ids` with timestamp tokens written as <|1.08|> (other special tokens dropped)."""
        eot, ts = self.special.eot, self.special.timestamp_begin
        parts: list[str] = []
        text: list[int] = []
        for i in ids:
            if i < eot:
                text.append(i)
            elif i >= ts:
                parts += [self._bpe.decode(text), f"<|{(i - ts) * 0.02:.2f}|>"]
                text = []
        return "".join(parts) + self._bpe.decode(text)

    def split_tokens_on_unicode(self, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """`ids` cut into runs that decode to whole characters, and their texts.

        A character may span several byte-level tokens: tokens are grouped until the group
        decodes without U+FFFD, or until its U+FFFD stands for bytes that are invalid in the
        whole text too (the model can emit those; waiting would swallow the rest). Tokens
        left over at the end, a character cut off, form the last run."""
        full = self.decode_with_timestamps(ids)
        words: list[str] = []
        runs: list[list[int]] = []
        current: list[int] = []
        at = 0  # characters of `full` covered by the runs so far
        for i in ids:
            current.append(i)
            text = self.decode_with_timestamps(current)
            bad = text.find("\ufffd")
            if bad < 0 or full[at + bad : at + bad + 1] == "\ufffd":
                words.append(text)
                runs.append(current)
                current = []
                at += len(text)
        if current:
            words.append(self.decode_with_timestamps(current))
            runs.append(current)
        return words, runs

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
