"""Output formats: a registry of small writers, and atomic file output.

Each writer turns finished segments into text; `write_outputs` renders every requested
format first and only then replaces files, each through a temporary file in the same
directory, so an interrupted run never leaves a partial or clobbered output.
"""
from __future__ import annotations

import csv
import io
import json
import os
from datetime import timedelta
from typing import Callable, Sequence

import srt

from whisperlite.core.atomic import atomic_output
from whisperlite.core.errors import OutputError
from whisperlite.output.subtitles import make_cues
from whisperlite.transcription.options import OutputOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo


def format_timestamp(seconds: float, sep: str = ".", hours: bool = True) -> str:
    """12.3456 -> '00:00:12.346' (sep ',' for SRT; hours optional for VTT/LRC styles)."""
    ms = max(0, int(round(seconds * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}" if hours or h else f"{m:02d}:{s:02d}{sep}{ms:03d}"


def speaker_prefix(speaker: str | None) -> str:
    """'[SPEAKER_1] ' before a diarized segment's text (SRT, TXT); nothing without diarization."""
    return f"[{speaker}] " if speaker else ""


def voice_name(speaker: str) -> str:
    """SPEAKER_1 → 'Speaker 1' (-di's SPEAKER_? → 'Speaker ?'), as a WebVTT voice span names it."""
    head, _, number = speaker.rpartition("_")
    return f"{head.capitalize()} {number}" if head and (number.isdigit() or number == "?") else speaker


def _srt(segments: Sequence[Segment], info: TranscriptionInfo, opts: OutputOptions | None = None) -> str:
    cues = make_cues(segments, (opts or OutputOptions()).subtitles)
    subs = [
        srt.Subtitle(index=i + 1, start=timedelta(seconds=c.start), end=timedelta(seconds=c.end),
                    content=speaker_prefix(c.speaker) + c.text)
        for i, c in enumerate(cues)
    ]
    return srt.compose(subs, reindex=False)


def _vtt(segments: Sequence[Segment], info: TranscriptionInfo, opts: OutputOptions | None = None) -> str:
    lines = ["WEBVTT", ""]
    for c in make_cues(segments, (opts or OutputOptions()).subtitles):
        text = c.text.replace("-->", "->")
        if c.speaker:
            text = f"<v {voice_name(c.speaker)}>{text}"
        lines += [f"{format_timestamp(c.start)} --> {format_timestamp(c.end)}", text, ""]
    return "\n".join(lines)


def _txt(segments: Sequence[Segment], info: TranscriptionInfo, opts: OutputOptions | None = None) -> str:
    return "".join(speaker_prefix(s.speaker) + s.text.strip() + "\n" for s in segments)


def _json_segment(s: Segment, full: bool) -> dict:
    seg = {
        "id": s.id, "start": s.start, "end": s.end, "text": s.text.strip(),
        "avg_logprob": round(s.avg_logprob, 6), "no_speech_prob": round(s.no_speech_prob, 6),
        "temperature": s.temperature, "compression_ratio": round(s.compression_ratio, 4),
        "tokens": s.tokens,
        **({"speaker": s.speaker} if s.speaker else {}),
    }
    if s.words is not None:
        seg["words"] = [
            {"word": w.word, "start": w.start, "end": w.end, "probability": round(w.probability, 4),
             **({"speaker": w.speaker} if w.speaker else {}), **({"tokens": w.tokens} if full else {})}
            for w in s.words
        ]
    if full:
        seg["token_probs"] = [round(p, 4) for p in s.token_probs]
    return seg


def _json(segments: Sequence[Segment], info: TranscriptionInfo, opts: OutputOptions | None = None) -> str:
    full = (opts or OutputOptions()).json_full
    doc = {
        "language": info.language,
        "language_probability": info.language_probability,
        "duration": info.duration,
        "text": "".join(s.text for s in segments).strip(),
        "segments": [_json_segment(s, full) for s in segments],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


def _csv(segments: Sequence[Segment], info: TranscriptionInfo, opts: OutputOptions | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    speakers = any(s.speaker for s in segments)
    # milliseconds, as whisper.cpp's -ocsv; a speaker column with diarization
    w.writerow(["start", "end", *(["speaker"] if speakers else []), "text"])
    for s in segments:
        w.writerow([int(round(s.start * 1000)), int(round(s.end * 1000)), *([s.speaker or ""] if speakers else []),
                    s.text.strip()])
    return buf.getvalue()


def _lrc(segments: Sequence[Segment], info: TranscriptionInfo, opts: OutputOptions | None = None) -> str:
    def stamp(t: float) -> str:
        cs = int(round(t * 100))
        m, cs = divmod(cs, 6000)
        return f"[{m:02d}:{cs // 100:02d}.{cs % 100:02d}]"

    return "".join(f"{stamp(s.start)}{s.text.strip()}\n" for s in segments)


WRITERS: dict[str, Callable[..., str]] = {  # (segments, info, OutputOptions | None) -> text
    "srt": _srt, "vtt": _vtt, "txt": _txt, "json": _json, "csv": _csv, "lrc": _lrc,
}
# formats that use word times (subtitle cues are cut at them; JSON lists them)
WORD_FORMATS = frozenset({"srt", "vtt", "json"})


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (see atomic.atomic_output)."""
    with atomic_output(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def write_outputs(segments: Sequence[Segment], info: TranscriptionInfo, base: str, formats: Sequence[str],
                  options: OutputOptions | None = None) -> list[str]:
    """Render all formats, then write `base.<ext>` for each (creating its folder); returns the
    paths written."""
    rendered = [(f"{base}.{fmt}", WRITERS[fmt](segments, info, options)) for fmt in formats]
    if rendered:
        check_output_dir(os.path.dirname(base) or ".")
    for path, text in rendered:
        atomic_write_text(path, text)
    return [p for p, _ in rendered]


def check_output_dir(directory: str) -> None:
    """Fail before any work if outputs could not be written there (missing dirs are created)."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{directory}: cannot create output directory ({e.strerror or e})") from None
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"{directory}: output directory is not writable")

