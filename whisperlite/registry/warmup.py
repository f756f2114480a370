"""Compile a model's kernels once, up front, with a notice.

numba compiles a kernel on its first call and caches it on disk. Left to themselves those
compiles land inside the first window or the first generated token: a silent stall of
minutes on a small machine, and a first speed report that is wrong by orders of magnitude.
So a model runs a few small calls that reach every kernel it will use before any timing
starts; a marker file per source version and model kind records that the cache is warm.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable, Iterable

from gguf import GGMLQuantizationType as QType

from whisperlite.core import env as _env
from whisperlite.kernels import QTensor, Weight

# Notices for the user (the CLI shows them on stderr; elsewhere logging's default does).
log = logging.getLogger("whisperlite")


def _source_digest() -> str:
    """Digest of the package's sources and where they are: kernels change between commits of
    one version number, and numba files its cache by the sources' directory, so the same
    sources installed elsewhere (a checkout and its `pip install .`) compile again."""
    package = Path(__file__).resolve().parents[1]  # the whole whisperlite package
    h = hashlib.sha1(str(package).encode())
    for f in sorted(package.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def compile_once(key: str, warm: Callable[[], None]) -> None:
    """Run `warm` (calls that reach the kernels of one kind of model, `key`) unless an
    earlier run of these sources already has, reporting the compile on stderr."""
    import numba

    marker = Path(_env.CACHE_DIR) / "numba" / f".warm-{_source_digest()}-{numba.__version__}-{key}"
    if marker.exists():
        return
    log.warning("whisperlite: compiling kernels for first use (cached afterwards)…")
    t0 = time.perf_counter()
    warm()
    log.warning("whisperlite: kernels compiled in %.0f s", time.perf_counter() - t0)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # read-only cache: numba recompiles each run anyway, the notice stays honest


def weight_types(weights: Iterable[Weight]) -> str:
    """The weights' types, as a key part: they decide which product kernels a model compiles."""
    return "+".join(sorted({QType(w.qtype).name if isinstance(w, QTensor) else str(w.dtype) for w in weights}))
