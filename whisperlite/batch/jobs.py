"""Jobs and the workers that run them: in this process, in a pool of spawned processes (or on
Dask, batch/dask.py). A worker only transcribes and sends segments back; it never writes."""
from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_for
from queue import Empty
from typing import Callable, Iterator, Sequence

from whisperlite.audio.ffmpeg import FRAMES_PER_SECOND, SAMPLE_RATE, ffmpeg_exe
from whisperlite.core.atomic import pid_alive
from whisperlite.core.errors import AudioDecodeError, WhisperliteError
from whisperlite.speakers.diarize import Partials
from whisperlite.transcription.options import ClipOptions, RunOptions, RuntimeOptions, TranscribeOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo
from whisperlite.transcription.transcribe import WhisperModel

ProgressFn = Callable[[tuple[int, int], float], None]  # (job key, seconds of that job transcribed)


@dataclass(frozen=True)
class WorkerConfig:
    """What every job of a batch shares: the whole options tree. Each worker loads the model
    once for its runtime options (threads: per worker; None: all cores of its machine)."""

    options: RunOptions


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
    runtime: RuntimeOptions | None = None  # the model the worker ran: name, compute type, threads
    # a part with --diarize: its speaker partials on the input's timeline, clustered with the
    # other parts' when they are stitched (its segments come without speakers)
    partials: Partials | None = None


_MODELS: dict[tuple[str, str, int | None], WhisperModel] = {}
# One transcription at a time per process: a job already uses all the threads it was given,
# and a Dask worker with several task threads would otherwise share one model concurrently.
_MODEL_LOCK = threading.Lock()


def run_job(job: Job, config: WorkerConfig, report: Callable[[float], None] | None = None) -> JobResult:
    """Transcribe one job in this process with a per-process cached model; never raises."""
    t0 = time.perf_counter()
    rt = config.options.runtime
    key = (rt.model, rt.compute_type, rt.threads)
    try:
        with _MODEL_LOCK:
            model = _MODELS.get(key)
            if model is None:
                from whisperlite.transcription.transcribe import load_model

                model = _MODELS[key] = load_model(rt.model, threads=rt.threads, compute_type=rt.compute_type)
            from whisperlite.kernels import set_threads

            # numba's thread count belongs to the calling thread, and Dask runs tasks on pool threads.
            set_threads(rt.threads)
            segments, info, partials = _transcribe_job(model, job, config.options.transcribe, report)
    except WhisperliteError as e:
        return JobResult(job, [], None, time.perf_counter() - t0, str(e))
    except Exception as e:  # a bug or an unexpected input: recorded, and the batch goes on
        return JobResult(job, [], None, time.perf_counter() - t0, f"internal error: {type(e).__name__}: {e}")
    ran = replace(rt, model=model.name, threads=model.threads)  # as asked, with the model's own name and threads
    return JobResult(job, segments, info, time.perf_counter() - t0, runtime=ran, partials=partials)


def _transcribe_job(model: WhisperModel, job: Job, options: TranscribeOptions, report: Callable[[float], None] | None,
                    ) -> tuple[list[Segment], TranscriptionInfo, Partials | None]:
    if job.is_clip and not _SWEPT:
        sweep_part_folders()
        _SWEPT.append(True)
    with tempfile.TemporaryDirectory(prefix=f"{PART_PREFIX}{os.getpid()}-") as tmp:
        source = job.path
        if job.is_clip:
            source = os.path.join(tmp, "part.wav")
            extract_clip(job.path, job.start, job.end, source, mono=not options.stereo_diarize)
            # the part's span already is the clip (-ot/-d) that was asked for
            options = replace(options, clip=ClipOptions())
        try:
            segments, info, partials = _run_transcription(model, job, source, options, report)
        except WhisperliteError as e:
            if source == job.path:
                raise
            raise type(e)(str(e).replace(source, job.path)) from None
        if info.warning and source != job.path:
            info.warning = info.warning.replace(source, job.path)
    return segments, info, partials


def _run_transcription(model: WhisperModel, job: Job, source: str, options: TranscribeOptions,
                       report: Callable[[float], None] | None,
                       ) -> tuple[list[Segment], TranscriptionInfo, Partials | None]:
    """`source` (the job's input, or its part) transcribed, segments (and a diarized part's
    partials) on the input's timeline."""
    get_partials = None
    if job.is_clip and options.diarize:
        seg_iter, info, get_partials = model.transcribe_part(source, options)
    else:
        seg_iter, info = model.transcribe(source, options)
    segments = []
    for seg in seg_iter:
        if job.start:
            seg.start = round(seg.start + job.start, 3)
            seg.end = round(seg.end + job.start, 3)
            seg.seek += int(round(job.start * FRAMES_PER_SECOND))
            for w in seg.words or []:
                w.start, w.end = round(w.start + job.start, 3), round(w.end + job.start, 3)
        segments.append(seg)
        if report:
            report(seg.end - job.start)
    partials = None
    if get_partials is not None:
        spans, embeddings = get_partials()
        partials = (spans + job.start, embeddings)
    return segments, info, partials


PART_PREFIX = "whisperlite-part-"  # + the owner's pid + "-" + random: a part's wav in the temp folder
_SWEPT: list[bool] = []  # whether this process has swept the part folders of dead processes


def sweep_part_folders(tmpdir: str | None = None) -> list[str]:
    """Remove part folders (a cut part's wav, up to hundreds of MB) left by processes that were
    killed before they could; returns those removed. Folders of live processes stay."""
    tmpdir = tmpdir or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(tmpdir)
    except OSError:
        return removed
    for name in names:
        pid = name[len(PART_PREFIX):].split("-", 1)[0]
        if name.startswith(PART_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(tmpdir, name), ignore_errors=True)
            removed.append(name)
    return removed


