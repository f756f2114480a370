"""The server's engine thread: round robin between jobs, a bounded queue, cancellation that
frees the slot, errors handed to the request that asked."""
import asyncio
import threading

import pytest

from whisperlite.server.engine import Engine, QueueFull


def run(coro):
    return asyncio.run(coro)


def test_jobs_take_turns_one_step_each():
    order: list[str] = []

    def work(name: str, n: int):
        for i in range(n):
            order.append(f"{name}{i}")
            yield i

    async def main():
        engine = Engine(max_queue=4)
        gate = threading.Event()
        blocker = engine.submit(_waiting(gate))  # holds the thread until both are admitted
        a, b = engine.submit(work("a", 3)), engine.submit(work("b", 2))
        gate.set()
        results = await asyncio.gather(_all(blocker), _all(a), _all(b))
        engine.close()
        return results

    _, a, b = run(main())
    assert a == [0, 1, 2] and b == [0, 1]
    assert order == ["a0", "b0", "a1", "b1", "a2"]


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
