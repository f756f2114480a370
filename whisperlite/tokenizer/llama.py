"""LLaMA-family tokenizers built from GGUF metadata, with llama.cpp's token ids.

Two vocabularies exist in GGUF files (`tokenizer.ggml.model`):
- "gpt2": byte-level BPE over the `tokenizer.ggml.merges` list, run by the `tokenizers`
  package after a pre-tokenizer chosen by `tokenizer.ggml.pre`;
- "llama": SentencePiece BPE scored by `tokenizer.ggml.scores`, with byte fallback
  (`<0xNN>` tokens) for characters the vocabulary lacks.
Control and user-defined tokens are split out of the text first (llama.cpp's
"parse_special"), so a rendered chat template turns `<|im_start|>` into its one id.
"""
from __future__ import annotations

import codecs
import heapq
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.gguf import GGUFModel

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# End-of-turn spellings llama.cpp also treats as end of generation when they are in the
# vocabulary, because many conversions leave eot_token_id unset.
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>")

# GPT-2's split; `tokenizers`' ByteLevel(use_regex=True) applies exactly this one.
# Llama 3's split (llama.cpp pre type "llama-bpe"): digits in groups of up to three.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_SPM_SPACE = "\u2581"  # SentencePiece's visible space "▁"


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table (index = byte value).

    Printable Latin-1 bytes stand for themselves; the 68 others (controls, space, 0x7F-0xA0,
    soft hyphen) are moved, in byte order, to code points from U+0100 so every BPE piece is
    visible text.
    """
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    chars, moved = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(0x100 + moved))
            moved += 1
    return chars


def _gpt2_pre_tokenizer(pre: str, path: str) -> tuple[pre_tokenizers.PreTokenizer, bool]:
    """The `tokenizers` pre-tokenizer for a `tokenizer.ggml.pre` name, and whether BPE
    should take whole words found in the vocabulary without merging (Llama 3 does)."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("default", "gpt2", ""):
        return byte_level, False
    if pre == "smollm":
        # llama.cpp runs two splits in sequence: every single digit becomes its own chunk,
        # then the GPT-2 regex runs inside each chunk.
        digits = pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated")
        return pre_tokenizers.Sequence([digits, byte_level]), False
    if pre in ("llama-bpe", "llama3"):
        split = pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated")
        no_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return pre_tokenizers.Sequence([split, no_regex]), True
    raise ModelFormatError(f"{path}: unsupported tokenizer pre-type {pre!r}")


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    types: np.ndarray
    scores: np.ndarray | None


class _SentencePiece:
    """llama.cpp's SentencePiece BPE: repeatedly merge the adjacent pair whose merged piece
    has the highest score (leftmost first on ties), then spell leftovers as byte tokens."""

    def __init__(self, vocab: _Vocab, unk_id: int) -> None:
        self.ids = {t: i for i, t in enumerate(vocab.tokens)}
        self.scores = vocab.scores
        self.unk_id = unk_id
        self.byte_ids = [self.ids.get(f"<0x{b:02X}>", -1) for b in range(256)]

    def encode(self, text: str) -> list[int]:
        text = text.replace(" ", _SPM_SPACE)
        n = len(text)
        if n == 0:
            return []
        # Symbols are a linked list over character spans; merging extends the left span.
        start = list(range(n))
        size = [1] * n
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int]] = []

        def push(left: int) -> None:
            right = nxt[left]
            if left < 0 or right < 0:
                return
            piece = text[start[left] : start[left] + size[left] + size[right]]
            tid = self.ids.get(piece)
            if tid is not None:
                heapq.heappush(heap, (-float(self.scores[tid]), left, size[left] + size[right]))

        for i in range(n - 1):
            push(i)
        while heap:
            _, left, total = heapq.heappop(heap)
            right = nxt[left]
            # Stale entry: one side was merged away or grew since this pair was queued.
            if size[left] == 0 or right < 0 or size[left] + size[right] != total:
                continue
            size[left] = total
            size[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left])
            push(left)

        out: list[int] = []
        i = 0
        while i >= 0:
            piece = text[start[i] : start[i] + size[i]]
            tid = self.ids.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                for b in piece.encode("utf-8"):
                    out.append(self.byte_ids[b] if self.byte_ids[b] >= 0 else self.unk_id)
            i = nxt[i]
        return out


