"""`-p N`: one long input cut at quiet moments into parts, each a job of its own, and the parts'
segments stitched back onto the input's timeline."""
from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from typing import Sequence

import numpy as np

from whisperlite.audio.ffmpeg import PROTOCOL_WHITELIST, SAMPLE_RATE, ffmpeg_exe, file_url, probe_duration
from whisperlite.batch.jobs import Job, JobResult, WorkerConfig, run_in_processes
from whisperlite.core.cpu import physical_cores
from whisperlite.core.errors import WhisperliteError
from whisperlite.speakers.diarize import label
from whisperlite.transcription.options import ClipOptions, RunOptions, TranscribeOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo
from whisperlite.transcription.transcribe import WhisperModel

MIN_PART_SECONDS = 30.0  # one Whisper window: a shorter part pays for padding it does not use
SPLIT_SEARCH_SECONDS = 10.0  # how far from an equal split point a cut may move to find a pause
QUIET_SPAN_SECONDS = 0.3  # length of the quiet stretch a cut is centred on


def plan_parts(path: str, duration: float | None, processors: int,
               clip: ClipOptions = ClipOptions()) -> list[tuple[float, float | None]]:
    """[(start, end)] spans for up to `processors` parts of at least MIN_PART_SECONDS each of
    the `clip` of the input; [(0, None)] when it is not split (the clip is then the loop's)."""
    if not duration:
        return [(0.0, None)]
    start = clip.offset
    end = min(duration, start + clip.duration) if clip.duration is not None else duration
    n = min(processors, int((end - start) // MIN_PART_SECONDS))
    if n <= 1:
        return [(0.0, None)]
    starts = [start, *find_split_points(path, start, end, n)]
    last = start + clip.duration if clip.duration is not None else None
    return [(s, starts[i + 1] if i + 1 < len(starts) else last) for i, s in enumerate(starts)]


def find_split_points(path: str, start: float, end: float, parts: int) -> list[float]:
    """Cut times near start + k·(end - start)/parts, each moved to the quietest moment close by.

    Only ±SPLIT_SEARCH_SECONDS around each equal split point is decoded (ffmpeg seeks there),
    so finding the cuts costs the same for a 10-minute and a 10-hour input.
    """
    length = end - start
    radius = min(SPLIT_SEARCH_SECONDS, length / parts / 4)
    cuts = []
    for k in range(1, parts):
        target = start + k * length / parts
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
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-protocol_whitelist", PROTOCOL_WHITELIST,
           "-ss", f"{start:.3f}", "-i", file_url(path),
           "-t", f"{length:.3f}", "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:"]
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True).stdout
    return np.frombuffer(out[: len(out) // 2 * 2], "<i2").astype(np.float32) / 32768.0


def stitch(results: Sequence[JobResult], options: TranscribeOptions) -> tuple[list[Segment], TranscriptionInfo]:
    """The parts of one input (already on its timeline) → one segment list and one info, whose
    options are those asked for (`options`: the parts ran without the clip their spans are).
    With --diarize the parts' speaker partials are clustered here, all together, so that a
    voice has one label in every part."""
    results = sorted(results, key=lambda r: r.job.part)
    infos = [r.info for r in results]
    segments = [seg for r in results for seg in r.segments]
    parts = [r.partials for r in results if r.partials is not None]
    if parts:
        segments = label(segments, np.concatenate([spans for spans, _ in parts]),
                         np.concatenate([embeddings for _, embeddings in parts]), options.speakers)
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
        duration=sum(durations) if None not in durations else None, options=options,
        warning="; ".join(warnings) or None, timings=timings,
    )


def transcribe_split(model: WhisperModel, path: str, options: RunOptions) -> tuple[list[Segment], TranscriptionInfo]:
    """`transcribe -p N`: one input split at pauses into up to N parts, each in its own process
    with the whole options tree.

    Inputs too short to split run on `model` in this process. Threads are per part
    (whisper.cpp's -t with -p); by default the cores are shared out between the parts.
    """
    rt = options.runtime
    spans = plan_parts(path, probe_duration(path), rt.processors, options.transcribe.clip)
    if len(spans) == 1:
        seg_iter, info = model.transcribe(path, options.transcribe)
        return list(seg_iter), info
    jobs = [Job(0, i, os.path.abspath(path), s, e) for i, (s, e) in enumerate(spans)]
    threads = rt.threads or max(1, physical_cores() // len(jobs))
    config = WorkerConfig(replace(options, runtime=replace(rt, threads=threads)))
    results = list(run_in_processes(jobs, config, len(jobs)))
    for r in results:
        if r.error:
            raise WhisperliteError(r.error)
    return stitch(results, options.transcribe)
