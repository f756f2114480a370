"""Progress of a batch in audio seconds: a tqdm bar on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Progress in audio seconds: a tqdm bar on a terminal, one plain line per input otherwise."""

    def __init__(self, total_audio: float, files: int, out: TextIO):
        self._out = out
        self._files = files
        self._finished = 0
        self._total = total_audio
        self._done = 0.0  # audio seconds counted so far (partial jobs included)
        self._seen: dict[tuple[int, int], float] = {}
        self._closed_inputs: set[int] = set()
        self._t0 = time.perf_counter()
        self._bar = None
        if files and _is_tty(out):
            from tqdm import tqdm

            self._bar = tqdm(total=round(total_audio, 1), unit="s", unit_scale=False, file=out, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]",
                             desc=f"0/{files} inputs")

    def update(self, key: tuple[int, int], seconds: float) -> None:
        """A job has transcribed `seconds` of its audio (reports may arrive late or out of order)."""
        if key[0] in self._closed_inputs:
            return
        delta = seconds - self._seen.get(key, 0.0)
        if delta > 0:
            self._seen[key] = seconds
            self._advance(delta)

    def file_done(self, index: int, n_parts: int, audio: float, path: str, status: str, wall: float) -> None:
        counted = sum(self._seen.pop((index, part), 0.0) for part in range(n_parts))
        self._closed_inputs.add(index)
        self._finished += 1
        self._advance(audio - counted)
        if self._bar is not None:
            self._bar.set_description(f"{self._finished}/{self._files} inputs", refresh=True)
            return
        elapsed = time.perf_counter() - self._t0
        rate = self._done / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self._done / self._total if self._total else 100.0
        eta = f", ETA {fmt_duration(max(0.0, self._total - self._done) / rate)}" if rate > 0 and self._finished < self._files else ""
        print(f"[{self._finished}/{self._files}] {status} {path} ({audio:.1f} s audio, {wall:.1f} s) "
              f"{pct:.0f}% of audio{eta}", file=self._out, flush=True)

    def _advance(self, delta: float) -> None:
        self._done += delta
        if self._done > self._total:  # durations probed up front can be short or unknown
            self._total = self._done
            if self._bar is not None:
                self._bar.total = round(self._total, 1)
        if self._bar is not None:
            self._bar.update(delta)

    def write_err(self, line: str) -> None:
        if self._bar is not None:
            self._bar.clear()
        print(line, file=sys.stderr, flush=True)
        if self._bar is not None:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
