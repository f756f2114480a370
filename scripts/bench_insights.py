"""Chapter titles and summaries, scored per LLM on transcripts whose topics are known.

    python scripts/bench_insights.py [--llm smollm2 gemma3-270m] [--no-summary]

Transcripts (tests/data/topics/): `transcript.json`, tiny.en's transcript of the six-topic
recording tests/topics.py builds (the prompts were tuned on it), and `heldout.json`, six other
topics written as a transcript (never tuned on). Each `*truth.json` holds the topics, their
start times and keywords that name each one.

Titles are written for the true topic spans (so a boundary error does not blur the score):
- names: the title holds one of its topic's keywords (compared as stems);
- clean: ASCII only, 1 to 8 words, no content word twice, no function word left dangling at
  the end, no stray token (a word from neither the chapter's text nor its keywords in another
  casing than the title's: "… at Home anaknya", "… SUBSCRIBE");
- new words: words from neither the chapter's text, its keywords nor the function words, shown
  for reading (a fair title may say "Astronomy"; "alimentaire" is not fair), not scored.
The summary (map-reduce, as `whisperlite summarize` runs it) is scored by coverage (topics
whose keywords it names) and loops (word 4-grams that come back). Times are wall seconds
per title and per summary on this machine under its load at the time: compare models in
one run only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from whisperlite.insights.chapters import Chapter, titles  # noqa: E402
from whisperlite.insights.llm import load_writer  # noqa: E402
from whisperlite.insights.options import ChapterOptions, SummaryOptions  # noqa: E402
from whisperlite.insights.summary import run_summary, summarize  # noqa: E402
from whisperlite.insights.text import STOPWORDS, stem, terms  # noqa: E402
from whisperlite.insights.transcript import read_transcript  # noqa: E402

DATA = ROOT / "tests" / "data" / "topics"
SETS = (("six-topic (tuned on)", "transcript.json", "truth.json"),
        ("held-out", "heldout.json", "heldout_truth.json"))


def topic_spans(lines, truth) -> list[tuple[str, Chapter]]:
    starts = truth["topic_starts"]
    out = []
    for k, name in enumerate(truth["topics"]):
        lo = starts[k] - 1.0
        hi = starts[k + 1] - 1.0 if k + 1 < len(starts) else float("inf")
        part = tuple(ln for ln in lines if lo <= ln.start < hi)
        out.append((name, Chapter(part[0].start, part[-1].end, part)))
    return out


def score_title(title: str, chapter: Chapter, keywords: list[str]) -> tuple[bool, bool, list[str]]:
    words = [w.strip(".,;:!?'\"()-") for w in title.split()]
    words = [w for w in words if w]
    lower = [w.lower() for w in words]
    names = bool({stem(k) for k in keywords} & set(terms(title)))
    known = {stem(w) for w in keywords} | set(terms(" ".join(ln.text for ln in chapter.lines)))
    new = [w for w in words if w.lower() not in STOPWORDS and stem(w.lower()) not in known]
    title_case = sum(w[:1].isupper() for w in words if w.lower() not in STOPWORDS) >= 2
    stray = [w for w in new if (w.isupper() and len(w) > 2) or (title_case and w.islower())]
    content = [w for w in lower if w not in STOPWORDS]
    clean = (title.isascii() and 1 <= len(words) <= 8 and len(set(content)) == len(content)
             and not (len(words) > 1 and lower[-1] in STOPWORDS) and not stray)
    return names, clean, new


def loops(text: str) -> int:
    words = [w.strip(".,;:!?'\"").lower() for w in text.split()]
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    return sum(c - 1 for c in grams.values() if c > 1)


def bench(llm: str, do_summary: bool) -> None:
    copts, sopts = ChapterOptions(llm=llm), SummaryOptions(llm=llm)
    writer = load_writer(llm, copts.n_ctx)
    swriter = load_writer(llm, sopts.n_ctx) if do_summary else None
    for label, name, truth_name in SETS:
        lines = read_transcript(str(DATA / name))
        truth = json.loads((DATA / truth_name).read_text())
        spans = topic_spans(lines, truth)
        t0 = time.perf_counter()
        written = list(titles([ch for _, ch in spans], writer, copts))
        per_title = (time.perf_counter() - t0) / len(spans)
        n_names = n_clean = 0
        print(f"\n[{llm}] {label}")
        for (topic, ch), done in zip(spans, written):
            names, clean, new = score_title(done.title, ch, truth["keywords"][topic])
            n_names += names
            n_clean += clean
            print(f"  {topic:15s} {'N' if names else '-'}{'C' if clean else '-'}  {done.title:45s}  new: {new}")
        print(f"  titles: names topic {n_names}/{len(spans)}, clean {n_clean}/{len(spans)}, {per_title:.1f} s/title")
        if swriter is None:
            continue
        t0 = time.perf_counter()
        result = run_summary(summarize(lines, swriter, sopts))
        took = time.perf_counter() - t0
        low = set(terms(result.summary))
        covered = [t for t in truth["topics"] if {stem(k) for k in truth["keywords"][t]} & low]
        print(f"  summary: covers {len(covered)}/{len(spans)} topics, {loops(result.summary)} repeated 4-grams, "
              f"{len(result.summary.split())} words, {took:.0f} s ({result.chunks} chunks, {result.rounds} rounds)")
        print("   ", result.summary.replace("\n", " "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llm", nargs="+", default=["smollm2", "gemma3-270m"])
    ap.add_argument("--no-summary", action="store_true")
    args = ap.parse_args()
    for llm in args.llm:
        bench(llm, not args.no_summary)


if __name__ == "__main__":
    main()
