"""One switch for every thread the kernels use.

Measured on a shared 2-core machine: OpenBLAS's own thread pool spins while it waits and
collapses under outside load (a 1536x384 product took 7-12 ms instead of 0.2 ms at 2
threads; the whole encoder ran 1.8x slower with 2 BLAS threads than with 1). So BLAS runs
single-threaded, and the big products are split by rows over a small pool of Python
threads (numpy releases the GIL inside BLAS and ufuncs), whose idle workers block instead
of spinning. numba kernels use numba's own pool (OpenMP, passive waiting: see _env.py).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numba
from threadpoolctl import threadpool_limits

from whisperlite.core.cpu import physical_cores

_state: dict = {"threads": None, "limiter": None, "pool": None}
_local = threading.local()  # a thread's own count (one_thread_here), else the shared one


def set_threads(n: int | None) -> int:
    """Use `n` threads (None: the physical cores) for numba kernels and split products. Returns the count."""
    # numba cannot exceed the pool size fixed at import (the core count unless
    # NUMBA_NUM_THREADS says otherwise); the row-split pool gets the same count.
    limit = numba.config.NUMBA_NUM_THREADS
    n = min(physical_cores(), limit) if not n or n <= 0 else min(n, limit)
    numba.set_num_threads(n)
    # threadpoolctl keeps the limit for the life of the process when not used as a context.
    _state["limiter"] = threadpool_limits(limits=1, user_api="blas")
    if _state["threads"] != n:
        if _state["pool"] is not None:
            _state["pool"].shutdown(wait=True)
        _state["pool"] = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="whisperlite") if n > 1 else None
        _state["threads"] = n
    return n


def get_threads() -> int:
    return getattr(_local, "threads", None) or _state["threads"] or numba.get_num_threads()


def one_thread_here() -> None:
    """Kernels called from this thread run on it alone, for a background worker that is
    itself the use of a spare core: its products would otherwise queue on the shared pool
    behind the main thread's and slow both down (numba's count is per thread already)."""
    _local.threads = 1
    numba.set_num_threads(1)


def one_numba_thread(task: Callable[[int], None], i: int) -> None:
    """task(i) with numba kernels on this thread alone (restored after): for tasks that are
    themselves one share of a split over the pool, whose kernels would otherwise each wake
    the whole numba pool."""
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        task(i)
    finally:
        numba.set_num_threads(n)


def run_parallel(task: Callable[[int], None], n_tasks: int) -> None:
    """Run task(0 … n_tasks-1) over the pool and the calling thread; re-raises the first error."""
    pool = _state["pool"]
    if pool is None or n_tasks <= 1:
        for i in range(n_tasks):
            task(i)
        return
    futures = [pool.submit(task, i) for i in range(1, n_tasks)]
    task(0)
    for f in futures:
        f.result()
