"""The ASGI app: models load once in the background (GET /health answers 503 until they have),
then each face's routes serve from the shared `ServerState`.

Faces (each a module with `routes() -> list[BaseRoute]`): whisper.cpp's and OpenAI's audio
routes, OpenAI's and llama.cpp's text routes, and the web page.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from whisperlite.core.errors import WhisperliteError
from whisperlite.server import page
from whisperlite.server.config import ServerConfig
from whisperlite.server.engine import Engine
from whisperlite.server.errors import ApiError, api_error_handler

if TYPE_CHECKING:
    from whisperlite.generation.generate import Generator
    from whisperlite.transcription.transcribe import WhisperModel

log = logging.getLogger("whisperlite.server")

# Paths that answer without the API key: a health probe must not need a secret, and the web
# page (with its assets) must load so it can ask for the key.
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = (page.STATIC_PREFIX,)


@dataclass
class ServerState:
    """What every route shares: the configuration, the engine and the loaded models."""

    config: ServerConfig
    engine: Engine
    whisper: "WhisperModel | None" = None
    llm: "Generator | None" = None
    ready: bool = False
    failure: str | None = None  # why the models could not load (then /health says so)


def state_of(request: Request) -> ServerState:
    return request.app.state.wl


def _load_models(state: ServerState) -> None:
    from whisperlite.transcription.transcribe import WhisperModel

    state.whisper = WhisperModel(state.config.model, cpu_threads=state.config.threads or 0)
    if state.config.llm:
        from whisperlite.generation.generate import load_generator

        state.llm = load_generator(state.config.llm)


async def _load(state: ServerState) -> None:
    try:
        await state.engine.call(_load_models, state)
        state.ready = True
    except WhisperliteError as e:
        state.failure = str(e)
        log.error("models could not load: %s", e)


async def health(request: Request) -> JSONResponse:
    """whisper.cpp's and llama.cpp's shape: {"status": "ok"} when ready, 503 while loading."""
    state = state_of(request)
    if state.ready:
        return JSONResponse({"status": "ok"})
    if state.failure:
        return JSONResponse({"status": "error", "error": state.failure}, status_code=503)
    return JSONResponse({"status": "loading model"}, status_code=503)


class ApiKey:
    """`Authorization: Bearer KEY` on every path but the public ones (401 otherwise)."""

    def __init__(self, app: ASGIApp, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.key is None or scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS
                or scope["path"].startswith(PUBLIC_PREFIXES)):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {self.key}":
            response = ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                code="invalid_api_key").response()
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(config: ServerConfig, load: bool = True) -> Starlette:
    """The app for `config`; `load=False` leaves the models for the caller to set (tests)."""
    state = ServerState(config, Engine(config.max_queue))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(_load(state)) if load else None
        yield
        if task is not None:
            task.cancel()
        state.engine.close()

    routes: list[BaseRoute] = [Route("/health", health), *page.routes()]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={ApiError: api_error_handler})
    app.state.wl = state
    app.add_middleware(ApiKey, key=config.api_key)
    return app
