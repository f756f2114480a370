"""Several numba builds of one Python function: a parallel and a serial one, say.

numba's cache names a compiled function's files after its module, qualified name and
first line, and keys their entries by signature, CPU and a hash of the bytecode, not by
the options it was compiled with. Two builds of one function with different options so
share their entries, and in later processes whichever was compiled first is loaded for
both: a serial build then launches numba's thread pool on every call (the one-token step
calls the serial builds), or a parallel build runs serially. `njit_variant` compiles a copy of the function under a qualified name
of its own, so that each build has its own cache files.
"""
from __future__ import annotations

import types
from collections.abc import Callable

import numba


def njit_variant(fn: Callable, variant: str, bind: dict | None = None, **options) -> Callable:
    """numba.njit(**options) of a copy of fn named `<fn's name>_<variant>` (same code and
    closure; its globals with `bind`'s names added)."""
    scope = {**fn.__globals__, **bind} if bind else fn.__globals__
    copy = types.FunctionType(fn.__code__, scope, f"{fn.__name__}_{variant}", fn.__defaults__, fn.__closure__)
    copy.__qualname__ = f"{fn.__qualname__}_{variant}"
    copy.__module__, copy.__doc__, copy.__kwdefaults__ = fn.__module__, fn.__doc__, fn.__kwdefaults__
    return numba.njit(**options)(copy)
