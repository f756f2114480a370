import pytest

from whisperlite.loader import embedded_model_dir
from whisperlite.tokenizer.whisper import SpecialTokens, WhisperTokenizer, vocab_json_bytes

TOKENIZER = str(embedded_model_dir() / "tokenizer.json")
TEXTS = [" And so my fellow Americans, ask not what your country can do for you.",
         "Héllo wörld — 12,345.67 dollars!", " 你好，世界", " ♪♪ music ♪♪", "  two  spaces\nnewline"]


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
    ml = WhisperTokenizer(tok._tok, 51865, True)
    assert ml.sot_sequence("de", "translate") == [50258, 50261, 50358]


def test_decode_drops_specials(tok):
    ids = [tok.special.sot, tok.timestamp_begin] + tok.encode(" hi") + [tok.timestamp_begin + 50, tok.eot]
    assert tok.decode(ids) == " hi"


def test_tokenizer_from_whisper_cpp_vocabulary_matches(tok):
    """whisper.cpp files carry only token bytes: the BPE rebuilt from ranks must encode the same."""
    rebuilt = WhisperTokenizer.from_bytes(vocab_json_bytes(TOKENIZER)[:50256], 51864)
    for text in TEXTS:
        assert rebuilt.encode(text) == tok.encode(text)


def test_non_speech_tokens(tok):
    ids = set(tok.non_speech_tokens)
    assert tok.encode(" ♪")[0] in ids and tok.encode("[")[0] in ids
    assert not ids & set(tok.encode(" hello world"))
