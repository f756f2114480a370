"""What every route of every face shares, and how a route finds it: `state_of(request)`.

Its own module, below the app and the faces, so that a face never imports the app that
lists it (no import circle)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from whisperlite.server.config import ServerConfig
from whisperlite.server.engine import Engine

if TYPE_CHECKING:
    from whisperlite.generation.generate import Generator
    from whisperlite.transcription.transcribe import WhisperModel


@dataclass
class ServerState:
    """The configuration, the engine and the loaded models."""

    config: ServerConfig
    engine: Engine
    whisper: "WhisperModel | None" = None
    llm: "Generator | None" = None
    ready: bool = False
    failure: str | None = None  # why the models could not load (then /health says so)
    live: int = 0  # live WebSocket streams open now (at most config.max_live)


def state_of(request: Request) -> ServerState:
    return request.app.state.wl
