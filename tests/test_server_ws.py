"""The live WebSocket of `whisperlite serve` (/v1/audio/live): the protocol's refusals through
Starlette's test client (no models), and jfk.wav streamed over a real socket to a real uvicorn
on 127.0.0.1 with tiny.en (websocket-client), against the offline transcript."""
import contextlib
import difflib
import json
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import soundfile as sf
from conftest import FIXTURES, normalize
from test_server_page import WAIT, _free_port, _wait_healthy

from whisperlite.server.app import create_app
from whisperlite.server.config import ServerConfig
from whisperlite.server.live_api import MAX_FRAME_BYTES, PATH

KEY = "ws-test-key"
FRAME = 1600  # samples: 100 ms at 16 kHz


# ---------- the protocol's refusals: Starlette's test client, no models ----------

@contextlib.contextmanager
def _client(**config) -> Iterator:
    from starlette.testclient import TestClient

    app = create_app(ServerConfig(**config), load=False)
    app.state.wl.ready = True  # no model: a config that passes its checks ends at "the model is loading"
    with TestClient(app) as client:
        yield client


def _closed(ws) -> tuple[list[dict], int, str]:
    """The events until the server closes, the close code and its reason."""
    from starlette.websockets import WebSocketDisconnect

    events = []
    while True:
        try:
            message = ws.receive()
        except WebSocketDisconnect as e:
            return events, e.code, e.reason
        if message["type"] == "websocket.close":
            return events, message["code"], message.get("reason", "")
        events.append(json.loads(message["text"]))


def test_the_api_key_by_query_parameter_or_header_else_closed_with_1008():
    with _client(api_key=KEY) as client:
        with client.websocket_connect(PATH) as ws:
            events, code, reason = _closed(ws)
            assert (events, code) == ([], 1008) and "API key" in reason and "?api_key=" in reason
        with client.websocket_connect(PATH + "?api_key=wrong") as ws:
            assert _closed(ws)[1] == 1008
        for url, headers in [(PATH + f"?api_key={KEY}", {}), (PATH, {"Authorization": f"Bearer {KEY}"})]:
            with client.websocket_connect(url, headers=headers) as ws:
                ws.send_text("{}")  # past the key: the config is read, and there is no model
                _, code, reason = _closed(ws)
                assert (code, reason) == (1013, "the model is loading; retry later")


@pytest.mark.parametrize("config, says", [
    ("{nope", "the config is not JSON"),
    ("[1]", "the config must be a JSON object"),
    ('{"colour": "blue"}', "unknown field 'colour'"),
    ('{"model": "gpt-4o"}', "the model `gpt-4o` does not exist"),
    ('{"policy": "fast"}', "policy 'fast': choose from agreement, window"),
    ('{"step_ms": 5000, "length_ms": 3000, "policy": "window"}', "keep <= step <= length"),
    ('{"wait_ms": -1}', "wait_ms must be >= 0"),
    ('{"fallback_ms": -1}', "fallback_ms and wait_ms must be >= 0"),
    ('{"beam_size": 0}', "beam_size: 0 is out of range"),
    ('{"words": "yes"}', "words: expected true or false"),
    ('{"outputs": ["pdf"]}', "outputs: expected a list of srt"),
    ('{"type": "end"}', "expected the config first"),
])
def test_a_bad_config_is_closed_with_1008_and_one_line(config, says):
    with _client() as client, client.websocket_connect(PATH) as ws:
        ws.send_text(config)
        events, code, reason = _closed(ws)
    assert code == 1008 and says in reason and "\n" not in reason, reason
    assert events == [{"type": "error", "error": {"message": events[0]["error"]["message"]}}]
    assert events[0]["error"]["message"].startswith(reason.removesuffix("..."))


def test_audio_before_the_config_is_closed_with_1003():
    with _client() as client, client.websocket_connect(PATH) as ws:
        ws.send_bytes(b"\0\0" * FRAME)
        _, code, reason = _closed(ws)
    assert code == 1003 and "config" in reason


def test_max_live_refuses_one_more_and_a_closed_connection_frees_its_slot():
    with _client(max_live=2) as client:
        with client.websocket_connect(PATH), client.websocket_connect(PATH) as second:
            with client.websocket_connect(PATH) as third:
                _, code, reason = _closed(third)
                assert code == 1013 and "--max-live" in reason
            second.close()
            with client.websocket_connect(PATH) as fourth:  # the second's slot
                fourth.send_text("{}")
                assert _closed(fourth)[1:] == (1013, "the model is loading; retry later")


def test_a_silent_client_is_closed_after_the_live_timeout():
    with _client(live_timeout=0.3) as client, client.websocket_connect(PATH) as ws:
        _, code, reason = _closed(ws)
    assert code == 1008 and reason == "no config for 0.3 s (whisperlite serve --live-timeout)"


# ---------- a real socket, a real server, tiny.en ----------

@pytest.fixture(scope="module")
def server():
    """(URL, the app's state) of a real uvicorn in a thread: one live stream at a time."""
    import uvicorn

    config = ServerConfig(port=_free_port(), model="tiny.en", threads=2, api_key=KEY, max_live=1, live_timeout=60)
    app = create_app(config)
    uv = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://{config.host}:{config.port}"
    try:
        _wait_healthy(url)
        yield url, app.state.wl
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def _connect(url: str, query: bool = True):
    import websocket

    address = url.replace("http://", "ws://") + PATH
    if query:
        return websocket.create_connection(f"{address}?api_key={KEY}", timeout=WAIT)
    return websocket.create_connection(address, timeout=WAIT, header=[f"Authorization: Bearer {KEY}"])