def extract_clip(path: str, start: float, end: float | None, dest: str, mono: bool = True) -> None:
    """The part [start, end) of `path` as a 16 kHz wav, so the stock streaming decoder reads it:
    mono, or with the input's channels (-di compares them, and refuses an input that has not two).

    `-ss` before `-i` seeks the input and then decodes up to the exact time, so the cut is
    sample-accurate while a part late in a long file is reached without decoding all before it.
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-ss", f"{start:.3f}", "-i", path]
    if end is not None:
        cmd += ["-t", f"{end - start:.3f}"]
    cmd += ["-map", "0:a:0", *(["-ac", "1"] if mono else []), "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-y", dest]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0 or not os.path.exists(dest):
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioDecodeError(f"{path}: cannot cut the part from {start:.1f} s ({lines[-1] if lines else 'ffmpeg failed'})")


def run_inline(jobs: Sequence[Job], config: WorkerConfig, on_progress: ProgressFn | None = None) -> Iterator[JobResult]:
    """-j 1: jobs one after another in this process (no worker start-up, one model)."""
    for job in jobs:
        report = (lambda secs, key=job.key: on_progress(key, secs)) if on_progress else None
        yield run_job(job, config, report)


_WORKER: dict = {}  # this worker process's config and progress queue, set by _worker_main


def _worker_main(conn, config: WorkerConfig, progress_queue) -> None:
    """A pool worker: jobs in on `conn`, one result out for each, until it receives None."""
    # Ctrl-C reaches the whole process group: the parent alone decides what stops, and stops
    # its workers itself (a worker dying of SIGINT mid-job would look like a crash).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["config"] = config
    _WORKER["queue"] = progress_queue
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        while (job := conn.recv()) is not None:
            conn.send(_pool_job(job))
    except (EOFError, OSError):
        return  # the parent is gone


def _exit_with_parent() -> None:
    # A pool worker whose parent was killed (kill -9) would otherwise finish its job for nobody.
    wait_for([multiprocessing.parent_process().sentinel])
    os._exit(1)


def _pool_job(job: Job) -> JobResult:
    queue = _WORKER["queue"]
    return run_job(job, _WORKER["config"], lambda secs: queue.put((job.key, secs)))


class _Worker:
    """One spawned worker process and the job it is running (None: idle)."""

    def __init__(self, ctx, config: WorkerConfig, queue):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, config, queue), daemon=True)
        self.process.start()
        child.close()
        self.job: Job | None = None

    def give(self, job: Job) -> None:
        self.job = job
        try:
            self.conn.send(job)
        except OSError:
            pass  # it died: seen as dead with this job, like a death mid-job


# Times a job may be running in a worker that dies before it is recorded as failed: a worker
# killed from outside (OOM killer, kill -9) costs its job one retry; a job that kills every
# worker it runs in (it needs more memory than there is) fails instead of looping.
MAX_ATTEMPTS = 2


def run_in_processes(jobs: Sequence[Job], config: WorkerConfig, workers: int,
                     on_progress: ProgressFn | None = None) -> Iterator[JobResult]:
    """-j N: N spawned worker processes, each loading the model on its first job.

    spawn, not fork: forking a parent whose numba/OpenMP threads have started can deadlock
    the child. Each worker runs one job at a time, handed out as it becomes free, so the
    parent always knows which job a dead worker was running: that job alone is retried on a
    fresh worker (MAX_ATTEMPTS), the others go on. Results come back in completion order;
    progress arrives on a queue. Stopping the iteration (Ctrl-C, SIGTERM, an error in the
    caller) kills the workers at once: no queued job runs for nobody.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    todo = deque(jobs)
    attempts: Counter[tuple[int, int]] = Counter()
    size = max(1, min(workers, len(jobs)))
    pool: list[_Worker] = []
    try:
        while todo or pool:
            busy = [w for w in pool if w.job is not None]
            while len(pool) < min(size, len(busy) + len(todo)):
                pool.append(_Worker(ctx, config, queue))
            for w in pool:
                if w.job is None and todo:
                    w.give(todo.popleft())
            busy = [w for w in pool if w.job is not None]
            if not busy:
                break
            wait_for([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.5)
            _drain(queue, on_progress)
            for w in busy:
                result = _receive(w)
                if result is not None:
                    w.job = None
                    yield result
                elif not w.process.is_alive():
                    pool.remove(w)
                    _stop_all([w])
                    attempts[w.job.key] += 1
                    if attempts[w.job.key] < MAX_ATTEMPTS:
                        todo.appendleft(w.job)
                    else:
                        yield JobResult(w.job, [], None, 0.0, f"{w.job.path}: worker process died twice on this "
                                        f"input (exit {w.process.exitcode}: killed or out of memory)")
    finally:
        _stop_all(pool)


def _receive(w: _Worker) -> JobResult | None:
    """The result `w` has sent, or None if it has none yet (or died before sending it)."""
    try:
        if w.conn.poll():
            return w.conn.recv()
    except (EOFError, OSError):
        pass
    return None


def _stop_all(pool: list[_Worker]) -> None:
    """Idle workers are asked to exit; workers still running a job are killed: nobody
    would read what they finish."""
    for w in pool:
        if w.job is None and w.process.is_alive():
            try:
                w.conn.send(None)
            except OSError:
                pass  # it is exiting already
    deadline = time.monotonic() + 2.0
    for w in pool:
        if w.job is None:
            w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            w.process.kill()
        w.process.join()
        w.conn.close()


def _drain(queue, on_progress: ProgressFn | None) -> None:
    while True:
        try:
            key, secs = queue.get_nowait()
        except Empty:
            return
        if on_progress:
            on_progress(key, secs)
