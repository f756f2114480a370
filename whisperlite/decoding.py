"""Decoding one 30-second window: options, logit filters, token selection, quality gates.

A window is decoded as `batch` sequences in lock-step (1 for greedy; best-of samples at
temperature > 0; beams for beam search) sharing one encoder output. `decode_with_fallback`
retries at rising temperatures while the result looks like a loop (compression ratio) or
like a guess (average log-probability), unless the window is judged silent.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from whisperlite.models.whisper import KVCache, Whisper
from whisperlite.tokenizer.whisper import WhisperTokenizer

SECONDS_PER_TOKEN = 0.02  # timestamp resolution: one encoder position = 2 mel frames of 10 ms


@dataclass(frozen=True)
class DecodeOptions:
    """How one window is decoded (openai/whisper DecodingOptions defaults)."""

    task: str = "transcribe"
    language: str | None = "en"
    temperature: float = 0.0
    sample_len: int | None = None  # max new tokens; None: half the text context (224)
    best_of: int = 5  # independent samples when temperature > 0
    beam_size: int | None = None  # None: greedy
    patience: float = 1.0
    length_penalty: float | None = None
    prompt: tuple[int, ...] = ()  # previous-text tokens (conditioning)
    suppress_tokens: tuple[int, ...] | None = None  # None: the non-speech set
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class FallbackOptions:
    """Quality gates of the long-form loop (openai/whisper and whisper.cpp defaults)."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6


@dataclass
class DecodeResult:
    tokens: list[int]  # sampled tokens, timestamps included, eot excluded
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    sum_logprob: float = 0.0
    token_logprobs: list[float] = field(default_factory=list)


def compression_ratio(text: str) -> float:
    """How much zlib shrinks the text: looping output compresses far better than speech."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Over the last axis, in float64 for stable sums of many log-probabilities."""
    x = x.astype(np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


class LogitFilter:
    """Edits logits (B, vocab) in place given the tokens so far (B, t)."""

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        raise NotImplementedError


class SuppressBlank(LogitFilter):
    """No blank or end-of-text as the very first sampled token."""

    def __init__(self, tokenizer: WhisperTokenizer, sample_begin: int):
        self.ids = tokenizer.encode(" ") + [tokenizer.eot]
        self.sample_begin = sample_begin

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.ids] = -np.inf


class SuppressTokens(LogitFilter):
    def __init__(self, ids: Sequence[int]):
        self.ids = np.asarray(sorted(set(ids)), dtype=np.int64)

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        logits[:, self.ids] = -np.inf


class TimestampRules(LogitFilter):
    """Timestamps come in pairs (end, start) and never go back in time; the first token is a
    timestamp no later than `max_initial_timestamp`; when the timestamps together are more
    likely than any single text token, a timestamp is forced."""

    def __init__(self, tokenizer: WhisperTokenizer, sample_begin: int, max_initial_index: int | None):
        self.ts_begin = tokenizer.timestamp_begin
        self.eot = tokenizer.eot
        self.notimestamps = tokenizer.special.notimestamps
        self.sample_begin = sample_begin
        self.max_initial_index = max_initial_index

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        tb = self.ts_begin
        logits[:, self.notimestamps] = -np.inf
        for k in range(tokens.shape[0]):
            sampled = tokens[k, self.sample_begin :]
            last_ts = len(sampled) >= 1 and sampled[-1] >= tb
            penult_ts = len(sampled) < 2 or sampled[-2] >= tb
            if last_ts:
                if penult_ts:  # a closed pair: text must follow
                    logits[k, tb:] = -np.inf
                else:  # an open timestamp: close it or end
                    logits[k, : self.eot] = -np.inf
            stamps = sampled[sampled >= tb]
            if stamps.size:
                # equal is allowed only right after text (the closing stamp of a segment)
                floor = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[k, tb:floor] = -np.inf
        if tokens.shape[1] == self.sample_begin:
            logits[:, :tb] = -np.inf
            if self.max_initial_index is not None:
                logits[:, tb + self.max_initial_index + 1 :] = -np.inf
        logprobs = log_softmax(logits)
        for k in range(tokens.shape[0]):
            ts_mass = np.logaddexp.reduce(logprobs[k, tb:])
            if ts_mass > np.max(logprobs[k, :tb]):
                logits[k, :tb] = -np.inf


def build_filters(tok: WhisperTokenizer, opts: DecodeOptions, sample_begin: int) -> list[LogitFilter]:
    filters: list[LogitFilter] = []
    if opts.suppress_blank:
        filters.append(SuppressBlank(tok, sample_begin))
    base = tok.non_speech_tokens if opts.suppress_tokens is None else opts.suppress_tokens
    sp = tok.special
    filters.append(SuppressTokens(list(base) + [sp.translate, sp.transcribe, sp.sot, sp.startofprev, sp.startoflm, sp.nospeech]))
    if not opts.without_timestamps:
        max_idx = round(opts.max_initial_timestamp / SECONDS_PER_TOKEN) if opts.max_initial_timestamp else None
        filters.append(TimestampRules(tok, sample_begin, max_idx))
    return filters


