"""`whisperlite serve`: the HTTP server (whisper.cpp's, OpenAI's and llama.cpp's APIs and a
web page) on 127.0.0.1 unless told otherwise."""
from __future__ import annotations

import os
import socket
import sys

import click

from whisperlite.cli.common import fail, friendly_errors
from whisperlite.server.config import ServerConfig

DEFAULTS = ServerConfig()
EXAMPLES = """
\b
Examples:
  whisperlite serve                                  tiny.en on http://127.0.0.1:8080
  whisperlite serve -m base --llm smollm2 -t 2
  curl 127.0.0.1:8080/inference -F file=@talk.mp3 -F response_format=srt
"""


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound now, so that a port in use is one line before any model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        fail(f"--host {host}: {e.strerror}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    return sock


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default=DEFAULTS.host, show_default=True,
              help="Address to listen on (0.0.0.0: every interface; then set --api-key).")
@click.option("--port", default=DEFAULTS.port, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@click.option("-m", "--model", default=DEFAULTS.model, show_default=True,
              help="Whisper model name or path (OpenAI requests call it whisper-1).")
@click.option("--llm", default=None, help="A GGUF model name or path for chat and completions.")
@click.option("-np", "--parallel", type=click.IntRange(1, 64), default=DEFAULTS.parallel, show_default=True,
              help="LLM slots (llama.cpp's -np): conversations generating at once, each with its own cache.")
@click.option("-t", "--threads", type=click.IntRange(1, 256), default=None,
              help="Threads for the models  [default: physical cores]")
@click.option("--api-key", envvar="WHISPERLITE_API_KEY", default=None,
              help="Require `Authorization: Bearer KEY` (or, on WebSockets, ?api_key=KEY) on every route but "
                   "/health (env WHISPERLITE_API_KEY).")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=DEFAULTS.max_upload_mb,
              show_default=True, help="Larger request bodies get 413.")
@click.option("--max-queue", type=click.IntRange(1), default=DEFAULTS.max_queue, show_default=True,
              help="Requests admitted at once (running or waiting); more get 503 with Retry-After.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=DEFAULTS.timeout, show_default=True,
              help="Seconds a request may take; then 504 and its work is dropped.")
@click.option("--metrics", is_flag=True, help="Serve Prometheus metrics at /metrics.")
@click.option("--max-live", type=click.IntRange(0), default=DEFAULTS.max_live, show_default=True,
              help="Live WebSocket streams (/v1/audio/live) open at once; more are closed with 1013.")
@click.option("--live-timeout", type=click.FloatRange(0, min_open=True), default=DEFAULTS.live_timeout,
              show_default=True, help="Seconds a live stream may send no audio before it is closed.")
@click.option("--archive", default=None, type=click.Path(file_okay=False),
              help="A `whisperlite batch` output folder to search: GET /v1/search and a search box on the page.")
@friendly_errors
def serve(host, port, model, llm, parallel, threads, api_key, max_upload_mb, max_queue, timeout, metrics, max_live,
          live_timeout, archive):
    """Serve whisper.cpp's, OpenAI's and llama.cpp's HTTP APIs and a web page."""
    config = ServerConfig(host=host, port=port, model=model, llm=llm, parallel=parallel, threads=threads, api_key=api_key or None,
                          max_upload_mb=max_upload_mb, max_queue=max_queue, timeout=timeout, metrics=metrics,
                          max_live=max_live, live_timeout=live_timeout, archive=archive)
    if archive is not None:
        from whisperlite.batch.manifest import MANIFEST_NAME

        if not os.path.isfile(os.path.join(archive, MANIFEST_NAME)):
            fail(f"--archive {archive}: not a batch output folder (no {MANIFEST_NAME})")
    sock = _listen(host, port)
    import uvicorn

    from whisperlite.server.app import create_app
    from whisperlite.server.live_api import MAX_FRAME_BYTES

    server: uvicorn.Server | None = None

    def stop() -> None:
        assert server is not None
        server.should_exit = True

    app = create_app(config, stop=stop)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None, lifespan="on",
                                           timeout_graceful_shutdown=5, ws_max_size=MAX_FRAME_BYTES))
    server.run(sockets=[sock])
    if app.state.wl.failure:
        sys.exit(1)
