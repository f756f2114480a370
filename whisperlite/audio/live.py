"""Live audio sources as 16 kHz mono float32: the microphone (ffmpeg's device input for the
platform), raw PCM on a pipe, or a file played at real-time pace.

Each source is read on a background thread into a queue, so a decoder that falls behind
takes everything that arrived meanwhile in one piece (`LiveAudio.take`) instead of working
through a backlog of small chunks.
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from typing import BinaryIO, Callable, Iterator

import numpy as np

from whisperlite.audio.ffmpeg import SAMPLE_RATE, AudioUrl, check_input_file, ffmpeg_exe, stream_audio
from whisperlite.core.errors import AudioDecodeError

PCM_FORMATS = {"s16le": ("<i2", 32768.0), "f32le": ("<f4", 1.0)}
READ_SECONDS = 0.1  # a source hands on audio in pieces this long: the latency it adds
_END = None


def device_format() -> tuple[str, str]:
    """ffmpeg's capture device input for this platform and its default device."""
    if sys.platform == "darwin":
        return "avfoundation", ":0"  # no video, the first audio device
    if sys.platform == "win32":
        return "dshow", ""  # dshow has no default: a device must be named
    return "pulse", "default"


def list_devices() -> list[str]:
    """The capture devices ffmpeg sees (its own listing's lines); a one-line AudioDecodeError
    when it finds none."""
    fmt, _ = device_format()
    if fmt == "pulse":
        cmds = [[ffmpeg_exe(), "-hide_banner", "-sources", kind] for kind in ("pulse", "alsa")]
    elif fmt == "avfoundation":
        cmds = [[ffmpeg_exe(), "-hide_banner", "-f", "avfoundation", "-list_devices", "true", "-i", ""]]
    else:
        cmds = [[ffmpeg_exe(), "-hide_banner", "-f", "dshow", "-list_devices", "true", "-i", "dummy"]]
    found, why = [], []
    for cmd in cmds:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=20, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AudioDecodeError(f"cannot run ffmpeg ({e})") from None
        lines = [ln.rstrip() for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        # `-sources` lists devices as "  name [description]" under an "Auto-detected sources" header
        devices = [ln.strip() for ln in lines if ln.startswith(("  ", "*"))] if fmt == "pulse" else \
            [ln for ln in lines if "(audio)" in ln or "AVFoundation audio" in ln or '"' in ln]
        if devices:
            found += [f"{cmd[3] if fmt == 'pulse' else fmt}: {d}" for d in devices]
        else:
            why.append(f"{cmd[3] if fmt == 'pulse' else fmt}: {lines[-1] if lines else 'nothing listed'}")
    if not found:
        raise AudioDecodeError(f"no audio capture devices found ({'; '.join(why)})")
    return found


class LiveAudio:
    """Samples from a producer (a generator of float32 chunks) on a background thread.

    `take()` waits for audio and returns everything that has arrived since the last call,
    or None once the source has ended; a source's error is raised there. `close()` stops
    the producer (and the process it reads from)."""

    def __init__(self, chunks: Iterator[np.ndarray], stop: Callable[[], None] = lambda: None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._chunks = chunks
        self._stop = stop
        self._closed = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="whisperlite-live", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                if self._closed.is_set():
                    break
                self._queue.put((chunk, None))
            self._queue.put((_END, None))
        except BaseException as e:  # handed to the reader, which raises it
            self._queue.put((_END, e))
        finally:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    def take(self, timeout: float | None = None) -> np.ndarray | None:
        """Everything that arrived (waiting up to `timeout` seconds for the first piece: an
        empty array if none came); None at the end of the source."""
        if self._ended:
            return None
        parts = []
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                chunk, error = item
                if chunk is _END:
                    self._ended = True
                    if error is not None:
                        raise error
                    break
                parts.append(chunk)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if not parts:
            return None if self._ended else np.zeros(0, np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        self._closed.set()
        self._stop()
        self._thread.join(timeout=5)


def _read_pcm(stream: BinaryIO, dtype: str, scale: float, channels: int) -> Iterator[np.ndarray]:
    """Raw frames from `stream` as float32 mono, in pieces of about READ_SECONDS."""
    frame = np.dtype(dtype).itemsize * channels
    want = max(1, int(SAMPLE_RATE * READ_SECONDS)) * frame
    fd = stream.fileno()
    rest = b""
    while True:
        data = os.read(fd, want)
        if not data:
            return
        data = rest + data
        usable = len(data) - len(data) % frame
        rest = data[usable:]
        if usable:
            samples = np.frombuffer(data[:usable], dtype).astype(np.float32) / scale
            yield samples if channels == 1 else samples.reshape(-1, channels).mean(axis=1)


def _ffmpeg_pcm(args: list[str], name: str, stdin: int | BinaryIO | None) -> tuple[Iterator[np.ndarray], Callable[[], None]]:
    """ffmpeg's output for input `args` as 16 kHz mono s16le, read in small pieces; a
    one-line AudioDecodeError naming `name` when it ends without any audio."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-v", "error", *(["-nostdin"] if stdin is None else []),
           "-fflags", "nobuffer", *args, "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-flush_packets", "1",
           "pipe:1"]
    try:
        proc = subprocess.Popen(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise AudioDecodeError(f"cannot run ffmpeg ({e})") from None
    errors: list[bytes] = []
    threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True).start()

    def chunks() -> Iterator[np.ndarray]:
        got = 0
        try:
            for samples in _read_pcm(proc.stdout, "<i2", 32768.0, 1):
                got += len(samples)
                yield samples
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if not got and rc != 0:
            time.sleep(0.05)  # the stderr reader's last read
            lines = b"".join(errors).decode("utf-8", "replace").strip().splitlines()
            raise AudioDecodeError(f"{name}: {lines[-1].strip() if lines else f'ffmpeg exited with status {rc}'}")

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()

    return chunks(), stop


def microphone(device: str | None = None) -> LiveAudio:
    """The capture device `device` (None: the platform's default) through ffmpeg."""
    fmt, default = device_format()
    name = device if device is not None else default
    if not name:
        raise AudioDecodeError(f"{fmt}: no default capture device; name one with --device "
                               "(see --list-devices)")
    if fmt == "dshow" and not name.startswith("audio="):
        name = f"audio={name}"
    chunks, stop = _ffmpeg_pcm(["-f", fmt, "-i", name], f"cannot open microphone '{name}' through ffmpeg -f {fmt}", None)
    return LiveAudio(chunks, stop)


def pcm_pipe(stream: BinaryIO, fmt: str = "s16le", rate: int = SAMPLE_RATE, channels: int = 1) -> LiveAudio:
    """Raw PCM frames (`fmt` s16le or f32le, `rate` Hz, `channels` interleaved) from a pipe,
    resampled and mixed down by ffmpeg when they are not 16 kHz mono already."""
    if fmt not in PCM_FORMATS:
        raise AudioDecodeError(f"PCM format '{fmt}': choose from {', '.join(PCM_FORMATS)}")
    if rate <= 0 or channels <= 0:
        raise AudioDecodeError(f"PCM input needs a rate and channels > 0 (got {rate} Hz, {channels} channels)")
    if rate == SAMPLE_RATE:
        dtype, scale = PCM_FORMATS[fmt]
        return LiveAudio(_read_pcm(stream, dtype, scale, channels))
    chunks, stop = _ffmpeg_pcm(["-f", fmt, "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0"],
                               "standard input", stream)
    return LiveAudio(chunks, stop)


def file_chunks(path: str | AudioUrl, seconds: float = 1.0) -> Iterator[np.ndarray]:
    """A file's (or an http(s) URL's) samples in pieces of `seconds` (as fast as they decode)."""
    if not isinstance(path, AudioUrl):
        check_input_file(path)
    return stream_audio(path, chunk_samples=int(seconds * SAMPLE_RATE))


def paced(chunks: Iterator[np.ndarray], clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[np.ndarray]:
    """`chunks` handed on no faster than real time: each once its last sample is due."""
    start, sent = clock(), 0
    for chunk in chunks:
        sent += len(chunk)
        wait = start + sent / SAMPLE_RATE - clock()
        if wait > 0:
            sleep(wait)
        yield chunk


def realtime_file(path: str | AudioUrl) -> LiveAudio:
    """A file played at real-time pace, as a microphone would give it."""
    return LiveAudio(paced(file_chunks(path, READ_SECONDS)))
