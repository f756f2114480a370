"""The server's engine thread: round robin between jobs, a bounded queue, cancellation that
frees the slot, errors handed to the request that asked."""
import asyncio
import threading
import time

import pytest

from whisperlite.server.engine import Engine, QueueFull


def run(coro):
    return asyncio.run(coro)


def test_a_new_job_goes_ahead_of_one_that_has_run_long():
    """Least attained service first: a short job admitted while a long one runs takes its steps
    before the long one's next (it waits for the one step in progress), then the long one
    finishes."""
    order: list[str] = []

    def work(name: str, n: int, seconds: float):
        for i in range(n):
            time.sleep(seconds)
            order.append(f"{name}{i}")
            yield i

    async def main():
        engine = Engine(max_queue=4)
        long = engine.submit(work("long", 6, 0.02))
        first = await long.__anext__()
        await long.__anext__()
        short = engine.submit(work("short", 3, 0.0))
        results = await asyncio.gather(_all(long), _all(short))
        engine.close()
        return first, results

    first, (rest, short) = run(main())
    assert first == 0 and rest == [2, 3, 4, 5] and short == [0, 1, 2]
    at = order.index("short0")
    assert order[at : at + 3] == ["short0", "short1", "short2"]  # no long step between them
    assert order.index("short0") <= order.index("long3")  # at most the step in progress ran first


def test_jobs_that_have_run_alike_take_turns():
    """Two equal jobs alternate (neither waits for the other to finish)."""
    order: list[str] = []

    def work(name: str):
        for i in range(6):
            time.sleep(0.01)
            order.append(name)
            yield i

    async def main():
        engine = Engine(max_queue=4)
        gate = threading.Event()
        blocker = engine.submit(_waiting(gate))  # holds the thread until both are admitted
        a, b = engine.submit(work("a")), engine.submit(work("b"))
        gate.set()
        results = await asyncio.gather(_all(blocker), _all(a), _all(b))
        engine.close()
        return results

    _, a, b = run(main())
    assert a == b == list(range(6))
    assert order.index("b") < order.index("a") + 3 and order.index("a") < order.index("b") + 3
    assert "".join(order[:6]).count("a") in (2, 3, 4)  # both ran within the first six steps


def _waiting(gate: threading.Event):
    yield gate.wait()


async def _all(stream):
    return [x async for x in stream]


def test_full_queue_refuses_with_retry_after_and_frees_slots_when_jobs_end():
    async def main():
        engine = Engine(max_queue=2)
        first, second = engine.submit(range(2)), engine.submit(range(2))
        with pytest.raises(QueueFull) as refused:
            engine.submit(range(1))
        assert refused.value.status == 503 and "Retry-After" in refused.value.headers
        await _all(first)
        await _all(second)
        assert await _all(engine.submit(range(1))) == [0]
        assert engine.admitted == 0
        engine.close()

    run(main())


def test_cancelled_job_is_closed_on_the_engine_thread_before_its_next_step():
    closed_on: list[str] = []
    steps: list[int] = []

    def endless():
        try:
            i = 0
            while True:
                steps.append(i)
                yield i
                i += 1
        finally:
            closed_on.append(threading.current_thread().name)

    async def main():
        engine = Engine(max_queue=1)
        async with engine.submit(endless()) as stream:
            async for i in stream:
                if i == 2:
                    break
        while engine.admitted:  # the slot frees once the engine has closed the job
            await asyncio.sleep(0.01)
        ran = len(steps)
        await asyncio.sleep(0.05)
        engine.close()
        return ran

    ran = run(main())
    assert closed_on == ["whisperlite-engine"]
    assert len(steps) == ran  # no step after the close


def test_error_in_a_step_reaches_its_request_and_the_engine_goes_on():
    def broken():
        yield 1
        raise ValueError("bad step")

    async def main():
        engine = Engine(max_queue=2)
        stream = engine.submit(broken())
        assert await stream.__anext__() == 1
        with pytest.raises(ValueError, match="bad step"):
            await stream.__anext__()
        assert await engine.call(sum, [1, 2]) == 3
        engine.close()

    run(main())
