"""The live face: a WebSocket at `/v1/audio/live` that transcribes audio as it arrives, with the
engine of `whisperlite stream` (transcription/streaming.py).

The client sends a JSON config first (`model`, `language`, `policy`, `words`, `outputs`, the
stream's own knobs and the decoding fields of the flag table), then binary frames of s16le
16 kHz mono samples, then `{"type": "end"}`. The server answers `ready`, then `partial` (the
words not final yet, replacing the last partial) and `final` (words that never change, with
times on the stream's clock: seconds since its first sample), and at the end one `done` (all
the final text, the duration, the outputs asked for) before it closes with 1000. A failure is
an `error` event, then a close whose reason is the message's first line (cut to the 123 bytes a
close reason may hold).

Every feed runs on the engine thread as a one-step job, so a stream never holds the engine while
it waits for audio; frames that arrive during a step are fed together in the next one. A stream
has at most one step admitted at a time, and once MAX_BACKLOG_SECONDS of audio wait for the
engine it stops reading the socket (TCP then slows the client) until the engine catches up. A
client that goes away cancels its step before it runs, and its slot is free at once.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from whisperlite.core.errors import WhisperliteError
from whisperlite.output.writers import WORD_FORMATS, WRITERS
from whisperlite.server.audio_api import OPENAI_WHISPER, STREAM_OUTPUTS, language_name
from whisperlite.server.engine import QueueFull
from whisperlite.server.errors import ApiError
from whisperlite.server.fields import run_options_of
from whisperlite.server.state import ServerState
from whisperlite.transcription.options import OptionError, RunOptions

if TYPE_CHECKING:  # the model code loads on first use, as the audio routes load it
    from whisperlite.transcription.streaming import StreamingTranscriber, StreamOptions

PATH = "/v1/audio/live"
SAMPLE_RATE = 16000  # what the frames carry: s16le mono at 16 kHz, as the model hears
MAX_FRAME_BYTES = 5 * SAMPLE_RATE * 2  # 5 s of s16le: a frame is a moment of audio, not a file
MAX_BACKLOG_SECONDS = 30.0  # audio waiting for the engine before the socket is no longer read
QUEUE_RETRY_SECONDS = 0.2  # a full engine queue: the step is asked for again after this
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 125 bytes with its code

# the flag table's rows a live stream takes (`whisperlite stream`'s decoding and VAD flags)
LIVE_FIELDS = frozenset({
    "language", "translate", "beam_size", "best_of", "temperature", "temperature_inc", "no_fallback",
    "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold", "initial_prompt", "prompt",
    "hotwords", "vad_threshold", "vad_neg_threshold", "vad_min_speech_duration_ms", "vad_min_silence_duration_ms",
    "vad_speech_pad_ms"})
STREAM_FIELDS = ("policy", "min_chunk_ms", "trim_seconds", "wait_ms", "fallback_ms", "step_ms", "length_ms",
                 "keep_ms", "end_silence_ms")
OWN_FIELDS = frozenset({"type", "model", "words", "outputs", *STREAM_FIELDS})
# Each pass decodes the buffer again: greedy keeps a pass short enough for real time.
LIVE_DEFAULTS = {"beam_size": "1"}

# close codes (RFC 6455 section 7.4.1)
NORMAL, UNSUPPORTED, INVALID_DATA, POLICY, TOO_BIG, FAILED, TRY_LATER = 1000, 1003, 1007, 1008, 1009, 1011, 1013


class Close(Exception):
    """The stream ends with this close code and one-line message (sent as an `error` event first)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def close_reason(message: str) -> str:
    """The message's first line, cut to fit a close frame."""
    line = message.split("\n")[0].encode()
    if len(line) <= MAX_REASON_BYTES:
        return line.decode()
    return line[:MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


@dataclass(frozen=True)
class LiveConfig:
    """What the client's first message asks for."""

    run: RunOptions
    stream: StreamOptions
    words: bool = False  # word lists in partial and final events
    outputs: tuple[str, ...] = ()  # files the `done` event carries, as the SSE route's `outputs`


def _field_text(name: str, value: Any) -> str:
    """A JSON value as the form text the flag table parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise Close(POLICY, f"{name}: expected a string, number or boolean, got {json.dumps(value)[:40]}")


def parse_config(text: str, state: ServerState) -> LiveConfig:
    """The config message → LiveConfig; Close(1008) naming the field for anything wrong."""
    from whisperlite.transcription.streaming import StreamOptions

    try:
        body = json.loads(text)
    except ValueError as e:
        raise Close(POLICY, f"the config is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise Close(POLICY, "the config must be a JSON object")
    if body.get("type", "config") != "config":
        raise Close(POLICY, f"expected the config first, got a '{body.get('type')}' message")
    for name in body:
        if name not in OWN_FIELDS and name not in LIVE_FIELDS:
            raise Close(POLICY, f"unknown field '{name}'")
    model = body.get("model")
    loaded = state.whisper.name if state.whisper is not None else state.config.model
    if model is not None and model not in (OPENAI_WHISPER, loaded, state.config.model):
        raise Close(POLICY, f"the model `{model}` does not exist (this server transcribes with `{OPENAI_WHISPER}`, "
                            f"that is {loaded})")
    words = body.get("words", False)
    if not isinstance(words, bool):
        raise Close(POLICY, "words: expected true or false")
    outputs = body.get("outputs", [])
    if not isinstance(outputs, list) or any(o not in STREAM_OUTPUTS for o in outputs):
        raise Close(POLICY, f"outputs: expected a list of {', '.join(STREAM_OUTPUTS)}")
    knobs = {}
    for name in (n for n in STREAM_FIELDS if n in body):
        value = body[name]
        if name == "policy":
            ok = isinstance(value, str)
        else:
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and (name == "trim_seconds" or float(value).is_integer()))
        if not ok:
            raise Close(POLICY, f"{name}: expected {'a string' if name == 'policy' else 'a number'}")
        knobs[name] = value if name in ("policy", "trim_seconds") else int(value)
    stream = StreamOptions(**knobs)
    try:
        stream.check()
    except OptionError as e:
        raise Close(POLICY, str(e)) from None
    fields = {**LIVE_DEFAULTS, **{name: _field_text(name, v) for name, v in body.items() if name in LIVE_FIELDS}}
    try:
        run = run_options_of(fields, frozenset(), (), WORD_FORMATS, words=True)
    except ApiError as e:
        raise Close(POLICY, e.message) from None
    return LiveConfig(run, stream, words, tuple(outputs))


def event_dict(event: Any, words: bool) -> dict:
    """A StreamEvent as the client gets it: its own dict, with the words' span, the word list when asked."""
    out = event.as_dict()
    if event.words:
        out["start"], out["end"] = event.words[0].start, event.words[-1].end
    if not words:
        out.pop("words", None)
    return out


def _finish(transcriber: StreamingTranscriber, config: LiveConfig) -> tuple[list, dict]:
    """On the engine thread: the stream's last events and its `done` event."""
    events = transcriber.finish()
    done: dict[str, Any] = {"type": "done", "text": "".join(w.word for w in transcriber.final).strip(),
                            "duration": round(transcriber.duration, 3)}
    if transcriber.language:
        done["language"] = language_name(transcriber.language)
    if config.outputs:
        segments, info = transcriber.segments(), transcriber.info()
        done["outputs"] = {fmt: WRITERS[fmt](segments, info, config.run.output) for fmt in config.outputs}
    return [e for e in events if e.type != "done"], done


class LiveStream:
    """One connection after its config: a reader puts frames in the backlog, a feeder hands the
    backlog to the engine one step at a time and sends the events back."""

    def __init__(self, ws: WebSocket, state: ServerState, config: LiveConfig, transcriber: StreamingTranscriber):
        self.ws, self.state, self.config, self.transcriber = ws, state, config, transcriber
        self.timeout = state.config.live_timeout
        self.backlog: list[np.ndarray] = []
        self.waiting = 0  # samples in the backlog
        self.ended = False
        self.wake = asyncio.Event()  # audio arrived, or the end
        self.drained = asyncio.Event()  # the feeder took the backlog

    async def run(self) -> None:
        feeder = asyncio.create_task(self._feeder())
        try:
            why = await self._reader(feeder)
            self.ended = True
            self.wake.set()
            await feeder
        finally:
            feeder.cancel()  # a client gone or a failure: the step waiting for the engine is dropped
        await self.ws.close(NORMAL if why is None else POLICY, close_reason(why or ""))

    async def _either(self, awaitable: Any, feeder: asyncio.Task) -> Any:
        """`awaitable`'s result, unless the feeder fails first (its error is raised)."""
        task = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait({task, feeder}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
        if not task.done() or task.cancelled():
            feeder.result()  # it ended before the end: raises what it raised
            raise AssertionError("the feeder ended before the stream did")
        return task.result()

    async def _reader(self, feeder: asyncio.Task) -> str | None:
        """Frames into the backlog until `end` (None) or a silence of `live_timeout` (why)."""
        while True:
            if self.waiting > MAX_BACKLOG_SECONDS * SAMPLE_RATE:
                self.drained.clear()
                await self._either(self.drained.wait(), feeder)
                continue
            try:
                message = await self._either(asyncio.wait_for(self.ws.receive(), self.timeout), feeder)
            except asyncio.TimeoutError:
                return f"no audio for {self.timeout:g} s (whisperlite serve --live-timeout)"
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data = message.get("bytes")
            if data is not None:
                self._take(data)
            elif _is_end(message.get("text")):
                return None
            else:
                raise Close(UNSUPPORTED, 'after the config: binary s16le frames, then {"type": "end"}')

    def _take(self, data: bytes) -> None:
        if len(data) > MAX_FRAME_BYTES:
            raise Close(TOO_BIG, f"a frame holds at most {MAX_FRAME_BYTES} bytes ({MAX_FRAME_BYTES // 2 // SAMPLE_RATE} s)")
        if len(data) % 2:
            raise Close(INVALID_DATA, "a frame holds whole s16le samples: an even number of bytes")
        if data:
            self.backlog.append(np.frombuffer(data, "<i2").astype(np.float32) / 32768.0)
            self.waiting += len(data) // 2
            self.wake.set()

    async def _feeder(self) -> None:
        while True:
            while not self.backlog and not self.ended:
                self.wake.clear()
                await self.wake.wait()
            if self.backlog:
                samples = np.concatenate(self.backlog)
                self.backlog, self.waiting = [], 0
                self.drained.set()
                await self._send(await step(self.state, self.transcriber.feed, samples))
            else:
                events, done = await step(self.state, _finish, self.transcriber, self.config)
                await self._send(events)
                await self.ws.send_json(done)
                return

    async def _send(self, events: list) -> None:
        for event in events:
            await self.ws.send_json(event_dict(event, self.config.words))


def _is_end(text: str | None) -> bool:
    try:
        return json.loads(text or "").get("type") == "end"
    except (ValueError, AttributeError):
        return False


async def step(state: ServerState, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` as one step on the engine thread, waiting while the engine's queue is full;
    its failure as a Close."""
    from whisperlite.transcription.transcribe import LanguageError

    while True:
        try:
            return await state.engine.call(fn, *args)
        except QueueFull:
            await asyncio.sleep(QUEUE_RETRY_SECONDS)
        except (OptionError, LanguageError) as e:
            raise Close(POLICY, str(e)) from None
        except ApiError as e:
            raise Close(TRY_LATER, e.message) from None
        except WhisperliteError as e:
            raise Close(FAILED, str(e)) from None
        except Exception as e:  # noqa: BLE001 (the client gets one line, the stream ends)
            raise Close(FAILED, f"internal error: {type(e).__name__}: {e}") from None


async def _configured(ws: WebSocket, state: ServerState) -> LiveStream:
    """Read the config, check the model is loaded, start the stream on the engine thread."""
    from whisperlite.transcription.streaming import StreamingTranscriber

    try:
        message = await asyncio.wait_for(ws.receive(), state.config.live_timeout)
    except asyncio.TimeoutError:
        raise Close(POLICY, f"no config for {state.config.live_timeout:g} s (whisperlite serve --live-timeout)") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is None:
        raise Close(UNSUPPORTED, "the first message must be the JSON config (text), not audio")
    config = parse_config(message["text"], state)
    if not state.ready or state.whisper is None:
        raise Close(TRY_LATER, state.failure or "the model is loading; retry later")
    transcriber = await step(state, StreamingTranscriber, state.whisper, config.run.transcribe, config.stream)
    await ws.send_json({"type": "ready", "model": state.whisper.name, "policy": config.stream.policy,
                        "sample_rate": SAMPLE_RATE})
    return LiveStream(ws, state, config, transcriber)


async def live(ws: WebSocket) -> None:
    """One live stream: a slot of `max_live`, held until the connection ends however it ends."""
    state: ServerState = ws.app.state.wl
    await ws.accept()
    if state.live >= state.config.max_live:
        message = f"too many live streams: {state.config.max_live} at once (whisperlite serve --max-live); retry later"
        await ws.send_json({"type": "error", "error": {"message": message}})
        await ws.close(TRY_LATER, close_reason(message))
        return
    state.live += 1
    try:
        stream = await _configured(ws, state)
        await stream.run()
    except Close as e:
        try:
            await ws.send_json({"type": "error", "error": {"message": e.message}})
            await ws.close(e.code, close_reason(e.message))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away meanwhile
    except WebSocketDisconnect:
        pass  # the client went away: its step is dropped (above), its slot freed (below)
    finally:
        state.live -= 1


def routes() -> list[BaseRoute]:
    return [WebSocketRoute(PATH, live)]
