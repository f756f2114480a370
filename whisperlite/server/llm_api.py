"""The text faces: OpenAI's `/v1/chat/completions`, `/v1/completions`, `/v1/models`, and
llama.cpp's `/completion`, `/tokenize`, `/detokenize`, `/props`, `/slots`, `/metrics`.

Request fields map onto the generation options through one table (llm.KNOBS) for both faces;
responses and streams take each API's shapes. A generation holds an LLM slot and an engine
job from before its response starts until the response ends or its client goes away; then
the job is cancelled (the engine drops it before its next token) and the slot freed.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from whisperlite.core.errors import WhisperliteError
from whisperlite.generation.generate import GenerateOptions
from whisperlite.server.engine import JobStream
from whisperlite.server.errors import ApiError
from whisperlite.server.llm import (Done, Llm, Slot, Step, TextRequest, bad, flag, generate_options,
                                    sampling_params, stop_strings)
from whisperlite.server.state import state_of

log = logging.getLogger("whisperlite.server")

WHISPER_ALIAS = "whisper-1"  # OpenAI's name for its Whisper model: here, the loaded one
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant"})
STARTED = int(time.time())  # `created` of the models in /v1/models
_DEFAULTS = GenerateOptions()  # what /props and idle slots show: the CLI's defaults


# ---------------------------------------------------------------- the loaded LLM and one generation


def _llm(request: Request) -> Llm:
    """The LLM with its slots (made on first use for the loaded generator), or a clear error."""
    state = state_of(request)
    gen = state.llm
    if gen is None:
        if state.config.llm and not state.ready and state.failure is None:
            raise ApiError(503, "the model is still loading; retry shortly", code="loading_model",
                           headers={"Retry-After": "5"})
        raise ApiError(404, "no LLM is loaded: start the server with --llm MODEL (e.g. --llm smollm2)",
                       param="model", code="model_not_found")
    llm = getattr(request.app.state, "llm_slots", None)
    if llm is None or llm.gen is not gen:
        llm = Llm(gen, _names(state.config.llm or gen.path, gen.path), state.config.parallel,
                  state.config.max_queue)
        request.app.state.llm_slots = llm
    return llm


def _names(given: str, path: str) -> tuple[str, ...]:
    """What a request's `model` may say: the name the server was started with (a registry name,
    or the file's name when it was given a path), the file's name with and without .gguf."""
    base = os.path.basename(path)
    stem = base.removesuffix(".gguf")
    first = base if os.path.sep in given or given.endswith(".gguf") else given
    return tuple(dict.fromkeys([first, given, base, stem]))


def _check_model(llm: Llm, body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and model not in llm.names:
        raise ApiError(404, f"The model '{model}' does not exist; this server's LLM is '{llm.name}'",
                       param="model", code="model_not_found")


class Generation:
    """One admitted generation: its slot and engine job, and closing them exactly once."""

    def __init__(self, llm: Llm, slot: Slot, stream: JobStream[Step], req: TextRequest):
        self.llm, self.slot, self.stream, self.req = llm, slot, stream, req
        self._open = True

    @classmethod
    async def start(cls, request: Request, llm: Llm, req: TextRequest, params: dict[str, Any]) -> "Generation":
        slot = await llm.acquire(req, params)
        try:
            stream = state_of(request).engine.submit(llm.run(slot, req))
        except BaseException:
            llm.release(slot)
            raise
        return cls(llm, slot, stream, req)

    async def steps(self) -> AsyncIterator[Step]:
        async for step in self.stream:
            yield step

    def close(self) -> None:
        """Cancel the job (a no-op once it has ended) and free the slot."""
        if self._open:
            self._open = False
            self.stream.cancel()
            self.llm.release(self.slot)

    async def collect(self, request: Request) -> tuple[str, list[int], Done]:
        """Run to the end (for a response that is not streamed); a client that goes away
        meanwhile cancels the job."""

        async def consume() -> tuple[str, list[int], Done]:
            parts, tokens = [], []
            async for step in self.steps():
                parts.append(step.text)
                if step.token is not None:
                    tokens.append(step.token)
                if step.done is not None:
                    return "".join(parts), tokens, step.done
            raise AssertionError("a generation ended without its last step")

        async def disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        work, gone = asyncio.ensure_future(consume()), asyncio.ensure_future(disconnect())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                raise ApiError(499, "the client closed the request", code="client_closed")
            return work.result()
        finally:
            work.cancel()
            gone.cancel()
            self.close()


class EventStream(StreamingResponse):
    """Server-sent events (`data: {json}` lines) for one generation; the generation is closed
    when the response ends, however it ends (a client that disconnects included)."""

    def __init__(self, events: AsyncIterator[dict[str, Any] | str], generation: Generation):
        self.generation = generation
        super().__init__(self._lines(events), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @staticmethod
    async def _lines(events: AsyncIterator[dict[str, Any] | str]) -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)}\n\n"
        except (ApiError, WhisperliteError) as e:  # after the 200 is sent, an error is one last event
            yield f"data: {json.dumps(_error_body(e))}\n\n"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.close()


def _error_body(e: Exception) -> dict[str, Any]:
    if isinstance(e, ApiError):
        return json.loads(e.response().body)
    return {"error": {"message": str(e), "type": "server_error", "param": None, "code": None}}


# ---------------------------------------------------------------- parsing requests


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise bad("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    return body


def _token_ids(value: list[Any], llm: Llm, param: str) -> list[int]:
    n_vocab = llm.gen.tokenizer.n_vocab
    for t in value:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n_vocab:
            raise bad(f"{param}: token ids must be integers in [0, {n_vocab}), not {t!r}", param)
    return list(value)


def _prompt(value: Any, llm: Llm, param: str = "prompt") -> tuple[list[int], str]:
    """A prompt as ids and as text: a string, token ids, or llama.cpp's mix of both (the
    BOS the model asks for goes first when the prompt starts with a string)."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]  # a batch of one prompt
    if isinstance(value, str):
        return llm.gen.encode_prompt(value), value
    if not isinstance(value, list) or not value:
        raise bad(f"{param} must be a string or a list of token ids", param)
    if all(isinstance(v, (str, list)) for v in value):
        raise bad(f"{param}: one prompt per request (got {len(value)})", param)
    tok = llm.gen.tokenizer
    ids: list[int] = []
    for i, part in enumerate(value):
        if isinstance(part, str):
            ids += tok.encode(part, add_special=i == 0, parse_special=True)
        else:
            ids += _token_ids([part], llm, param)
    return ids, tok.decode(ids)


