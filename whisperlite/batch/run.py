"""Many inputs → subtitles: discovery, a resumable manifest, failure isolation, parallel workers.

The parent process owns every write. Workers (in-process, local processes or Dask workers)
only transcribe and send segments back, so outputs and OUTDIR/manifest.jsonl have a single
writer. A manifest line is appended (flushed and fsynced) only after an input's outputs are
in place, so a batch killed at any moment resumes by skipping what the manifest says is done
and loses at most the inputs that were in flight.

Long inputs can be split at quiet moments into parts (whisper.cpp's `-p`): each part is one
job like any other, and the parent stitches the parts' segments back onto the original
timeline before writing.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import wait as wait_for
from queue import Empty
from typing import Callable, Iterator, Sequence, TextIO

import numpy as np

from whisperlite.audio.ffmpeg import (
    FRAMES_PER_SECOND,
    SAMPLE_RATE,
    ffmpeg_exe,
    probe_duration,
)
from whisperlite.core.cpu import physical_cores
from whisperlite.core.errors import AudioDecodeError, OutputError, WhisperliteError
from whisperlite.output.writers import check_output_dir, write_outputs
from whisperlite.transcription.options import TranscribeOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo
from whisperlite.transcription.transcribe import WhisperModel

# What a folder search picks up: containers ffmpeg reads that usually carry speech.
AUDIO_EXTENSIONS = frozenset(
    ".wav .mp3 .m4a .m4b .aac .flac .ogg .oga .opus .wma .aif .aiff .amr .caf .mka .weba "
    ".mp4 .m4v .mkv .mov .avi .webm .wmv .flv .mpg .mpeg .ts .3gp".split()
)
# An input file with one of these extensions is a list of inputs, one per line.
LIST_EXTENSIONS = frozenset(".txt .lst .list .m3u .m3u8".split())
MANIFEST_NAME = "manifest.jsonl"
MIN_PART_SECONDS = 30.0  # one Whisper window: a shorter part pays for padding it does not use
SPLIT_SEARCH_SECONDS = 10.0  # how far from an equal split point a cut may move to find a pause
QUIET_SPAN_SECONDS = 0.3  # length of the quiet stretch a cut is centred on

ProgressFn = Callable[[tuple[int, int], float], None]  # (job key, seconds of that job transcribed)


# ---------------------------------------------------------------- discovery


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute, normalized
    rel: str  # output base under OUTDIR, without extension


def discover(inputs: Sequence[str]) -> list[InputFile]:
    """Files, folders (recursive) and input lists → unique inputs with collision-free output names.

    Outputs mirror each input's place relative to the deepest folder common to all input
    roots (a folder argument is its own root, a file's root is its folder), so the same
    file name in two folders maps to two output folders, and a folder batch keeps its layout
    however many files are added later. Inputs sharing a stem in one folder (talk.mp3,
    talk.wav) keep their extension in the output name (talk.mp3.srt, talk.wav.srt).
    """
    pairs: dict[str, str] = {}
    seen_lists: set[str] = set()
    for arg in inputs:
        for path, root in _expand(arg, os.getcwd(), seen_lists):
            pairs.setdefault(path, root)
    if not pairs:
        return []
    common = os.path.commonpath(list(pairs.values()))
    rels = {p: os.path.relpath(p, common) for p in pairs}
    stems = {p: os.path.splitext(r)[0] for p, r in rels.items()}
    clashes = Counter(s.casefold() for s in stems.values())
    return [InputFile(p, stems[p] if clashes[stems[p].casefold()] == 1 else rels[p]) for p in pairs]


def _expand(arg: str, base_dir: str, seen_lists: set[str]) -> Iterator[tuple[str, str]]:
    """(file, root) pairs for one argument or list line; missing paths pass through to fail later."""
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(arg)))
    if os.path.isdir(path):
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                    yield os.path.join(dirpath, name), path
    elif os.path.splitext(path)[1].lower() in LIST_EXTENSIONS and os.path.isfile(path):
        if path in seen_lists:  # a list naming itself (or a cycle of lists)
            return
        seen_lists.add(path)
        for line in read_input_list(path):
            # Relative lines are relative to the list, so a list travels with its folder.
            yield from _expand(line, os.path.dirname(path), seen_lists)
    else:
        yield path, os.path.dirname(path)


def read_input_list(path: str) -> list[str]:
    """Non-blank lines of an input list, without `#` comment lines."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = [ln.strip() for ln in fh]
    except (OSError, UnicodeDecodeError) as e:
        raise WhisperliteError(f"{path}: cannot read input list ({getattr(e, 'strerror', None) or e})") from None
    return [ln for ln in lines if ln and not ln.startswith("#")]


# ---------------------------------------------------------------- manifest


def read_manifest(path: str) -> list[dict]:
    """Records in file order; a torn last line (a kill mid-append) or a garbled line is skipped."""
    records = []
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return records
    with fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


class ManifestWriter:
    """Appends one JSON line per finished input, durable before `append` returns.

    Holding the file open also holds an exclusive lock: two batches writing into one OUTDIR
    would interleave their skips and redo each other's work.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise OutputError(f"{path}: cannot open manifest ({e.strerror or e})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise OutputError(f"{os.path.dirname(path) or '.'}: another whisperlite batch is writing here") from None
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        # A new line appended after a torn one would be glued to it and lost with it.
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            nl = os.pread(self._fd, end - start, start).rfind(b"\n")
            if nl >= 0:
                os.ftruncate(self._fd, start + nl + 1)
                break
            end = start
        else:
            os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def append(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot append ({e.strerror or e})") from None

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def options_record(options: TranscribeOptions) -> dict:
    """Options as JSON values (tuples → lists), the form they take in the manifest."""
    return json.loads(json.dumps(asdict(options)))


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# ---------------------------------------------------------------- jobs and workers


@dataclass(frozen=True)
class WorkerConfig:
    """What every job of a batch shares; each worker loads the model once for it."""

    model: str
    threads: int | None  # per worker; None: all cores of the worker's machine
    options: TranscribeOptions


@dataclass(frozen=True)
class Job:
    """One unit of work: a whole input, or the part [start, end) of it (end None: to its end)."""

    index: int  # which input of the batch
    part: int
    path: str
    start: float = 0.0
    end: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return self.index, self.part

    @property
    def is_clip(self) -> bool:
        return self.start > 0 or self.end is not None


@dataclass
class JobResult:
    job: Job
    segments: list[Segment]  # on the original file's timeline
    info: TranscriptionInfo | None
    wall_time: float
    error: str | None = None


_MODELS: dict[tuple[str, int | None], WhisperModel] = {}
# One transcription at a time per process: a job already uses all the threads it was given,
# and a Dask worker with several task threads would otherwise share one model concurrently.
_MODEL_LOCK = threading.Lock()


def run_job(job: Job, config: WorkerConfig, report: Callable[[float], None] | None = None) -> JobResult:
    """Transcribe one job in this process with a per-process cached model; never raises."""
    t0 = time.perf_counter()
    try:
        with _MODEL_LOCK:
            model = _MODELS.get((config.model, config.threads))
            if model is None:
                from whisperlite.transcription.transcribe import load_model

                model = _MODELS[(config.model, config.threads)] = load_model(config.model, threads=config.threads)
            from whisperlite.kernels import set_threads

            # numba's thread count belongs to the calling thread, and Dask runs tasks on pool threads.
            set_threads(config.threads)
            segments, info = _transcribe_job(model, job, config.options, report)
    except WhisperliteError as e:
        return JobResult(job, [], None, time.perf_counter() - t0, str(e))
    except Exception as e:  # a bug or an unexpected input: recorded, and the batch goes on
        return JobResult(job, [], None, time.perf_counter() - t0, f"internal error: {type(e).__name__}: {e}")
    return JobResult(job, segments, info, time.perf_counter() - t0)


def _transcribe_job(model: WhisperModel, job: Job, options: TranscribeOptions,
                    report: Callable[[float], None] | None) -> tuple[list[Segment], TranscriptionInfo]:
    with tempfile.TemporaryDirectory(prefix="whisperlite-part-") as tmp:
        source = job.path
        if job.is_clip:
            source = os.path.join(tmp, "part.wav")
            extract_clip(job.path, job.start, job.end, source)
        seg_iter, info = model.transcribe(source, options)
        segments = []
        for seg in seg_iter:
            if job.start:
                seg.start = round(seg.start + job.start, 3)
                seg.end = round(seg.end + job.start, 3)
                seg.seek += int(round(job.start * FRAMES_PER_SECOND))
            segments.append(seg)
            if report:
                report(seg.end - job.start)
        if info.warning and source != job.path:
            info.warning = info.warning.replace(source, job.path)
    return segments, info


def extract_clip(path: str, start: float, end: float | None, dest: str) -> None:
    """The part [start, end) of `path` as a 16 kHz mono wav, so the stock streaming decoder reads it.

    `-ss` before `-i` seeks the input and then decodes up to the exact time, so the cut is
    sample-accurate while a part late in a long file is reached without decoding all before it.
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-ss", f"{start:.3f}", "-i", path]
    if end is not None:
        cmd += ["-t", f"{end - start:.3f}"]
    cmd += ["-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-y", dest]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0 or not os.path.exists(dest):
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioDecodeError(f"{path}: cannot cut the part from {start:.1f} s ({lines[-1] if lines else 'ffmpeg failed'})")


def run_inline(jobs: Sequence[Job], config: WorkerConfig, on_progress: ProgressFn | None = None) -> Iterator[JobResult]:
    """-j 1: jobs one after another in this process (no worker start-up, one model)."""
    for job in jobs:
        report = (lambda secs, key=job.key: on_progress(key, secs)) if on_progress else None
        yield run_job(job, config, report)


_WORKER: dict = {}  # this worker process's config and progress queue, set by _init_worker


def _init_worker(config: WorkerConfig, progress_queue) -> None:
    _WORKER["config"] = config
    _WORKER["queue"] = progress_queue
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    # A pool worker whose parent was killed (kill -9) would otherwise finish its job for
    # nobody and then wait forever on the task queue.
    wait_for([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _pool_job(job: Job) -> JobResult:
    queue = _WORKER["queue"]
    return run_job(job, _WORKER["config"], lambda secs: queue.put((job.key, secs)))


def run_in_processes(jobs: Sequence[Job], config: WorkerConfig, workers: int,
                     on_progress: ProgressFn | None = None) -> Iterator[JobResult]:
    """-j N: a pool of N spawned worker processes, each loading the model on its first job.

    spawn, not fork: forking a parent whose numba/OpenMP threads have started can deadlock
    the child. Results come back in completion order; progress arrives on a queue.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=ctx,
                               initializer=_init_worker, initargs=(config, queue))
    pending = {pool.submit(_pool_job, job): job for job in jobs}
    try:
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            _drain(queue, on_progress)
            for fut in done:
                job = pending.pop(fut)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    result = JobResult(job, [], None, 0.0, "worker process died (killed or out of memory); re-run to retry")
                yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _drain(queue, on_progress: ProgressFn | None) -> None:
    while True:
        try:
            key, secs = queue.get_nowait()
        except Empty:
            return
        if on_progress:
            on_progress(key, secs)


# ---------------------------------------------------------------- splitting one long input


def plan_parts(path: str, duration: float | None, processors: int) -> list[tuple[float, float | None]]:
    """[(start, end)] spans for up to `processors` parts of at least MIN_PART_SECONDS each."""
    n = min(processors, int(duration // MIN_PART_SECONDS)) if duration else 1
    if n <= 1:
        return [(0.0, None)]
    starts = [0.0, *find_split_points(path, duration, n)]
    return [(s, starts[i + 1] if i + 1 < len(starts) else None) for i, s in enumerate(starts)]


def find_split_points(path: str, duration: float, parts: int) -> list[float]:
    """Cut times near k·duration/parts, each moved to the quietest moment close by.

    Only ±SPLIT_SEARCH_SECONDS around each equal split point is decoded (ffmpeg seeks there),
    so finding the cuts costs the same for a 10-minute and a 10-hour input.
    """
    radius = min(SPLIT_SEARCH_SECONDS, duration / parts / 4)
    cuts = []
    for k in range(1, parts):
        target = k * duration / parts
        lo = max(0.0, target - radius)
        samples = _decode_range(path, lo, target + radius - lo)
        cuts.append(lo + quietest_point(samples, target - lo) if len(samples) else target)
    return cuts


def quietest_point(samples: np.ndarray, near: float) -> float:
    """Seconds into `samples` at the centre of the least energetic QUIET_SPAN_SECONDS stretch.

    Several equally quiet stretches (digital silence) are common: the one nearest `near` wins,
    keeping parts close to equal length.
    """
    span = int(QUIET_SPAN_SECONDS * SAMPLE_RATE)
    if len(samples) <= span:
        return near
    csum = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    energy = csum[span:] - csum[:-span]  # energy of the stretch starting at each sample
    # within one 16-bit step of the minimum at each sample counts as equally quiet
    quiet = np.flatnonzero(energy <= energy.min() + span * (1 / 32768) ** 2)
    centres = (quiet + span / 2) / SAMPLE_RATE
    return float(centres[np.argmin(np.abs(centres - near))])


def _decode_range(path: str, start: float, length: float) -> np.ndarray:
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-ss", f"{start:.3f}", "-i", path,
           "-t", f"{length:.3f}", "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:"]
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True).stdout
    return np.frombuffer(out[: len(out) // 2 * 2], "<i2").astype(np.float32) / 32768.0


def stitch(results: Sequence[JobResult]) -> tuple[list[Segment], TranscriptionInfo]:
    """The parts of one input (already on its timeline) → one segment list and one info."""
    results = sorted(results, key=lambda r: r.job.part)
    infos = [r.info for r in results]
    segments = [seg for r in results for seg in r.segments]
    for i, seg in enumerate(segments):
        seg.id = i
    if len(results) == 1:
        return segments, infos[0]
    timings: dict[str, float] = {}
    for info in infos:
        for k, v in info.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    warnings = [info.warning for info in infos if info.warning]
    first = infos[0]
    durations = [info.duration for info in infos]
    return segments, TranscriptionInfo(
        language=first.language, language_probability=first.language_probability,
        duration=sum(durations) if None not in durations else None, options=first.options,
        warning="; ".join(warnings) or None, timings=timings,
    )


def transcribe_split(model: WhisperModel, path: str, options: TranscribeOptions, processors: int,
                     threads: int | None = None) -> tuple[list[Segment], TranscriptionInfo]:
    """`transcribe -p N`: one input split at pauses into up to N parts, each in its own process.

    Inputs too short to split run on `model` in this process. `threads` is per part
    (whisper.cpp's -t with -p); by default the cores are shared out between the parts.
    """
    spans = plan_parts(path, probe_duration(path), processors)
    if len(spans) == 1:
        seg_iter, info = model.transcribe(path, options)
        return list(seg_iter), info
    jobs = [Job(0, i, os.path.abspath(path), s, e) for i, (s, e) in enumerate(spans)]
    config = WorkerConfig(model.name, threads or max(1, physical_cores() // len(jobs)), options)
    results = list(run_in_processes(jobs, config, len(jobs)))
    for r in results:
        if r.error:
            raise WhisperliteError(r.error)
    return stitch(results)


# ---------------------------------------------------------------- the batch


@dataclass(frozen=True)
class BatchOptions:
    output_dir: str
    formats: tuple[str, ...]
    model: str = "tiny.en"
    jobs: int = 1
    threads: int | None = None  # per worker; None: cores / jobs locally, all cores on Dask workers
    processors: int = 1  # split inputs into up to this many parts
    force: bool = False
    scheduler: str | None = None  # Dask scheduler address
    options: TranscribeOptions = field(default_factory=TranscribeOptions)


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0  # transcribed in this run
    wall_seconds: float = 0.0

    def line(self, manifest: str) -> str:
        speed = f" ({self.audio_seconds / self.wall_seconds:.1f}x real time)" if self.wall_seconds > 0 and self.audio_seconds else ""
        return (f"whisperlite batch: {self.done} done, {self.skipped} skipped, {self.failed} failed; "
                f"{self.audio_seconds / 3600:.2f} h of audio in {_fmt_duration(self.wall_seconds)}{speed}; "
                f"manifest {manifest}")


@dataclass
class _Pending:
    """Parent-side state of one input being transcribed."""

    file: InputFile
    sha256: str
    duration: float | None
    n_parts: int
    results: list[JobResult] = field(default_factory=list)


def run_batch(inputs: Sequence[str], opts: BatchOptions, out: TextIO | None = None) -> BatchSummary:
    """Transcribe every input not already done; returns the counts (failures never raise)."""
    out = out or sys.stdout
    t0 = time.perf_counter()
    files = discover(inputs)
    if not files:
        raise WhisperliteError("no audio or video files found in the given inputs")
    check_output_dir(opts.output_dir)
    from whisperlite.registry.loader import resolve

    resolve(opts.model)  # an unknown model name fails once here, not once per input
    manifest_path = os.path.join(opts.output_dir, MANIFEST_NAME)
    summary = BatchSummary()
    with ManifestWriter(manifest_path) as manifest:
        previous = {_record_key(r): r for r in read_manifest(manifest_path) if "input" in r}
        options = options_record(opts.options)
        base_record = {"model": opts.model, "options": options, "formats": list(opts.formats)}
        todo: list[_Pending] = []
        for f in files:
            try:
                sha = file_sha256(f.path)
            except OSError as e:
                reason = "no such file" if isinstance(e, FileNotFoundError) else (e.strerror or str(e))
                _report_failure(f"{f.path}: {reason}", out)
                manifest.append(_record(base_record, f, None, None, 0.0, [], f"{f.path}: {reason}"))
                summary.failed += 1
                continue
            prev = previous.get((f.path, sha, opts.model, json.dumps(options, sort_keys=True)))
            if not opts.force and _is_done(prev, f, opts):
                summary.skipped += 1
                continue
            todo.append(_Pending(f, sha, probe_duration(f.path), 1))
        if summary.skipped:
            print(f"whisperlite batch: {summary.skipped} input(s) already done (--force redoes them)", file=out, flush=True)

        jobs: list[Job] = []
        for index, p in enumerate(todo):
            spans = plan_parts(p.file.path, p.duration, opts.processors) if opts.processors > 1 else [(0.0, None)]
            p.n_parts = len(spans)
            jobs += [Job(index, part, p.file.path, s, e) for part, (s, e) in enumerate(spans)]
        # Longest first: a long episode started last would leave the other workers idle at the end.
        jobs.sort(key=lambda j: -((j.end if j.end is not None else todo[j.index].duration or 0.0) - j.start))

        progress = Progress(sum(p.duration or 0.0 for p in todo), len(todo), out)
        # nothing left to do: no workers to start, no cluster to connect to
        results = _backend(opts)(jobs, _worker_config(opts), progress.update) if jobs else iter(())
        try:
            for result in results:
                p = todo[result.job.index]
                p.results.append(result)
                if len(p.results) < p.n_parts:
                    continue
                record = _finish(p, opts, base_record)
                manifest.append(record)
                if record["status"] == "done":
                    summary.done += 1
                    summary.audio_seconds += record["duration"] or 0.0
                else:
                    summary.failed += 1
                    _report_failure(record["error"], out, progress)
                progress.file_done(result.job.index, p.n_parts, record["duration"] or p.duration or 0.0,
                                   p.file.path, record["status"], record["wall_time"])
        finally:
            progress.close()
    summary.wall_seconds = time.perf_counter() - t0
    print(summary.line(manifest_path), file=out, flush=True)
    return summary


def _worker_config(opts: BatchOptions) -> WorkerConfig:
    threads = opts.threads
    if threads is None and not opts.scheduler:
        threads = max(1, physical_cores() // opts.jobs)
    return WorkerConfig(opts.model, threads, opts.options)


def _backend(opts: BatchOptions) -> Callable[[Sequence[Job], WorkerConfig, ProgressFn], Iterator[JobResult]]:
    if opts.scheduler:
        from whisperlite.batch.dask import run_on_dask

        return lambda jobs, config, progress: run_on_dask(opts.scheduler, jobs, config, progress)
    if opts.jobs > 1:
        return lambda jobs, config, progress: run_in_processes(jobs, config, opts.jobs, progress)
    return run_inline


def _record_key(rec: dict) -> tuple[str, str, str, str]:
    return rec.get("input"), rec.get("sha256"), rec.get("model"), json.dumps(rec.get("options"), sort_keys=True)


def _output_paths(f: InputFile, opts: BatchOptions) -> list[str]:
    return [os.path.join(opts.output_dir, f"{f.rel}.{fmt}") for fmt in opts.formats]


def _is_done(prev: dict | None, f: InputFile, opts: BatchOptions) -> bool:
    """Done before with this content, model and options, and every requested output still there."""
    if not prev or prev.get("status") != "done":
        return False
    recorded = set(prev.get("outputs") or ())
    wanted = _output_paths(f, opts)
    return all(os.path.relpath(p, opts.output_dir) in recorded and os.path.exists(p) for p in wanted)


def _finish(p: _Pending, opts: BatchOptions, base_record: dict) -> dict:
    """Write one input's outputs (atomically) and build its manifest record."""
    wall = sum(r.wall_time for r in p.results)  # worker seconds: parts of one input run side by side
    errors = [r.error for r in sorted(p.results, key=lambda r: r.job.part) if r.error]
    if errors:
        return _record(base_record, p.file, p.sha256, None, wall, [], errors[0], parts=p.n_parts)
    segments, info = stitch(p.results)
    base = os.path.join(opts.output_dir, p.file.rel)
    try:
        check_output_dir(os.path.dirname(base))
        written = write_outputs(segments, info, base, opts.formats)
    except OutputError as e:
        return _record(base_record, p.file, p.sha256, info.duration, wall, [], str(e), parts=p.n_parts)
    return _record(base_record, p.file, p.sha256, info.duration, wall,
                   [os.path.relpath(w, opts.output_dir) for w in written], None,
                   parts=p.n_parts, segments=len(segments), warning=info.warning)


def _record(base: dict, f: InputFile, sha: str | None, duration: float | None, wall: float,
            outputs: list[str], error: str | None, **extra) -> dict:
    return {
        **base, "input": f.path, "sha256": sha, "duration": duration, "wall_time": round(wall, 3),
        "outputs": outputs, "status": "failed" if error else "done", "error": error,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    }


def _report_failure(message: str, out: TextIO, progress: Progress | None = None) -> None:
    line = f"error: {message}"
    if progress:
        progress.write_err(line)
    else:
        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- progress


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
        eta = f", ETA {_fmt_duration(max(0.0, self._total - self._done) / rate)}" if rate > 0 and self._finished < self._files else ""
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


def _fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
