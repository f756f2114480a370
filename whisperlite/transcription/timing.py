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
from typing import Sequence

import numba
import numpy as np

from whisperlite.audio.ffmpeg import TOKENS_PER_SECOND
from whisperlite.models.whisper import KVCache, Whisper
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcription.results import Word

MEDIAN_WIDTH = 7  # frames of 20 ms smoothed together (openai/whisper's choice; _add_median7's network)
# Scripts written without spaces between words: one character (or token run that decodes to
# whole characters) per "word".
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
# Punctuation that belongs to the following word when the tokenizer splits it off …
LEADING_PUNCT = frozenset("\"'“¿([{«")
# … and words that are only trailing punctuation belong to the previous word.
TRAILING_PUNCT = frozenset("\"'.。,，!！?？:：”)]}、»")


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


@numba.njit(cache=True)
def _backtrace(trace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From the end cell back to the start; returns the path's (token, frame) indices in order.

    Row 0 and column 0 of the accumulated cost are infinite except at (0, 0), so every
    path ends exactly there.
    """
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    rows = np.empty(i + j, np.int64)
    cols = np.empty(i + j, np.int64)
    k = i + j
    while i > 0 and j > 0:
        k -= 1
        rows[k], cols[k] = i - 1, j - 1
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return rows[k:], cols[k:]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotonic path through cost (N tokens, M frames) from (0,0) to (N-1,M-1).

    Steps: both indices (diagonal), next token at the same frame, or next frame for the
    same token; ties prefer that order.
    """
    cost = np.ascontiguousarray(cost, np.float64)
    trace = np.zeros((cost.shape[0] + 1, cost.shape[1] + 1), np.int8)
    _dtw_numba(cost, trace)
    return _backtrace(trace)


@numba.njit(cache=True)
def _pairwise_sum(x: np.ndarray) -> float:
    """Sum of a float64 row in numpy's order (8 running sums per block of ≤128, blocks
    halved recursively), so that normalizing gives np.sum's result bit for bit."""
    n = x.shape[0]
    if n < 8:
        s = -0.0
        for i in range(n):
            s += x[i]
        return s
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]
        i = 8
        while i < n - n % 8:
            r0 += x[i]
            r1 += x[i + 1]
            r2 += x[i + 2]
            r3 += x[i + 3]
            r4 += x[i + 4]
            r5 += x[i + 5]
            r6 += x[i + 6]
            r7 += x[i + 7]
            i += 8
        s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            s += x[i]
            i += 1
        return s
    half = n // 2
    half -= half % 8
    return _pairwise_sum(x[:half]) + _pairwise_sum(x[half:])


@numba.njit(cache=True, inline="always")
def _sort2(a: float, b: float) -> tuple[float, float]:
    return min(a, b), max(a, b)


@numba.njit(cache=True)
def _add_median7(x: np.ndarray, padded: np.ndarray, out: np.ndarray) -> None:
    """out += running median of width 7 over x (edges reflected; len(x) ≥ 4).

    A sorting network of min/max on a padded copy (`padded`: len(x) + 6 scratch): no
    branches, so the loop vectorizes; the median is one of the 7 values, exactly the one
    np.median picks.
    """
    n = x.shape[0]
    # a loop, not `padded[3 : n + 3] = x`: a slice assignment compiles numba's shape-mismatch
    # message (string formatting), most of this kernel's first compile
    for f in range(n):
        padded[f + 3] = x[f]
    for k in range(1, 4):
        padded[3 - k] = x[k]
        padded[n + 2 + k] = x[n - 1 - k]
    for f in range(n):
        a0, a1, a2, a3, a4, a5, a6 = (padded[f], padded[f + 1], padded[f + 2], padded[f + 3], padded[f + 4],
                                      padded[f + 5], padded[f + 6])
        a0, a6 = _sort2(a0, a6)
        a2, a3 = _sort2(a2, a3)
        a4, a5 = _sort2(a4, a5)
        a0, a2 = _sort2(a0, a2)
        a1, a4 = _sort2(a1, a4)
        a3, a6 = _sort2(a3, a6)
        a0, a1 = _sort2(a0, a1)
        a2, a5 = _sort2(a2, a5)
        a3, a4 = _sort2(a3, a4)
        a1, a2 = _sort2(a1, a2)
        a4, a6 = _sort2(a4, a6)
        a2, a3 = _sort2(a2, a3)
        a4, a5 = _sort2(a4, a5)
        a3, a4 = _sort2(a3, a4)  # the last layer's other pairs, (1,2) and (5,6), cannot move a3
        out[f] += a3