def initial_tokens(tok: WhisperTokenizer, opts: DecodeOptions, n_text_ctx: int) -> tuple[list[int], int]:
    """[startofprev, *prompt[-(ctx/2-1):]] + sot sequence (+ notimestamps); and the sot index."""
    seq: list[int] = []
    if opts.prompt:
        seq = [tok.special.startofprev] + list(opts.prompt)[-(n_text_ctx // 2 - 1) :]
    sot_index = len(seq)
    seq += tok.sot_sequence(opts.language, opts.task)
    if opts.without_timestamps:
        seq.append(tok.special.notimestamps)
    return seq, sot_index


class WindowDecoder:
    """Decodes one window's encoder output under a `DecodeOptions`."""

    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer):
        self.model = model
        self.tok = tokenizer

    def decode(self, cross: KVCache, opts: DecodeOptions) -> DecodeResult:
        tok, dims = self.tok, self.model.dims
        init, sot_index = initial_tokens(tok, opts, dims.n_text_ctx)
        sample_begin = len(init)
        sample_len = opts.sample_len or dims.n_text_ctx // 2
        sample_len = min(sample_len, dims.n_text_ctx - sample_begin)
        filters = build_filters(tok, opts, sample_begin)
        batch = opts.best_of if opts.temperature > 0 else 1
        rng = np.random.default_rng(opts.seed)

        cache = cross.fork(batch)
        # One batched pass over the whole prompt (all sequences share it): row 0 is enough.
        logits_all, _ = self.model.decoder(np.asarray([init]), cache, all_logits=True)
        probs_sot = np.exp(log_softmax(logits_all[0, sot_index]))
        no_speech_prob = float(probs_sot[tok.special.nospeech])
        cache.broadcast(batch)
        logits = np.repeat(logits_all[:, -1], batch, axis=0).astype(np.float32)

        tokens = np.tile(np.asarray(init, np.int64), (batch, 1))
        sum_lp = np.zeros(batch)
        token_lps: list[list[float]] = [[] for _ in range(batch)]
        done = np.zeros(batch, bool)
        for _ in range(sample_len):
            for f in filters:
                f.apply(logits, tokens)
            lp = log_softmax(logits)
            if opts.temperature == 0:
                nxt = np.argmax(logits, axis=-1)
            else:
                p = np.exp(log_softmax(logits / opts.temperature))
                nxt = np.array([rng.choice(p.shape[1], p=row / row.sum()) for row in p])
            nxt = np.where(done, tok.eot, nxt)
            for k in range(batch):
                if not done[k]:
                    sum_lp[k] += lp[k, nxt[k]]
                    token_lps[k].append(float(lp[k, nxt[k]]))
            done |= nxt == tok.eot
            tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
            if done.all() or cache.length >= dims.n_text_ctx:
                break
            logits = self.model.decoder(nxt[:, None], cache)[0][:, -1]
        return self._pick(tokens, sample_begin, sum_lp, token_lps, no_speech_prob, opts)

    def _pick(self, tokens: np.ndarray, sample_begin: int, sum_lp: np.ndarray, token_lps: list[list[float]],
              no_speech_prob: float, opts: DecodeOptions) -> DecodeResult:
        eot = self.tok.eot
        seqs = []
        for row in tokens[:, sample_begin:]:
            row = row.tolist()
            seqs.append(row[: row.index(eot)] if eot in row else row)
        lengths = np.array([len(s) for s in seqs])
        if opts.length_penalty is None:
            scores = sum_lp / np.maximum(lengths, 1)
        else:
            scores = sum_lp / (((5 + lengths) / 6) ** opts.length_penalty)
        best = int(np.argmax(scores))
        text = self.tok.decode(seqs[best])
        return DecodeResult(
            tokens=seqs[best],
            text=text,
            avg_logprob=float(sum_lp[best] / (len(seqs[best]) + 1)),
            no_speech_prob=no_speech_prob,
            temperature=opts.temperature,
            compression_ratio=compression_ratio(text),
            sum_logprob=float(sum_lp[best]),
            token_logprobs=token_lps[best][: len(seqs[best])],
        )


def decode_with_fallback(decoder: WindowDecoder, cross: KVCache, opts: DecodeOptions,
                         fallback: FallbackOptions) -> DecodeResult:
    """Decode at the first temperature whose result passes the gates (or the last one tried)."""
    result = None
    for t in fallback.temperatures:
        result = decoder.decode(cross, replace(opts, temperature=t))
        needs_fallback = False
        if fallback.compression_ratio_threshold is not None and result.compression_ratio > fallback.compression_ratio_threshold:
            needs_fallback = True  # too repetitive
        if fallback.logprob_threshold is not None and result.avg_logprob < fallback.logprob_threshold:
            needs_fallback = True  # too unsure
        if fallback.no_speech_threshold is not None and result.no_speech_prob > fallback.no_speech_threshold:
            needs_fallback = False  # silence: the window will be skipped, retrying cannot help
        if not needs_fallback:
            break
    assert result is not None
    return result
