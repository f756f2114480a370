"""Subtitle cues of readable size: one helper that every cue-based writer (srt, vtt) uses.

A segment is cut into cues of at most `max_line_count` lines of at most `max_line_width`
characters (a single word longer than a line gets a line of its own). Cue times come from
word timestamps when the segment has them; otherwise from the segment's span shared out in
proportion to characters, which is how long speech takes to a first approximation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from whisperlite.transcription.options import SubtitleOptions
from whisperlite.transcription.results import Segment


@dataclass
class Cue:
    start: float
    end: float
    lines: list[str]
    speaker: str | None = None  # the segment's, with diarization

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _Unit:
    """The smallest piece a line may break after: a word, or a token with split_on_word off."""

    text: str  # leading space kept: it marks a word boundary; a leading newline forces a break
    start: float
    end: float


def _interpolate(pieces: Sequence[str], start: float, end: float) -> list[_Unit]:
    """Times for consecutive text pieces spanning [start, end], in proportion to their length."""
    sizes = [len(p.strip()) or 1 for p in pieces]
    total, done = sum(sizes), 0
    units = []
    for p, n in zip(pieces, sizes):
        # from cumulative fractions, so the last piece ends exactly at `end`
        t0 = start + (end - start) * done / total
        done += n
        units.append(_Unit(p, t0, start + (end - start) * done / total))
    return units


def _units(seg: Segment, opts: SubtitleOptions, width: int) -> list[_Unit]:
    if seg.words:
        units = [_Unit(w.word, w.start, w.end) for w in seg.words]
    else:
        units = _interpolate([" " + w for w in seg.text.split()], seg.start, seg.end)
    if opts.split_on_word:
        return units
    # Words longer than a line are cut into line-sized pieces (times shared out by length).
    out: list[_Unit] = []
    for u in units:
        word = u.text.strip()
        if len(word) <= width:
            out.append(u)
            continue
        pieces = [word[i : i + width] for i in range(0, len(word), width)]
        pieces[0] = u.text[: len(u.text) - len(u.text.lstrip())] + pieces[0]
        parts = _interpolate(pieces, u.start, u.end)
        for p in parts[1:]:
            p.text = "\n" + p.text  # a forced break: never glued to the previous piece
        out.extend(parts)
    return out


def _width(line: str) -> int:
    return len(line.strip())


def _pack(units: Sequence[_Unit], width: int, count: int) -> list[Cue]:
    """Greedy: fill each line up to `width`, each cue up to `count` lines."""
    cues: list[Cue] = []
    lines: list[str] = [""]
    cue_start, cue_end = units[0].start, units[0].end
    for u in units:
        forced = u.text.startswith("\n")
        text = u.text.lstrip("\n")
        if lines[-1] and (forced or _width(lines[-1] + text) > width):
            if len(lines) == count:
                cues.append(Cue(cue_start, cue_end, [ln.strip() for ln in lines]))
                lines, cue_start = [""], u.start
            else:
                lines.append("")
        lines[-1] += text
        cue_end = u.end
    cues.append(Cue(cue_start, cue_end, [ln.strip() for ln in lines if ln.strip()]))
    return cues


def split_segment(seg: Segment, opts: SubtitleOptions) -> list[Cue]:
    """Cues for one segment: as few as the limits allow, with lines of even length.

    Greedy filling alone leaves orphans (a full line, then one word); so the narrowest
    width that needs no more cues and lines than the greedy fill at full width is used.
    """
    width = opts.max_line_width if opts.max_line_width > 0 else 10**9
    count = opts.max_line_count if opts.max_line_count > 0 else 10**9
    units = _units(seg, opts, width)
    if not units:
        return []
    cues = _pack(units, width, count)
    n_lines = sum(len(c.lines) for c in cues)
    if width < 10**9 and n_lines > 1:
        longest = max(len(u.text.strip()) for u in units)
        total = sum(len(u.text) for u in units)
        for narrower in range(max(longest, total // n_lines), width):
            trial = _pack(units, narrower, count)
            if len(trial) <= len(cues) and sum(len(c.lines) for c in trial) <= n_lines:
                cues = trial
                break
    # Never overlapping: word times can be rounded apart.
    for a, b in zip(cues, cues[1:]):
        b.start = max(b.start, a.end)
    for c in cues:
        c.speaker = seg.speaker
    return [c for c in cues if c.lines]


def make_cues(segments: Sequence[Segment], opts: SubtitleOptions | None = None) -> list[Cue]:
    """All cues of a transcript, in order."""
    opts = opts or SubtitleOptions()
    return [cue for seg in segments if seg.text.strip() for cue in split_segment(seg, opts)]