@numba.njit(cache=True)
def _add_smoothed_head(w: np.ndarray, out: np.ndarray, z: np.ndarray) -> None:
    """out (T, F) += one head's attention w (T tokens, F frames) scaled to sum to 1 over the
    frames of each token, standardized over the tokens at each frame, median-filtered in time.

    Computed in float64 in numpy's order of operations, so the result equals the plain numpy
    formulation bit for bit, without its (heads, T, F, width) temporaries; `z` is (T, F)
    float64 scratch.
    """
    n_tok, n_frames = w.shape
    for t in range(n_tok):
        for f in range(n_frames):
            z[t, f] = w[t, f]
        total = max(_pairwise_sum(z[t]), 1e-12)
        for f in range(n_frames):
            z[t, f] /= total
    # loops, not array expressions (`mean /= n_tok`, np.maximum(np.sqrt(var / n_tok), …)):
    # each of those compiles numba's array-expression machinery, a second of a first run
    mean = np.zeros(n_frames)
    for t in range(n_tok):
        for f in range(n_frames):
            mean[f] += z[t, f]
    for f in range(n_frames):
        mean[f] /= n_tok
    var = np.zeros(n_frames)
    for t in range(n_tok):
        for f in range(n_frames):
            d = z[t, f] - mean[f]
            var[f] += d * d
    scale = np.empty(n_frames)
    for f in range(n_frames):
        sd = np.sqrt(var[f] / n_tok)
        scale[f] = 1e-12 if sd < 1e-12 else sd  # np.maximum's: a NaN stays NaN
    padded = np.empty(n_frames + MEDIAN_WIDTH - 1)
    for t in range(n_tok):
        for f in range(n_frames):
            z[t, f] = (z[t, f] - mean[f]) / scale[f]
        if n_frames > MEDIAN_WIDTH // 2:
            _add_median7(z[t], padded, out[t])
        else:  # too short to filter
            for f in range(n_frames):  # a loop for the reason in _add_median7
                out[t, f] += z[t, f]


def median_filter(x: np.ndarray, width: int = MEDIAN_WIDTH) -> np.ndarray:
    """Running median of `width` (odd) values along the last axis (edges reflected), as float64;
    rows too short to reflect come back unfiltered (as openai/whisper's `median_filter`)."""
    rows = np.ascontiguousarray(x, np.float64).reshape(-1, x.shape[-1])
    n = rows.shape[1]
    if n <= width // 2:
        return rows.reshape(x.shape).copy()
    out = np.zeros_like(rows)
    if width == MEDIAN_WIDTH:  # the sorting network word timing uses
        padded = np.empty(n + MEDIAN_WIDTH - 1)
        for r in range(rows.shape[0]):
            _add_median7(rows[r], padded, out[r])
        return out.reshape(x.shape)
    pad = width // 2
    step = max(1, (1 << 20) // (n * width))  # rows at a time: windows of about 8 MB
    for a in range(0, rows.shape[0], step):
        padded = np.pad(rows[a : a + step], ((0, 0), (pad, pad)), mode="reflect")
        out[a : a + step] = np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=1), axis=-1)
    return out.reshape(x.shape)


