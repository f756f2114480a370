"""Search over a batch output folder (`whisperlite serve --archive DIR`) and its episodes' audio.

GET /v1/archive: whether an archive is served, and how many episodes it holds.
GET /v1/search?q=QUERY[&speaker=NAME&limit=N]: ranked hits (episode, start, end, speaker,
  text, score, and the URL of the episode's media), as `whisperlite search --json` gives them.
GET /v1/archive/transcript?episode=NAME: an episode's segments as the index holds them
  ({"episode", "segments": [{"start", "end", "speaker", "text"}, …]}, what /v1/chapters and
  /v1/summarize take).
GET /v1/archive/media?episode=NAME: the media file of an episode, with byte ranges (a player
  seeks to a hit's time). Only files the manifest records as done inputs are served, found by
  exact lookup of the episode name a hit gave: no part of the request ever becomes a path.
"""
from __future__ import annotations

import asyncio
import os
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import BaseRoute, Route

from whisperlite.batch.index import SearchIndex, done_records, episode_name
from whisperlite.batch.manifest import MANIFEST_NAME, read_manifest, recorded_path
from whisperlite.core.errors import WhisperliteError
from whisperlite.server.errors import ApiError
from whisperlite.server.state import state_of

MAX_LIMIT = 200
MEDIA_PATH = "/v1/archive/media"


def _archive(request: Request) -> str:
    folder = state_of(request).config.archive
    if folder is None:
        raise ApiError(404, "no archive is served (start the server with --archive DIR)", code="no_archive")
    return folder


def _episodes(folder: str) -> dict[str, str]:
    """Episode name (as hits give it) -> the media path its manifest record names."""
    out = {}
    for record in done_records(read_manifest(os.path.join(folder, MANIFEST_NAME))).values():
        path = recorded_path(record)
        if path:
            out[episode_name(record)] = path
    return out


def media_url(episode: str) -> str:
    return f"{MEDIA_PATH}?episode={quote(episode, safe='')}"


async def archive_info(request: Request) -> JSONResponse:
    folder = _archive(request)
    episodes = await asyncio.to_thread(_episodes, folder)
    return JSONResponse({"archive": True, "episodes": len(episodes)})


def _search(folder: str, query: str, speaker: str | None, limit: int):
    warnings: list[str] = []
    with SearchIndex(folder, warnings.append) as index:
        index.sync()
        hits, capped = index.search(query, speaker, limit)
    return hits, capped, warnings


async def search(request: Request) -> JSONResponse:
    folder = _archive(request)
    params = request.query_params
    query = params.get("q", "")
    if not query.strip():
        raise ApiError(400, "empty query (?q=…)", param="q", code="invalid_value")
    raw_limit = params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit", code="invalid_value")
    try:
        hits, capped, warnings = await asyncio.to_thread(_search, folder, query, params.get("speaker") or None,
                                                         int(raw_limit))
    except WhisperliteError as e:
        raise ApiError(500, str(e), code="index_error") from None
    return JSONResponse({
        "query": query, "capped": capped, "warnings": warnings,
        "hits": [{"episode": h.episode, "start": h.start, "end": h.end, "speaker": h.speaker, "text": h.text,
                  "score": h.score, "media": media_url(h.episode)} for h in hits],
    })


def _episode_rows(folder: str, episode: str):
    with SearchIndex(folder, lambda line: None) as index:
        index.sync()
        return index.episode_rows(episode)


async def transcript(request: Request) -> JSONResponse:
    folder = _archive(request)
    episode = request.query_params.get("episode", "")
    try:
        rows = await asyncio.to_thread(_episode_rows, folder, episode)
    except WhisperliteError as e:
        raise ApiError(500, str(e), code="index_error") from None
    if rows is None:
        raise ApiError(404, f"no episode {episode!r} in the archive", param="episode", code="not_found")
    return JSONResponse({"episode": episode, "segments": [{"start": a, "end": b, "speaker": sp, "text": t}
                                                          for a, b, sp, t in rows]})


async def media(request: Request) -> FileResponse:
    folder = _archive(request)
    episode = request.query_params.get("episode", "")
    path = (await asyncio.to_thread(_episodes, folder)).get(episode)
    if path is None or not os.path.isfile(path):
        raise ApiError(404, f"no episode {episode!r} in the archive", param="episode", code="not_found")
    return FileResponse(path, filename=os.path.basename(path), content_disposition_type="inline")


def routes() -> list[BaseRoute]:
    return [Route("/v1/archive", archive_info), Route("/v1/search", search),
            Route("/v1/archive/transcript", transcript), Route(MEDIA_PATH, media)]
