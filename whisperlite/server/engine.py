"""The one thread that runs every model step.

numba's threading layers are not safe to enter from two Python threads at once, and a model's
buffers (KV caches, scratch arrays) belong to one computation at a time: so every model step
of every request runs on this one thread, and requests only wait for it on the event loop.

Work is an iterator whose every `next()` is one bounded step: a transcription's segments (at
most one 30-s window of decoding each), a generation's tokens (one forward pass each). The
engine runs, one step at a time, the admitted job that has had the least of its time so far
(least attained service): a new request goes ahead of the ones that have run for a while, so a
10-s clip behind a two-hour file waits for the one step in progress, not for the file, while
jobs that have all run long share the thread step by step. No job needs to say how long it is.

Invariants:
- At most `max_queue` jobs are admitted (running or waiting); `submit` beyond that raises
  `QueueFull` (503 with Retry-After) before any work is done.
- An iterator is advanced and closed only on the engine thread; a cancelled job is closed
  before its next step, so a client that goes away frees the engine within one step.
- Every admitted job ends exactly once: finished, failed or cancelled; its slot is then free.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Generic, Iterable, Iterator, TypeVar

from whisperlite.server.errors import ApiError

T = TypeVar("T")
_END = object()


class QueueFull(ApiError):
    def __init__(self, retry_after: int):
        super().__init__(503, "the server is busy: too many requests queued; retry later", code="queue_full",
                         headers={"Retry-After": str(retry_after)})


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(eq=False)
class _Job:
    work: Iterator[Any]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set on the event loop, read by the engine thread
    service: float = 0.0  # seconds of engine time its steps have taken

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the event loop is closed: nobody is waiting for this job
            self.cancelled = True


class JobStream(Generic[T]):
    """The steps of one admitted job, as they come off the engine thread.

    `async for item in stream` yields each step's result and raises what the work raised;
    `cancel()` (also on leaving `async with`) tells the engine to drop the job."""

    def __init__(self, job: _Job):
        self._job = job

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._job.out.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise item.error
        return item

    def cancel(self) -> None:
        self._job.cancelled = True

    async def __aenter__(self) -> "JobStream[T]":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class Engine:
    """Least attained service first over admitted jobs, on one daemon thread; see the module's
    invariants."""

    def __init__(self, max_queue: int, retry_after: int = 5):
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.steps = 0  # steps run since start (for /metrics)
        # admitted jobs waiting for their next step: (service, order, job), least service first
        self._jobs: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()  # ties go to the job that waited longest
        self._admitted = 0
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="whisperlite-engine", daemon=True)
        self._thread.start()

    @property
    def admitted(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    def submit(self, work: Iterable[T]) -> JobStream[T]:
        """Admit `work` (its iterator is created here, advanced on the engine thread), or raise
        QueueFull. Must be called on the event loop that will read the stream."""
        job = _Job(iter(work), asyncio.get_running_loop())
        with self._cv:
            if self._closed:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if self._admitted >= self.max_queue:
                raise QueueFull(self.retry_after)
            self._admitted += 1
            heapq.heappush(self._jobs, (0.0, next(self._order), job))
            self._cv.notify()
        return JobStream(job)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` as a one-step job on the engine thread (e.g. loading a model)."""
        async with self.submit(_once(fn, args)) as stream:
            async for result in stream:
                return result
        raise AssertionError("a one-step job ended without its result")

    def close(self) -> None:
        """Stop after the current step; waiting jobs are closed unrun."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if self._closed:
                    for _, _, job in self._jobs:
                        self._end(job, _Failed(ApiError(503, "the server is shutting down")))
                    self._jobs.clear()
                    return
                job = heapq.heappop(self._jobs)[2]
            if job.cancelled:
                self._end(job, _END)
                continue
            start = time.perf_counter()
            try:
                item = next(job.work)
            except StopIteration:
                self._end(job, _END)
                continue
            except BaseException as e:  # noqa: BLE001 (handed to the request that asked)
                self._end(job, _Failed(e))
                continue
            self.steps += 1
            job.service += time.perf_counter() - start
            job.put(item)
            with self._cv:
                heapq.heappush(self._jobs, (job.service, next(self._order), job))

    def _end(self, job: _Job, last: Any) -> None:
        """Close the job's iterator here, on the engine thread (its `finally` may use a model)."""
        close = getattr(job.work, "close", None)
        if close is not None:
            try:
                close()
            except Exception as e:  # noqa: BLE001
                last = _Failed(e)
        # out of the count before the request hears the end: the request may submit its next
        # job at once (an LLM slot handed on), which must not find this one still counted
        with self._cv:
            self._admitted -= 1
        job.put(last)


def _once(fn: Callable[..., T], args: tuple) -> Iterator[T]:
    yield fn(*args)
