"""whisper.cpp's stereo diarization (`-di`): which channel of a two-channel recording is louder
over each segment and word.

whisper.cpp (examples/cli/cli.cpp `estimate_diarization_speaker`) sums |sample| of the left
and of the right channel over the samples [t0·160, t1·160) of a segment (its times are
centiseconds; both ends clamped to [0, n - 1], n the input's samples) and says speaker 0
when the left sum is above 1.1 times the right one, 1 when the right sum is above 1.1 times
the left one, and ? otherwise. `ChannelEnergy` keeps those sums per centisecond as the
stereo stream is decoded, so a label costs two look-ups and memory grows by 16 bytes per
10 ms of input instead of holding the samples. The sums are float64 over 16-bit samples
(k/32768): exact, so every comparison comes out as whisper.cpp's.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import replace
from typing import Iterable, Iterator

import numpy as np

from whisperlite.transcription.results import Segment

HOP = 160  # samples per centisecond at 16 kHz: whisper.cpp's unit of time
RATIO = 1.1  # a channel this much louder than the other is the one speaking
LEFT, RIGHT, NEITHER = "SPEAKER_0", "SPEAKER_1", "SPEAKER_?"  # whisper.cpp's (speaker 0), (speaker 1), (speaker ?)


def which_channel(left: float, right: float) -> str:
    """whisper.cpp's decision from the two channels' sums of |sample|."""
    if left > RATIO * right:
        return LEFT
    if right > RATIO * left:
        return RIGHT
    return NEITHER


class ChannelEnergy:
    """Sums of |left| and |right| per centisecond of a stereo stream, fed in order (on the
    audio thread) and read while it is fed (on the decoding thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._starts: list[int] = []  # first centisecond of each block
        self._cums: list[np.ndarray] = []  # (m, 2): sums from the input's start through each centisecond
        self._tail = np.zeros((0, 2), np.float64)  # |samples| of the centisecond not yet complete
        self._done = 0  # complete centiseconds
        self._total = np.zeros(2, np.float64)
        self._last = np.zeros(2, np.float64)  # |last sample|
        self.samples = 0

    def mono(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stereo chunks (n, 2) as the mono samples the model hears (the channels' mean, as
        whisper.cpp mixes them), each fed here on the way; closing this closes `chunks`."""
        it = iter(chunks)
        try:
            for frames in it:
                self.feed(frames)
                yield np.ascontiguousarray((frames[:, 0] + frames[:, 1]) * np.float32(0.5))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def feed(self, frames: np.ndarray) -> None:
        if not len(frames):
            return
        mags = np.abs(frames.astype(np.float64))
        tail = np.concatenate([self._tail, mags]) if len(self._tail) else mags
        whole = len(tail) // HOP
        with self._lock:
            if whole:
                sums = tail[: whole * HOP].reshape(whole, HOP, 2).sum(axis=1)
                base = self._cums[-1][-1] if self._cums else np.zeros(2)
                self._starts.append(self._done)
                self._cums.append(base + np.cumsum(sums, axis=0))
                self._done += whole
            self._tail = tail[whole * HOP :].copy()
            self._total = self._total + mags.sum(axis=0)
            self._last = mags[-1]
            self.samples += len(frames)

    def _before(self, s: int) -> np.ndarray:
        """Sums over samples [0, s), s a multiple of HOP or the last sample fed (energy clamps to it)."""
        if s <= 0:
            return np.zeros(2)
        if s == self.samples - 1:
            return self._total - self._last
        f = s // HOP - 1  # the last whole centisecond before s
        b = bisect.bisect_right(self._starts, f) - 1
        return self._cums[b][f - self._starts[b]]

    def energy(self, t0: int, t1: int) -> tuple[float, float]:
        """Sums of |left| and |right| over the centiseconds [t0, t1), clamped as whisper.cpp
        clamps them (to the samples fed so far: a segment never ends after its audio)."""
        with self._lock:
            n = self.samples
            if n == 0:
                return 0.0, 0.0
            s0 = max(0, min(n - 1, t0 * HOP))
            s1 = max(0, min(n - 1, t1 * HOP))
            if s1 <= s0:
                return 0.0, 0.0
            left, right = self._before(s1) - self._before(s0)
        return float(left), float(right)

    def speaker(self, start: float, end: float) -> str:
        """The speaker of the seconds [start, end) of the input."""
        return which_channel(*self.energy(round(start * 100), round(end * 100)))


def label_segment(seg: Segment, energy: ChannelEnergy) -> Segment:
    """The segment with its speaker, and each of its words with its own."""
    words = [replace(w, speaker=energy.speaker(w.start, w.end)) for w in seg.words] if seg.words else seg.words
    return replace(seg, speaker=energy.speaker(seg.start, seg.end), words=words)


def label_segments(segments: Iterator[Segment], energy: ChannelEnergy) -> Iterator[Segment]:
    """Each segment labelled as it comes (the audio under it has been fed); closing this
    closes `segments` (and so the decoder)."""
    try:
        for seg in segments:
            yield label_segment(seg, energy)
    finally:
        close = getattr(segments, "close", None)
        if close is not None:
            close()

