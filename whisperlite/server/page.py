"""The web page at `/`: hand-written HTML/JS/CSS shipped in the package (no CDN, no build step).
It talks to the server's own OpenAI-shaped routes, so it needs nothing the API does not offer."""
from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount, Route
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page and its assets load without the API key: the page itself asks for the key.
STATIC_PREFIX = "/static/"


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    return [Route("/", index, methods=["GET", "HEAD"]),
            Mount(STATIC_PREFIX.rstrip("/"), app=StaticFiles(directory=STATIC_DIR), name="static")]
