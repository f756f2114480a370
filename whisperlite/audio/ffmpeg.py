"""Any ffmpeg-readable input → 16 kHz mono float32, streamed in chunks.

The decoder process writes s16le PCM to a pipe (`ffmpeg -ac 1 -ar 16000 -f s16le`); we read
it in fixed-size chunks so that a two-hour file never sits in memory as one buffer. Inputs
are paths, bytes or binary file objects (piped into ffmpeg), or samples already decoded.
"""
from __future__ import annotations

import errno
import io
import os
import queue
import re
import shutil
import stat
import subprocess
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO, Iterable, Iterator, TypeVar, Union

import numpy as np

from whisperlite.core.errors import AudioDecodeError
from whisperlite.core.profiling import Profile

T = TypeVar("T")


@dataclass(frozen=True)
class AudioUrl:
    """An http or https URL ffmpeg fetches (`audio_url` makes one): a type of its own, so that
    a name given as a string is always a file and never read as a URL."""

    url: str


# What ffmpeg decodes: a path, the bytes of a file, a binary file object, or an http(s) URL.
AudioSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, AudioUrl]

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


# A name ffmpeg would read as a protocol or URL (concat:, file:, http://, pipe:): two or more
# scheme characters then a colon, so a Windows drive letter (C:) is not one.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
# Only these protocols may open anything, including what a playlist or demuxer names inside a file.
PROTOCOL_WHITELIST = "file,pipe"
# A URL input: the web protocols and what they run on (tls under https, crypto for encrypted
# HLS segments), and no file or pipe: a page fetched from the web cannot name a local file.
URL_PROTOCOL_WHITELIST = "http,https,tcp,tls,crypto"
URL_SCHEMES = ("http", "https")
# A server that stops answering fails the input after this long instead of hanging it.
URL_TIMEOUT_SECONDS = 30


def check_input_file(path: str) -> None:
    """A one-line AudioDecodeError unless `path` names a readable, non-empty regular file.

    Inputs are files: a name is never a URL or an ffmpeg protocol, and FIFOs, devices and
    sockets are refused because they can block or never end. Front ends call this before
    loading a model, so a bad name fails in a moment, not after a load.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AudioDecodeError(f"{path}: symbolic link loop") from None
        if e.errno == errno.ENOENT and _URL.match(path):
            hint = "; --allow-urls reads http and https URLs" if _is_web_url(path) else ""
            raise AudioDecodeError(f"{path}: no such file (inputs are files, not URLs or ffmpeg protocols{hint})") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise AudioDecodeError(f"{path}: no such file") from None
        raise AudioDecodeError(f"{path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioDecodeError(f"{path}: is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise AudioDecodeError(f"{path}: is {kind}, not a regular file")
    if st.st_size == 0:
        raise AudioDecodeError(f"{path}: file is empty")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(f"{path}: permission denied")


def _is_web_url(name: str) -> bool:
    scheme, sep, _ = name.partition("://")
    return bool(sep) and scheme.lower() in URL_SCHEMES


def audio_url(url: str) -> AudioUrl:
    """`url` as an input ffmpeg fetches, or a one-line AudioDecodeError unless it is an http or
    https URL with a host (no other protocol, no control characters or spaces)."""
    from urllib.parse import urlsplit

    if not _is_web_url(url):
        raise AudioDecodeError(f"{url}: not an http or https URL (--allow-urls reads those only)")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise AudioDecodeError(f"{url!r}: a URL cannot hold spaces or control characters")
    try:
        host = urlsplit(url).hostname
    except ValueError as e:
        raise AudioDecodeError(f"{url}: not a valid URL ({e})") from None
    if not host:
        raise AudioDecodeError(f"{url}: no host in the URL")
    scheme, _, rest = url.partition(":")
    return AudioUrl(scheme.lower() + ":" + rest)  # ffmpeg names its protocols in lower case


def input_source(name: str, allow_urls: bool = False) -> str | AudioUrl:
    """A name a user gave, checked before a model loads: an http(s) URL when `allow_urls` and
    the name is one, else a readable regular file (check_input_file)."""
    if allow_urls and _is_web_url(name):
        return audio_url(name)
    check_input_file(name)
    return name


def url_stem(url: AudioUrl) -> str:
    """The output base name of a URL input: its last path segment without the extension, or
    its host; never a path (no separators, not . or ..)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url.url)
    stem = os.path.splitext(unquote(parts.path).rstrip("/").rpartition("/")[2])[0]
    stem = "".join("_" if ch in "/\\\0" else ch for ch in stem).strip()
    return stem if stem.strip(".") else (parts.hostname or "stream")


def file_url(path: str) -> str:
    """`path` as ffmpeg's input: the file protocol and an absolute path, so no name (`concat:a`,
    `-`, `http:x`) is read as another protocol or an option."""
    return "file:" + os.path.abspath(path)