def split_words(tokenizer: WhisperTokenizer, tokens: Sequence[int], language: str | None) -> list[list[int]]:
    """Group text tokens into words: at spaces, or per character for scripts without spaces.

    A character may span several byte-level tokens: tokens are grouped into runs that
    decode to whole characters (`split_tokens_on_unicode`).
    """
    texts, pieces = tokenizer.split_tokens_on_unicode(tokens)
    if language in NO_SPACE_LANGUAGES:
        return pieces
    words: list[list[int]] = []
    for text, piece in zip(texts, pieces):
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
    _, crosses = model.decoder(tokens, cross.fork(1), positions=(), want_cross=True)  # no logits needed
    heads = model.alignment_heads
    if heads is None or len(heads) == 0:
        # No alignment heads known: every head of the upper half of the layers.
        n_layer, n_head = model.dims.n_text_layer, model.dims.n_text_head
        heads = np.array([(layer, h) for layer in range(n_layer // 2, n_layer) for h in range(n_head)])
    first = len(prefix) - 1
    return alignment_matrix([crosses[int(layer)][0, int(h), first:, :n_frames] for layer, h in heads])


def alignment_matrix(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over heads of each head's attention (tokens, frames), re-normalized over the
    frames given (those that hold audio; the rest of the window is padding), standardized
    over the tokens at each frame (every head on a common scale) and median-filtered in time.
    """
    out = np.zeros(weights[0].shape)
    scratch = np.empty(weights[0].shape)
    for w in weights:
        _add_smoothed_head(w, out, scratch)
    out /= len(weights)
    return out


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
    # First frame at which the path reaches each row = start time of that row's token
    # (the path visits every row, in order).
    first = cols[np.flatnonzero(np.diff(rows, prepend=-1))]
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


# Beam search puts timestamps on coarse steps (whole seconds on tiny.en), so a window's last
# timestamp can lie this far past the onset of the sound after it.
RESUME_SLACK = 100  # mel frames
MIN_PAUSE = 20  # mel frames: shorter quiet gaps are inside a word or phrase
RESUME_PAD = 40  # mel frames of the pause kept before the onset at most (the VAD's speech pad)


def resume_before_voice(voiced: np.ndarray | None, seek: int, earliest: int) -> int:
    """Where a window should resume that was cut at mel frame `seek` (its last timestamp).

    A seek inside a sound that began at most RESUME_SLACK frames earlier, after a pause of at
    least MIN_PAUSE frames that ends after `earliest` (the last segment's start), is inside
    the next sentence's first word: a window started there tends to skip that whole sentence.
    Resume inside the pause instead, shortly before the onset. A seek in a pause stays.
    """
    if voiced is None or not 0 < seek < len(voiced):
        return seek
    quiet_from, quiet_to = seek, seek  # the quiet stretch around seek, [from, to)
    while quiet_to < len(voiced) and not voiced[quiet_to]:
        quiet_to += 1
    while quiet_from > 0 and not voiced[quiet_from - 1]:
        quiet_from -= 1
    if quiet_to - quiet_from >= MIN_PAUSE:
        return seek
    # Back over sound and short gaps to the last pause of at least MIN_PAUSE frames.
    start = quiet_from
    while True:
        while start > 0 and voiced[start - 1]:
            start -= 1
        onset = start
        while start > 0 and not voiced[start - 1]:
            start -= 1
        pause = onset - start
        if pause >= MIN_PAUSE:
            break
        if start == 0 or seek - start > RESUME_SLACK:
            return seek
    if seek - onset > RESUME_SLACK or onset <= earliest:
        return seek
    return onset - min(pause // 2, RESUME_PAD)


MIN_UNHEARD = 100  # mel frames of sound after a transcript's end that say speech went on


def sound_after(voiced: np.ndarray | None, frame: int) -> bool:
    """Whether a second or more of sound follows mel frame `frame`, counted from RESUME_SLACK
    frames on (a coarse last timestamp can lie that far before its sentence's real end).
    Without contrast (`voiced` None) nothing can be told apart: False."""
    if voiced is None:
        return False
    return int(np.count_nonzero(voiced[frame + RESUME_SLACK:])) >= MIN_UNHEARD


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
