"""Jobs and the workers that run them: in this process, in a pool of spawned processes (or on
Dask, batch/dask.py). A worker only transcribes and sends segments back; it never writes."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_for
from queue import Empty
from typing import Callable, Iterator, Sequence

from whisperlite.audio.ffmpeg import FRAMES_PER_SECOND, SAMPLE_RATE, ffmpeg_exe
from whisperlite.core.errors import AudioDecodeError, WhisperliteError
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
            segments, info = _transcribe_job(model, job, config.options.transcribe, report)
    except WhisperliteError as e:
        return JobResult(job, [], None, time.perf_counter() - t0, str(e))
    except Exception as e:  # a bug or an unexpected input: recorded, and the batch goes on
        return JobResult(job, [], None, time.perf_counter() - t0, f"internal error: {type(e).__name__}: {e}")
    ran = RuntimeOptions(model=model.name, compute_type=rt.compute_type, threads=model.threads, processors=rt.processors)
    return JobResult(job, segments, info, time.perf_counter() - t0, runtime=ran)


def _transcribe_job(model: WhisperModel, job: Job, options: TranscribeOptions,
                    report: Callable[[float], None] | None) -> tuple[list[Segment], TranscriptionInfo]:
    with tempfile.TemporaryDirectory(prefix="whisperlite-part-") as tmp:
        source = job.path
        if job.is_clip:
            source = os.path.join(tmp, "part.wav")
            extract_clip(job.path, job.start, job.end, source)
            # the part's span already is the clip (-ot/-d) that was asked for
            options = replace(options, clip=ClipOptions())
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
