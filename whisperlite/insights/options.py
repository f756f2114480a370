"""What `chapters` and `summarize` are asked for: frozen options, each default written once
(the CLI shows them in --help; the server's fields fall back to them). Plain data: importing
it loads no model code."""
from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"
# The registry's LLMs, strongest first for titles and summaries, as scripts/bench_insights.py
# ranks them (BENCHMARKS.md: SmolLM2 names more topics and covers more of them); AUTO takes
# the first one pulled.
STRONGEST_FIRST = ("smollm2", "gemma3-270m")


@dataclass(frozen=True)
class ChapterOptions:
    min_chapter: float = 30.0  # seconds: no chapter shorter (YouTube asks for 10 s at least)
    window: int = 4  # transcript lines on each side of a break that are compared
    pause_weight: float = 0.1  # depth added by a pause of twice the median or longer, in proportion
    speaker_weight: float = 0.1  # depth added by a change of speaker
    llm: str = AUTO  # any GGUF path or model name `whisperlite generate -m` takes, or AUTO
    title_lines: int = 5  # a chapter's most representative lines shown to the LLM for its title
    title_context: int = 384  # at most this many tokens of them (the first line is always shown)
    title_tokens: int = 16  # tokens the LLM may write for a title (a title is cut at 8 words)
    n_ctx: int = 1024  # the LLM's context for titles: the excerpt, the instructions, the title


@dataclass(frozen=True)
class SummaryOptions:
    llm: str = AUTO  # as ChapterOptions.llm
    n_ctx: int = 2048  # the LLM's context: each chunk, its instructions and the answer fit in it
    chunk_tokens: int = 512  # at most this many tokens of transcript per chunk (a small model
    # loses the thread in long inputs); less when the context leaves less room
    repeat_penalty: float = 1.2  # a small model decoded greedily otherwise loops on one phrase
    summary_tokens: int = 160  # tokens the LLM may write per summary
    quotes: int = 5  # key quotes to pick
    quote_words: tuple[int, int] = (6, 60)  # a quote's length in words: long enough to say something