def _messages(value: Any) -> list[dict[str, str]]:
    """OpenAI's chat messages as the chat template takes them: role and text content."""
    if not isinstance(value, list) or not value:
        raise bad("messages must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in CHAT_ROLES:
            raise bad(f"messages[{i}]: role must be one of {', '.join(sorted(CHAT_ROLES))}", "messages")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad(f"messages[{i}]: only text content parts are supported", "messages")
            content = "".join(p["text"] for p in content)
        if content is None and m["role"] == "assistant":
            content = ""
        if not isinstance(content, str):
            raise bad(f"messages[{i}]: content must be a string or a list of text parts", "messages")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return out


def _request(body: dict[str, Any], llm: Llm, prompt: list[int]) -> TextRequest:
    if not prompt:
        raise bad("the prompt is empty", "prompt")
    n_ctx = llm.gen.n_ctx
    if len(prompt) >= n_ctx:
        raise ApiError(400, f"the prompt has {len(prompt)} tokens; the context holds {n_ctx}",
                       param="prompt", code="context_length_exceeded")
    return TextRequest(prompt, generate_options(body, n_ctx), stop_strings(body.get("stop")),
                       flag(body, "cache_prompt", True))


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    return flag(options, "include_usage", False)


# ---------------------------------------------------------------- OpenAI


async def chat_completions(request: Request) -> JSONResponse | EventStream:
    body = await _body(request)
    llm = _llm(request)
    _check_model(llm, body)
    messages = _messages(body.get("messages"))
    try:
        text = await asyncio.to_thread(llm.gen.chat_prompt, messages)
    except WhisperliteError as e:  # the model's chat template refused or failed
        raise bad(str(e), "messages") from None
    req = _request(body, llm, llm.gen.encode_prompt(text, chat=True))
    return await _openai(request, body, llm, req, chat=True)


async def completions(request: Request) -> JSONResponse | EventStream:
    body = await _body(request)
    llm = _llm(request)
    _check_model(llm, body)
    ids, _ = _prompt(body.get("prompt"), llm)
    return await _openai(request, body, llm, _request(body, llm, ids), chat=False)


async def _openai(request: Request, body: dict[str, Any], llm: Llm, req: TextRequest,
                  chat: bool) -> JSONResponse | EventStream:
    stream, include_usage = flag(body, "stream", False), _include_usage(body)
    gen = await Generation.start(request, llm, req, sampling_params(req.opts, req.stop))  # every path closes it
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk" if stream and chat else "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": llm.name}

    def choice(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if not chat:
            return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish}
        if not stream:
            return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish}
        delta = {"role": "assistant", "content": ""} if first else {} if text is None else {"content": text}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    if not stream:
        text, _, done = await gen.collect(request)
        return JSONResponse({**head, "choices": [choice(text, done.finish_reason)], "usage": done.usage(),
                             "timings": done.timings()})

    usage_field = {"usage": None} if include_usage else {}

    async def events() -> AsyncIterator[dict[str, Any] | str]:
        if chat:
            yield {**head, "choices": [choice(None, None, first=True)], **usage_field}
        async for step in gen.steps():
            if step.text:
                yield {**head, "choices": [choice(step.text, None)], **usage_field}
            if step.done is not None:
                yield {**head, "choices": [choice(None, step.done.finish_reason)], **usage_field,
                       "timings": step.done.timings()}
                if include_usage:
                    yield {**head, "choices": [], "usage": step.done.usage(), "timings": step.done.timings()}
        yield "[DONE]"

    return EventStream(events(), gen)


