"""POST /v1/chapters and POST /v1/summarize: `whisperlite chapters` and `summarize` over HTTP,
with the server's LLM (--llm).

The input is a whisperlite transcript as a JSON body ({"segments": [{"start", "end", "text",
"speaker"?}, …]}, options beside them), or a multipart form whose `file` is an audio file
(transcribed with the server's Whisper model on the default path) or a .json/.srt transcript,
options as form fields. Options: chapters take `min_chapter` (seconds) and `window`;
summaries take `quotes`.

The LLM work holds one of the LLM's slots (its KV cache is not shared with a chat meanwhile)
and runs on the engine thread one step per LLM call: one title, or one chunk's summary.

The request follows the audio routes' rules: at most --max-queue jobs admitted (503 and
Retry-After beyond), and --timeout seconds from the request's start to its answer, waiting
for a slot included; past it the answer is the audio routes' 504, the slot is given back, and
the LLM call in progress ends at its next token and the job with it. A client that goes away
ends them the same way.
"""
from __future__ import annotations

import asyncio
import json
import math
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from whisperlite.core.errors import WhisperliteError
from whisperlite.generation.generate import GenerateOptions
from whisperlite.insights.chapters import chapters_json, split_chapters, titles
from whisperlite.insights.llm import Writer
from whisperlite.insights.options import ChapterOptions, SummaryOptions
from whisperlite.insights.summary import summarize as summary_steps, summary_json
from whisperlite.insights.transcript import Line, is_transcript, parse_json, parse_srt
from whisperlite.server.audio_api import _form, _Transcription, _upload_name
from whisperlite.server.errors import ApiError
from whisperlite.server.jobs import ClientGone, guarded
from whisperlite.server.llm import TextRequest
from whisperlite.server.llm_api import _llm
from whisperlite.server.state import state_of
from whisperlite.transcription.options import RunOptions

MAX_JSON_BYTES = 50 << 20  # a transcript of days is a few MB


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def _number(fields: dict[str, Any], name: str, kind: type, low: float, default: float) -> Any:
    value = fields.get(name)
    if value is None:
        return default
    try:
        number = kind(value) if isinstance(value, str) else value
    except ValueError:
        raise _bad(f"{name} must be a number", name) from None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number) \
            or number < low or (kind is int and number != int(number)):
        raise _bad(f"{name} must be {'an integer' if kind is int else 'a number'} >= {low}", name)
    return kind(number)


async def _input(request: Request) -> tuple[list[Line], dict[str, Any]]:
    """The transcript lines and the option fields of a request."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        body = await request.body()
        if len(body) > MAX_JSON_BYTES:
            raise ApiError(413, "the transcript is too large", code="request_too_large")
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _bad(f"the body is not valid JSON ({e})") from None
        try:
            lines = parse_json(doc, "the transcript")
        except WhisperliteError as e:
            raise _bad(str(e), "segments") from None
        return lines, doc
    upload, fields, _ = await _form(request)
    if upload is None:
        raise ApiError(400, "no input: send a transcript as a JSON body, or a file in the 'file' field",
                       param="file", code="invalid_request")
    name = _upload_name(upload)
    if is_transcript(name):
        raw = await upload.read()
        try:
            text = raw.decode("utf-8")
            lines = parse_json(json.loads(text), name) if name.lower().endswith(".json") else parse_srt(text, name)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _bad(f"{name}: not a readable transcript ({e})", "file") from None
        except WhisperliteError as e:
            raise _bad(str(e), "file") from None
        return lines, fields
    job = _Transcription(request, state_of(request), upload, RunOptions())
    await job.start(upload)
    segments = await job.segments()
    lines = [Line(s.start, s.end, " ".join(s.text.split())) for s in segments if s.text.strip()]
    return lines, fields


async def _run_llm(request: Request, work, deadline: float) -> list[Any]:
    """Run `work(writer)`'s steps on the engine with one LLM slot held; their results. Past
    `deadline` (the loop's clock) 504, and the job dropped."""
    state = state_of(request)
    llm = _llm(request)

    async def run() -> list[Any]:
        slot = await llm.acquire(TextRequest([], GenerateOptions(), cache_prompt=False), {})
        ended = threading.Event()  # set when this request stops waiting, however it ends
        try:
            async with state.engine.submit(work(Writer(slot.gen, stop=ended.is_set))) as stream:
                return [step async for step in stream]
        finally:
            ended.set()
            llm.release(slot)

    try:
        return await guarded(request, run(), deadline, state.config.timeout)
    except WhisperliteError as e:
        raise ApiError(400 if "context" in str(e) else 500, str(e), code="llm_failed") from None


def _deadline(request: Request) -> float:
    return asyncio.get_running_loop().time() + state_of(request).config.timeout


async def chapters(request: Request) -> Response:
    _llm(request)  # no LLM: say so before reading an upload
    deadline = _deadline(request)
    try:
        lines, fields = await _input(request)
        if not lines:
            raise _bad("the transcript is empty (no speech)")
        d = ChapterOptions()
        opts = ChapterOptions(min_chapter=_number(fields, "min_chapter", float, 0.0, d.min_chapter),
                              window=_number(fields, "window", int, 1, d.window))
        parts = split_chapters(lines, opts)
        titled = await _run_llm(request, lambda writer: titles(parts, writer, opts), deadline)
    except ClientGone:
        return Response(status_code=499)
    return JSONResponse(chapters_json(titled))


async def summarize(request: Request) -> Response:
    _llm(request)
    deadline = _deadline(request)
    try:
        lines, fields = await _input(request)
        if not lines:
            raise _bad("the transcript is empty (no speech)")
        opts = SummaryOptions(quotes=_number(fields, "quotes", int, 0, SummaryOptions().quotes))
        steps = await _run_llm(request, lambda writer: summary_steps(lines, writer, opts), deadline)
    except ClientGone:
        return Response(status_code=499)
    return JSONResponse(summary_json(steps[-1].result))


def routes() -> list[BaseRoute]:
    return [Route("/v1/chapters", chapters, methods=["POST"]), Route("/v1/summarize", summarize, methods=["POST"])]
