"""The local LLM as chapters and summaries use it: chat turns with the model's own template,
decoded greedily (the same transcript gives the same titles and summary every run), and
token counts from the model's own tokenizer to size what goes into its context."""
from __future__ import annotations

import re
from typing import Callable

from whisperlite.core.errors import WhisperliteError
from whisperlite.generation.generate import GenerateOptions, Generator, load_generator
from whisperlite.generation.sampling import SamplingOptions
from whisperlite.insights.options import AUTO, STRONGEST_FIRST
from whisperlite.insights.text import STOPWORDS

MAX_TITLE_WORDS = 8
MAX_TITLE_CHARS = 60
# Labels a small model puts before its answer although it was asked for the title only.
_LABEL = re.compile(r"^(?:title|chapter(?:\s+\d+)?|topic|answer|heading)\s*[:\-–—]\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»*#_"
_APOSTROPHE = re.compile(r"(?<=[A-Za-z])['’](?=[A-Za-z])")
_LATIN = 0x24F  # the last letter of Latin Extended-B: a letter past it is of another script


class Stopped(WhisperliteError):
    """A call ended early because the Writer's `stop` said so (its request is gone)."""


class _Enough(Exception):
    """The answer so far is all that is wanted (a title's line is complete, or a loop began)."""


def loop_start(text: str, n: int = 4) -> int | None:
    """Where in `text` a run of `n` words starts that already came earlier (a greedy small
    model that repeats itself never stops), or None."""
    seen: set[tuple[str, ...]] = set()
    spans = [(m.start(), m.group().lower().strip(".,;:!?\"'")) for m in re.finditer(r"\S+", text)]
    for i in range(len(spans) - n + 1):
        gram = tuple(w for _, w in spans[i:i + n])
        if gram in seen:
            return spans[i][0]
        seen.add(gram)
    return None


def whole_sentences(text: str) -> str:
    """`text` up to its last full stop, question or exclamation mark (an answer cut at the
    token limit or at a loop ends mid-sentence), or all of it when it holds no sentence end."""
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", text)]
    return text[:ends[-1]] if ends else text


class Writer:
    """A loaded model that answers chat turns greedily. `stop`, when given, is asked as each
    answer forms: True ends the call at once with Stopped (a server's request timed out or its
    client left, and the engine must not finish a long answer nobody reads)."""

    def __init__(self, gen: Generator, stop: Callable[[], bool] | None = None):
        self.gen = gen
        self.stop = stop

    @property
    def n_ctx(self) -> int:
        return self.gen.n_ctx

    def count(self, text: str) -> int:
        """Tokens `text` takes in a prompt."""
        return len(self.gen.tokenizer.encode(text, add_special=False, parse_special=False))

    @property
    def family(self) -> str:
        """"gemma" for Gemma models (their template has no system turn and prepends it to the
        user's, which a small Gemma then echoes), else "chatml"."""
        return "gemma" if self.gen.architecture.startswith("gemma") else "chatml"

    def prompt_ids(self, system: str, user: str, prefix: str = "") -> list[int]:
        """The chat prompt in the model's own template: the system turn (when `system` is not
        empty), the user turn, and the start of the answer, `prefix`, which the model continues."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        return self.gen.encode_prompt(self.gen.chat_prompt(messages) + prefix, chat=True)

    def overhead(self, system: str, user_template: str) -> int:
        """Tokens a prompt takes besides the text put into `user_template`'s {text}."""
        return len(self.prompt_ids(system, user_template.format(text="")))

    def ask(self, system: str, user: str, n_predict: int, repeat_penalty: float = 1.0, prefix: str = "",
            one_line: bool = False) -> str:
        """The model's greedy answer (after `prefix`). `repeat_penalty` (llama.cpp's, over the
        last 64 tokens) makes a loop less likely; one that starts anyway ends the answer, cut
        before it. `one_line`: the answer ends with its first non-empty line."""
        ids = self.prompt_ids(system, user, prefix)
        if len(ids) + n_predict > self.n_ctx:
            raise WhisperliteError(f"a prompt of {len(ids)} tokens and {n_predict} to answer do not fit the "
                                   f"context of {self.n_ctx}")
        sampling = SamplingOptions(temp=0.0, repeat_penalty=repeat_penalty)
        opts = GenerateOptions(n_predict=n_predict, n_ctx=self.n_ctx, sampling=sampling)
        parts: list[str] = []

        def on_text(piece: str) -> None:
            if self.stop is not None and self.stop():
                raise Stopped("the LLM's answer was stopped: its request has ended")
            parts.append(piece)
            text = "".join(parts)
            if (one_line and "\n" in text.lstrip()) or loop_start(text) is not None:
                raise _Enough

        try:
            self.gen.generate(ids, opts, on_text=on_text)
        except _Enough:
            pass
        text = "".join(parts)
        cut = loop_start(text)
        if cut is not None:
            text = whole_sentences(text[:cut])
        return text.lstrip().split("\n", 1)[0] if one_line else text


def choose_llm(name: str, is_pulled: Callable[[str], bool] | None = None) -> str:
    """`name`, or for AUTO the strongest LLM pulled here (`is_pulled`: the registry's cache by
    default); when none is, the strongest of all, whose load error says how to pull it."""
    if name != AUTO:
        return name
    if is_pulled is None:
        from whisperlite.registry.hub import is_cached as is_pulled
    return next((m for m in STRONGEST_FIRST if is_pulled(m)), STRONGEST_FIRST[0])


def load_writer(model: str, n_ctx: int) -> Writer:
    """`model`: any GGUF path or model name `whisperlite generate -m` accepts."""
    return Writer(load_generator(model, n_ctx=n_ctx))


def _stray(word: str, source: set[str], title_case: bool) -> bool:
    """A word a small model tacks on after the title: not from the text, and in another casing
    than the title's (a lowercase word after Title Case, an all-capitals one)."""
    w = word.strip(".,;:!?-–—()")
    if not w or w.lower() in source:
        return False
    return (w.isupper() and len(w) > 2) or (title_case and w.islower() and w not in STOPWORDS)


def clean_title(text: str, source: str = "") -> str:
    """A model's answer as a chapter title: its first line up to its first sentence end,
    without labels, quotes, markdown, letters of a non-Latin script, a tail of words in
    another casing that are not in `source` (the text it titles; "… at Home anaknya",
    "… SUBSCRIBE") or function words left dangling, at most MAX_TITLE_WORDS words and
    MAX_TITLE_CHARS characters."""
    line = next((ln for ln in text.splitlines() if ln.strip(" " + _QUOTES)), "")
    line = _LABEL.sub("", line.strip(" " + _QUOTES))
    line = re.split(r"(?<=[a-z0-9])[.!?](?:\s|$)", line, maxsplit=1)[0]
    line = _APOSTROPHE.sub("\0", line)  # kept through the quote stripping: "Tonight's"
    line = "".join(ch for ch in line if ch not in _QUOTES and not (ch.isalpha() and ord(ch) > _LATIN))
    line = line.replace("\0", "'")
    words = line.split()[:MAX_TITLE_WORDS]
    while words and len(" ".join(words)) > MAX_TITLE_CHARS:
        words.pop()
    vocabulary = {w.lower() for w in re.findall(r"[\w']+", source)}
    title_case = sum(w[:1].isupper() for w in words if w.lower() not in STOPWORDS) >= 2
    while words and (_stray(words[-1], vocabulary, title_case)
                     or (len(words) > 1 and words[-1].strip(".,;:!?-–—").lower() in STOPWORDS)):
        words.pop()
    title = " ".join(words).rstrip(" .,;:!-–—")
    return title[:1].upper() + title[1:]
