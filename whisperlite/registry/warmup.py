"""Compile a model's kernels once, up front, with a notice and, on a terminal, a live count.

numba compiles a kernel on its first call and caches it on disk. Left to themselves those
compiles land inside the first window or the first generated token: a silent stall of
minutes on a small machine, and a first speed report that is wrong by orders of magnitude.
So a model runs a few small calls that reach every kernel it will use before any timing
starts; a marker file per source version and model kind records that the cache is warm.
A first run compiles for a minute or more, so on a terminal one line counts the kernels
compiled and names the part of the model being reached (`stage`), redrawn in place.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

from gguf import GGMLQuantizationType as QType
from numba.core import event

from whisperlite.core import env as _env
from whisperlite.kernels import QTensor, Weight

# Notices for the user (the CLI shows them on stderr; elsewhere logging's default does).
log = logging.getLogger("whisperlite")

REDRAW_SECONDS = 0.5  # how often the live line is redrawn


def _source_digest() -> str:
    """Digest of the package's sources and where they are: kernels change between commits of
    one version number, and numba files its cache by the sources' directory, so the same
    sources installed elsewhere (a checkout and its `pip install .`) compile again."""
    package = Path(__file__).resolve().parents[1]  # the whole whisperlite package
    h = hashlib.sha1(str(package).encode())
    for f in sorted(package.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


class _Progress:
    """Kernels compiled so far (numba's outermost compile events: a kernel's callees compile
    inside it and are not counted again) and the warm-up's current stage, drawn as one line
    on `stream` every REDRAW_SECONDS while the warm-up runs."""

    def __init__(self, stream: TextIO | None, stages: int | None):
        self.stream, self.stages = stream, stages
        self.compiled = self.depth = self.stage_no = 0
        self.stage_name = ""
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._drawer: threading.Thread | None = None

    def stage(self, name: str) -> None:
        self.stage_no += 1
        self.stage_name = name

    def line(self) -> str:
        at = f", {self.stage_no}/{self.stages}" if self.stages else ""
        at += f" ({self.stage_name})" if self.stage_name else ""
        return (f"whisperlite: compiling kernels: {self.compiled} compiled{at}, "
                f"{time.perf_counter() - self.t0:.0f} s")

    def __enter__(self) -> "_Progress":
        self._listener = _CompileCounter(self)
        event.register("numba:compile", self._listener)
        if self.stream is not None:
            self._drawer = threading.Thread(target=self._draw, name="whisperlite-compile-progress", daemon=True)
            self._drawer.start()
        return self

    def __exit__(self, *exc) -> None:
        event.unregister("numba:compile", self._listener)
        self._stop.set()
        if self._drawer is not None:
            self._drawer.join()
            self.stream.write("\r\x1b[K")  # the live line gives way to the closing notice
            self.stream.flush()

    def _draw(self) -> None:
        while not self._stop.wait(REDRAW_SECONDS):
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()


class _CompileCounter(event.Listener):
    """numba's compile events, counted into a _Progress (compiles of callees nest inside
    their caller's and count as part of it)."""

    def __init__(self, progress: _Progress):
        self.progress = progress

    def on_start(self, ev: event.Event) -> None:
        self.progress.depth += 1

    def on_end(self, ev: event.Event) -> None:
        p = self.progress
        p.depth -= 1
        p.compiled += p.depth == 0


_active: list[_Progress] = []


def stage(name: str) -> None:
    """Name the part of a model the warm-up reaches next (shown in the live line)."""
    if _active:
        _active[-1].stage(name)


def _live_stream() -> TextIO | None:
    """stderr when notices go to a terminal there, else None (no line redrawn in a log)."""
    err = sys.stderr
    return err if log.isEnabledFor(logging.WARNING) and err is not None and err.isatty() else None


@contextlib.contextmanager
def first_use(key: str, stages: int | None = None) -> Iterator[bool]:
    """Whether the kernels of one kind of model (`key`) still have to compile: if so (True),
    the block's calls that reach them are reported on stderr (a notice, the live line, the
    seconds taken; `stages` parts announced through `stage`) and, when it completes, the
    cache is marked warm for these sources."""
    import numba

    marker = Path(_env.CACHE_DIR) / "numba" / f".warm-{_source_digest()}-{numba.__version__}-{key}"
    if marker.exists():
        yield False
        return
    log.warning("whisperlite: compiling kernels for first use (cached afterwards)…")
    with _Progress(_live_stream(), stages) as progress:
        _active.append(progress)
        try:
            yield True
        finally:
            _active.pop()
    log.warning("whisperlite: kernels compiled in %.0f s", time.perf_counter() - progress.t0)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # read-only cache: numba recompiles each run anyway, the notice stays honest


def compile_once(key: str, warm: Callable[[], None], stages: int | None = None) -> None:
    """Run `warm` (calls that reach the kernels of one kind of model, `key`) unless an
    earlier run of these sources already has, reporting the compile (see `first_use`)."""
    with first_use(key, stages) as cold:
        if cold:
            warm()


def weight_types(weights: Iterable[Weight]) -> str:
    """The weights' types, as a key part: they decide which product kernels a model compiles."""
    return "+".join(sorted({QType(w.qtype).name if isinstance(w, QTensor) else str(w.dtype) for w in weights}))


def compile_elsewhere(target: str, *args: str) -> subprocess.Popen | None:
    """A process that runs `target(*args)` ("package.module:function", string arguments) for
    the kernels it compiles into numba's disk cache, or None if no process can be started.

    It imports this very package: numba files its cache by the sources' directory, and
    `python -c` would import a `whisperlite` folder in the working directory first (a
    checkout after `pip install .`), whose kernels this process would never find.
    Its stdin is a pipe this process never writes to: when this process ends, however it
    ends (kill -9 too), the helper reads end-of-file and exits rather than compile for nobody.
    It reads the raw descriptor: a daemon thread blocked in sys.stdin's buffered reader
    aborts the interpreter at exit (it holds the buffer's lock)."""
    code = ("import os, sys, threading; "
            "threading.Thread(target=lambda: (os.read(0, 1), os._exit(1)), daemon=True).start(); "
            "sys.path.insert(0, sys.argv[1]); from whisperlite.registry.warmup import run; run(*sys.argv[2:])")
    package_root = str(Path(__file__).resolve().parents[2])
    try:
        return subprocess.Popen([sys.executable, "-c", code, package_root, target, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None  # no second process: this one compiles everything


def run(target: str, *args: str) -> None:
    """Call `target` ("package.module:function") with `args`."""
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)(*args)


def numba_cache_writable() -> bool:
    """Whether compiled kernels reach numba's disk cache: a helper's work reaches this
    process only through it."""
    d = os.environ.get("NUMBA_CACHE_DIR", "")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)
