"""Summaries with key quotes: map-reduce over a transcript with the local LLM.

Map: the transcript is cut at line boundaries into chunks that fit the model's context with
the instructions and room for the answer (counted with the model's own tokenizer; a single
line too long for a chunk is cut at words, never dropped), and each chunk is summarized.
Reduce: the partial summaries are joined into one, in as many rounds as their length needs.
Nothing of the transcript is left out.

Quotes are chosen from the transcript, not written: each is one whole transcript line, picked
for how much of the recording's vocabulary it carries (TF-IDF similarity to the whole), kept
apart from the others in wording and time. So every quote is verbatim, and its time is the
time of the line that holds it, by construction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from whisperlite.core.errors import WhisperliteError
from whisperlite.insights.llm import Writer, whole_sentences
from whisperlite.insights.options import SummaryOptions
from whisperlite.insights.text import TfIdf, cosine, terms
from whisperlite.insights.transcript import Line


@dataclass(frozen=True)
class Quote:
    start: float
    end: float
    text: str
    speaker: str | None


@dataclass(frozen=True)
class Summary:
    summary: str
    quotes: tuple[Quote, ...]
    chunks: int  # transcript chunks summarized in the map step
    rounds: int  # reduce rounds after it


SYSTEM = "You summarize transcripts of recordings accurately and concisely, in plain prose."
MAP_PROMPT = "Here is a part of a transcript:\n\n{text}\n\nSummarize this part in two or three sentences."
REDUCE_PROMPT = ("Here are summaries of consecutive parts of one recording:\n\n{text}\n\n"
                 "Write one summary of the whole recording in three to five sentences.")
ONE_PROMPT = "Here is the transcript of a recording:\n\n{text}\n\nSummarize it in three to five sentences."


def chunk_texts(texts: Sequence[str], writer: Writer, budget: int) -> list[str]:
    """`texts` joined in order into chunks of at most `budget` tokens; a text longer than the
    budget on its own is cut at words."""
    if budget < 16:
        raise WhisperliteError(f"the LLM's context of {writer.n_ctx} tokens leaves no room for a transcript chunk "
                               "(ask for a longer context)")
    pieces: list[tuple[str, int]] = []
    for text in texts:
        n = writer.count(text)
        if n <= budget:
            pieces.append((text, n))
            continue
        words, part = text.split(), []
        for w in words:
            if part and writer.count(" ".join(part + [w])) > budget:
                pieces.append((" ".join(part), writer.count(" ".join(part))))
                part = []
            part.append(w)
        if part:
            pieces.append((" ".join(part), writer.count(" ".join(part))))
    chunks, current, used = [], [], 0
    for text, n in pieces:
        if current and used + n + 1 > budget:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(text)
        used += n + 1
    if current:
        chunks.append(" ".join(current))
    return chunks


@dataclass(frozen=True)
class Step:
    """One LLM call done of `total` (the total grows when a reduce round turns out to need
    another); the last step carries the result."""

    done: int
    total: int
    result: Summary | None = None


def summarize(lines: Sequence[Line], writer: Writer, opts: SummaryOptions) -> Iterator[Step]:
    """Summary and quotes of a transcript, one LLM call per step (a server's engine runs one
    step at a time); the last step holds the Summary."""
    # a small Gemma echoes a system text (its template puts it into the user's turn)
    system = "" if writer.family == "gemma" else SYSTEM

    def room(prompt: str) -> int:
        return writer.n_ctx - writer.overhead(system, prompt) - opts.summary_tokens

    def ask(prompt: str, text: str) -> str:
        # an answer cut at the token limit ends mid-sentence: the sentence is dropped
        return whole_sentences(writer.ask(system, prompt.format(text=text), opts.summary_tokens,
                                          repeat_penalty=opts.repeat_penalty).strip())

    chunks = chunk_texts([line.text for line in lines], writer, min(opts.chunk_tokens, room(MAP_PROMPT)))
    if len(chunks) == 1:
        yield Step(1, 1, Summary(ask(ONE_PROMPT, chunks[0]), pick_quotes(lines, opts), 1, 0))
        return
    done, total = 0, len(chunks) + 1
    partial = []
    for chunk in chunks:
        partial.append(ask(MAP_PROMPT, chunk))
        done += 1
        yield Step(done, total)
    rounds = 0
    while len(partial) > 1:
        rounds += 1
        groups = chunk_texts(partial, writer, room(REDUCE_PROMPT))  # summaries: as many as fit
        if len(groups) >= len(partial):
            raise WhisperliteError(f"the LLM's context of {writer.n_ctx} tokens cannot hold two partial summaries "
                                   "to join (ask for a longer context)")
        total = done + len(groups)
        partial = []
        for group in groups:
            partial.append(ask(REDUCE_PROMPT, group))
            done += 1
            if len(groups) > 1:  # the last call's step is the one with the result
                yield Step(done, total)
    yield Step(done, total, Summary(partial[0], pick_quotes(lines, opts), len(chunks), rounds))


def run_summary(steps: Iterator[Step], on_step: Callable[[int, int], None] | None = None) -> Summary:
    """Run `summarize` to its result, passing each step's progress to `on_step`."""
    for step in steps:
        if on_step:
            on_step(step.done, step.total)
        if step.result is not None:
            return step.result
    raise AssertionError("summarize ended without its result")


def pick_quotes(lines: Sequence[Line], opts: SummaryOptions) -> tuple[Quote, ...]:
    """Up to `opts.quotes` transcript lines that say most about the whole, each one at least
    a minute (or a tenth of the recording, if shorter) from the others and not a near repeat
    of one; in time order."""
    if not lines or opts.quotes <= 0:
        return ()
    docs = [terms(line.text) for line in lines]
    idf = TfIdf(docs)
    whole = idf.vector(docs)
    vectors = [idf.vector([d]) for d in docs]
    low, high = opts.quote_words
    span = max(line.end for line in lines) - lines[0].start
    apart = min(60.0, span / 10)
    scored = sorted((i for i, line in enumerate(lines) if low <= len(line.text.split()) <= high),
                    key=lambda i: (-cosine(vectors[i], whole), i))
    chosen: list[int] = []
    for i in scored:
        if len(chosen) == opts.quotes:
            break
        if any(abs(lines[i].start - lines[j].start) < apart or cosine(vectors[i], vectors[j]) > 0.5 for j in chosen):
            continue
        chosen.append(i)
    return tuple(Quote(lines[i].start, lines[i].end, lines[i].text, lines[i].speaker) for i in sorted(chosen))


def clock(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_summary(result: Summary) -> str:
    out = ["Summary", "", result.summary, "", "Key quotes", ""]
    for q in result.quotes:
        who = f"{q.speaker}: " if q.speaker else ""
        out.append(f"{clock(q.start)}  {who}\u201c{q.text}\u201d")
    return "\n".join(out) + "\n"


def summary_json(result: Summary) -> dict:
    return {"summary": result.summary, "chunks": result.chunks, "reduce_rounds": result.rounds,
            "quotes": [{"start": q.start, "end": q.end, "text": q.text, "speaker": q.speaker} for q in result.quotes]}
