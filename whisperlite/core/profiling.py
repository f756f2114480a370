"""Wall and CPU time per stage of a transcription: the `--profile` breakdown.

Audio decoding and voice activity detection run on a background thread while the main
thread encodes and decodes (and word alignment, with more than one thread, while it decodes
the next window), so process CPU time alone would charge their work to whatever the main
thread is doing. A stage timed on the main thread is charged the process's CPU time less
that of the registered background threads (so it keeps the kernel threads it starts); a
stage timed on a background thread is charged that thread's own CPU time and is reported
apart from the main thread's wall time, which it overlaps.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, TypeVar

# Linux and the BSDs can read another thread's CPU clock; elsewhere background CPU time
# cannot be told apart and stays in the main-thread stages.
_thread_clock = getattr(time, "pthread_getcpuclockid", None)
T = TypeVar("T")


@dataclass
class Stage:
    wall: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    items: int = 0  # what `unit` counts: windows, tokens, frames …
    unit: str = ""
    background: bool = False  # timed on a background thread: overlaps the main thread


# Report order and labels; a name "parent/child" is part of "parent" and printed indented.
LABELS = {
    "probe": "duration probe (ffmpeg -i)",
    "audio": "audio decode (ffmpeg pipe)",
    "vad": "voice activity (Silero)",
    "audio wait": "waiting for audio",
    "language": "language detection",
    "mel": "log-mel",
    "encode": "encoder",
    "decode": "decoding (with fallback)",
    "decode/cross": "cross-attention K/V",
    "decode/prompt": "prompt pass",
    "decode/steps": "token steps (decoder)",
    "decode/logic": "decoding logic",
    "words": "word timestamps (DTW)",
    "words wait": "waiting for word timestamps",
    "write": "writing outputs",
}


class Profile:
    """Accumulates `Stage`s by name; `timings` mirrors their wall seconds (TranscriptionInfo.timings)."""

    def __init__(self, timings: dict[str, float] | None = None):
        self.stages: dict[str, Stage] = {}
        self.timings = timings if timings is not None else {}
        self._lock = threading.Lock()
        self._background: dict[int, int] = {}  # thread ident → its CPU clock id
        self._background_done = 0.0  # CPU seconds of background threads that have ended

    def __getstate__(self) -> dict:
        # Results travel from worker processes: the measurements go, the thread state stays.
        return {"stages": self.stages, "timings": self.timings}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["timings"])
        self.stages = state["stages"]

    @contextmanager
    def background(self) -> Iterator[None]:
        """Around the whole life of a background thread's work (run on that thread)."""
        ident = threading.get_ident()
        clock = _thread_clock(ident) if _thread_clock else None
        if clock is not None:
            with self._lock:
                self._background[ident] = clock
        try:
            yield
        finally:
            if clock is not None:
                with self._lock:
                    del self._background[ident]
                    self._background_done += time.clock_gettime(clock)

    def _on_background(self) -> bool:
        return threading.get_ident() in self._background

    def _cpu(self) -> float:
        with self._lock:
            if self._on_background():
                return time.thread_time()
            others = sum(time.clock_gettime(c) for c in self._background.values())
            return time.process_time() - others - self._background_done

    def start(self) -> tuple[float, float]:
        """A start mark for `stop` (cheaper than a context manager in per-token loops)."""
        return time.perf_counter(), self._cpu()

    def stop(self, name: str, mark: tuple[float, float], items: int = 0, unit: str = "") -> None:
        wall, cpu = time.perf_counter() - mark[0], self._cpu() - mark[1]
        s = self.stages.get(name)
        if s is None:
            s = self.stages[name] = Stage(unit=unit, background=self._on_background())
        s.wall += wall
        s.cpu += cpu
        s.calls += 1
        s.items += items
        self.timings[name] = s.wall

    @contextmanager
    def stage(self, name: str, items: int = 0, unit: str = "") -> Iterator[None]:
        mark = self.start()
        try:
            yield
        finally:
            self.stop(name, mark, items, unit)

    def ordered(self) -> list[tuple[str, Stage]]:
        """Stages in report order: pipeline order, each parent followed by its parts."""
        names = [n for n in LABELS if n in self.stages] + sorted(n for n in self.stages if n not in LABELS)
        out = []
        for name in names:
            parent, _, child = name.partition("/")
            if child and parent in self.stages:
                continue  # listed under its parent
            out.append((name, self.stages[name]))
            out += [(n, self.stages[n]) for n in names if n.startswith(name + "/")]
        return out

    def report(self, audio_seconds: float | None, wall: float, cpu: float) -> str:
        """A table of the stages: wall and CPU seconds, share of the wall time, counts, ms per item.

        `wall` and `cpu` are the totals of the run being reported (from its start to its end).
        """
        lines = [f"{'stage':<30} {'wall s':>8} {'cpu s':>8} {'% wall':>7} {'count':>14} {'ms/item':>9}"]

        def row(label: str, s: Stage) -> None:
            count = f"{s.items} {s.unit}" if s.unit else (f"{s.calls} calls" if s.calls else "")
            per = f"{1e3 * s.wall / s.items:9.3f}" if s.items else ""
            share = 100 * s.wall / wall if wall > 0 else 0.0
            lines.append(f"{label:<30} {s.wall:8.2f} {s.cpu:8.2f} {share:7.1f} {count:>14} {per}")

        main_wall = main_cpu = background_cpu = 0.0
        stages = self.ordered()
        for i, (name, s) in enumerate(stages):
            parent, _, child = name.partition("/")
            if child and parent in self.stages:
                row("  " + LABELS.get(name, child), s)
                if i + 1 == len(stages) or not stages[i + 1][0].startswith(parent + "/"):  # its last part
                    kids = [k for n, k in stages if n.startswith(parent + "/")]
                    p = self.stages[parent]
                    row("  rest", Stage(p.wall - sum(k.wall for k in kids), p.cpu - sum(k.cpu for k in kids)))
                continue
            row(LABELS.get(name, name), s)
            if s.background:
                background_cpu += s.cpu
            else:
                main_wall += s.wall
                main_cpu += s.cpu
        row("other (main thread)", Stage(wall - main_wall, cpu - main_cpu - background_cpu, 0, 0))
        speed = f", {audio_seconds / wall:.1f}x real time" if audio_seconds and wall > 0 else ""
        audio = f"{audio_seconds:.1f} s of audio in " if audio_seconds else ""
        lines.append(f"total: {audio}{wall:.2f} s wall, {cpu:.2f} s CPU{speed}")
        return "\n".join(lines)


def timed(items: Iterable[T], profile: Profile, name: str, unit: str = "") -> Iterator[T]:
    """`items`, with the time spent producing each one charged to stage `name` (one item each)."""
    it = iter(items)
    try:
        while True:
            mark = profile.start()
            try:
                item = next(it)
            except StopIteration:
                return
            profile.stop(name, mark, 1, unit)
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
