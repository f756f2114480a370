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

import os
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence, TextIO

from whisperlite.audio.ffmpeg import probe_duration
from whisperlite.batch.discover import InputFile, discover
from whisperlite.batch.index import BatchIndex, Row, segment_rows, write_transcript
from whisperlite.batch.jobs import (
    Job,
    JobResult,
    ProgressFn,
    WorkerConfig,
    run_in_processes,
    run_inline,
    sweep_part_folders,
)
from whisperlite.batch.manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    file_sha256,
    options_key,
    options_record,
    path_fields,
    printable,
    read_manifest,
    recorded_path,
)
from whisperlite.batch.progress import Progress, fmt_duration
from whisperlite.batch.split import plan_parts, stitch
from whisperlite.core.cpu import physical_cores
from whisperlite.core.errors import OutputError, WhisperliteError
from whisperlite.output.chinese import CHINESE_LANGUAGES, convert_segment
from whisperlite.output.writers import check_output_dir, write_outputs
from whisperlite.transcription.options import RunOptions


@dataclass(frozen=True)
class BatchOptions:
    output_dir: str
    # runtime.threads: per worker; None: cores / jobs locally, all cores on Dask workers
    run: RunOptions = field(default_factory=RunOptions)
    jobs: int = 1
    force: bool = False
    scheduler: str | None = None  # Dask scheduler address


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
                f"{self.audio_seconds / 3600:.2f} h of audio in {fmt_duration(self.wall_seconds)}{speed}; "
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
    sweep_part_folders()  # a killed batch's cut parts
    from whisperlite.registry.loader import resolve

    run = opts.run
    resolve(run.runtime.model)  # an unknown model name fails once here, not once per input
    manifest_path = os.path.join(opts.output_dir, MANIFEST_NAME)
    summary = BatchSummary()
    with ManifestWriter(manifest_path) as manifest:
        records = read_manifest(manifest_path)
        previous = {_record_key(r): r for r in records if recorded_path(r)}
        progress: Progress | None = None
        search_index = BatchIndex(opts.output_dir, records, lambda line: _warn(line, progress))
        options = options_record(run)
        base_record = {"model": run.runtime.model, "options": options, "formats": list(run.output.formats)}
        todo: list[_Pending] = []
        for f in files:
            try:
                sha = file_sha256(f.path)
            except OSError as e:
                reason = "no such file" if isinstance(e, FileNotFoundError) else (e.strerror or str(e))
                _report_failure(f"{printable(f.path)}: {reason}", out)
                manifest.append(_record(base_record, f, None, None, 0.0, [], f"{printable(f.path)}: {reason}"))
                summary.failed += 1
                continue
            prev = previous.get((f.path, sha, options_key(options)))
            if not opts.force and _is_done(prev, f, opts):
                summary.skipped += 1
                continue
            todo.append(_Pending(f, sha, probe_duration(f.path), 1))
        if summary.skipped:
            print(f"whisperlite batch: {summary.skipped} input(s) already done (--force redoes them)", file=out, flush=True)

        jobs: list[Job] = []
        for index, p in enumerate(todo):
            spans = (plan_parts(p.file.path, p.duration, run.runtime.processors, run.transcribe.clip)
                     if run.runtime.processors > 1 else [(0.0, None)])
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
                record, rows = _finish(p, opts, base_record)
                manifest.append(record)
                if record["status"] == "done":
                    search_index.add(record, rows)  # after its manifest line: the manifest is the truth
                    summary.done += 1
                    summary.audio_seconds += record["duration"] or 0.0
                else:
                    summary.failed += 1
                    _report_failure(record["error"], out, progress)
                progress.file_done(result.job.index, p.n_parts, record["duration"] or p.duration or 0.0,
                                   printable(p.file.path), record["status"], record["wall_time"])
        finally:
            progress.close()
            search_index.close()
    summary.wall_seconds = time.perf_counter() - t0
    print(summary.line(manifest_path), file=out, flush=True)
    return summary


def _worker_config(opts: BatchOptions) -> WorkerConfig:
    threads = opts.run.runtime.threads
    if threads is None and not opts.scheduler:
        threads = max(1, physical_cores() // opts.jobs)
    return WorkerConfig(replace(opts.run, runtime=replace(opts.run.runtime, threads=threads)))


def _backend(opts: BatchOptions) -> Callable[[Sequence[Job], WorkerConfig, ProgressFn], Iterator[JobResult]]:
    if opts.scheduler:
        from whisperlite.batch.dask import run_on_dask

        return lambda jobs, config, progress: run_on_dask(opts.scheduler, jobs, config, progress)
    if opts.jobs > 1:
        return lambda jobs, config, progress: run_in_processes(jobs, config, opts.jobs, progress)
    return run_inline


def _record_key(rec: dict) -> tuple[str, str, str]:
    return recorded_path(rec), rec.get("sha256"), options_key(rec.get("options"))


def _output_paths(f: InputFile, opts: BatchOptions) -> list[str]:
    return [os.path.join(opts.output_dir, f"{f.rel}.{fmt}") for fmt in opts.run.output.formats]


def _is_done(prev: dict | None, f: InputFile, opts: BatchOptions) -> bool:
    """Done before with this content, model and options, and every requested output still there."""
    if not prev or prev.get("status") != "done":
        return False
    recorded = set(prev.get("outputs") or ())
    wanted = _output_paths(f, opts)
    return all(printable(os.path.relpath(p, opts.output_dir)) in recorded and os.path.exists(p) for p in wanted)


def _finish(p: _Pending, opts: BatchOptions, base_record: dict) -> tuple[dict, list[Row]]:
    """Write one input's outputs and its kept transcript (atomically); returns its manifest
    record and its rows for the search index."""
    wall = sum(r.wall_time for r in p.results)  # worker seconds: parts of one input run side by side
    errors = [r.error for r in sorted(p.results, key=lambda r: r.job.part) if r.error]
    if errors:
        return _record(base_record, p.file, p.sha256, None, wall, [], errors[0], parts=p.n_parts), []
    segments, info = stitch(p.results, opts.run.transcribe)
    output = opts.run.output
    if output.zh_script and info.language in CHINESE_LANGUAGES and info.options.decode.task == "transcribe":
        segments = [convert_segment(seg, output.zh_script) for seg in segments]
    base = os.path.join(opts.output_dir, p.file.rel)
    rows = segment_rows(segments)
    try:
        check_output_dir(os.path.dirname(base))
        written = write_outputs(segments, info, base, output.formats, output)
        write_transcript(opts.output_dir, printable(p.file.rel), rows)
    except OutputError as e:
        return _record(base_record, p.file, p.sha256, info.duration, wall, [], str(e), parts=p.n_parts), []
    record = _record(base_record, p.file, p.sha256, info.duration, wall,
                     [printable(os.path.relpath(w, opts.output_dir)) for w in written], None,
                     parts=p.n_parts, segments=len(segments), warning=info.warning)
    return record, rows


def _record(base: dict, f: InputFile, sha: str | None, duration: float | None, wall: float,
            outputs: list[str], error: str | None, **extra) -> dict:
    return {
        **base, **path_fields(f.path), "output_base": printable(f.rel), "sha256": sha, "duration": duration, "wall_time": round(wall, 3),
        "outputs": outputs, "status": "failed" if error else "done", "error": error,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    }


def _warn(line: str, progress: Progress | None) -> None:
    if progress:
        progress.write_err(line)
    else:
        print(line, file=sys.stderr, flush=True)


def _report_failure(message: str, out: TextIO, progress: Progress | None = None) -> None:
    _warn(f"error: {message}", progress)
