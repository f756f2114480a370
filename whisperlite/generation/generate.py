"""Text generation with a LLaMA-family or Gemma 3 GGUF model: prompt in one batch, then one token per
step, streamed; chat turns rendered with the model's own jinja chat template.

Timings are kept like llama.cpp's llama_print_timings (load, prompt eval, eval, sampling,
total), so the two can be compared line for line.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from whisperlite.core.errors import ModelNotFoundError, WhisperliteError
from whisperlite.formats.gguf import read_gguf
from whisperlite.generation.chat_template import CHATML_TEMPLATE, FALLBACK_TEMPLATES, render_chat
from whisperlite.generation.sampling import Sampler, SamplingOptions
from whisperlite.kernels.ggml_order import GgmlArith
from whisperlite.kernels.share import helping
from whisperlite.models.decoders import Decoder, build_decoder
from whisperlite.models.llama import KVCache
from whisperlite.registry.warmup import compile_once, weight_types
from whisperlite.tokenizer.llama import LlamaTokenizer

@dataclass(frozen=True)
class GenerateOptions:
    n_predict: int = -1  # -1: until an end-of-generation token or the context is full
    n_ctx: int = 4096  # KV cache length (llama.cpp's default); capped at the model's own
    sampling: SamplingOptions = field(default_factory=SamplingOptions)


@dataclass
class Timings:
    """Milliseconds and counts, as llama.cpp reports them."""

    load_ms: float = 0.0
    prompt_ms: float = 0.0
    n_prompt: int = 0
    eval_ms: float = 0.0
    n_eval: int = 0
    sample_ms: float = 0.0
    n_sample: int = 0

    @staticmethod
    def _rate(ms: float, n: int, unit: str) -> str:
        per = ms / n if n else 0.0
        tps = 1e3 * n / ms if ms > 0 else 0.0
        return f"{ms:10.2f} ms / {n:5d} {unit:6s} ({per:8.2f} ms per token, {tps:8.2f} tokens per second)"

    @property
    def prompt_tps(self) -> float:
        return 1e3 * self.n_prompt / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def eval_tps(self) -> float:
        return 1e3 * self.n_eval / self.eval_ms if self.eval_ms > 0 else 0.0

    def report(self) -> str:
        total = self.load_ms + self.prompt_ms + self.eval_ms + self.sample_ms
        return "\n".join([
            f"llama_print_timings:        load time = {self.load_ms:10.2f} ms",
            f"llama_print_timings:      sample time = {self._rate(self.sample_ms, self.n_sample, 'runs')}",
            f"llama_print_timings: prompt eval time = {self._rate(self.prompt_ms, self.n_prompt, 'tokens')}",
            f"llama_print_timings:        eval time = {self._rate(self.eval_ms, self.n_eval, 'runs')}",
            f"llama_print_timings:       total time = {total:10.2f} ms / {self.n_prompt + self.n_eval:5d} tokens",
        ])


@dataclass
class Generation:
    """One finished reply: the ids generated (an end token included), its text, why it
    stopped ("eog", "length" or "context")."""

    tokens: list[int]
    text: str
    stop: str


class Generator:
    """A loaded model, its tokenizer and one KV cache that persists across calls, so a
    conversation only evaluates what each turn adds."""

    def __init__(self, path: str, n_ctx: int = 4096, ggml_exact: bool = True,
                 arith: GgmlArith | None = None) -> None:
        t0 = time.perf_counter()
        gguf = read_gguf(path)
        self.model = build_decoder(gguf, ggml_exact=ggml_exact, arith=arith)
        compile_once(_kernel_key(self.model), lambda: _warm_up(self.model))
        self.tokenizer = LlamaTokenizer(gguf)
        self.architecture = gguf.architecture
        self.path = path
        n_ctx = min(n_ctx, self.model.config.n_ctx_train) if n_ctx > 0 else self.model.config.n_ctx_train
        try:
            self.cache: KVCache = self.model.new_cache(n_ctx)
        except MemoryError:  # n_ctx from the file's context_length (bounded, but maybe 2^20)
            cfg = self.model.config
            gib = 8 * cfg.n_layer * cfg.n_head_kv * cfg.head_dim * n_ctx / 2**30
            raise WhisperliteError(f"{path}: a KV cache of {n_ctx} tokens ({gib:.1f} GiB) does not fit in "
                                   "memory; ask for a shorter context (-c)") from None
        self.cached: list[int] = []  # the tokens whose keys/values are in the cache
        self.timings = Timings(load_ms=1e3 * (time.perf_counter() - t0))

    @property
    def n_ctx(self) -> int:
        return self.cache.n_ctx

    def fork(self) -> "Generator":
        """Another Generator on the same weights and tokenizer with its own empty KV cache and
        timings: one per conversation that runs interleaved with others (a server's slots)."""
        other = copy.copy(self)
        other.cache = self.model.new_cache(self.n_ctx)
        other.cached = []
        other.timings = Timings()
        return other

    @property
    def chat_template(self) -> str:
        """The file's chat template, or the one for its architecture when it has none."""
        return self.tokenizer.chat_template or FALLBACK_TEMPLATES.get(self.architecture, CHATML_TEMPLATE)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        tok = self.tokenizer
        return render_chat(self.chat_template, messages, True, tok.token_text(tok.bos_id), tok.token_text(tok.eos_id))

    def encode_prompt(self, text: str, chat: bool = False) -> list[int]:
        """Prompt ids; a rendered chat prompt already spells its BOS when the template has one."""
        tok = self.tokenizer
        add_special = not (chat and tok.bos_id >= 0 and text.startswith(tok.token_text(tok.bos_id)))
        return tok.encode(text, add_special=add_special, parse_special=True)

    def _prefill(self, prompt: list[int]):
        """Evaluate the part of `prompt` not already cached; returns the last logits."""
        keep = 0
        limit = min(len(prompt) - 1, len(self.cached))  # the last token is always re-run
        while keep < limit and self.cached[keep] == prompt[keep]:
            keep += 1
        self.cache.n_past = keep
        self.cached = self.cached[:keep]
        t0 = time.perf_counter()
        logits = self.model.forward(prompt[keep:], self.cache)
        self.timings.prompt_ms += 1e3 * (time.perf_counter() - t0)
        self.timings.n_prompt += len(prompt) - keep
        self.cached = list(prompt)
        return logits

    def stream(self, prompt: list[int], opts: GenerateOptions,
               on_stop: Callable[[str], None] | None = None) -> Iterator[int]:
        """Yield generated token ids (an end-of-generation token is yielded, then stops).
        `on_stop` receives the stop reason: "eog", "length" or "context"."""
        if not prompt:
            raise WhisperliteError("empty prompt")
        if len(prompt) >= self.n_ctx:
            raise WhisperliteError(f"prompt of {len(prompt)} tokens does not fit the context of {self.n_ctx}")
        if opts.n_predict == 0:  # nothing asked for: not even the prompt is evaluated
            if on_stop:
                on_stop("length")
            return
        sampler = Sampler(opts.sampling)
        for t in prompt:
            sampler.accept(t)
        logits = self._prefill(prompt)
        n = 0
        while True:
            t0 = time.perf_counter()
            tok = sampler.sample(logits)
            self.timings.sample_ms += 1e3 * (time.perf_counter() - t0)
            self.timings.n_sample += 1
            sampler.accept(tok)
            n += 1
            yield tok
            if tok in self.tokenizer.eog_ids:
                reason = "eog"
            elif opts.n_predict >= 0 and n >= opts.n_predict:
                reason = "length"
            elif self.cache.n_past >= self.n_ctx:
                reason = "context"
            else:
                t0 = time.perf_counter()
                logits = self.model.forward([tok], self.cache)
                self.timings.eval_ms += 1e3 * (time.perf_counter() - t0)
                self.timings.n_eval += 1
                self.cached.append(tok)
                continue
            if on_stop:
                on_stop(reason)
            return

    def generate(self, prompt: list[int], opts: GenerateOptions,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        """Run `stream` to the end, passing decoded text pieces to `on_text` as they form."""
        streamer = self.tokenizer.streamer()
        tokens: list[int] = []
        stop = []
        parts: list[str] = []
        for tok in self.stream(prompt, opts, on_stop=stop.append):
            tokens.append(tok)
            piece = streamer.push(tok)
            if piece:
                parts.append(piece)
                if on_text:
                    on_text(piece)
        tail = streamer.flush()
        if tail:
            parts.append(tail)
            if on_text:
                on_text(tail)
        return Generation(tokens, "".join(parts), stop[0] if stop else "length")


WARM_PROMPT = 64  # tokens: enough that every kernel's threaded variant runs, as one token runs the others


def _warm_up(model: Decoder) -> None:
    """A prompt and two more tokens on a scratch cache: the kernels a generation reaches
    (at two threads or more the one-token step runs on one, then on two: models/llama.py).
    The prompt runs with its products shared (kernels/share.py, as at two threads) at any
    thread count, so that a later run at two threads finds those compiled too."""
    cache = model.new_cache(WARM_PROMPT + 2)
    with helping():
        model.forward(np.zeros(WARM_PROMPT, np.int64), cache)
    model.forward([0], cache)
    model.forward([0], cache)


def _kernel_key(model: Decoder) -> str:
    """What decides which kernels a model compiles: its architecture, weight types and arithmetic."""
    a = model.arith
    return (f"{type(model).__name__.lower()}-{weight_types(model.weights())}-"
            f"{'ggml' if model.ggml_exact else 'float'}-{a.lanes}x{a.kv_pad}")


def load_generator(model: str, n_ctx: int = 4096, ggml_exact: bool = True,
                   arith: GgmlArith | None = None) -> Generator:
    """A Generator for a GGUF path or a model name known to `whisperlite.registry.hub`."""
    from whisperlite.registry import hub

    if os.path.exists(model):
        path = model
    elif os.path.sep in model or model.endswith(".gguf"):
        raise ModelNotFoundError(f"{model}: no such model file")
    else:
        path = str(hub.cached_path(model))
    return Generator(path, n_ctx=n_ctx, ggml_exact=ggml_exact, arith=arith)