@dataclass(frozen=True)
class _Input:
    """How ffmpeg gets an input: a path, or data piped into its stdin."""

    url: str  # ffmpeg's input: file:ABSPATH, pipe:0, or an http(s) URL
    data: bytes | BinaryIO | None  # written to ffmpeg's stdin
    name: str  # the input in messages: a path or URL, never raw bytes
    options: tuple[str, ...] = ("-protocol_whitelist", PROTOCOL_WHITELIST)  # ffmpeg's input options


def _input(source: AudioSource) -> _Input:
    """The ffmpeg input for `source`, or a one-line AudioDecodeError for what cannot be one."""
    if isinstance(source, AudioUrl):
        url = audio_url(source.url).url
        return _Input(url, None, url, ("-protocol_whitelist", URL_PROTOCOL_WHITELIST,
                                       "-rw_timeout", str(URL_TIMEOUT_SECONDS * 1_000_000)))
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        check_input_file(path)
        return _Input(file_url(path), None, path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioDecodeError("audio bytes: empty")
        return _Input("pipe:0", data, f"audio bytes ({len(data)} bytes)")
    if isinstance(source, io.TextIOBase):
        raise AudioDecodeError(f"{getattr(source, 'name', 'file object')}: opened in text mode; open audio with 'rb'")
    if callable(getattr(source, "read", None)):
        name = getattr(source, "name", None)
        return _Input("pipe:0", source, name if isinstance(name, str) else "audio file object")
    raise AudioDecodeError(f"cannot read audio from type {type(source).__name__}: expected a path, bytes, "
                           "a binary file object or a numpy array of samples")


def _feed(stdin: BinaryIO, data: bytes | BinaryIO, errors: list[str]) -> None:
    """Write `data` into ffmpeg's stdin (on a thread: ffmpeg's output is read meanwhile)."""
    try:
        if isinstance(data, bytes):
            stdin.write(data)
        else:
            while chunk := data.read(1 << 16):
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    errors.append(f"file object gave {type(chunk).__name__}, not bytes: open audio with 'rb'")
                    break
                stdin.write(chunk)
    except (BrokenPipeError, ValueError):
        pass  # ffmpeg stopped reading (done, or failed: its exit status tells)
    except OSError as e:
        errors.append(f"cannot read the file object ({e})")
    finally:
        try:
            stdin.close()
        except OSError:
            pass


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
    source: AudioSource, chunk_samples: int = N_SAMPLES, report: DecodeReport | None = None,
    sample_rate: int = SAMPLE_RATE, channels: int = 1,
) -> Iterator[np.ndarray]:
    """Yield float32 chunks of `chunk_samples` (the last may be shorter) at `sample_rate`:
    mono, or (n, channels) frames.

    Raises AudioDecodeError (one readable line) when nothing decodes. Damage after audio has
    decoded (a recording cut off mid-stream) is reported in `report.warning` instead: the
    audio up to that point is still worth transcribing.
    """
    src = _input(source)
    path = src.name
    report = report if report is not None else DecodeReport()
    # A plain argument list: a file name that is not UTF-8 passes through as its bytes.
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", *src.options, "-i", src.url,
           "-map", "0:a:0", "-f", "s16le", "-acodec", "pcm_s16le", "-ac", str(channels),
           "-ar", str(sample_rate), "pipe:"]
    stdin = subprocess.DEVNULL if src.data is None else subprocess.PIPE
    try:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise AudioDecodeError(f"cannot run ffmpeg ({e})") from None
    feed_errors: list[str] = []
    if src.data is not None:
        threading.Thread(target=_feed, args=(proc.stdin, src.data, feed_errors), daemon=True).start()
    err_chunks: list[bytes] = []
    # ffmpeg can fill the stderr pipe while we block on stdout: drain it on a thread.
    drain = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    drain.start()
    frame_bytes = 2 * channels
    nbytes = chunk_samples * frame_bytes
    finished = False
    try:
        while True:
            buf = proc.stdout.read(nbytes)
            if not buf:
                finished = True
                break
            if len(buf) % frame_bytes:
                buf = buf[: len(buf) - len(buf) % frame_bytes]
            report.samples += len(buf) // frame_bytes
            samples = np.frombuffer(buf, dtype="<i2").astype(np.float32) / 32768.0
            yield samples if channels == 1 else samples.reshape(-1, channels)
    finally:
        if not finished:
            # The consumer stopped early: don't wait for ffmpeg to finish decoding.
            proc.kill()
        proc.stdout.close()
        rc = proc.wait()
        drain.join()
    stderr = b"".join(err_chunks)
    if feed_errors and report.samples == 0:
        raise AudioDecodeError(f"{path}: {feed_errors[0]}")
    if rc != 0 and report.samples == 0:
        raise AudioDecodeError(_ffmpeg_message(stderr, path))
    if report.samples == 0:
        raise AudioDecodeError(f"{path}: no audio decoded (empty or no audio stream)")
    if stderr.strip():
        first = stderr.decode("utf-8", "replace").strip().splitlines()[0]
        report.warning = f"{path}: damaged or truncated audio, transcribing what decoded ({first})"


