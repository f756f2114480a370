"""The default thread count: physical cores, for numba and the row-split BLAS pool together."""
import os

import numba

from whisperlite.core.cpu import physical_cores
from whisperlite.kernels import get_threads, set_threads


def test_physical_cores_within_usable_cpus():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= physical_cores() <= usable


def test_default_threads_are_physical_cores_and_t_is_honoured():
    before = get_threads()
    try:
        assert set_threads(None) == min(physical_cores(), numba.config.NUMBA_NUM_THREADS)
        assert set_threads(1) == 1 and numba.get_num_threads() == 1 and get_threads() == 1
    finally:
        set_threads(before)
