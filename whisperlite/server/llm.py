"""The LLM behind the text routes: slots, the one table of request fields, and the generation
job the engine runs one token per step.

A Generator's KV cache persists across calls, and the engine interleaves jobs step by step:
two requests on one cache would overwrite each other's keys and values. So the server keeps
`parallel` slots (llama.cpp's -np), each a Generator with its own cache on the shared weights;
a request holds one slot from its first step to its last. A slot keeps its cache afterwards,
and a request goes to the free slot whose cached tokens share the longest prefix with its
prompt, so the next turn of a chat evaluates only what the turn adds.

Invariants:
- A slot's Generator is touched only by the job that holds the slot, on the engine thread.
- A job yields once per engine step: the first step evaluates the prompt and samples the
  first token, each later step one token, the last step (no model work) reports the end.
- Text handed out never contains a stop string nor a prefix of one that may still complete.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from whisperlite.generation.generate import GenerateOptions, Generator
from whisperlite.generation.sampling import SamplingOptions
from whisperlite.server.engine import QueueFull
from whisperlite.server.errors import ApiError

MAX_STOPS = 16  # stop strings per request: OpenAI allows 4; more is a client bug, not a need


@dataclass(frozen=True)
class Knob:
    """One request field mapped onto GenerateOptions (n_predict) or SamplingOptions: its name
    in requests, the option it sets, its type and its allowed range (None: unbounded)."""

    name: str
    option: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes `low` itself

    def parse(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"{self.name} must be a number, not {type(value).__name__}", self.name)
        if not math.isfinite(value):
            raise bad(f"{self.name} must be a finite number", self.name)
        if self.kind is int:
            if value != int(value):
                raise bad(f"{self.name} must be an integer, not {value}", self.name)
            value = int(value)
        if (self.low is not None and (value < self.low or (self.low_open and value == self.low))) or (
                self.high is not None and value > self.high):
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low}"
            hi = "" if self.high is None else f"<= {self.high}"
            raise bad(f"{self.name}={value} is out of range (must be {' and '.join(s for s in (lo, hi) if s)})",
                      self.name)
        return value


# Both faces read the same table: llama.cpp's names and OpenAI's (max_tokens,
# max_completion_tokens) for the same options, with the ranges `whisperlite generate` accepts.
# Absent fields keep the CLI's defaults (GenerateOptions, SamplingOptions: llama.cpp's).
KNOBS = (
    Knob("max_tokens", "n_predict", int, -1),
    Knob("max_completion_tokens", "n_predict", int, -1),  # later rows win: the newer name, then llama.cpp's
    Knob("n_predict", "n_predict", int, -1),
    Knob("temperature", "temp", float, 0.0),
    Knob("top_k", "top_k", int, 0),
    Knob("top_p", "top_p", float, 0.0, 1.0),
    Knob("min_p", "min_p", float, 0.0, 1.0),
    Knob("repeat_penalty", "repeat_penalty", float, 0.0, low_open=True),
    Knob("repeat_last_n", "repeat_last_n", int, 0),
    Knob("seed", "seed", int, -1, 2**64 - 1),
)

# Fields whose only supported value is their neutral one: anything else gets a 400 saying so,
# rather than an answer that silently ignored what was asked.
NEUTRAL: dict[str, Any] = {
    "n": 1, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False,
    "top_logprobs": 0, "n_probs": 0, "logit_bias": {}, "tools": [], "functions": [], "echo": False,
    "suffix": "", "grammar": "", "json_schema": {}, "mirostat": 0, "typical_p": 1.0,
    "dynatemp_range": 0.0, "dry_multiplier": 0.0, "xtc_probability": 0.0,
}
ADVICE = {"presence_penalty": " (repeat_penalty is)", "frequency_penalty": " (repeat_penalty is)",
          "n": ": one choice per request", "best_of": ": one choice per request"}


def bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value" if param else None)


def generate_options(body: dict[str, Any], n_ctx: int) -> GenerateOptions:
    """The request's generation options (400 on a bad value or an unsupported field)."""
    for name, neutral in NEUTRAL.items():
        value = body.get(name)
        if value is not None and value != neutral and not (name == "logprobs" and value == 0):
            raise ApiError(400, f"{name}={value!r} is not supported{ADVICE.get(name, '')}", param=name,
                           code="unsupported_value")
    fmt = body.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise ApiError(400, f"response_format={fmt!r} is not supported (only text)", param="response_format",
                       code="unsupported_value")
    values = {k.option: k.parse(body[k.name]) for k in KNOBS if body.get(k.name) is not None}
    n_predict = values.pop("n_predict", GenerateOptions.n_predict)
    return GenerateOptions(n_predict=n_predict, n_ctx=n_ctx, sampling=SamplingOptions(**values))


