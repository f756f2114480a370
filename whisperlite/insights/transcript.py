"""What chapters and summaries read: a transcript as timed lines, from a whisperlite JSON, an
SRT file, or a media file transcribed on the default path."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Callable

import srt

from whisperlite.core.errors import WhisperliteError

# SRT cues of a diarized transcript begin with their speaker: "[SPEAKER_1] text"
_SRT_SPEAKER = re.compile(r"^\[(SPEAKER_(?:\d+|\?))\]\s*")
TRANSCRIPT_EXTENSIONS = (".json", ".srt")


@dataclass(frozen=True)
class Line:
    """One segment of a transcript: its time span, its text and, when known, its speaker."""

    start: float
    end: float
    text: str
    speaker: str | None = None


def is_transcript(path: str) -> bool:
    return path.lower().endswith(TRANSCRIPT_EXTENSIONS)


def _number(value: object, what: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise WhisperliteError(f"{path}: {what} is not a time in seconds")
    return float(value)


def parse_json(doc: object, path: str) -> list[Line]:
    """Lines of a whisperlite JSON transcript (`transcribe -oj`, or a batch's .segments file)."""
    segments = doc.get("segments") if isinstance(doc, dict) else None
    if not isinstance(segments, list):
        raise WhisperliteError(f"{path}: not a whisperlite transcript (no \"segments\" list)")
    lines = []
    for k, s in enumerate(segments):
        if not isinstance(s, dict) or not isinstance(s.get("text"), str):
            raise WhisperliteError(f"{path}: segment {k} has no text")
        start, end = _number(s.get("start"), f"segment {k}'s start", path), _number(s.get("end"), f"segment {k}'s end", path)
        speaker = s.get("speaker")
        text = " ".join(s["text"].split())
        if text:
            lines.append(Line(start, max(start, end), text, speaker if isinstance(speaker, str) and speaker else None))
    return lines


def parse_srt(text: str, path: str) -> list[Line]:
    try:
        cues = list(srt.parse(text))
    except (srt.SRTParseError, ValueError) as e:
        raise WhisperliteError(f"{path}: not an SRT file ({e})") from None
    lines = []
    for c in cues:
        body = " ".join(c.content.split())
        m = _SRT_SPEAKER.match(body)
        speaker = m.group(1) if m else None
        body = body[m.end():] if m else body
        if body:
            lines.append(Line(c.start.total_seconds(), c.end.total_seconds(), body, speaker))
    return lines


def read_transcript(path: str) -> list[Line]:
    """The lines of a transcript file (.json or .srt), in time order."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise WhisperliteError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WhisperliteError(f"{path}: cannot read ({e})") from None
    if path.lower().endswith(".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise WhisperliteError(f"{path}: not valid JSON ({e})") from None
        lines = parse_json(doc, path)
    else:
        lines = parse_srt(text, path)
    return sorted(lines, key=lambda line: line.start)


def transcribe_media(path: str, model: str, threads: int | None,
                     on_progress: Callable[[float, float | None], None] | None = None) -> list[Line]:
    """Transcribe a media file with the default options; `on_progress(seconds done, duration)`."""
    from whisperlite.audio.ffmpeg import check_input_file
    from whisperlite.transcription.options import TranscribeOptions
    from whisperlite.transcription.transcribe import load_model

    check_input_file(path)
    wm = load_model(model, threads=threads)
    segments, info = wm.transcribe(path, TranscribeOptions())
    lines = []
    for s in segments:
        text = " ".join(s.text.split())
        if text:
            lines.append(Line(s.start, s.end, text))
        if on_progress:
            on_progress(s.end, info.duration)
    return lines


def load_lines(path: str, model: str, threads: int | None,
               on_progress: Callable[[float, float | None], None] | None = None) -> list[Line]:
    """A transcript file's lines, or a media file's transcript; at least one line."""
    if os.path.isdir(path):
        raise WhisperliteError(f"{path}: is a folder, not a media or transcript file")
    lines = read_transcript(path) if is_transcript(path) else transcribe_media(path, model, threads, on_progress)
    if not lines:
        raise WhisperliteError(f"{path}: the transcript is empty (no speech)")
    return lines
