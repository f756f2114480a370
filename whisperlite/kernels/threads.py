"""One switch for every thread pool the kernels use (numba and BLAS)."""
from __future__ import annotations

import numba
from threadpoolctl import threadpool_limits

_state = {"threads": None, "limiter": None}


def set_threads(n: int | None) -> int:
    """Use `n` threads for numba kernels and BLAS (None: all cores). Returns the count used."""
    # numba cannot exceed the pool size fixed at import (the core count unless
    # NUMBA_NUM_THREADS says otherwise); BLAS gets the same count so the two never
    # oversubscribe the cores against each other.
    limit = numba.config.NUMBA_NUM_THREADS
    n = limit if not n or n <= 0 else min(n, limit)
    numba.set_num_threads(n)
    # threadpoolctl keeps the limit for the life of the process when not used as a context.
    _state["limiter"] = threadpool_limits(limits=n, user_api="blas")
    _state["threads"] = n
    return n


def get_threads() -> int:
    return _state["threads"] or numba.get_num_threads()
