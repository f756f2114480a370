"""The ASGI app: models load once in the background (GET /health answers 503 until they have),
then each face's routes serve from the shared `ServerState`.

Faces (each a module with `routes() -> list[BaseRoute]`): whisper.cpp's and OpenAI's audio
routes, the live WebSocket, OpenAI's and llama.cpp's text routes, archive search, chapters and
summaries, and the web page.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import AsyncIterator, Callable
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from whisperlite.core.errors import WhisperliteError
from whisperlite.server import archive_api, audio_api, insights_api, live_api, llm_api, page
from whisperlite.server.config import ServerConfig
from whisperlite.server.engine import Engine
from whisperlite.server.errors import ApiError, api_error_handler
from whisperlite.server.state import ServerState, state_of

log = logging.getLogger("whisperlite.server")

# Paths that answer without the API key: a health probe must not need a secret, and the web
# page (with its assets) must load so it can ask for the key.
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = (page.STATIC_PREFIX,)


class ThreadingLayerError(WhisperliteError):
    """numba has no threading layer that is safe to enter from several threads."""


def _safe_threading_layer() -> None:
    """Steps run on the engine thread while word alignment and the VAD run on others, each
    calling numba's parallel kernels: numba's workqueue layer is not safe for that (OpenMP and
    TBB are). Asked for before the first parallel kernel runs (the model's warm-up), unless the
    environment chose; checked after it."""
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "threadsafe"


def _check_threading_layer() -> None:
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        return
    if layer == "workqueue":
        raise ThreadingLayerError("numba's workqueue threading layer is not thread-safe: the server needs OpenMP "
                                  "(libgomp) or TBB (pip install tbb); unset NUMBA_THREADING_LAYER")


def _load_models(state: ServerState) -> None:
    from whisperlite.transcription.transcribe import WhisperModel

    _safe_threading_layer()
    try:
        state.whisper = WhisperModel(state.config.model, cpu_threads=state.config.threads or 0)
    except ValueError as e:
        if "threading layer" not in str(e):
            raise
        raise ThreadingLayerError(f"numba: {e}: the server needs OpenMP (libgomp) or TBB (pip install tbb)") from None
    _check_threading_layer()
    if state.config.llm:
        from whisperlite.generation.generate import load_generator

        state.llm = load_generator(state.config.llm)


async def _load(state: ServerState, stop: Callable[[], None] | None) -> None:
    try:
        await state.engine.call(_load_models, state)
    except WhisperliteError as e:
        state.failure = str(e)
        log.error("error: models could not load: %s", e)
        if stop is not None:
            stop()
        return
    state.ready = True
    c = state.config
    models = f"{c.model}" + (f" and {c.llm}" if c.llm else "")
    log.info("whisperlite: serving %s at http://%s:%d", models, f"[{c.host}]" if ":" in c.host else c.host, c.port)


async def health(request: Request) -> JSONResponse:
    """whisper.cpp's and llama.cpp's shape: {"status": "ok"} when ready, 503 while loading."""
    state = state_of(request)
    if state.ready:
        return JSONResponse({"status": "ok"})
    if state.failure:
        return JSONResponse({"status": "error", "error": state.failure}, status_code=503)
    return JSONResponse({"status": "loading model"}, status_code=503)


class ApiKey:
    """`Authorization: Bearer KEY` on every path but the public ones (401 otherwise). A WebSocket
    may give it as `?api_key=KEY` instead (browsers cannot set its headers); without it, it is
    accepted and closed with 1008 and the reason (a browser sees no refused handshake's status)."""

    def __init__(self, app: ASGIApp, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.key is None or scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS
                or scope["path"].startswith(PUBLIC_PREFIXES)):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if headers.get(b"authorization", b"").decode("latin-1") == f"Bearer {self.key}":
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            if parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key") == [self.key]:
                return await self.app(scope, receive, send)
            ws = WebSocket(scope, receive, send)
            await ws.accept()
            return await ws.close(1008, "invalid or missing API key (?api_key=KEY or Authorization: Bearer KEY)")
        response = ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                            code="invalid_api_key").response()
        return await response(scope, receive, send)


class BodyLimit:
    """Bodies larger than `max_bytes` get 413: at once when Content-Length says so, else as
    soon as that much has arrived (chunked uploads), before the rest is read."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the request body is larger than the server's limit of {self.max_bytes / 1e6:g} MB "
                             "(whisperlite serve --max-upload-mb)", code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large().response()(scope, receive, send)
        received, started = 0, False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except _TooLarge:
            if not started:
                await self._too_large().response()(scope, receive, send)


class _TooLarge(Exception):
    """Raised out of `receive` into the app when a body passes the limit (caught by BodyLimit)."""


def create_app(config: ServerConfig, load: bool = True, stop: Callable[[], None] | None = None) -> Starlette:
    """The app for `config`; `load=False` leaves the models for the caller to set (tests);
    `stop` is called when the models cannot load (the CLI ends the server)."""
    state = ServerState(config, Engine(config.max_queue))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(state, stop)) if load else None
        yield
        if task is not None:
            task.cancel()
        state.engine.close()

    routes: list[BaseRoute] = [Route("/health", health), *audio_api.routes(), *live_api.routes(), *llm_api.routes(),
                               *archive_api.routes(), *insights_api.routes(), *page.routes()]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={ApiError: api_error_handler})
    app.state.wl = state
    app.add_middleware(BodyLimit, max_bytes=int(config.max_upload_mb * 1e6))
    app.add_middleware(ApiKey, key=config.api_key)
    return app