async def models(request: Request) -> JSONResponse:
    """OpenAI's list: the Whisper model (as whisper-1 and by its own name) and the LLM."""
    state = state_of(request)
    ids = [WHISPER_ALIAS, state.config.model]
    if state.config.llm:
        ids.append(_llm(request).name if state.llm is not None else state.config.llm)
    return JSONResponse({"object": "list", "data": [
        {"id": i, "object": "model", "created": STARTED, "owned_by": "whisperlite"} for i in dict.fromkeys(ids)]})


# ---------------------------------------------------------------- llama.cpp


async def completion(request: Request) -> JSONResponse | EventStream:
    body = await _body(request)
    llm = _llm(request)
    ids, prompt_text = _prompt(body.get("prompt"), llm)
    req = _request(body, llm, ids)
    params = sampling_params(req.opts, req.stop)
    stream, return_tokens = flag(body, "stream", False), flag(body, "return_tokens", False)
    gen = await Generation.start(request, llm, req, params)  # from here on, every path closes it

    def final(text: str, tokens: list[int], done: Done) -> dict[str, Any]:
        return {"index": 0, "content": text, "tokens": tokens, "id_slot": gen.slot.id, "stop": True,
                "model": llm.name, "tokens_predicted": done.n_predicted, "tokens_evaluated": done.n_prompt,
                "generation_settings": {"n_ctx": llm.gen.n_ctx, **params}, "prompt": prompt_text,
                "has_new_line": "\n" in text, "truncated": done.truncated, "stop_type": done.stop_type,
                "stopping_word": done.stopping_word, "tokens_cached": done.n_cached, "timings": done.timings()}

    if not stream:
        text, tokens, done = await gen.collect(request)
        return JSONResponse(final(text, tokens if return_tokens else [], done))

    async def events() -> AsyncIterator[dict[str, Any]]:
        n = 0
        async for step in gen.steps():
            tokens = [] if step.token is None else [step.token]
            n += len(tokens)
            if step.done is not None:
                yield final(step.text, tokens, step.done)
            else:
                yield {"index": 0, "content": step.text, "tokens": tokens, "stop": False, "id_slot": gen.slot.id,
                       "tokens_predicted": n, "tokens_evaluated": len(req.prompt)}

    return EventStream(events(), gen)


def _piece(llm: Llm, t: int) -> bytes:
    """What a token spells, control tokens by their vocabulary text (as llama.cpp renders them)."""
    tok = llm.gen.tokenizer
    return tok.token_bytes(t) or tok.token_text(t).encode("utf-8")


async def tokenize(request: Request) -> JSONResponse:
    body = await _body(request)
    llm = _llm(request)
    content = body.get("content")
    if not isinstance(content, str):
        raise bad("content must be a string", "content")
    ids = llm.gen.tokenizer.encode(content, add_special=flag(body, "add_special", False),
                                   parse_special=flag(body, "parse_special", True))
    if not flag(body, "with_pieces", False):
        return JSONResponse({"tokens": ids})
    out = []
    for t in ids:
        b = _piece(llm, t)
        try:
            piece: str | list[int] = b.decode("utf-8")
        except UnicodeDecodeError:
            piece = list(b)
        out.append({"id": t, "piece": piece})
    return JSONResponse({"tokens": out})


async def detokenize(request: Request) -> JSONResponse:
    body = await _body(request)
    llm = _llm(request)
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise bad("tokens must be a list of token ids", "tokens")
    ids = _token_ids(tokens, llm, "tokens")
    return JSONResponse({"content": b"".join(_piece(llm, t) for t in ids).decode("utf-8", errors="replace")})


