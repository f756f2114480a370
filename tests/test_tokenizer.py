import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from whisperlite.formats.ggml import token_bytes_from_tokenizer_json
from whisperlite.registry.embedded import embedded_model_dir
from whisperlite.tokenizer.bpe import ByteBPE
from whisperlite.tokenizer.whisper import SpecialTokens, WhisperTokenizer

TOKENIZER = str(embedded_model_dir() / "tokenizer.json")
TEXTS = [" And so my fellow Americans, ask not what your country can do for you.",
         "Héllo wörld — 12,345.67 dollars!", " 你好，世界", " ♪♪ music ♪♪", "  two  spaces\nnewline"]
# Harder cases for the split pattern and the merges: contractions, digits next to letters,
# runs of spaces before words and at the end, tabs, combining marks, emoji, scripts whose
# characters are several UTF-8 bytes and split across tokens.
HARD = ["I'm sure they'll've done it, 'twas the 1990s' style", "abc123def  456\t\tx   ", " \n\n  \n",
        "naïve café (e\u0301) Æsir ½ ⅷ", "😀👍🏽 🇩🇪 emoji", " Привет, мир! Ελληνικά עברית العربية",
        " 東京都の天気は晴れです。", "'S 'T 'RE 'Ve", "x" * 300,
        "".join(chr(c) for c in range(0x20, 0x250))]


@pytest.fixture(scope="module")
def tok():
    return WhisperTokenizer.from_file(TOKENIZER, 51864)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_known_ids(tok):
    # ids of openai/whisper's GPT-2 tokenizer for this sentence
    assert tok.encode(" And so my fellow Americans") == [843, 523, 616, 5891, 3399]


def test_special_layout_english_and_multilingual():
    en = SpecialTokens.for_vocab(51864)
    assert (en.eot, en.sot, en.transcribe, en.notimestamps, en.timestamp_begin) == (50256, 50257, 50358, 50362, 50363)
    ml = SpecialTokens.for_vocab(51865)
    assert (ml.eot, ml.sot, ml.language_token("en"), ml.translate, ml.transcribe, ml.timestamp_begin) == (
        50257, 50258, 50259, 50358, 50359, 50364)
    assert len(SpecialTokens.for_vocab(51866).languages) == 100  # large-v3 adds Cantonese


def test_sot_sequence(tok):
    assert tok.sot_sequence() == [50257]  # English-only models take no language/task tokens
    ml = WhisperTokenizer(token_bytes_from_tokenizer_json(TOKENIZER) + [b"<|endoftext|>"], 51865)
    assert ml.sot_sequence("de", "translate") == [50258, 50261, 50358]


def test_decode_drops_specials(tok):
    ids = [tok.special.sot, tok.timestamp_begin] + tok.encode(" hi") + [tok.timestamp_begin + 50, tok.eot]
    assert tok.decode(ids) == " hi"


def _corpus() -> list[str]:
    manifest = json.loads((Path(__file__).parent.parent / "fixtures" / "manifest.json").read_text())
    return TEXTS + HARD + [" " + f["transcript"] for f in manifest if f.get("transcript")]


def test_encode_matches_the_tokenizers_library():
    """The rank BPE gives the ids of the model's own tokenizer.json run by Hugging Face's
    `tokenizers` (the reference the fixtures' transcripts and prompts were checked with)."""
    reference = Tokenizer.from_file(TOKENIZER)
    ours = WhisperTokenizer.from_file(TOKENIZER, 51864)
    for text in _corpus():
        ids = ours.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=False) == text


def test_encode_matches_tiktoken(tok):
    """openai/whisper encodes with tiktoken over its rank files; given the same ranks (the
    vocabulary's tokens by id, equal to gpt2.tiktoken's), tiktoken's encoder gives our ids.
    (The `tokenizers` reference above agrees on this English vocabulary only: base's
    multilingual tokenizer.json carries merges that split " the" into " " + "the".)"""
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {b: i for i, b in enumerate(token_bytes_from_tokenizer_json(TOKENIZER))}
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""  # openai/whisper's
    reference = tiktoken.Encoding(name="gpt2-whisper", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    for text in _corpus():
        assert tok.encode(text) == reference.encode_ordinary(text), text


def test_tokenizer_from_whisper_cpp_vocabulary_matches(tok):
    """whisper.cpp files carry only token bytes (plus placeholders past eot): same ids."""
    rebuilt = WhisperTokenizer(token_bytes_from_tokenizer_json(TOKENIZER) + [b"[_extra_]"], 51864)
    for text in _corpus():
        assert rebuilt.encode(text) == tok.encode(text)


def test_rank_bpe_merges_lowest_rank_pair_first():
    base = [bytes([b]) for b in range(256)]
    bpe = ByteBPE(base + [b"bc", b"ab", b"abc", b"cd"])  # ranks 256 … 259
    assert bpe.encode("bcd") == [256, ord("d")]  # bc (256) before cd (259)
    assert bpe.encode("abcd") == [258, ord("d")]  # bc, then a+bc is the token abc
    assert bpe.encode("abc") == [258]
    assert bpe.decode([258, ord("d")]) == "abcd"


def test_special_token_names_in_text_stay_text(tok):
    """A prompt cannot smuggle in control tokens: "<|endoftext|>" in text is plain text."""
    ids = tok.encode("<|endoftext|> hi")
    assert tok.eot not in ids and tok.decode(ids) == "<|endoftext|> hi"


def test_decode_marks_cut_characters():
    bpe = ByteBPE([bytes([b]) for b in range(256)])
    ids = bpe.encode("é")
    assert len(ids) == 2 and bpe.decode(ids[:1]) == "\ufffd"


def test_vocabulary_without_every_byte_is_refused():
    with pytest.raises(ValueError, match="single bytes"):
        ByteBPE([b"a", b"b"])


def test_non_speech_tokens(tok):
    ids = set(tok.non_speech_tokens)
    assert tok.encode(" ♪")[0] in ids and tok.encode("[")[0] in ids
    assert not ids & set(tok.encode(" hello world"))
