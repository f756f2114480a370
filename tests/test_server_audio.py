"""The audio faces through the official `openai` client and plain HTTP, against the app in
this process (httpx's ASGI transport) with tiny.en loaded once: every response format, SSE
streaming, the errors, and transcriptions interleaved on one model giving their solo results."""
import asyncio
import json
import threading

import httpx
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError

from conftest import FIXTURES, JFK_TEXT, edit_rate
from whisperlite.output.writers import WRITERS
from whisperlite.server.app import create_app
from whisperlite.server.config import ServerConfig

JFK = FIXTURES / "jfk.wav"
LONG = FIXTURES / "multilingual.mp3"  # 60 s: several windows, so word alignment runs behind decoding
OTHERS = [JFK, FIXTURES / "sppas-eng-ENG_M15_ENG_T02.flac", LONG]


def app_with(model, **config):
    app = create_app(ServerConfig(**config), load=False)
    state = app.state.wl
    state.whisper, state.ready = model, True
    return app


@pytest.fixture(scope="module")
def app(tiny_model):
    app = app_with(tiny_model)
    yield app
    app.state.wl.engine.close()


def http(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://whisperlite", timeout=300)


def client(app, key: str = "unused") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url="http://whisperlite/v1", http_client=http(app), max_retries=0)


def transcribe(app, **kwargs):
    async def main():
        kwargs.setdefault("model", "whisper-1")
        with open(kwargs.pop("path", JFK), "rb") as f:
            return await client(app).audio.transcriptions.create(file=f, **kwargs)

    return asyncio.run(main())


def close_to_jfk(text: str) -> bool:
    return edit_rate(JFK_TEXT, text) < 0.15


def test_openai_client_json_and_text(app):
    result = transcribe(app, response_format="json")
    assert close_to_jfk(result.text)
    assert result.usage.type == "duration" and result.usage.seconds == pytest.approx(11.0, abs=0.1)
    text = transcribe(app, response_format="text")
    assert text == result.text + "\n"


