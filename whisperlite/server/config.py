"""What `whisperlite serve` is started with: one frozen record, each default written once."""
from __future__ import annotations

from dataclasses import dataclass

from whisperlite.transcription.options import DEFAULT_MODEL


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: nothing is exposed by accident
    port: int = 8080  # llama.cpp's and whisper.cpp's servers' default
    model: str = DEFAULT_MODEL  # the Whisper model; `whisper-1` in OpenAI requests means this one
    llm: str | None = None  # a GGUF model name or path for chat and completions; None: no LLM routes answer
    parallel: int = 4  # LLM slots (llama.cpp's -np): conversations generating at once, each with its own KV cache
    threads: int | None = None  # numba and BLAS threads; None: one per physical core
    api_key: str | None = None  # when set, every route but /health needs `Authorization: Bearer KEY` (`?api_key=` on WebSockets)
    max_upload_mb: float = 500.0  # larger request bodies get 413 before they are read whole
    max_queue: int = 16  # jobs admitted at once (running or waiting); more get 503 + Retry-After
    timeout: float = 600.0  # seconds a request may take before it is cancelled with 504
    metrics: bool = False  # serve Prometheus text at /metrics
    max_live: int = 4  # live WebSocket streams open at once; more are closed with 1013 (try again later)
    archive: str | None = None  # a `whisperlite batch` output folder: /v1/search and the page's search box
    live_timeout: float = 30.0  # seconds a live stream may send nothing before it is closed
