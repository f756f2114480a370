"""A request's wait for its engine job: bounded by the request timeout (504, and the job
dropped), and cut short when the client goes away (the job dropped within one step)."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

from starlette.requests import Request

from whisperlite.server.engine import JobStream
from whisperlite.server.errors import ApiError

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection: nobody reads the answer."""


def timed_out(timeout: float) -> ApiError:
    return ApiError(504, f"the request took longer than the server's timeout of {timeout:g} s", code="timeout")


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body must have been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def guarded(request: Request, work: Awaitable[T], deadline: float, timeout: float) -> T:
    """`work`'s result, unless the client disconnects first (ClientGone) or the loop's clock
    passes `deadline` (504). The caller drops the job in either case."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        left = max(deadline - asyncio.get_running_loop().time(), 0.0)
        done, _ = await asyncio.wait({task, gone}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    if gone in done:
        raise ClientGone
    raise timed_out(timeout)


async def _all(stream: JobStream[Any]) -> list[Any]:
    return [item async for item in stream]


async def collect(request: Request, stream: JobStream[T], timeout: float) -> list[T]:
    """Every step's result of an admitted job; the job is dropped on timeout or disconnect."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with stream:
        return await guarded(request, _all(stream), deadline, timeout)