def stop_strings(value: Any) -> tuple[str, ...]:
    """`stop`: a string or a list of strings (empty ones mean nothing and are dropped)."""
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOPS:
        raise bad(f"stop has {len(stops)} strings; at most {MAX_STOPS}", "stop")
    return tuple(s for s in stops if s)


def flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false", name)
    return value


@dataclass(frozen=True)
class TextRequest:
    """One generation: prompt ids, options, stop strings, whether to reuse a slot's cache."""

    prompt: list[int]
    opts: GenerateOptions
    stop: tuple[str, ...] = ()
    cache_prompt: bool = True


@dataclass(frozen=True)
class Done:
    """How a generation ended, with llama.cpp's names and timings."""

    stop_type: str  # "eos" (an end-of-generation token), "limit" (n_predict or the context), "word"
    stopping_word: str
    truncated: bool  # the context filled up
    n_prompt: int
    n_cached: int  # prompt tokens reused from the slot's cache
    n_predicted: int
    prompt_ms: float
    predicted_ms: float

    @property
    def finish_reason(self) -> str:
        """OpenAI's name: stop (end token or stop string) or length."""
        return "length" if self.stop_type == "limit" else "stop"

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.n_prompt, "completion_tokens": self.n_predicted,
                "total_tokens": self.n_prompt + self.n_predicted}

    def timings(self) -> dict[str, float]:
        n_eval = self.n_prompt - self.n_cached
        return {"cache_n": self.n_cached, "prompt_n": n_eval, "prompt_ms": self.prompt_ms,
                "prompt_per_token_ms": self.prompt_ms / n_eval if n_eval else 0.0,
                "prompt_per_second": 1e3 * n_eval / self.prompt_ms if self.prompt_ms > 0 else 0.0,
                "predicted_n": self.n_predicted, "predicted_ms": self.predicted_ms,
                "predicted_per_token_ms": self.predicted_ms / self.n_predicted if self.n_predicted else 0.0,
                "predicted_per_second": 1e3 * self.n_predicted / self.predicted_ms if self.predicted_ms > 0 else 0.0}


@dataclass(frozen=True)
class Step:
    """One engine step of a generation: the text it makes final, the token it sampled (None on
    the last step), and on the last step how it ended."""

    text: str
    token: int | None = None
    done: Done | None = None


@dataclass
class Stats:
    """Counters for /metrics (llama.cpp's names), written on the engine thread."""

    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    predicted_tokens: int = 0
    predicted_seconds: float = 0.0
    decodes: int = 0
    busy_per_decode: int = 0  # summed over decodes, for the average
    n_tokens_max: int = 0


