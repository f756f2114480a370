"""Who spoke when: speaker embeddings over the speech, clustered, and turns cut at word times.

`Embedder` takes the 16 kHz samples a transcription reads (after the VAD, on its timeline)
in order, and embeds partials of 1.6 s every 0.8 s in blocks on a thread of its own, so
memory holds a few blocks of audio and 1 KB per partial whatever the input's length. `label`
then clusters the partials that lie on the transcript's words (average-linkage agglomerative
clustering on cosine distance: the number of speakers is where the merge distance jumps
most, or is given), gives each word the speaker nearest to the partials around it, folds
turns shorter than MIN_TURN_SECONDS into their neighbours, and splits segments where the
speaker changes, always between two words.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import replace
from typing import Callable, Iterable, Iterator

import numpy as np

from whisperlite.core.profiling import Profile
from whisperlite.models.speaker_encoder import (
    HOP,
    N_FFT,
    PARTIAL_FRAMES,
    SAMPLE_RATE,
    SpeakerEncoder,
    mel_frames,
    normalize_volume,
)
from whisperlite.transcription.results import Segment

PARTIAL_SAMPLES = PARTIAL_FRAMES * HOP  # 1.6 s
STEP_FRAMES = PARTIAL_FRAMES // 2  # a partial every 0.8 s: each word is inside two
# Audio embedded at once: ~112 partials in one batch. The LSTM's per-step products run
# nearer the core's peak with more rows, and the block stays a few MB (memory does not grow
# with the input).
BLOCK_SAMPLES = 90 * SAMPLE_RATE
QUEUED_PIECES = 4  # pieces of audio handed to the embedding thread and not yet embedded
MIN_PARTIAL_SAMPLES = PARTIAL_SAMPLES * 3 // 4  # a shorter tail is padded with silence (resemblyzer's min_coverage)
# With this encoder, one voice's partials merge at small cosine distances, a little larger
# for a speaker recorded in two settings; different voices (synthetic voices of one engine
# included) merge farther apart than this. No fixed distance separates every pair of voices,
# so the speakers are counted at the largest relative jump between consecutive merge
# distances, among the merges at least this far apart.
MIN_SPLIT_DISTANCE = 0.38
MAX_SPEAKERS = 32
MIN_CLUSTER = 3  # partials (2.4 s of speech) a speaker needs
MIN_TURN_SECONDS = 1.0  # a shorter run of words takes a neighbour's speaker: partials are 1.6 s
MAX_POINTS = 1500  # partials clustered directly; the rest are assigned to the clusters' centroids
PREFIX = "SPEAKER_"
Partials = tuple[np.ndarray, np.ndarray]  # spans (n, 2) in seconds of the input, embeddings (n, d)


def speaker_name(index: int) -> str:
    """Speaker labels as subtitles show them: SPEAKER_1, SPEAKER_2, … in order of first words."""
    return f"{PREFIX}{index + 1}"


_END = object()


class Embedder:
    """Partial embeddings of a sample stream fed in order (`feed` each piece, then `finish`;
    or `tap` the stream, which embeds on a thread of its own)."""

    def __init__(self, encoder: SpeakerEncoder, profile: Profile | None = None):
        self.encoder = encoder
        self.profile = profile if profile is not None else Profile()
        self._buf: list[np.ndarray] = []
        self._have = 0
        self._origin = 0  # stream sample of the buffer's first sample
        self.spans: list[tuple[int, int]] = []  # stream samples each partial covers
        self.embeddings: list[np.ndarray] = []
        self._pieces: queue.Queue = queue.Queue(maxsize=QUEUED_PIECES)
        self._cancel = threading.Event()
        self._error: BaseException | None = None

    def tap(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """`chunks` passed through, each embedded on a thread of its own: a piece reaches the
        consumer without waiting for its embedding (numpy's products and the LSTM kernel
        release the GIL, so the embedding runs beside decoding). Closing this closes `chunks`
        (a consumer that stops early stops ffmpeg too); what it has passed on is still
        embedded. After an error in `chunks` nothing more is."""
        worker = threading.Thread(target=self._work, name="whisperlite-speakers", daemon=True)
        worker.start()
        it = iter(chunks)
        try:
            for chunk in it:
                self._pieces.put(chunk)
                yield chunk
        except Exception:
            self._cancel.set()
            raise
        finally:
            self._pieces.put(_END)
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def _work(self) -> None:
        with self.profile.background():
            while True:
                piece = self._pieces.get()
                try:
                    if self._cancel.is_set() or self._error is not None:
                        pass
                    elif piece is _END:
                        self.finish()
                    else:
                        self.feed(piece)
                except BaseException as e:  # raised by `partials`, in the consumer
                    self._error = e
                finally:
                    self._pieces.task_done()
                if piece is _END:
                    return

    def feed(self, samples: np.ndarray) -> None:
        # a long stretch of speech arrives as one piece: embedded a block at a time, so the
        # LSTM's batch never outgrows one block
        while len(samples):
            take = min(len(samples), BLOCK_SAMPLES - self._have)
            self._buf.append(samples[:take])
            self._have += take
            samples = samples[take:]
            if self._have >= BLOCK_SAMPLES:
                self._flush(final=False)

    def partials(self, to_input: Callable[[float, bool], float]) -> Partials:
        """(spans (n, 2) in seconds of the input, embeddings (n, d)) of the partials so far.
        `to_input(seconds, is_end)` maps the stream's clock to the input's. Safe while `tap`
        still passes pieces on (a transcription of clips may stop before the stream ends).
        Waits for the pieces `tap` has passed on to be embedded (and the last partial, once
        the stream has ended)."""
        self._pieces.join()
        if self._error is not None:
            raise self._error
        n = len(self.spans)
        spans = np.array([(to_input(a / SAMPLE_RATE, False), to_input(b / SAMPLE_RATE, True))
                          for a, b in self.spans[:n]], np.float64).reshape(-1, 2)
        embeddings = np.asarray(self.embeddings[:n], np.float32).reshape(n, self.encoder.dims.n_embed)
        return spans, embeddings

    def finish(self) -> None:
        """Embed what is left, the last partial padded with silence if it is long enough."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        have = self._have
        if not have:
            return
        step = STEP_FRAMES * HOP
        starts = list(range(0, max(have - PARTIAL_SAMPLES, -1) + 1, step))
        if final:
            tail = starts[-1] + step if starts else 0
            whole_stream_short = not starts and self._origin == 0 and have >= MIN_PARTIAL_SAMPLES // 2
            if have - tail >= MIN_PARTIAL_SAMPLES or whole_stream_short:
                starts.append(tail)
        keep = have if final else starts[-1] + step if starts else 0
        if starts:
            # One buffer holds the block: its samples, silence to the last partial's end, and
            # the zeros that centre the mel frames at both ends (no concatenated, padded and
            # centred copies of a 90-s block); it is let go before the LSTM runs.
            length = max(have, starts[-1] + PARTIAL_SAMPLES)
            x = np.zeros(length + N_FFT, np.float32)
            block = x[N_FFT // 2 : N_FFT // 2 + length]
            at = 0
            for piece in self._buf:
                block[at : at + len(piece)] = piece
                at += len(piece)
            self._buf = [block[keep:have].copy()] if keep < have else []
            with self.profile.stage("speakers", len(starts), "partials"):
                normalize_volume(block, out=block)
                mel = mel_frames(x, centred=True)
                del x, block
                # the partials (every STEP_FRAMES from the first) as overlapping views of
                # `mel`: the encoder copies them once, into its time-major order
                windows = np.lib.stride_tricks.sliding_window_view(mel, PARTIAL_FRAMES, axis=0)
                mels = windows[::STEP_FRAMES][: len(starts)].transpose(0, 2, 1)
                self.embeddings.extend(self.encoder(mels))
            self.spans.extend((self._origin + s, self._origin + min(s + PARTIAL_SAMPLES, have)) for s in starts)
        elif final:
            self._buf = []
        self._origin += keep
        self._have = have - keep


def cluster(embeddings: np.ndarray, speakers: int | None = None) -> np.ndarray:
    """Cluster labels (n,) 0 … k-1 of unit embeddings (n, d): k = `speakers`, or counted from
    the jumps in merge distances (`cut_distance`). Clusters of fewer than MIN_CLUSTER
    partials (one straddling two voices, a cough) are no speaker: their partials join the
    nearest cluster. Beyond MAX_POINTS partials an even subsample is clustered and the rest
    take the nearest centroid, so memory stays bounded on long inputs."""
    n = len(embeddings)
    if n < 2 or speakers == 1:
        return np.zeros(n, np.int64)
    pick = np.unique(np.linspace(0, n - 1, min(n, MAX_POINTS)).round().astype(np.int64))
    points = embeddings[pick].astype(np.float64)
    tree = average_linkage(points)
    if speakers is None:
        cut = cut_distance(tree)
        sub = flat_clusters(tree, int(np.searchsorted(tree[:, 2], cut, side="right")) if cut is not None else len(tree))
    else:  # the first cut with that many clusters of MIN_CLUSTER partials (or as many as there are)
        for k in range(speakers, len(pick) + 1):
            sub = flat_clusters(tree, len(pick) - k)
            if (np.bincount(sub) >= MIN_CLUSTER).sum() >= speakers:
                break
    sizes = np.bincount(sub)
    big = [k for k in range(len(sizes)) if sizes[k] >= MIN_CLUSTER] or [int(np.argmax(sizes))]
    centroids = np.stack([points[sub == k].mean(axis=0) for k in big])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return np.argmax(embeddings @ centroids.T.astype(np.float32), axis=1)


def average_linkage(points: np.ndarray) -> np.ndarray:
    """scipy's `linkage(points, "average", "cosine")` (the same tree: rows (a, b, distance,
    size) in order of distance, cluster n + i made by row i) by the nearest-neighbour chain,
    on one (n, n) matrix: scipy's clustering modules cost more to import than this takes."""
    n = len(points)
    unit = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
    d = unit @ unit.T
    np.subtract(1.0, d, out=d)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n)
    merges = np.zeros((n - 1, 3))  # (slot, slot, distance): a cluster sits in the slot of one of its points
    chain: list[int] = []
    for m in range(n - 1):
        if not chain:
            chain.append(int(np.argmax(size > 0)))
        while True:
            a = chain[-1]
            b = int(np.argmin(d[a]))
            if len(chain) > 1 and d[a, chain[-2]] <= d[a, b]:
                b = chain[-2]  # ties go back down the chain, so it ends
            if len(chain) > 1 and b == chain[-2]:
                break
            chain.append(b)
        chain.pop()
        chain.pop()
        a, b = min(a, b), max(a, b)
        merges[m] = a, b, d[a, b]
        # Lance-Williams for the average: the merged cluster takes slot b, slot a is gone
        row = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
        d[b], d[:, b] = row, row
        d[b, b] = np.inf
        d[a], d[:, a] = np.inf, np.inf
        size[b] += size[a]
        size[a] = 0
    order = np.argsort(merges[:, 2], kind="stable")
    tree = np.zeros((n - 1, 4))
    parent = np.arange(2 * n - 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    count = np.ones(2 * n - 1)
    for i, m in enumerate(order):
        x, y = root(int(merges[m, 0])), root(int(merges[m, 1]))
        parent[x] = parent[y] = n + i
        count[n + i] = count[x] + count[y]
        tree[i] = min(x, y), max(x, y), merges[m, 2], count[n + i]
    return tree


def flat_clusters(tree: np.ndarray, merges: int) -> np.ndarray:
    """Labels 0 … k-1 of the points after the first `merges` rows of a linkage tree."""
    n = len(tree) + 1
    label = np.arange(2 * n - 1)
    for i in range(merges - 1, -1, -1):  # from the last merge kept down to the leaves
        label[int(tree[i, 0])] = label[int(tree[i, 1])] = label[n + i]
    return np.unique(label[:n], return_inverse=True)[1]


def cut_distance(tree: np.ndarray) -> float | None:
    """Where to cut a linkage tree into speakers: between the two consecutive merges (of
    clusters of MIN_CLUSTER partials or more) whose distances differ by the largest factor,
    among merges at MIN_SPLIT_DISTANCE or more; None: one speaker."""
    n = len(tree) + 1
    size = lambda i: 1 if i < n else int(tree[int(i) - n, 3])
    heights = [h for a, b, h, _ in tree if min(size(a), size(b)) >= MIN_CLUSTER]
    best, best_ratio = None, 0.0
    for j in range(max(1, len(heights) - MAX_SPEAKERS), len(heights)):
        if heights[j] >= MIN_SPLIT_DISTANCE:
            ratio = heights[j] / max(heights[j - 1], 1e-6)
            if ratio > best_ratio:
                best, best_ratio = (heights[j - 1] + heights[j]) / 2, ratio
    if best is None and heights and heights[0] >= MIN_SPLIT_DISTANCE:
        best = heights[0] / 2  # even the first merge of two real clusters joins two voices
    return best


def _units(segments: list[Segment]) -> list[tuple[int, int, float, float]]:
    """What gets a speaker: each word (segment, word index, start, end), or each segment
    without words (word index -1)."""
    units = []
    for si, seg in enumerate(segments):
        if seg.words:
            units += [(si, wi, w.start, w.end) for wi, w in enumerate(seg.words)]
        else:
            units.append((si, -1, seg.start, seg.end))
    return units


def _unit_vectors(units: list[tuple[int, int, float, float]], spans: np.ndarray,
                  embeddings: np.ndarray) -> np.ndarray:
    """Each unit's mean embedding over the partials covering its middle (else the nearest one)."""
    centres = (spans[:, 0] + spans[:, 1]) / 2
    out = np.zeros((len(units), embeddings.shape[1]), np.float32)
    for k, (_, _, a, b) in enumerate(units):
        mid = (a + b) / 2
        cover = (spans[:, 0] <= mid) & (spans[:, 1] >= mid)
        out[k] = embeddings[cover].mean(axis=0) if cover.any() else embeddings[np.argmin(np.abs(centres - mid))]
    return out


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    cuts = [0, *(np.flatnonzero(labels[1:] != labels[:-1]) + 1).tolist(), len(labels)]
    return list(zip(cuts[:-1], cuts[1:]))


def _smooth(labels: np.ndarray, units: list[tuple[int, int, float, float]], scores: np.ndarray) -> np.ndarray:
    """Runs of units shorter than MIN_TURN_SECONDS take a neighbour's speaker (the one the
    run's voice is nearer), shortest runs first, until every turn is long enough. Each pass
    merges runs whose neighbours it has not changed, so a pass is linear in the units."""
    labels = labels.copy()
    while True:
        runs = _runs(labels)
        if len(runs) < 2:
            return labels
        lengths = [units[b - 1][3] - units[a][2] for a, b in runs]
        short = sorted((n, r) for r, n in enumerate(lengths) if n < MIN_TURN_SECONDS)
        if not short:
            return labels
        touched: set[int] = set()
        for _, r in short:
            if r in touched or r - 1 in touched or r + 1 in touched:
                continue
            a, b = runs[r]
            options = [labels[a - 1]] if a > 0 else []
            if b < len(labels):
                options.append(labels[b])
            labels[a:b] = max(options, key=lambda lab: scores[a:b, lab].sum())
            touched.add(r)


def _split(seg: Segment, names: list[str | None]) -> list[Segment]:
    """A segment cut between words where the speaker changes; tokens and their probabilities
    go with the words (timestamps stay at the outer ends)."""
    words = seg.words or []
    # where each word's tokens start in seg.tokens
    at, pos = [], 0
    for w in words:
        k = pos
        while k < len(seg.tokens) and seg.tokens[k : k + len(w.tokens)] != w.tokens:
            k += 1
        at.append(min(k, len(seg.tokens)))
        pos = at[-1] + len(w.tokens)
    pieces: list[Segment] = []
    first = 0
    for k in range(1, len(words) + 1):
        if k < len(words) and names[k] == names[first]:
            continue
        lo = 0 if first == 0 else at[first]
        hi = len(seg.tokens) if k == len(words) else at[k]
        ws = [replace(w, speaker=names[first]) for w in words[first:k]]
        pieces.append(replace(seg, start=ws[0].start, end=ws[-1].end, text="".join(w.word for w in ws),
                              tokens=seg.tokens[lo:hi], token_probs=seg.token_probs[lo:hi], words=ws,
                              speaker=names[first]))
        first = k
    if len(pieces) == 1:
        pieces[0] = replace(pieces[0], start=seg.start, end=seg.end, text=seg.text)
    return pieces


def label(segments: list[Segment], spans: np.ndarray, embeddings: np.ndarray,
          speakers: int | None = None) -> list[Segment]:
    """Segments with a speaker on each segment and word, split where the speaker changes.

    `spans` (n, 2) are the seconds of the input each partial covers and `embeddings` (n, d)
    their vectors; only partials that lie mostly on words are clustered."""
    units = _units(segments)
    if not units:
        return segments
    if len(embeddings) == 0:
        names = [speaker_name(0)] * len(units)
    else:
        keep = _on_speech(spans, units)
        if not keep.any():
            keep[:] = True
        labels = cluster(embeddings[keep], speakers)
        k = int(labels.max()) + 1
        centroids = np.stack([embeddings[keep][labels == j].mean(axis=0) for j in range(k)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        vectors = _unit_vectors(units, spans[keep], embeddings[keep])
        scores = vectors @ centroids.T
        per_unit = _smooth(np.argmax(scores, axis=1), units, scores)
        order: dict[int, int] = {}
        for lab in per_unit:
            order.setdefault(int(lab), len(order))
        names = [speaker_name(order[int(lab)]) for lab in per_unit]
    out: list[Segment] = []
    by_segment: dict[int, list[str | None]] = {}
    for (si, wi, _, _), name in zip(units, names):
        by_segment.setdefault(si, []).append(name)
    for si, seg in enumerate(segments):
        seg_names = by_segment.get(si, [None])
        if seg.words:
            out += _split(seg, seg_names)
        else:
            out.append(replace(seg, speaker=seg_names[0]))
    for k, seg in enumerate(out):
        seg.id = k
    return out


def _on_speech(spans: np.ndarray, units: list[tuple[int, int, float, float]]) -> np.ndarray:
    """Which partials have at least half their time on words (or word-less segments)."""
    if not len(spans):
        return np.zeros(0, bool)
    starts = np.array([u[2] for u in units])
    ends = np.array([u[3] for u in units])
    covered = np.zeros(len(spans))
    for k, (a, b) in enumerate(spans):
        covered[k] = np.clip(np.minimum(ends, b) - np.maximum(starts, a), 0, None).sum()
    return covered >= 0.5 * (spans[:, 1] - spans[:, 0])