class _Gpt2Bpe:
    """Byte-level BPE via `tokenizers`, for text fragments that contain no special tokens."""

    def __init__(self, vocab: _Vocab, merges: list[str], pre: str, path: str) -> None:
        pre_tok, ignore_merges = _gpt2_pre_tokenizer(pre, path)
        ids = {t: i for i, t in enumerate(vocab.tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        try:
            bpe = models.BPE(vocab=ids, merges=pairs, ignore_merges=ignore_merges)
        except Exception as e:  # `tokenizers` raises bare Exception for a merge of unknown tokens
            raise ModelFormatError(f"{path}: tokenizer.ggml.merges: {str(e).splitlines()[0]}") from None
        self.tok = Tokenizer(bpe)
        self.tok.pre_tokenizer = pre_tok

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids if text else []


class LlamaTokenizer:
    """Encode/decode with the vocabulary and special tokens a GGUF file declares."""

    def __init__(self, gguf: GGUFModel) -> None:
        kind = gguf.require("tokenizer.ggml.model")
        tokens = list(gguf.require("tokenizer.ggml.tokens"))
        n = len(tokens)
        types = np.asarray(gguf.get("tokenizer.ggml.token_type", np.full(n, NORMAL)), dtype=np.int32)
        scores = gguf.get("tokenizer.ggml.scores")
        vocab = _Vocab(tokens, types, None if scores is None else np.asarray(scores, np.float32))
        self.kind = kind
        self.tokens = tokens
        self.types = types
        self.unk_id = int(gguf.get("tokenizer.ggml.unknown_token_id", 0))
        self.bos_id = int(gguf.get("tokenizer.ggml.bos_token_id", -1))
        self.eos_id = int(gguf.get("tokenizer.ggml.eos_token_id", -1))
        if kind == "gpt2":
            merges = gguf.require("tokenizer.ggml.merges")
            self._impl: _Gpt2Bpe | _SentencePiece = _Gpt2Bpe(vocab, merges, gguf.get("tokenizer.ggml.pre", "default"), gguf.path)
            default_bos, self.add_space_prefix = False, False
        elif kind == "llama":
            if vocab.scores is None:
                raise ModelFormatError(f"{gguf.path}: SentencePiece vocabulary without scores")
            self._impl = _SentencePiece(vocab, self.unk_id)
            default_bos, self.add_space_prefix = True, bool(gguf.get("tokenizer.ggml.add_space_prefix", True))
        else:
            raise ModelFormatError(f"{gguf.path}: unsupported tokenizer model {kind!r}")
        self.add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", default_bos)) and self.bos_id >= 0
        self.add_eos = bool(gguf.get("tokenizer.ggml.add_eos_token", False)) and self.eos_id >= 0
        self.chat_template: str | None = gguf.get("tokenizer.chat_template")

        eog = {self.eos_id}
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            if key in gguf.metadata:
                eog.add(int(gguf.metadata[key]))
        control = set(np.nonzero(types == CONTROL)[0].tolist())
        eog |= {i for i in control if tokens[i] in _EOG_TEXTS}
        self.eog_ids = frozenset(i for i in eog if 0 <= i < n)

        # Longest first, so "<|im_start|>" wins over any shorter special it starts with.
        special = np.nonzero((types == CONTROL) | (types == USER_DEFINED) | (types == UNKNOWN))[0]
        by_len = sorted((int(i) for i in special if tokens[i]), key=lambda i: -len(tokens[i]))
        self._special_ids = {tokens[i]: i for i in reversed(by_len)}
        self._special_re = self._alternation(by_len)
        user = [i for i in by_len if types[i] == USER_DEFINED]
        self._user_re = self._alternation(user)
        self._bytes = self._piece_bytes()

    def _alternation(self, ids: list[int]) -> re.Pattern[str] | None:
        return re.compile("|".join(re.escape(self.tokens[i]) for i in ids)) if ids else None

    def _piece_bytes(self) -> list[bytes]:
        """The bytes each token prints as (llama.cpp token_to_piece without specials)."""
        types = self.types.tolist()
        if self.kind == "gpt2":
            # Map each byte-level character back to the Latin-1 character of its byte, so
            # one C-level translate over the whole vocabulary (joined by a noncharacter that
            # no piece contains) and a Latin-1 encode per piece give every piece's bytes.
            to_latin1 = {ord(c): b for b, c in enumerate(_gpt2_byte_chars())}
            pieces = "\uffff".join(self.tokens).translate(to_latin1).split("\uffff")
            return [
                p.encode("latin-1", errors="replace") if ty == NORMAL
                else t.encode("utf-8") if ty == USER_DEFINED else b""
                for p, t, ty in zip(pieces, self.tokens, types)
            ]
        out: list[bytes] = []
        for t, ty in zip(self.tokens, types):
            if ty in (NORMAL, USER_DEFINED):
                out.append(t.replace(_SPM_SPACE, " ").encode("utf-8"))
            elif ty == BYTE and len(t) == 6 and t.startswith("<0x"):
                out.append(bytes([int(t[3:5], 16)]))
            else:
                out.append(b"")
        return out

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def _fragments(self, text: str, parse_special: bool) -> Iterable[str | int]:
        """Split text into raw fragments and special-token ids, in order."""
        pattern = self._special_re if parse_special else self._user_re
        if pattern is None:
            yield text
            return
        pos = 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                yield text[pos : m.start()]
            yield self._special_ids[m.group()]
            pos = m.end()
        if pos < len(text):
            yield text[pos:]

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids as llama.cpp's llama_tokenize(text, add_special, parse_special)."""
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)
        # SentencePiece prefixes a space at the start and after each special token.
        prev_special = True
        for frag in self._fragments(text, parse_special):
            if isinstance(frag, int):
                ids.append(frag)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                frag = " " + frag
            ids.extend(self._impl.encode(frag))
            prev_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    def token_bytes(self, tid: int) -> bytes:
        """What one token prints as; control tokens print nothing."""
        return self._bytes[tid]

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def token_text(self, tid: int) -> str:
        """The vocabulary string of a token (what a chat template spells it as)."""
        return self.tokens[tid] if 0 <= tid < len(self.tokens) else ""

    def streamer(self) -> "TextStreamer":
        return TextStreamer(self)


class TextStreamer:
    """Turns a token stream into text pieces, holding back bytes of a UTF-8 character split
    across tokens (an emoji is often two or three byte-level tokens)."""

    def __init__(self, tokenizer: LlamaTokenizer) -> None:
        self._tok = tokenizer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, tid: int) -> str:
        return self._dec.decode(self._tok.token_bytes(tid))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)