def test_openai_client_srt_and_vtt_are_the_cli_writers_files(app):
    srt = transcribe(app, response_format="srt")
    vtt = transcribe(app, response_format="vtt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    assert vtt.startswith("WEBVTT\n\n00:00:00.")
    cues = [block.split("\n", 2)[2] for block in srt.strip().split("\n\n")]
    assert close_to_jfk(" ".join(c.replace("\n", " ") for c in cues))
    assert srt.replace(",", ".").count(" --> ") == vtt.count(" --> ")


def test_openai_client_verbose_json_with_words(app):
    result = transcribe(app, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert result.language == "english" and result.task == "transcribe"
    assert result.duration == pytest.approx(11.0, abs=0.1)
    assert close_to_jfk(result.text)
    assert result.segments and result.segments[0].id == 0 and result.segments[0].seek == 0
    for seg in result.segments:
        assert 0 <= seg.start < seg.end <= 11.1 and seg.tokens and seg.compression_ratio > 0
        assert -1.5 < seg.avg_logprob <= 0 and 0 <= seg.no_speech_prob <= 1 and seg.temperature == 0
    words = result.words
    assert [w.word for w in words][:3] == ["And", "so,", "my"]
    assert all(a.start <= a.end <= b.start + 1e-6 for a, b in zip(words, words[1:]))
    plain = transcribe(app, response_format="verbose_json")
    assert plain.words is None and "words" not in plain.model_dump(exclude_none=True)
    assert [s.text for s in plain.segments] == [s.text for s in result.segments]


def test_openai_streaming_deltas_then_done_with_the_writers_outputs(app):
    async def main():
        with open(JFK, "rb") as f:
            stream = await client(app).audio.transcriptions.create(
                model="whisper-1", file=f, stream=True, extra_body={"outputs": "srt,vtt,txt,json"})
            return [event async for event in stream]

    events = asyncio.run(main())
    deltas, done = events[:-1], events[-1]
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text and close_to_jfk(done.text)
    segments = [e.segment for e in deltas]  # the page's extension: each delta's segment and times
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert all(s["start"] < s["end"] for s in segments)
    extra = done.model_extra
    assert extra["duration"] == pytest.approx(11.0, abs=0.1) and extra["language"] == "english"
    outputs = extra["outputs"]
    assert set(outputs) == {"srt", "vtt", "txt", "json"}
    assert outputs["srt"] == transcribe(app, response_format="srt")  # the same writer, the same words
    assert json.loads(outputs["json"])["text"] == done.text
    assert outputs["txt"].split("\n")[:-1] == [s["text"] for s in segments]


def test_whisper_cpp_inference_shapes(app):
    async def main():
        async with http(app) as h:
            out = {}
            for fmt in ("json", "text", "verbose_json"):
                with open(JFK, "rb") as f:
                    r = await h.post("/inference", files={"file": ("jfk.wav", f)},
                                     data={"temperature": "0.0", "temperature_inc": "0.2", "response_format": fmt})
                assert r.status_code == 200, r.text
                out[fmt] = r
            return out

    out = asyncio.run(main())
    text = out["json"].json()["text"]
    assert text == out["text"].text and out["text"].headers["content-type"].startswith("text/html")
    assert text.startswith(" ") and text.endswith("\n") and close_to_jfk(text)  # segments with their spaces, a line each
    verbose = out["verbose_json"].json()
    assert verbose["language"] == "english" and verbose["task"] == "transcribe" and verbose["text"] == text
    assert verbose["detected_language"] == "english" and verbose["language_probabilities"]
    seg = verbose["segments"][0]
    assert list(seg)[:5] == ["id", "text", "start", "end", "tokens"] and seg["words"][0]["word"] == " And"
    assert max(seg["tokens"]) < 50257  # text tokens only, as whisper.cpp lists them


def _status(app, path: str, data: dict, file: tuple | None = ("jfk.wav", JFK.read_bytes()), headers=None):
    async def main():
        async with http(app) as h:
            return await h.post(path, data=data, files={"file": file} if file else None, headers=headers)

    return asyncio.run(main())


def test_errors_in_openai_shape(app, tmp_path):
    bad = _status(app, "/v1/audio/transcriptions", {"model": "whisper-1"}, ("notes.txt", b"not audio at all"))
    assert bad.status_code == 415
    error = bad.json()["error"]
    assert error["message"] == "notes.txt: not an audio or video file ffmpeg can read"  # the CLI's line
    assert set(error) == {"message", "type", "param", "code"}
    with pytest.raises(NotFoundError) as missing:
        transcribe(app, model="gpt-4o-transcribe")
    assert missing.value.body["code"] == "model_not_found" and missing.value.body["param"] == "model"
    assert transcribe(app, response_format="text", model="tiny.en")  # the loaded model's own name
    for field, value, words in (("entropy_thold", "2.4", "not supported"), ("bogus", "1", "unknown field 'bogus'"),
                                ("beam_size", "zero", "beam_size: 'zero' is not an integer"),
                                ("vad_threshold", "2", "out of range"), ("model", "x", "does not exist")):
        r = _status(app, "/v1/audio/transcriptions", {field: value})
        assert r.status_code in (400, 404) and words in r.json()["error"]["message"], (field, r.text)
    assert "no 'file' field" in _status(app, "/inference", {"response_format": "json"}, None).json()["error"]["message"]
    assert "'file' field" in _status(app, "/inference", {}, None).json()["error"]["message"]
    r = _status(app, "/inference", {"threads": "4"})
    assert r.status_code == 400 and "when the server starts" in r.json()["error"]["message"]
    with pytest.raises(BadRequestError, match="English-only"):
        asyncio.run(client(app).audio.translations.create(model="whisper-1", file=JFK.open("rb")))


def test_form_fields_reach_the_options_as_the_cli_flags_do(app):
    """whisper.cpp's field names and the table's own names set the same leaves: with
    no_timestamps the transcript is one segment per window, without times (as -nt)."""
    r = _status(app, "/inference", {"no_timestamps": "true", "beam_size": "1", "response_format": "verbose_json"})
    body = r.json()
    assert r.status_code == 200 and len(body["segments"]) == 1 and "start" not in body["segments"][0]
    r = _status(app, "/inference", {"without_timestamps": "1", "no_timestamps": "1"})
    assert r.status_code == 400 and "given twice" in r.json()["error"]["message"]
    r = _status(app, "/inference", {"allow_urls": "true"})  # the CLI's --allow-urls: never a request's
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_field"
    offset = _status(app, "/inference", {"offset_t": "8000", "response_format": "verbose_json"}).json()
    assert offset["segments"][0]["start"] >= 8.0 and "country" in offset["text"]


def test_api_key_upload_cap_and_full_queue(tiny_model):
    keyed = app_with(tiny_model, api_key="sesame")
    assert _status(keyed, "/v1/audio/transcriptions", {}).status_code == 401
    assert _status(keyed, "/health", {}, None).status_code == 405  # public: reaches the route (GET only)
    ok = _status(keyed, "/inference", {"response_format": "text"}, headers={"Authorization": "Bearer sesame"})
    assert ok.status_code == 200 and close_to_jfk(ok.text)
    keyed.state.wl.engine.close()

    small = app_with(tiny_model, max_upload_mb=0.1)
    r = _status(small, "/inference", {})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    async def chunked():  # no Content-Length: the body is counted as it arrives
        async def body():
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
            for _ in range(30):
                yield b"x" * 10_000
            yield b"\r\n--b--\r\n"

        async with http(small) as h:
            return await h.post("/inference", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})

    assert asyncio.run(chunked()).status_code == 413
    small.state.wl.engine.close()

    full = app_with(tiny_model, max_queue=1)

    async def busy():
        import threading

        gate = threading.Event()
        blocker = full.state.wl.engine.submit(iter(lambda: gate.wait(), True))  # holds the one slot
        try:
            async with http(full) as h:
                return await h.post("/inference", files={"file": ("jfk.wav", JFK.read_bytes())})
        finally:
            blocker.cancel()
            gate.set()

    r = asyncio.run(busy())
    assert r.status_code == 503 and r.headers["Retry-After"] and r.json()["error"]["code"] == "queue_full"
    full.state.wl.engine.close()


def test_health_answers_503_while_the_model_loads_then_200(tiny_model, monkeypatch):
    import threading

    from starlette.testclient import TestClient

    from whisperlite.server import app as app_module

    gate = threading.Event()

    def slow_load(state):
        gate.wait(60)
        state.whisper = tiny_model

    monkeypatch.setattr(app_module, "_load_models", slow_load)
    with TestClient(create_app(ServerConfig())) as c:
        loading = c.get("/health")
        assert loading.status_code == 503 and loading.json() == {"status": "loading model"}
        r = c.post("/inference", files={"file": ("jfk.wav", JFK.read_bytes())})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
        gate.set()
        for _ in range(600):
            if c.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert c.get("/health").json() == {"status": "ok"}


def _solo(model, path):
    segments, _ = model.transcribe(str(path), word_timestamps=True)
    return [_facts(s) for s in segments]


def _facts(s):
    return (s.id, s.seek, s.start, s.end, s.text, s.tokens, s.avg_logprob, s.no_speech_prob,
            [(w.word, w.start, w.end, w.probability) for w in s.words or []])


@pytest.mark.slow
def test_interleaved_transcriptions_on_one_model_give_their_solo_results(tiny_model):
    """Three inputs (one of several windows, words aligned on a worker behind the decoding),
    advanced one segment each in turn on one model, as the engine does: each transcript
    exactly as when it ran alone."""
    solo = [_solo(tiny_model, p) for p in OTHERS]
    runs = [iter(tiny_model.transcribe(str(p), word_timestamps=True)[0]) for p in OTHERS]
    mixed: list[list] = [[] for _ in OTHERS]
    live = set(range(len(runs)))
    while live:
        for i in sorted(live):
            seg = next(runs[i], None)
            if seg is None:
                live.discard(i)
            else:
                mixed[i].append(_facts(seg))
    assert len(solo[2]) > 5 and max(s[1] for s in solo[2]) > 0  # the long one spans windows
    assert mixed == solo


@pytest.mark.slow
def test_concurrent_requests_each_get_their_own_transcript(app, tiny_model):
    """The same inputs as concurrent HTTP requests through the engine: each response is its
    own input's solo transcript."""
    async def one(path):
        with open(path, "rb") as f:
            return await client(app).audio.transcriptions.create(
                model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word"])

    async def main():
        return await asyncio.gather(*(one(p) for p in OTHERS))

    results = asyncio.run(main())
    for path, result in zip(OTHERS, results):
        solo = _solo(tiny_model, path)
        assert [s.text for s in result.segments] == [s[4] for s in solo]
        assert [(w.start, w.end) for w in result.words] == [(w[1], w[2]) for s in solo for w in s[8]]


def test_timeout_is_504_the_job_is_dropped_and_no_upload_file_stays(tiny_model, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    quick = app_with(tiny_model, timeout=0.3)
    r = _status(quick, "/inference", {}, ("long.mp3", LONG.read_bytes()))
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    engine = quick.state.wl.engine
    for _ in range(600):  # dropped within a step, not run for the minute of audio
        if not engine.admitted:
            break
        threading.Event().wait(0.05)
    assert engine.admitted == 0
    engine.close()
    assert _status(app_with(tiny_model), "/inference", {"response_format": "text"}).status_code == 200
    assert list(tmp_path.iterdir()) == []  # every upload's temporary file is gone


def test_the_threading_layer_is_safe_for_several_threads(app):
    """Word alignment and the VAD run numba kernels on threads beside the engine's: the layer
    numba chose (after the parallel calls above) must be OpenMP or TBB, never workqueue."""
    import numba

    from whisperlite.server.app import _check_threading_layer

    assert transcribe(app, response_format="text")
    assert numba.threading_layer() in ("omp", "tbb")
    _check_threading_layer()


def test_whisper_cpp_load_replaces_the_model(tiny_model):
    loader = app_with(tiny_model, threads=2)
    r = _status(loader, "/load", {"model": "tiny.en"}, None)
    assert r.status_code == 200 and r.text == "Load was successful!"
    assert loader.state.wl.whisper is not tiny_model and loader.state.wl.whisper.name == "tiny.en"
    assert close_to_jfk(_status(loader, "/inference", {"response_format": "text"}).text)
    bad = _status(loader, "/load", {"model": "no-such-model"}, None)
    assert bad.status_code == 400 and "no-such-model" in bad.json()["error"]["message"]
    assert _status(loader, "/load", {}, None).status_code == 400
    loader.state.wl.engine.close()
