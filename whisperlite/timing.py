"""Word-level timestamps: align text tokens to audio frames through cross-attention.

A few decoder heads (the model's "alignment heads") attend to the audio frame where the
token they are predicting is spoken. Re-running the decoder over a window's text with those
heads' attention weights gives a (tokens × frames) similarity; after normalizing each head
over the tokens and smoothing along time with a median filter, dynamic time warping finds
the monotonic token→frame path of highest total attention. The frame where the path first
reaches a token is that token's start; a word runs from its first token's start to the
start of the next word (the row predicting end-of-text closes the last one).
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from whisperlite.audio import TOKENS_PER_SECOND
from whisperlite.models.whisper import KVCache, Whisper
from whisperlite.tokenizer.whisper import WhisperTokenizer

MEDIAN_WIDTH = 7  # frames of 20 ms smoothed together (openai/whisper's choice)
# Scripts written without spaces between words: one character (or token run that decodes to
# whole characters) per "word".
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
# Punctuation that belongs to the following word when the tokenizer splits it off …
LEADING_PUNCT = frozenset("\"'“¿([{«")
# … and words that are only trailing punctuation belong to the previous word.
TRAILING_PUNCT = frozenset("\"'.。,，!！?？:：”)]}、»")


@dataclass
class Word:
    start: float
    end: float
    word: str  # with its leading space, as the tokens decode
    probability: float
    tokens: list[int]


@numba.njit(cache=True)
def _dtw_numba(cost: np.ndarray, trace: np.ndarray) -> None:
    # cost (N, M) -> trace (N+1, M+1): 0 diagonal, 1 token step, 2 time step
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if diag <= up and diag <= left:
                best, move = diag, 0
            elif up <= left:
                best, move = up, 1
            else:
                best, move = left, 2
            acc[i, j] = cost[i - 1, j - 1] + best
            trace[i, j] = move


def _backtrace(trace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From the end cell back to the start; returns the path's (token, frame) indices in order.

    Row 0 and column 0 of the accumulated cost are infinite except at (0, 0), so every
    path ends exactly there.
    """
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    rows, cols = [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return np.asarray(rows[::-1], np.int64), np.asarray(cols[::-1], np.int64)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotonic path through cost (N tokens, M frames) from (0,0) to (N-1,M-1).

    Steps: both indices (diagonal), next token at the same frame, or next frame for the
    same token; ties prefer that order.
    """
    cost = np.ascontiguousarray(cost, np.float64)
    trace = np.zeros((cost.shape[0] + 1, cost.shape[1] + 1), np.int8)
    _dtw_numba(cost, trace)
    return _backtrace(trace)


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Running median along the last axis (odd width, edges reflected)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def split_words(tokenizer: WhisperTokenizer, tokens: Sequence[int], language: str | None) -> list[list[int]]:
    """Group text tokens into words: at spaces, or per character for scripts without spaces.

    A character may span several byte-level tokens: tokens are grouped until they decode
    to whole characters (no U+FFFD replacement left).
    """
    pieces: list[list[int]] = []
    current: list[int] = []
    for t in tokens:
        current.append(t)
        if "\ufffd" not in tokenizer.decode(current):
            pieces.append(current)
            current = []
    if current:
        pieces.append(current)
    if language in NO_SPACE_LANGUAGES:
        return pieces
    words: list[list[int]] = []
    for piece in pieces:
        text = tokenizer.decode(piece)
        if text[:1].isspace() or not words:
            words.append(list(piece))
        else:
            words[-1].extend(piece)
    return words


def _is_punct(text: str) -> bool:
    s = text.strip()
    return bool(s) and all(unicodedata.category(c).startswith("P") for c in s)


def _merge_punctuation(words: list[list[int]], texts: list[str]) -> tuple[list[list[int]], list[str]]:
    """Words that are only punctuation join a neighbour: openers the next word, others the previous."""
    out_w: list[list[int]] = []
    out_t: list[str] = []
    carry_w: list[int] = []
    carry_t = ""
    for w, t in zip(words, texts):
        s = t.strip()
        if _is_punct(t) and s[0] in LEADING_PUNCT and s not in TRAILING_PUNCT:
            carry_w, carry_t = carry_w + w, carry_t + t
            continue
        if _is_punct(t) and out_w and not carry_w:
            out_w[-1] = out_w[-1] + w
            out_t[-1] = out_t[-1] + t
            continue
        out_w.append(carry_w + w)
        out_t.append(carry_t + t if not carry_t else carry_t + t.lstrip())
        carry_w, carry_t = [], ""
    if carry_w:
        if out_w:
            out_w[-1], out_t[-1] = out_w[-1] + carry_w, out_t[-1] + carry_t
        else:
            out_w, out_t = [carry_w], [carry_t]
    return out_w, out_t


def attention_matrix(model: Whisper, tokenizer: WhisperTokenizer, cross: KVCache, text_tokens: Sequence[int],
                     n_frames: int, language: str | None, task: str) -> np.ndarray:
    """Smoothed alignment-head attention (len(text_tokens)+1, n_frames) for one window.

    Row k is the decoder position that predicts text token k (the last row predicts
    end-of-text); columns are 20 ms encoder positions covering the real audio.
    """
    prefix = tokenizer.sot_sequence(language, task) + [tokenizer.special.notimestamps]
    tokens = np.asarray([prefix + list(text_tokens)], np.int64)
    _, crosses = model.decoder(tokens, cross.fork(1), want_cross=True)
    heads = model.alignment_heads
    if heads is None or len(heads) == 0:
        # No alignment heads known: every head of the upper half of the layers.
        n_layer, n_head = model.dims.n_text_layer, model.dims.n_text_head
        heads = np.array([(layer, h) for layer in range(n_layer // 2, n_layer) for h in range(n_head)])
    w = np.stack([crosses[int(layer)][0, int(h)] for layer, h in heads])  # (H, n_tokens, n_audio_ctx)
    w = w[:, len(prefix) - 1 :, :n_frames].astype(np.float64)
    # Re-normalize over the frames that hold audio (the rest of the window is padding).
    w /= np.maximum(w.sum(axis=-1, keepdims=True), 1e-12)
    # Each head on a common scale: standardized over tokens, for every frame.
    w = (w - w.mean(axis=-2, keepdims=True)) / np.maximum(w.std(axis=-2, keepdims=True), 1e-12)
    return median_filter(w, MEDIAN_WIDTH).mean(axis=0)


def align_words(model: Whisper, tokenizer: WhisperTokenizer, cross: KVCache, segments_tokens: Sequence[Sequence[int]],
                segments_probs: Sequence[Sequence[float]], n_frames: int, time_offset: float,
                language: str | None, task: str) -> list[list[Word]]:
    """Words with times (seconds, absolute) for each segment's text tokens of one window.

    `segments_tokens[i]` are segment i's text tokens (no timestamps) and `segments_probs[i]`
    their probabilities; all segments of a window are aligned in one decoder pass.
    """
    per_segment = []
    for toks, probs in zip(segments_tokens, segments_probs):
        groups = split_words(tokenizer, toks, language)
        texts = [tokenizer.decode(g) for g in groups]
        if language not in NO_SPACE_LANGUAGES:
            groups, texts = _merge_punctuation(groups, texts)
        prob_of = dict(zip(range(len(toks)), probs))
        per_segment.append((groups, texts, prob_of))
    all_tokens = [t for toks in segments_tokens for t in toks]
    if not all_tokens or n_frames < 2:
        return [[] for _ in segments_tokens]
    matrix = attention_matrix(model, tokenizer, cross, all_tokens, n_frames // 2, language, task)
    rows, cols = dtw(-matrix)
    # First frame at which the path reaches each row = start time of that row's token.
    first = np.full(matrix.shape[0], -1, np.int64)
    for r, c in zip(rows[::-1], cols[::-1]):
        first[r] = c
    starts = first / TOKENS_PER_SECOND + time_offset

    out: list[list[Word]] = []
    pos = 0
    for groups, texts, prob_of in per_segment:
        words, local = [], 0
        for g, text in zip(groups, texts):
            ps = [prob_of.get(local + k, 0.0) for k in range(len(g))]
            words.append(Word(start=float(starts[pos]), end=float(starts[pos + len(g)]), word=text,
                              probability=float(np.mean(ps)) if ps else 0.0, tokens=list(g)))
            pos += len(g)
            local += len(g)
        out.append(words)
    return out


def voiced_frames(mel: np.ndarray, n_frames: int) -> np.ndarray | None:
    """Which 10 ms frames of a window's log-mel (n_mels, ≥ n_frames) hold sound rather than a
    pause, or None when the window has no clear contrast (all speech, or speech in noise).

    Attention tends to let a word start where the previous one ended, so a word after a
    pause absorbs the pause; the spectrogram says where the sound actually begins.
    """
    loud = mel[:, :n_frames].max(axis=0)
    if loud.size < 10:
        return None
    lo, hi = np.percentile(loud, [10, 95])
    # log-mel is log10 power / 4: 0.5 is a 20 dB spread between pauses and speech
    if hi - lo < 0.5:
        return None
    return loud > lo + 0.3 * (hi - lo)


def snap_to_voice(words: list[Word], voiced: np.ndarray, time_offset: float) -> None:
    """Move each word's start forward and end back to the sound inside its span."""
    fps = 2 * TOKENS_PER_SECOND  # mel frames per second
    for w in words:
        i0 = max(int(round((w.start - time_offset) * fps)), 0)
        i1 = min(int(round((w.end - time_offset) * fps)), len(voiced))
        idx = np.flatnonzero(voiced[i0:i1])
        if idx.size:
            w.start = time_offset + float(i0 + idx[0]) / fps
            w.end = time_offset + float(i0 + idx[-1] + 1) / fps


def fit_words(words: list[Word], seg_start: float, seg_end: float) -> None:
    """Keep words inside their segment, in order, and trim implausibly long ones.

    Attention often lets the first word of a segment soak up a preceding pause (and the
    last one a following pause); a word far longer than the typical word here is cut down
    at the side facing the segment boundary.
    """
    if not words:
        return
    durations = np.array([w.end - w.start for w in words])
    positive = durations[durations > 0]
    median = float(np.median(positive)) if positive.size else 0.0
    max_dur = min(max(2 * median, 0.4), 2.0)  # 2x a typical word, between 0.4 s and 2 s
    if words[0].end - words[0].start > max_dur:
        words[0].start = words[0].end - max_dur
    if words[-1].end - words[-1].start > max_dur:
        words[-1].end = words[-1].start + max_dur
    prev_end = seg_start
    for w in words:
        w.start = round(float(min(max(w.start, prev_end), seg_end)), 3)
        w.end = round(float(min(max(w.end, w.start), seg_end)), 3)
        prev_end = w.end