@dataclass
class Slot:
    id: int
    gen: Generator
    busy: bool = False
    task: int = -1  # the request it serves or served last
    params: dict[str, Any] = field(default_factory=dict)
    n_decoded: int = 0
    last_used: float = 0.0


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Llm:
    """The loaded generator, its slots and counters. Slots are taken and given back on the
    event loop; a request waits for a free one (llama.cpp's deferred requests)."""

    def __init__(self, gen: Generator, names: tuple[str, ...], parallel: int, max_waiting: int):
        self.gen = gen
        self.names = names  # what `model` may say: the first is the one answers carry
        self.slots = [Slot(0, gen)] + [Slot(i, gen.fork()) for i in range(1, max(parallel, 1))]
        self.stats = Stats()
        self.max_waiting = max_waiting
        self._waiters: deque[asyncio.Future] = deque()
        self._tasks = 0

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def busy(self) -> int:
        return sum(s.busy for s in self.slots)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, req: TextRequest, params: dict[str, Any]) -> Slot:
        """A free slot for `req` (the longest cached prefix, then the least recently used)."""
        while True:
            free = [s for s in self.slots if not s.busy]
            if free:
                slot = max(free, key=lambda s: (common_prefix(s.gen.cached, req.prompt) if req.cache_prompt else 0,
                                                -s.last_used))
                slot.busy, slot.params, slot.n_decoded = True, params, 0
                slot.task, self._tasks = self._tasks, self._tasks + 1
                return slot
            if len(self._waiters) >= self.max_waiting:
                raise QueueFull(5)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # woken and cancelled: wake the next one
                    self._wake()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self, slot: Slot) -> None:
        slot.busy, slot.last_used = False, time.monotonic()
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return

    def run(self, slot: Slot, req: TextRequest) -> Iterator[Step]:
        """The generation as engine steps (see the module's invariants)."""
        gen, stats = slot.gen, self.stats
        if not req.cache_prompt:
            gen.cached = []
        reasons: list[str] = []
        tokens = gen.stream(req.prompt, req.opts, on_stop=reasons.append)
        streamer = gen.tokenizer.streamer()
        text, sent = "", 0  # the text generated so far, and how much of it is handed out
        n_cached = n = 0
        prompt_ms = predicted_ms = 0.0
        try:
            while True:
                t = gen.timings
                before = (t.n_prompt, t.prompt_ms, t.eval_ms + t.sample_ms, t.n_eval)
                tok = next(tokens, None)
                if t.n_prompt > before[0] or t.n_eval > before[3]:  # this step ran the model (once)
                    stats.decodes += 1
                    stats.busy_per_decode += self.busy
                    stats.n_tokens_max = max(stats.n_tokens_max, gen.cache.n_past)
                if n == 0 and tok is not None:  # the prompt step
                    n_cached = len(req.prompt) - (t.n_prompt - before[0])
                    prompt_ms = t.prompt_ms - before[1]
                    stats.prompt_tokens += len(req.prompt) - n_cached
                    stats.prompt_seconds += prompt_ms / 1e3
                spent = t.eval_ms + t.sample_ms - before[2]
                predicted_ms += spent
                stats.predicted_seconds += spent / 1e3
                if tok is None:
                    text += streamer.flush()
                else:
                    n += 1
                    slot.n_decoded = n
                    stats.predicted_tokens += 1
                    text += streamer.push(tok)
                hit = _find_stop(text, req.stop, sent)
                if hit is not None or tok is None:
                    end, word = hit if hit is not None else (len(text), "")
                    reason = reasons[0] if reasons else "length"
                    done = Done("word" if word else "eos" if reason == "eog" else "limit", word,
                                reason == "context", len(req.prompt), n_cached, n, prompt_ms, predicted_ms)
                    yield Step(text[sent:end], tok, done)
                    return
                end = len(text) - _held_back(text, req.stop, sent)
                yield Step(text[sent:end], tok)
                sent = end
        finally:
            tokens.close()


def _find_stop(text: str, stops: tuple[str, ...], start: int) -> tuple[int, str] | None:
    """The earliest stop string in text[start:] (whatever precedes `start` was checked)."""
    best: tuple[int, str] | None = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best


def _held_back(text: str, stops: tuple[str, ...], start: int) -> int:
    """How many trailing characters could begin a stop string: not handed out yet."""
    held = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text) - start), held, -1):
            if text.endswith(s[:k]):
                held = k
                break
    return held


def sampling_params(opts: GenerateOptions, stop: tuple[str, ...] = ()) -> dict[str, Any]:
    """llama.cpp's `generation_settings` / slot `params` for these options."""
    s = opts.sampling
    return {"n_predict": opts.n_predict, "seed": s.seed if s.seed >= 0 else 4294967295, "temperature": s.temp,
            "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p, "repeat_last_n": s.repeat_last_n,
            "repeat_penalty": s.repeat_penalty, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "stop": list(stop), "max_tokens": opts.n_predict, "n_keep": 0, "ignore_eos": False, "n_probs": 0,
            "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"]}