def _until_close(ws) -> tuple[list[dict], int, str]:
    """The events the server sends until it closes, the close code and its reason."""
    from websocket import ABNF

    events = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            return events, code, data[2:].decode()
        if opcode == ABNF.OPCODE_TEXT:
            events.append(json.loads(data))


def _start(url: str, config: dict, query: bool = True):
    ws = _connect(url, query)
    ws.send(json.dumps(config))
    ready = json.loads(ws.recv())
    assert ready == {"type": "ready", "model": "tiny.en", "policy": config.get("policy", "agreement"),
                     "sample_rate": 16000}, ready
    return ws


def _jfk_pcm(silence: float = 1.0) -> bytes:
    samples, _ = sf.read(FIXTURES / "jfk.wav", dtype="int16")
    return samples.tobytes() + b"\0\0" * int(silence * 16000)


def _send(ws, pcm: bytes) -> None:
    from websocket import ABNF

    for i in range(0, len(pcm), 2 * FRAME):
        ws.send(pcm[i : i + 2 * FRAME], ABNF.OPCODE_BINARY)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["agreement", "window"])
def test_jfk_in_100_ms_frames_gives_the_offline_transcript(server, policy):
    url, _ = server
    offline = httpx.post(url + "/v1/audio/transcriptions", headers={"Authorization": f"Bearer {KEY}"},
                         files={"file": ("jfk.wav", (FIXTURES / "jfk.wav").read_bytes())},
                         data={"model": "whisper-1", "beam_size": "1", "response_format": "text"}, timeout=WAIT)
    assert offline.status_code == 200, offline.text
    ws = _start(url, {"model": "whisper-1", "language": "en", "policy": policy, "words": True, "outputs": ["srt"]},
                query=policy == "agreement")  # the header works as well as the query parameter
    _send(ws, _jfk_pcm())
    ws.send(json.dumps({"type": "end"}))
    events, code, reason = _until_close(ws)
    assert (code, reason) == (1000, ""), events[-1:]

    finals = [e for e in events if e["type"] == "final"]
    done = events[-1]
    assert [e["type"] for e in events].count("done") == 1 and done["type"] == "done", events
    assert {e["type"] for e in events} <= {"partial", "final", "done"}
    # the engine's own test's allowance: all but a few words of offline greedy's, in order
    expected, got = normalize(offline.text), normalize(" ".join(e["text"] for e in finals))
    same = sum(b.size for b in difflib.SequenceMatcher(None, expected, got).get_matching_blocks())
    assert same >= len(expected) - 4 and len(got) <= len(expected) + 2, (got, expected)
    assert got[-4:] == ["do", "for", "your", "country"]
    assert normalize(done["text"]) == got and done["duration"] == 12.0 and done["language"] == "english"
    assert "your country" in done["outputs"]["srt"] and done["outputs"]["srt"].startswith("1\n")
    # words on the stream's clock, in order, within the audio; each event's span is its words'
    words = [w for e in finals for w in e["words"]]
    assert all(0 <= w["start"] <= w["end"] <= 12.0 for w in words)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(words, words[1:]))
    assert all(e["start"] == e["words"][0]["start"] and e["end"] == e["words"][-1]["end"] for e in finals)


@pytest.mark.slow
def test_a_dropped_connection_frees_its_slot_and_its_engine_work(server):
    url, state = server
    ws = _start(url, {"language": "en"})
    _send(ws, _jfk_pcm()[: 2 * 16000 * 4])  # four seconds: passes are under way
    other = _connect(url)
    events, code, reason = _until_close(other)
    assert code == 1013 and "--max-live" in reason  # the one slot is taken
    ws.sock.close()  # gone without a close frame, mid-stream
    deadline = time.monotonic() + 60
    while state.live or state.engine.admitted:
        assert time.monotonic() < deadline, (state.live, state.engine.admitted)
        time.sleep(0.05)
    again = _start(url, {"language": "en"})  # the slot is free
    again.send(json.dumps({"type": "end"}))
    events, code, _ = _until_close(again)
    assert code == 1000 and events == [{"type": "done", "text": "", "duration": 0.0, "language": "english"}]


@pytest.mark.slow
def test_a_stream_that_goes_quiet_is_finished_then_closed(server):
    url, state = server
    config = state.config
    state.config = replace(config, live_timeout=1.0)
    try:
        ws = _start(url, {"language": "en"})
        _send(ws, _jfk_pcm(silence=0))
        events, code, reason = _until_close(ws)  # no end, no more audio
    finally:
        state.config = config
    assert code == 1008 and reason == "no audio for 1 s (whisperlite serve --live-timeout)"
    assert events[-1]["type"] == "done" and "your country" in events[-1]["text"]  # what was said is kept


@pytest.mark.slow
def test_an_unknown_language_and_bad_frames_are_closed_with_a_reason(server):
    url, _ = server
    ws = _connect(url)
    ws.send(json.dumps({"language": "xx"}))  # the model knows its languages: checked as the stream starts
    events, code, reason = _until_close(ws)
    assert code == 1008 and "xx" in reason and events == [{"type": "error", "error": {"message": reason}}]
    for frame, expected in [(b"\0\0\0", (1007, "a frame holds whole s16le samples: an even number of bytes")),
                            (b"\0" * (MAX_FRAME_BYTES + 2), (1009, f"a frame holds at most {MAX_FRAME_BYTES} bytes (5 s)"))]:
        ws = _start(url, {})
        ws.send_binary(frame)
        events, code, reason = _until_close(ws)
        assert (code, reason) == expected and events[-1] == {"type": "error", "error": {"message": reason}}
