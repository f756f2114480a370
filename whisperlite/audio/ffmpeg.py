"""Any ffmpeg-readable input → 16 kHz mono float32, streamed in chunks.

The decoder process writes s16le PCM to a pipe (`ffmpeg -ac 1 -ar 16000 -f s16le`); we read
it in fixed-size chunks so that a two-hour file never sits in memory as one buffer.
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, TypeVar

import ffmpeg
import numpy as np

from whisperlite.core.errors import AudioDecodeError
from whisperlite.core.profiling import Profile

T = TypeVar("T")

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop
CHUNK_LENGTH = 30  # seconds per Whisper window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 (10 ms per frame)
TOKENS_PER_SECOND = FRAMES_PER_SECOND // 2  # 50: the encoder's stride-2 conv halves the frames


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """ffmpeg on PATH, else the binary shipped in the imageio-ffmpeg wheel."""
    found = os.environ.get("WHISPERLITE_FFMPEG") or shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class DecodeReport:
    """What ffmpeg said while decoding: filled when the stream ends."""

    samples: int = 0
    warning: str | None = None


def _check_input(path: str) -> None:
    if not os.path.exists(path):
        raise AudioDecodeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioDecodeError(f"{path}: is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(f"{path}: file is empty")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(f"{path}: permission denied")


def _ffmpeg_message(stderr: bytes, path: str) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = " ".join(lines).lower()
    if "does not contain any stream" in text or "matches no streams" in text or "output file does not contain" in text:
        return f"{path}: no audio stream in this file"
    if "invalid data found" in text or "could not find codec" in text or "unknown format" in text:
        return f"{path}: not an audio or video file ffmpeg can read"
    detail = lines[-1] if lines else "ffmpeg failed"
    return f"{path}: cannot decode audio ({detail})"


def stream_audio(
    path: str, chunk_samples: int = N_SAMPLES, report: DecodeReport | None = None
) -> Iterator[np.ndarray]:
    """Yield float32 mono 16 kHz chunks of `chunk_samples` (the last may be shorter).

    Raises AudioDecodeError (one readable line) when nothing decodes. Damage after audio has
    decoded (a recording cut off mid-stream) is reported in `report.warning` instead: the
    audio up to that point is still worth transcribing.
    """
    path = os.fspath(path)
    _check_input(path)
    report = report if report is not None else DecodeReport()
    cmd = (
        ffmpeg.input(path)
        .output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=SAMPLE_RATE, map="0:a:0")
        .global_args("-nostdin", "-hide_banner", "-v", "error")
        .compile(cmd=ffmpeg_exe())
    )
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise AudioDecodeError(f"cannot run ffmpeg ({e})") from None
    err_chunks: list[bytes] = []
    # ffmpeg can fill the stderr pipe while we block on stdout: drain it on a thread.
    drain = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    drain.start()
    nbytes = chunk_samples * 2
    finished = False
    try:
        while True:
            buf = proc.stdout.read(nbytes)
            if not buf:
                finished = True
                break
            if len(buf) % 2:
                buf = buf[:-1]
            report.samples += len(buf) // 2
            yield np.frombuffer(buf, dtype="<i2").astype(np.float32) / 32768.0
    finally:
        if not finished:
            # The consumer stopped early: don't wait for ffmpeg to finish decoding.
            proc.kill()
        proc.stdout.close()
        rc = proc.wait()
        drain.join()
    stderr = b"".join(err_chunks)
    if rc != 0 and report.samples == 0:
        raise AudioDecodeError(_ffmpeg_message(stderr, path))
    if report.samples == 0:
        raise AudioDecodeError(f"{path}: no audio decoded (empty or no audio stream)")
    if stderr.strip():
        first = stderr.decode("utf-8", "replace").strip().splitlines()[0]
        report.warning = f"{path}: damaged or truncated audio, transcribing what decoded ({first})"


def load_audio(path: str, report: DecodeReport | None = None) -> np.ndarray:
    """The whole input as one float32 array: for short files and tests."""
    chunks = list(stream_audio(path, report=report))
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def probe_duration(path: str) -> float | None:
    """Container duration in seconds, or None if ffprobe-less ffmpeg cannot tell cheaply."""
    try:
        out = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", path], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("Duration:") and "N/A" not in line.split(",")[0]:
            h, m, s = line.split(",")[0].split()[1].split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None


_END = object()
# How often a producer blocked on a full queue checks whether the consumer has gone away.
_POLL_SECONDS = 0.1


def prefetch(items: Iterable[T], depth: int = 1, profile: Profile | None = None) -> Iterator[T]:
    """`items`, produced on a background thread at most `depth` ahead of the consumer.

    Audio decoding (ffmpeg's pipe) and voice activity detection (Silero's BLAS products and
    nogil numba loop) release the GIL, so they run on the second core while the main thread
    encodes and decodes.
    An error raised while producing is raised here, in the consumer, at the point it
    occurred in the sequence. When the consumer stops early the producer thread stops and
    closes `items` (killing ffmpeg) before this generator finishes: no thread or process
    outlives it. With a `profile`, time the consumer spends waiting is stage "audio wait".
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        it = iter(items)
        try:
            with profile.background() if profile is not None else nullcontext():
                for item in it:
                    if not put((item, None)):
                        return
            put((_END, None))
        except BaseException as e:  # handed to the consumer, which raises it
            put((_END, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="whisperlite-audio", daemon=True)
    worker.start()
    try:
        while True:
            mark = profile.start() if profile is not None else None
            item, error = q.get()
            if profile is not None:
                profile.stop("audio wait", mark)
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join()

