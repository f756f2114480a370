"""The local LLM as chapters and summaries use it: chat turns with the model's own template,
decoded greedily (the same transcript gives the same titles and summary every run), and
token counts from the model's own tokenizer to size what goes into its context."""
from __future__ import annotations

import re
from typing import Callable, Sequence

from whisperlite.core.errors import WhisperliteError
from whisperlite.generation.generate import GenerateOptions, Generator, load_generator
from whisperlite.generation.sampling import SamplingOptions

MAX_TITLE_WORDS = 8
MAX_TITLE_CHARS = 60
# Labels a small model puts before its answer although it was asked for the title only.
_LABEL = re.compile(r"^(?:title|chapter(?:\s+\d+)?|topic|answer|heading)\s*[:\-–—]\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»*#_"


class Stopped(WhisperliteError):
    """A call ended early because the Writer's `stop` said so (its request is gone)."""


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

    def prompt_ids(self, system: str, user: str, examples: Sequence[tuple[str, str]] = ()) -> list[int]:
        """The chat prompt: the system turn, example exchanges (user, assistant), the user turn."""
        messages = [{"role": "system", "content": system}]
        for question, answer in examples:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        return self.gen.encode_prompt(self.gen.chat_prompt(messages), chat=True)

    def overhead(self, system: str, user_template: str) -> int:
        """Tokens a prompt takes besides the text put into `user_template`'s {text}."""
        return len(self.prompt_ids(system, user_template.format(text="")))

    def ask(self, system: str, user: str, n_predict: int, examples: Sequence[tuple[str, str]] = (),
            repeat_penalty: float = 1.0) -> str:
        """The model's greedy answer; `repeat_penalty` (llama.cpp's, over the last 64 tokens)
        keeps a small model from repeating one phrase until the token limit."""
        ids = self.prompt_ids(system, user, examples)
        if len(ids) + n_predict > self.n_ctx:
            raise WhisperliteError(f"a prompt of {len(ids)} tokens and {n_predict} to answer do not fit the "
                                   f"context of {self.n_ctx}")
        sampling = SamplingOptions(temp=0.0, repeat_penalty=repeat_penalty)
        opts = GenerateOptions(n_predict=n_predict, n_ctx=self.n_ctx, sampling=sampling)
        return self.gen.generate(ids, opts, on_text=self._check if self.stop is not None else None).text

    def _check(self, piece: str) -> None:
        if self.stop is not None and self.stop():
            raise Stopped("the LLM's answer was stopped: its request has ended")


def load_writer(model: str, n_ctx: int) -> Writer:
    """`model`: any GGUF path or model name `whisperlite generate -m` accepts."""
    return Writer(load_generator(model, n_ctx=n_ctx))


def clean_title(text: str) -> str:
    """A model's answer as a chapter title: its first line, without labels, quotes, markdown
    or a final full stop, at most MAX_TITLE_WORDS words and MAX_TITLE_CHARS characters."""
    line = next((ln for ln in text.splitlines() if ln.strip(" " + _QUOTES)), "")
    line = _LABEL.sub("", line.strip(" " + _QUOTES))
    line = "".join(ch for ch in line if ch not in _QUOTES)
    words = line.split()[:MAX_TITLE_WORDS]
    while words and len(" ".join(words)) > MAX_TITLE_CHARS:
        words.pop()
    title = " ".join(words).rstrip(" .,;:!-–—")
    return title[:1].upper() + title[1:]
