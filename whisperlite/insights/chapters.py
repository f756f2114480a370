"""Chapters: topic boundaries in a transcript, and a short title for each part.

Boundaries come from lexical cohesion, as in Hearst's TextTiling: at every break between two
transcript lines, the content words of the `window` lines before it are compared with those
of the `window` lines after it (TF-IDF vectors, cosine similarity). Inside a topic the two
sides share words; across a topic change they do not, so the similarity curve dips. A dip's
depth (how far it lies below the nearest peak on each side) says how sharp the change is; a
longer pause than usual and a change of speaker add to it. The deepest breaks are taken, best
first, as long as every chapter stays at least `min_chapter` seconds long. The first chapter
starts at 00:00.

Titles are written by the local LLM from each chapter's most representative lines.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterator, Sequence

from whisperlite.insights.llm import Writer, clean_title
from whisperlite.insights.options import ChapterOptions
from whisperlite.insights.text import TfIdf, cosine, terms
from whisperlite.insights.transcript import Line


@dataclass(frozen=True)
class Chapter:
    start: float
    end: float
    lines: tuple[Line, ...]
    title: str = ""


def break_scores(lines: Sequence[Line], opts: ChapterOptions) -> list[float]:
    """Score of the break before each line (index 0, the start, scores 0): the depth of the
    cohesion dip there, plus the pause and speaker cues."""
    n = len(lines)
    if n < 2:
        return [0.0] * n
    docs = [terms(line.text) for line in lines]
    idf = TfIdf(docs)
    k = max(1, opts.window)
    sims = [1.0] + [cosine(idf.vector(docs[max(0, g - k):g]), idf.vector(docs[g:g + k])) for g in range(1, n)]
    # a moving average of three: one line that shares a word by chance does not hide a change
    smooth = [0.0] + [statistics.fmean(sims[max(1, g - 1):g + 2]) for g in range(1, n)]
    depth = [0.0] * n
    for g in range(1, n):
        left = g
        while left > 1 and smooth[left - 1] >= smooth[left]:
            left -= 1
        right = g
        while right < n - 1 and smooth[right + 1] >= smooth[right]:
            right += 1
        depth[g] = (smooth[left] - smooth[g]) + (smooth[right] - smooth[g])
    pauses = [max(0.0, lines[g].start - lines[g - 1].end) for g in range(1, n)]
    typical = statistics.median(pauses) or 0.1
    for g in range(1, n):
        depth[g] += opts.pause_weight * min(1.0, max(0.0, pauses[g - 1] / typical - 1.0))
        a, b = lines[g - 1].speaker, lines[g].speaker
        if a and b and a != b:
            depth[g] += opts.speaker_weight
    return depth


def find_breaks(lines: Sequence[Line], opts: ChapterOptions) -> list[int]:
    """Indices of the lines that start a new chapter (0 always first)."""
    if not lines:
        return []
    scores = break_scores(lines, opts)
    inner = scores[1:]
    if not inner:
        return [0]
    # Hearst's cutoff: breaks deeper than the mean depth less half its spread
    cutoff = statistics.fmean(inner) - (statistics.pstdev(inner) / 2 if len(inner) > 1 else 0.0)
    begin, finish = lines[0].start, max(line.end for line in lines)
    chosen: list[float] = []
    picked = [0]
    for g in sorted(range(1, len(lines)), key=lambda g: (-scores[g], g)):
        if scores[g] <= max(cutoff, 0.0):
            break
        t = lines[g].start
        if t - begin < opts.min_chapter or finish - t < opts.min_chapter:
            continue
        if any(abs(t - c) < opts.min_chapter for c in chosen):
            continue
        chosen.append(t)
        picked.append(g)
    return sorted(picked)


def split_chapters(lines: Sequence[Line], opts: ChapterOptions) -> list[Chapter]:
    """The transcript cut into chapters (untitled); the first starts at 0."""
    breaks = find_breaks(lines, opts)
    chapters = []
    for i, g in enumerate(breaks):
        stop = breaks[i + 1] if i + 1 < len(breaks) else len(lines)
        part = tuple(lines[g:stop])
        start = 0.0 if i == 0 else part[0].start
        end = lines[stop].start if stop < len(lines) else max(line.end for line in part)
        chapters.append(Chapter(start, end, part))
    return chapters


def excerpt(chapter: Chapter, writer: Writer, opts: ChapterOptions) -> str:
    """What the LLM titles a chapter from: its `title_lines` lines closest to the chapter's own
    word profile, in time order, within `title_context` tokens. A line that belongs with a
    neighbouring chapter (a boundary one line off) shares few words with the rest and is left
    out, where a small model would otherwise title the chapter after it."""
    docs = [terms(line.text) for line in chapter.lines]
    idf = TfIdf(docs)
    whole = idf.vector(docs)
    ranked = sorted(range(len(docs)), key=lambda i: (-cosine(idf.vector([docs[i]]), whole), i))
    keep, used = [], 0
    for i in ranked[:opts.title_lines]:
        n = writer.count(chapter.lines[i].text) + 1
        if used + n <= opts.title_context or not keep:
            keep.append(i)
            used += n
    return " ".join(chapter.lines[i].text for i in sorted(keep))


# The title prompt per model family, and the start of the answer the model continues. Both
# families, shown worked examples as earlier chat turns, copy an example's title; asked in one
# turn, they answer with a sentence about the text unless the answer is begun for them.
TITLE_PROMPTS = {
    "chatml": ("Here is a part of a transcript:\n\n{text}\n\nWrite a short title for it, of two to five words.",
               "Title:"),
    # a small Gemma asked for a title writes about titles; asked what the text is about, it
    # names the topic
    "gemma": ("{text}\n\nWhat is this text about? Answer in a few words.", " It is about"),
}


def keywords(chapter: Chapter, count: int = 3) -> list[str]:
    """The chapter's most frequent content words, as spoken (for a title the LLM left empty)."""
    seen: dict[str, tuple[int, str]] = {}
    for line in chapter.lines:
        for word in line.text.split():
            w = word.strip(".,;:!?\"'()").lower()
            t = terms(w)
            if t:
                n, first = seen.get(t[0], (0, w))
                seen[t[0]] = (n + 1, first)
    ranked = sorted(seen.values(), key=lambda v: -v[0])
    return [w for _, w in ranked[:count]]


