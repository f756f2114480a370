"""POST /v1/chapters and /v1/summarize through the real app (httpx on its ASGI interface): a
transcript as JSON or as an uploaded .json/.srt file, or audio transcribed by the server; the
same boundaries as `split_chapters`, quotes verbatim with their times, one-line errors.

The LLM is a tiny random LLaMA (its titles and summaries are noise; the plumbing is real)."""
from __future__ import annotations

import asyncio
import json

import pytest
from conftest import FIXTURES, ROOT
from llama_tiny import TinyDims, write_tiny_llama
from test_chapters import check_quotes
from test_server_llm import client, make_app

from whisperlite.insights.chapters import split_chapters
from whisperlite.insights.options import ChapterOptions
from whisperlite.insights.transcript import read_transcript

TRANSCRIPT = ROOT / "tests" / "data" / "topics" / "transcript.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm") / "tiny.gguf"
    write_tiny_llama(path, seed=5, dims=TinyDims(n_ctx=2048))
    return path


@pytest.fixture
def app(tiny):
    app = make_app(str(tiny), parallel=1)
    yield app
    app.state.wl.engine.close()


def post(app, path: str, **kwargs):
    async def go():
        async with client(app) as c:
            return await c.post(path, timeout=600, **kwargs)

    return asyncio.run(go())


def test_chapters_from_a_json_transcript(app):
    doc = json.loads(TRANSCRIPT.read_text())
    r = post(app, "/v1/chapters", json={**doc, "min_chapter": 30})
    assert r.status_code == 200, r.text
    chapters = r.json()["chapters"]
    expected = split_chapters(read_transcript(str(TRANSCRIPT)), ChapterOptions(min_chapter=30))
    assert [c["start"] for c in chapters] == [round(c.start, 3) for c in expected]
    for c in chapters:
        assert isinstance(c["title"], str) and "\n" not in c["title"] and '"' not in c["title"]


def test_chapters_from_an_uploaded_srt(app):
    srt_text = "".join(f"{i + 1}\n00:00:{2 * i:02d},000 --> 00:00:{2 * i + 1:02d},500\nLine {i} about soup.\n\n"
                       for i in range(5))
    r = post(app, "/v1/chapters", files={"file": ("talk.srt", srt_text.encode(), "application/x-subrip")})
    assert r.status_code == 200, r.text
    assert [c["start"] for c in r.json()["chapters"]] == [0.0]


def test_summarize_quotes_are_verbatim(app):
    doc = json.loads(TRANSCRIPT.read_text())
    r = post(app, "/v1/summarize", files={"file": ("t.json", json.dumps(doc).encode(), "application/json")},
             data={"quotes": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chunks"] > 1 and len(body["quotes"]) == 3
    check_quotes(body["quotes"], read_transcript(str(TRANSCRIPT)))


@pytest.mark.parametrize("kwargs,status,param", [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
    ({"json": {"segments": "x"}}, 400, "segments"),
    ({"json": {"segments": []}}, 400, None),
    ({"json": {"segments": [{"start": 0, "end": 1, "text": "hi"}], "min_chapter": -1}}, 400, "min_chapter"),
    ({"json": {"segments": [{"start": 0, "end": 1, "text": "hi"}], "window": "many"}}, 400, "window"),
    ({"data": {"x": "1"}}, 400, "file"),
])
def test_bad_requests(app, kwargs, status, param):
    r = post(app, "/v1/chapters", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and "\n" not in r.json()["error"]["message"]


def test_no_llm_is_404():
    from whisperlite.server.app import create_app
    from whisperlite.server.config import ServerConfig

    app = create_app(ServerConfig(), load=False)
    app.state.wl.ready = True
    try:
        for path in ("/v1/chapters", "/v1/summarize"):
            r = post(app, path, json={"segments": [{"start": 0, "end": 1, "text": "hi"}]})
            assert r.status_code == 404 and "--llm" in r.json()["error"]["message"]
    finally:
        app.state.wl.engine.close()


@pytest.mark.slow
def test_chapters_of_uploaded_audio(app, tiny_model):
    app.state.wl.whisper = tiny_model
    r = post(app, "/v1/chapters", files={"file": ("jfk.wav", (FIXTURES / "jfk.wav").read_bytes(), "audio/wav")})
    assert r.status_code == 200, r.text
    chapters = r.json()["chapters"]
    assert len(chapters) == 1 and chapters[0]["start"] == 0.0 and chapters[0]["end"] > 10.0


def _slow_llm_calls(monkeypatch, seconds: float) -> None:
    """Each LLM call takes at least `seconds` (the tiny model alone is too quick to time out)."""
    import time

    from whisperlite.insights.llm import Writer

    ask = Writer.ask

    def slow(self, *args, **kwargs):
        time.sleep(seconds)
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(Writer, "ask", slow)


def test_past_the_timeout_is_the_audio_routes_504_and_the_engine_is_freed(tiny, monkeypatch):
    import threading

    from whisperlite.server.jobs import timed_out

    _slow_llm_calls(monkeypatch, 0.2)
    app = make_app(str(tiny), parallel=1, timeout=0.3)
    state = app.state.wl
    try:
        doc = json.loads(TRANSCRIPT.read_text())  # several chunks and chapters: several calls
        for path in ("/v1/summarize", "/v1/chapters"):
            r = post(app, path, json={**doc, "min_chapter": 10})
            assert r.status_code == 504 and r.json() == json.loads(timed_out(0.3).response().body), r.text
            for _ in range(100):  # dropped before its next call, not run through the transcript
                if not state.engine.admitted:
                    break
                threading.Event().wait(0.05)
            assert state.engine.admitted == 0 and app.state.llm_slots.busy == 0
    finally:
        state.engine.close()


def test_max_queue_is_503_with_retry_after(tiny, monkeypatch):
    _slow_llm_calls(monkeypatch, 0.3)
    app = make_app(str(tiny), parallel=1, max_queue=1)
    one = {"segments": [{"start": 0, "end": 1, "text": "A short line about soup."}]}

    async def go():
        async with client(app) as c:
            return await asyncio.gather(*(c.post("/v1/summarize", json=one, timeout=600) for _ in range(3)))

    try:
        answers = asyncio.run(go())
    finally:
        app.state.wl.engine.close()
    # one runs, one waits for the LLM's slot (max_queue waiters), the third is turned away
    assert sorted(r.status_code for r in answers) == [200, 200, 503]
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["Retry-After"] and busy.json()["error"]["code"] == "queue_full"


def test_a_stopped_writer_ends_its_call_at_the_next_token(tiny):
    """What frees the engine from a timed-out request within a token, not a whole answer."""
    from whisperlite.generation.generate import load_generator
    from whisperlite.insights.llm import Stopped, Writer

    gen = load_generator(str(tiny))
    asked = []
    writer = Writer(gen, stop=lambda: asked.append(1) or len(asked) >= 3)
    before = gen.timings.n_eval
    with pytest.raises(Stopped):
        writer.ask("You answer.", "Say many things.", 200)
    assert gen.timings.n_eval - before <= 3 + 1  # one forward per token, up to the piece that asked
    assert Writer(gen).ask("You answer.", "Say many things.", 8)  # no stop: the whole answer
