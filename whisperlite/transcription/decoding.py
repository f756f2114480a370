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

from whisperlite.core.errors import ModelFormatError
from whisperlite.core.profiling import Profile
from whisperlite.models.whisper import KVCache, Whisper
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcription.logits import (
    apply_timestamp_rules,
    row_logsumexp,
    row_topk,
)
from whisperlite.transcription.options import DecodeOptions, FallbackOptions

SECONDS_PER_TOKEN = 0.02  # timestamp resolution: one encoder position = 2 mel frames of 10 ms


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


def logsumexp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x))) over the last axis, shifted by the maximum so nothing overflows."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):  # an all -inf row is log(0) = -inf, as it should be
        return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Over the last axis. float32 is enough per step: sequence sums are taken in float64."""
    x = np.asarray(x, np.float32)
    return x - logsumexp(x)[..., None]


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
        self.max_initial_index = -1 if max_initial_index is None else max_initial_index

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        # one layout for every caller (the beams pass a view of their buffer): one compile
        apply_timestamp_rules(logits, np.ascontiguousarray(tokens), self.sample_begin, self.ts_begin, self.eot,
                              self.notimestamps, self.max_initial_index)


def suppressed_tokens(tok: WhisperTokenizer, suppress_tokens: Sequence[int] | None) -> tuple[int, ...]:
    """Every token never sampled: `suppress_tokens` (None or containing -1: the non-speech
    symbols besides the other ids given, as in openai-whisper and faster-whisper), plus the
    special tokens that only a prompt may hold."""
    ids = {-1} if suppress_tokens is None else set(suppress_tokens)
    if -1 in ids:
        ids = (ids - {-1}) | set(tok.non_speech_tokens)
    sp = tok.special
    return tuple(sorted(ids | {sp.translate, sp.transcribe, sp.sot, sp.startofprev, sp.startoflm, sp.nospeech}))


def build_filters(tok: WhisperTokenizer, opts: DecodeOptions, sample_begin: int, text_begin: int) -> list[LogitFilter]:
    """`text_begin`: where the transcript starts (before a forced prefix); `sample_begin`: the
    first token the model chooses."""
    filters: list[LogitFilter] = []
    if opts.suppress_blank:
        filters.append(SuppressBlank(tok, sample_begin))
    filters.append(SuppressTokens(suppressed_tokens(tok, opts.suppress_tokens)))
    if not opts.without_timestamps:
        max_idx = round(opts.max_initial_timestamp / SECONDS_PER_TOKEN) if opts.max_initial_timestamp else None
        filters.append(TimestampRules(tok, text_begin, max_idx))
    return filters


def initial_tokens(tok: WhisperTokenizer, opts: DecodeOptions, n_text_ctx: int) -> tuple[list[int], int, list[int]]:
    """[startofprev, *prompt[-(ctx/2-1):]] + sot sequence (+ notimestamps); the sot index; and
    the transcript's forced start: <|0.00|> (with timestamps) and the prefix's tokens."""
    seq: list[int] = []
    if opts.prompt:
        seq = [tok.special.startofprev] + list(opts.prompt)[-(n_text_ctx // 2 - 1) :]
    sot_index = len(seq)
    seq += tok.sot_sequence(opts.language, opts.task)
    if opts.without_timestamps:
        seq.append(tok.special.notimestamps)
    forced: list[int] = []
    if opts.prefix and opts.prefix.strip():
        forced = ([] if opts.without_timestamps else [tok.timestamp_begin]) + tok.encode(" " + opts.prefix.strip())
        forced = forced[: n_text_ctx // 4]  # room left to decode after it
    return seq, sot_index, forced


@dataclass
class Hypothesis:
    """One finished (or cut-off) sequence: sampled tokens without eot, and their scores."""

    tokens: list[int]
    sum_logprob: float
    token_logprobs: list[float]


class TokenDecoder:
    """Picks the next token of every sequence in the batch and knows when the window is done.

    `step` gets the filtered logits (B, vocab) and their log-sum-exp per row (B,), so the
    log-probability of token j in row k is logits[k, j] - lse[k] (no full log-softmax is
    made: only a few tokens' probabilities are ever read); it returns the rows each
    sequence continues from (for `KVCache.reorder`; None when rows stay in place) and the
    next token of each row.
    """

    def step(self, tokens: np.ndarray, logits: np.ndarray, lse: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        raise NotImplementedError

    def finish(self, tokens: np.ndarray, sample_begin: int) -> list[Hypothesis]:
        raise NotImplementedError


class SamplingDecoder(TokenDecoder):
    """Greedy (temperature 0) or independent samples at a temperature (best-of)."""

    def __init__(self, batch: int, temperature: float, eot: int, rng: np.random.Generator):
        self.temperature = temperature
        self.eot = eot
        self.rng = rng
        self.sum_logprob = np.zeros(batch)
        self.token_logprobs: list[list[float]] = [[] for _ in range(batch)]
        self.finished = np.zeros(batch, bool)

    def step(self, tokens: np.ndarray, logits: np.ndarray, lse: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        if self.temperature == 0:
            nxt = np.argmax(logits, axis=-1)
        else:
            # Gumbel-max: argmax(logits/T + Gumbel noise) is a draw from softmax(logits/T),
            # for every row at once.
            gumbel = -np.log(-np.log(self.rng.random(logits.shape) + 1e-20) + 1e-20)
            nxt = np.argmax(logits / self.temperature + gumbel, axis=-1)
        nxt = np.where(self.finished, self.eot, nxt)
        for k in np.flatnonzero(~self.finished):
            lp = float(logits[k, nxt[k]] - lse[k])
            self.sum_logprob[k] += lp
            self.token_logprobs[k].append(lp)
        self.finished |= nxt == self.eot
        return None, nxt

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    def finish(self, tokens: np.ndarray, sample_begin: int) -> list[Hypothesis]:
        hyps = []
        for k, row in enumerate(tokens[:, sample_begin:].tolist()):
            seq = row[: row.index(self.eot)] if self.eot in row else row
            hyps.append(Hypothesis(seq, float(self.sum_logprob[k]), self.token_logprobs[k][: len(seq)]))
        return hyps


class BeamSearchDecoder(TokenDecoder):
    """Beam search over `beam_size` live sequences decoded together as one batch.

    Every live beam proposes its beam_size + 1 best continuations (enough that, even if one
    of them is eot, beam_size live ones remain); the best beam_size non-eot candidates by
    cumulative log-probability become the new beams, while eot candidates are set aside as
    finished. Decoding stops once round(beam_size * patience) sequences have finished and
    the best candidate of the step is eot (as CTranslate2's beam search does). Stopping at
    the first round(beam_size * patience) finished ones (openai-whisper's rule) lets a few
    early eot proposals, after the window's first sentence or two, end the window while its
    best beams are still transcribing: the long-form loop then skips the rest as silence.
    """

    def __init__(self, beam_size: int, patience: float, eot: int):
        self.beam_size = beam_size
        self.eot = eot
        self.max_finished = max(1, round(beam_size * patience))
        # All rows start as copies of one prompt: only row 0 may propose, or the beams
        # would be beam_size copies of the same sequence.
        self.scores = np.full(beam_size, -np.inf)
        self.scores[0] = 0.0
        self.token_logprobs: list[list[float]] = [[] for _ in range(beam_size)]
        self.finished: list[Hypothesis] = []
        self.top_finished = False  # the best candidate of the last step was eot

    def step(self, tokens: np.ndarray, logits: np.ndarray, lse: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        k = self.beam_size + 1
        top = row_topk(logits, k)  # (B, k) best tokens of each row
        cand = self.scores[:, None] + (np.take_along_axis(logits, top, axis=-1) - lse[:, None])
        order = np.argsort(-cand, axis=None, kind="stable")
        rows, nxt = np.zeros(self.beam_size, np.int64), np.full(self.beam_size, self.eot, np.int64)
        scores = np.full(self.beam_size, -np.inf)
        lps: list[list[float]] = [[] for _ in range(self.beam_size)]
        n_live = 0
        self.top_finished = bool(top.flat[order[0]] == self.eot) if len(order) else False
        for flat in order:
            score = cand.flat[flat]
            if not np.isfinite(score) or n_live == self.beam_size:
                break
            row, token = divmod(int(flat), k)
            token = int(top[row, token])
            lp = float(logits[row, token] - lse[row])
            if token == self.eot:
                prefix = tokens[row].tolist()
                self.finished.append(Hypothesis(prefix, float(score), self.token_logprobs[row] + [lp]))
                continue
            rows[n_live], nxt[n_live], scores[n_live] = row, token, score
            lps[n_live] = self.token_logprobs[row] + [lp]
            n_live += 1
        # Rows left unfilled stay dead (-inf score, eot token) so the batch keeps its shape.
        self.scores, self.token_logprobs = scores, lps
        return rows, nxt

    @property
    def done(self) -> bool:
        return (len(self.finished) >= self.max_finished and self.top_finished) or not np.isfinite(self.scores).any()

    def finish(self, tokens: np.ndarray, sample_begin: int) -> list[Hypothesis]:
        hyps = [Hypothesis(h.tokens[sample_begin:], h.sum_logprob, h.token_logprobs) for h in self.finished]
        if len(hyps) < self.max_finished:
            # Cut off by the context length: the live beams compete as they are.
            for k in np.argsort(-self.scores):
                if np.isfinite(self.scores[k]) and len(hyps) < self.max_finished:
                    hyps.append(Hypothesis(tokens[k, sample_begin:].tolist(), float(self.scores[k]), self.token_logprobs[k]))
        return hyps


class WindowDecoder:
    """Decodes one window's encoder output under a `DecodeOptions`."""

    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer):
        self.model = model
        self.tok = tokenizer

    def decode(self, cross: KVCache, opts: DecodeOptions, profile: Profile | None = None) -> DecodeResult:
        """With a `profile`: stages decode/prompt, decode/steps (the decoder per token) and
        decode/logic (filters, log-probabilities, token choice) per token."""
        tok, dims = self.tok, self.model.dims
        profile = profile if profile is not None else Profile()
        prompt, sot_index, forced = initial_tokens(tok, opts, dims.n_text_ctx)
        init = prompt + forced
        sample_begin = len(init)
        sample_len = opts.sample_len or dims.n_text_ctx // 2
        sample_len = min(sample_len, dims.n_text_ctx - sample_begin)
        filters = build_filters(tok, opts, sample_begin, len(prompt))
        strategy: TokenDecoder
        if opts.temperature == 0 and opts.beam_size is not None and opts.beam_size > 1:
            strategy = BeamSearchDecoder(opts.beam_size, opts.patience, tok.eot)
            batch = opts.beam_size
        else:
            batch = opts.best_of if opts.temperature > 0 else 1
            strategy = SamplingDecoder(batch, opts.temperature, tok.eot, np.random.default_rng(opts.seed))

        mark = profile.start()
        cache = cross.fork(batch)
        # One batched pass over the whole prompt (all sequences share it): row 0 is enough.
        # Logits at sot (no-speech probability), before each forced token, and at the end.
        at = (sot_index, *range(len(prompt) - 1, sample_begin))
        logits_all, _ = self.model.decoder(np.asarray([init]), cache, positions=at if forced else (sot_index, -1))
        probs_sot = np.exp(log_softmax(logits_all[0, 0]))
        no_speech_prob = float(probs_sot[tok.special.nospeech])
        forced_logprobs = [float(log_softmax(logits_all[0, 1 + k])[t]) for k, t in enumerate(forced)]
        cache.broadcast(batch)
        logits = np.repeat(logits_all[:, -1], batch, axis=0).astype(np.float32)
        profile.stop("decode/prompt", mark, len(init), "tokens")

        # Room for every token this window can add: per token only one column is written.
        tokens = np.empty((batch, sample_begin + sample_len), np.int64)
        tokens[:, :sample_begin] = init
        n = sample_begin
        for _ in range(sample_len):
            mark = profile.start()
            seq = tokens[:, :n]
            for f in filters:
                f.apply(logits, seq)
            rows, nxt = strategy.step(seq, logits, row_logsumexp(logits))
            if rows is not None:
                cache.reorder(rows)
                tokens[:, :n] = seq[rows]
            tokens[:, n] = nxt
            n += 1
            profile.stop("decode/logic", mark, 1, "tokens")
            if strategy.done or cache.length >= dims.n_text_ctx:
                break
            mark = profile.start()
            # All rows, finished or not, go through the decoder together: one batched call.
            logits = np.ascontiguousarray(self.model.decoder(nxt[:, None], cache)[0][:, -1], np.float32)
            profile.stop("decode/steps", mark, 1, "tokens")
        hyps = strategy.finish(tokens[:, :n], sample_begin)
        if forced:  # the transcript starts with them
            hyps = [Hypothesis(forced + h.tokens, sum(forced_logprobs) + h.sum_logprob, forced_logprobs + h.token_logprobs)
                    for h in hyps]
        return self._pick(hyps, no_speech_prob, opts)

    def _pick(self, hyps: list[Hypothesis], no_speech_prob: float, opts: DecodeOptions) -> DecodeResult:
        if not hyps:  # every candidate scored NaN: weights that load finite but overflow
            raise ModelFormatError("the model gives no finite scores (its weights are out of range: a damaged file?)")
        lengths = np.array([len(h.tokens) for h in hyps])
        sums = np.array([h.sum_logprob for h in hyps])
        if opts.length_penalty is None:
            scores = sums / np.maximum(lengths, 1)
        else:
            scores = sums / (((5 + lengths) / 6) ** opts.length_penalty)
        best = hyps[int(np.argmax(scores))]
        text = self.tok.decode(best.tokens)
        return DecodeResult(
            tokens=best.tokens,
            text=text,
            avg_logprob=best.sum_logprob / (len(best.tokens) + 1),
            no_speech_prob=no_speech_prob,
            temperature=opts.temperature,
            compression_ratio=compression_ratio(text),
            sum_logprob=best.sum_logprob,
            token_logprobs=best.token_logprobs[: len(best.tokens)],
        )


def decode_with_fallback(decoder: WindowDecoder, cross: KVCache, opts: DecodeOptions,
                         fallback: FallbackOptions, profile: Profile | None = None) -> DecodeResult:
    """Decode at the first temperature whose result passes the gates (or the last one tried)."""
    result = None
    for t in fallback.temperatures:
        result = decoder.decode(cross, replace(opts, temperature=t), profile)
        needs_fallback = False
        if fallback.compression_ratio_threshold is not None and result.compression_ratio > fallback.compression_ratio_threshold:
            needs_fallback = True  # too repetitive
        if fallback.logprob_threshold is not None and result.avg_logprob < fallback.logprob_threshold:
            needs_fallback = True  # too unsure
        if (fallback.no_speech_threshold is not None and result.no_speech_prob > fallback.no_speech_threshold
                and (fallback.logprob_threshold is None or result.avg_logprob < fallback.logprob_threshold)):
            # Silence: the window will be skipped, retrying cannot help. A confident result
            # is not skipped (white noise gives loops at p(no speech) 0.9 and logprob -0.3),
            # so it must still pass the other gates, as in openai-whisper.
            needs_fallback = False
        if not needs_fallback:
            break
    assert result is not None
    return result
