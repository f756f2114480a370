"""How many physical cores this process may use: the default thread count.

A second hardware thread of a core shares its vector units, so for these compute-bound
kernels it adds contention, not speed (as whisper.cpp and faster-whisper, which default
to physical cores too).
"""
from __future__ import annotations

import os
from functools import lru_cache


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Cores (not hardware threads) among the CPUs this process may run on; at least 1.

    Linux reads each CPU's hardware-thread siblings from sysfs; elsewhere every logical
    CPU counts as a core.
    """
    usable = _usable_cpus()
    cores: set[str] = set()
    for cpu in usable:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as fh:
                cores.add(fh.read().strip())  # the same list for every thread of one core
        except OSError:
            return max(len(usable), 1)
    return max(len(cores), 1)