def titles(chapters: Sequence[Chapter], writer: Writer, opts: ChapterOptions) -> Iterator[Chapter]:
    """Each chapter with a title from the LLM (greedy), one chapter per step (a server's engine
    runs one step at a time); a title the model leaves empty after cleaning becomes the
    chapter's three most frequent content words."""
    prompt, prefix = TITLE_PROMPTS[writer.family]
    for ch in chapters:
        text = excerpt(ch, writer, opts)
        answer = writer.ask("", prompt.format(text=text), opts.title_tokens, prefix=prefix, one_line=True)
        title = clean_title(answer, text) or " ".join(keywords(ch)).capitalize()
        yield Chapter(ch.start, ch.end, ch.lines, title)


def youtube_time(seconds: float, hours: bool) -> str:
    """12:34, or 1:02:03 in a recording an hour long or longer (YouTube's chapter stamps)."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if hours else f"{s // 60:02d}:{s % 60:02d}"


def format_chapters(chapters: Sequence[Chapter]) -> str:
    hours = bool(chapters) and chapters[-1].start >= 3600
    return "".join(f"{youtube_time(c.start, hours)} {c.title}\n" for c in chapters)


def chapters_json(chapters: Sequence[Chapter]) -> dict:
    return {"chapters": [{"start": round(c.start, 3), "end": round(c.end, 3), "title": c.title}
                         for c in chapters]}