def _slot_json(llm: Llm, slot: Slot) -> dict[str, Any]:
    return {"id": slot.id, "id_task": slot.task, "n_ctx": slot.gen.n_ctx, "speculative": False,
            "is_processing": slot.busy, "params": slot.params or sampling_params(_DEFAULTS),
            "next_token": {"has_next_token": slot.busy, "has_new_line": False, "n_remain": -1,
                           "n_decoded": slot.n_decoded}}


async def props(request: Request) -> JSONResponse:
    llm = _llm(request)
    default = {**_slot_json(llm, llm.slots[0]), "id_task": -1, "is_processing": False,
               "params": sampling_params(_DEFAULTS), "prompt": "",
               "next_token": {"has_next_token": True, "has_new_line": False, "n_remain": -1, "n_decoded": 0}}
    return JSONResponse({"default_generation_settings": default, "total_slots": len(llm.slots),
                         "model_path": llm.gen.path, "model_alias": llm.name,
                         "chat_template": llm.gen.chat_template, "chat_template_caps": {},
                         "modalities": {"vision": False, "audio": False}, "build_info": "whisperlite",
                         "is_sleeping": False})


async def slots(request: Request) -> JSONResponse:
    llm = _llm(request)
    if request.query_params.get("fail_on_no_slot") in ("1", "true") and llm.busy == len(llm.slots):
        raise ApiError(503, "no slot available", code="unavailable")
    return JSONResponse([_slot_json(llm, s) for s in llm.slots])


async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text with llama.cpp's metric names (and the engine's), when --metrics is on."""
    state = state_of(request)
    if not state.config.metrics:
        raise ApiError(501, "This server does not support metrics endpoint. Start it with `--metrics`",
                       code="not_supported")
    rows: list[tuple[str, str, float, str]] = []
    if state.llm is not None:
        llm = _llm(request)
        s = llm.stats
        rows += [
            ("prompt_tokens_total", "counter", s.prompt_tokens, "Number of prompt tokens processed."),
            ("prompt_seconds_total", "counter", s.prompt_seconds, "Prompt process time"),
            ("tokens_predicted_total", "counter", s.predicted_tokens, "Number of generation tokens processed."),
            ("tokens_predicted_seconds_total", "counter", s.predicted_seconds, "Predict process time"),
            ("n_decode_total", "counter", s.decodes, "Total number of llama_decode() calls"),
            ("n_tokens_max", "counter", s.n_tokens_max, "Largest observed n_tokens."),
            ("n_busy_slots_per_decode", "gauge", s.busy_per_decode / s.decodes if s.decodes else 0.0,
             "Average number of busy slots per llama_decode() call"),
            ("prompt_tokens_seconds", "gauge", s.prompt_tokens / s.prompt_seconds if s.prompt_seconds else 0.0,
             "Average prompt throughput in tokens/s."),
            ("predicted_tokens_seconds", "gauge",
             s.predicted_tokens / s.predicted_seconds if s.predicted_seconds else 0.0,
             "Average generation throughput in tokens/s."),
            ("requests_processing", "gauge", llm.busy, "Number of requests processing."),
            ("requests_deferred", "gauge", llm.waiting, "Number of requests deferred."),
        ]
    lines = []
    for name, kind, value, help_ in rows:
        lines += [f"# HELP llamacpp:{name} {help_}", f"# TYPE llamacpp:{name} {kind}", f"llamacpp:{name} {value:g}"]
    engine = state.engine
    lines += ["# HELP whisperlite:engine_steps_total Model steps run on the engine thread (all models).",
              "# TYPE whisperlite:engine_steps_total counter", f"whisperlite:engine_steps_total {engine.steps}",
              "# HELP whisperlite:engine_jobs Jobs admitted to the engine now (running or waiting).",
              "# TYPE whisperlite:engine_jobs gauge", f"whisperlite:engine_jobs {engine.admitted}"]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def routes() -> list[BaseRoute]:
    post: dict[str, Callable[[Request], Any]] = {
        "/v1/chat/completions": chat_completions, "/chat/completions": chat_completions,
        "/v1/completions": completions, "/completion": completion, "/completions": completion,
        "/tokenize": tokenize, "/detokenize": detokenize,
    }
    get: dict[str, Callable[[Request], Any]] = {"/v1/models": models, "/models": models, "/props": props,
                                                 "/slots": slots, "/metrics": metrics}
    return [Route(p, f, methods=["POST"]) for p, f in post.items()] + [Route(p, f, methods=["GET"])
                                                                       for p, f in get.items()]