def load_audio(source: AudioSource, report: DecodeReport | None = None) -> np.ndarray:
    """The whole input as one float32 array: for short files and tests."""
    chunks = list(stream_audio(source, report=report))
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def samples_from_array(audio: np.ndarray) -> np.ndarray:
    """Samples given as an array (16 kHz) → float32 mono: stereo, (2, n) or (n, 2), is
    averaged; integer samples are scaled to [-1, 1)."""
    a = np.asarray(audio)
    if a.dtype.kind not in "fiu":
        raise AudioDecodeError(f"audio array of {a.dtype} values: expected float or integer samples")
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
    if a.ndim == 2 and min(a.shape) <= 8:  # channels: the short axis
        a = a.mean(axis=0 if a.shape[0] <= a.shape[1] else 1)
    if a.ndim != 1:
        raise AudioDecodeError(f"audio array of shape {a.shape}: expected samples (n,) or channels (2, n) / (n, 2)")
    return np.ascontiguousarray(a, np.float32)


def stereo_frames(audio: np.ndarray) -> np.ndarray:
    """Samples given as an array of two channels, (2, n) or (n, 2), as float32 frames (n, 2)
    scaled as `samples_from_array` scales them."""
    a = np.asarray(audio)
    if a.ndim != 2 or 2 not in a.shape:
        raise AudioDecodeError(f"audio array of shape {a.shape}: expected two channels, (2, n) or (n, 2)")
    left, right = (a[0], a[1]) if a.shape[0] == 2 else (a[:, 0], a[:, 1])
    return np.stack([samples_from_array(left), samples_from_array(right)], axis=1)


def decode_audio(source: AudioSource | np.ndarray, sampling_rate: int = SAMPLE_RATE,
                 split_stereo: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The whole input as float32 samples at `sampling_rate` (faster-whisper's `decode_audio`):
    mono, or with `split_stereo` the (left, right) channels (a mono input gives both the same).
    An array is taken as samples at `sampling_rate` already."""
    if isinstance(source, np.ndarray):
        a = np.asarray(source)
        if not split_stereo:
            return samples_from_array(a)
        if a.ndim == 2 and 2 in a.shape:
            left, right = (a[0], a[1]) if a.shape[0] == 2 else (a[:, 0], a[:, 1])
            return samples_from_array(left), samples_from_array(right)
        mono = samples_from_array(a)
        return mono, mono.copy()
    if not split_stereo:
        chunks = list(stream_audio(source, sample_rate=sampling_rate))
        return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    frames = np.concatenate(list(stream_audio(source, sample_rate=sampling_rate, channels=2)))
    return np.ascontiguousarray(frames[:, 0]), np.ascontiguousarray(frames[:, 1])


def probe_duration(path: AudioSource) -> float | None:
    """Container duration in seconds, or None if ffprobe-less ffmpeg cannot tell cheaply (or
    the input is not a path)."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    try:
        out = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-protocol_whitelist", PROTOCOL_WHITELIST,
                              "-i", file_url(os.fspath(path))], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("Duration:") and "N/A" not in line.split(",")[0]:
            h, m, s = line.split(",")[0].split()[1].split(":")
            return int(h) * 3600 + int(m) * 60 + float(s)
    return None


# ffmpeg -i's line for an audio stream: "Stream #0:0[0x1](und): Audio: aac (LC), 44100 Hz, stereo, fltp"
_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio: .*?, \d+ Hz, ([^,]+)")


def probe_layout(source: AudioSource) -> str | None:
    """The channel layout of the first audio stream as ffmpeg names it ("mono", "stereo",
    "5.1(side)", "3 channels" …), the stream `stream_audio` decodes; None when ffmpeg does not
    say or the input is a file object (read once, by the decoder)."""
    src = _input(source)
    if src.data is not None and not isinstance(src.data, bytes):
        return None
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", *src.options, "-i", src.url]
    try:
        out = subprocess.run(cmd, input=src.data, stdin=None if src.data is not None else subprocess.DEVNULL,
                             capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _AUDIO_STREAM.search(out.stderr.decode("utf-8", "replace"))
    return found.group(1).strip() if found else None


STEREO_LAYOUTS = ("stereo", "downmix", "2 channels")  # ffmpeg's names for two channels


def require_stereo(source: AudioSource) -> None:
    """-di: a one-line AudioDecodeError unless `source`'s audio has two channels (not checked
    for a file object: ffmpeg reads it once, to decode it). Front ends call it before loading
    a model, the transcription again for every input."""
    layout = probe_layout(source)
    if layout is None or layout in STEREO_LAYOUTS:
        return
    if isinstance(source, AudioUrl):
        name = source.url
    elif isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
    else:
        name = "audio bytes"
    raise AudioDecodeError(f"{name}: -di/--stereo-diarize needs a stereo recording, one speaker per channel; "
                           f"this one is {layout} (--diarize tells voices apart in any recording)")


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

