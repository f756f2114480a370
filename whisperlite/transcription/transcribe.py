"""Long-form transcription: 30-second windows over streamed audio, seeking by timestamps.

Each window is decoded (with temperature fallback); complete timestamp pairs become
segments; the next window starts at the last complete timestamp, or after the window when
it ended cleanly. Previous text conditions the next window unless a high temperature was
needed (a sign the context itself misled the model).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Generator, Iterable, Iterator

import numpy as np

from whisperlite.audio import vad
from whisperlite.audio.ffmpeg import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    DecodeReport,
    prefetch,
    probe_duration,
    stream_audio,
)
from whisperlite.audio.mel import log_mel_spectrogram, pad_or_trim
from whisperlite.audio.vad import SpeechFilter
from whisperlite.core.errors import WhisperliteError
from whisperlite.core.profiling import Profile, timed
from whisperlite.kernels.threads import one_thread_here
from whisperlite.models.whisper import KVCache, Whisper
from whisperlite.registry.loader import load_whisper
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcription import logits as logit_rules
from whisperlite.transcription import timing
from whisperlite.transcription.decoding import (
    SECONDS_PER_TOKEN,
    DecodeResult,
    WindowDecoder,
    decode_with_fallback,
    log_softmax,
)
from whisperlite.transcription.options import (
    DEFAULT_MODEL,
    ClipOptions,
    FallbackOptions,
    TranscribeOptions,
    with_values,
)
from whisperlite.transcription.results import Segment, TranscriptionInfo
from whisperlite.transcription.timing import (
    align_words,
    fit_words,
    snap_to_voice,
    voiced_frames,
)

FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01 s per mel frame
INPUT_STRIDE = 2  # mel frames per encoder position (and per timestamp step of 0.02 s)
# Language detection looks at most this many windows ahead for one that holds speech
# (a silent or music intro is not evidence of a language); they stay in memory meanwhile.
DETECT_WINDOWS = 4
# A window quieter than -70 dBFS RMS holds no speech (16-bit dither alone is about -101 dBFS,
# quiet speech about -40 dBFS), so it is skipped without decoding.
SILENCE_RMS = 10 ** (-70 / 20)


class LanguageError(WhisperliteError):
    """An unknown language code, or a language/task the model cannot do."""


@dataclass
class _Window:
    """A decoded window's segments, with what aligning their words needs."""

    segments: list[Segment]
    cross: KVCache  # the window's cross-attention keys/values
    mel: np.ndarray
    frames: int  # mel frames of audio in the window
    time_offset: float


class _WindowReader:
    """Random access to a forward-only audio stream around a moving seek position.

    Only samples from the current seek onward are kept, so memory stays at about one
    window whatever the length of the input.
    """

    def __init__(self, chunks: Iterator[np.ndarray]):
        self._chunks = chunks
        self._buf = np.zeros(0, np.float32)
        self._start = 0  # absolute sample index of _buf[0]
        self.eof = False
        self.encoded: tuple[np.ndarray, np.ndarray] | None = None  # (mel, features) of the window at 0

    def _fill(self, upto: int) -> None:
        parts = [self._buf]
        have = self._start + len(self._buf)
        while have < upto and not self.eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
                break
            parts.append(chunk)
            have += len(chunk)
        if len(parts) > 1:
            self._buf = np.concatenate(parts)

    def window(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start+n) (shorter at the end of the stream); drops what lies before start."""
        if start > self._start:
            drop = min(start - self._start, len(self._buf))
            self._buf = self._buf[drop:]
            self._start += drop
        self._fill(start + n)
        return self._buf[start - self._start : start - self._start + n]

    def peek(self, start: int, n: int) -> np.ndarray:
        """Like `window`, but keeps everything before `start` (for looking ahead)."""
        self._fill(start + n)
        return self._buf[start - self._start : start - self._start + n]

    def total_samples(self) -> int | None:
        return self._start + len(self._buf) if self.eof else None


def _warm_decoding(model: Whisper, cache: KVCache) -> None:
    """The decoding logic's kernels (row log-sum-exp, top-k for beams, timestamp rules on
    greedy's contiguous tokens and on the beams' view of their buffer), word timing and the
    speech filter: otherwise they compile inside the first window."""
    logits = np.zeros((2, model.dims.n_vocab), np.float32)
    logit_rules.row_logsumexp(logits)
    logit_rules.row_topk(logits, 2)
    for tokens in (np.zeros((2, 3), np.int64), np.zeros((2, 4), np.int64)[:, :3]):
        logit_rules.apply_timestamp_rules(logits, tokens, 1, model.dims.n_vocab - 1, 0, 0, 0)
    _, crosses = model.decoder(np.zeros((1, 4), np.int64), cache.fork(1), positions=(), want_cross=True)
    timing.dtw(-timing.alignment_matrix([crosses[-1][0, 0, 1:, :8]]))
    try:
        vad.SileroVad(vad.silero_weights())(np.zeros(2 * vad.FRAME, np.float32))
    except vad.VadUnavailableError:
        pass  # transcriptions with the VAD will report it; the others do not need it


def load_model(name: str = DEFAULT_MODEL, threads: int | None = None, compute_type: str = "auto") -> "WhisperModel":
    """Load a Whisper model by name or path; `threads` sets numba and BLAS threads."""
    model, tokenizer, n = load_whisper(name, threads, compute_type, warm_more=_warm_decoding)
    return WhisperModel(model, tokenizer, name, n)


class WhisperModel:
    """A loaded Whisper model: `segments, info = model.transcribe(path)`."""

    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer, name: str, threads: int):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.threads = threads
        self._decoder = WindowDecoder(model, tokenizer)

    @property
    def is_multilingual(self) -> bool:
        return self.tokenizer.multilingual

    def transcribe(self, audio: str | np.ndarray, options: TranscribeOptions | None = None,
                   **kwargs) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Segments are produced lazily as the returned iterator is consumed.

        `audio` is a path (decoded by ffmpeg, streamed) or float32 samples at 16 kHz.
        Keyword arguments override leaves of `options` by flat name (`beam_size=1`, `vad=False`;
        see `options.FLAT_NAMES`).
        """
        opts = with_values(options or TranscribeOptions(), **kwargs)
        report = DecodeReport()
        profile = Profile({"mel": 0.0, "encode": 0.0, "decode": 0.0})
        language = self._check_language(opts)
        if isinstance(audio, np.ndarray):
            chunks: Iterable[np.ndarray] = iter([np.asarray(audio, np.float32)])
            duration = len(audio) / SAMPLE_RATE
        else:
            stream = stream_audio(audio, report=report)
            # Decode the first chunk now so a bad input fails here, not mid-iteration.
            first = next(stream)
            chunks = timed(_prepend(first, stream), profile, "audio", "chunks")
            with profile.stage("probe"):
                duration = probe_duration(audio)
        if opts.clip != ClipOptions():
            chunks = _clip(chunks, opts.clip)
            if duration is not None:
                duration = max(0.0, duration - opts.clip.offset)
                duration = duration if opts.clip.duration is None else min(duration, opts.clip.duration)
        speech = SpeechFilter(chunks, opts.vad, profile) if opts.vad.enabled else None
        source = iter(speech) if speech is not None else iter(chunks)
        if speech is not None or not isinstance(audio, np.ndarray):
            # ffmpeg's pipe and Silero's kernels release the GIL: they run ahead on another thread.
            source = prefetch(source, profile=profile)
        reader = _WindowReader(source)
        probability = 1.0
        if language is None:
            with profile.stage("language"):
                language, probability = self._detect(reader, opts, profile)
        info = TranscriptionInfo(language=language, language_probability=probability, duration=duration, options=opts,
                                 timings=profile.timings, profile=profile)
        return self._segments(reader, opts, info, report, speech), info

    def _check_language(self, opts: TranscribeOptions) -> str | None:
        """The language to decode in, or None to detect it."""
        language = None if opts.decode.language in (None, "auto") else opts.decode.language.lower()
        if not self.is_multilingual:
            if language not in (None, "en"):
                raise LanguageError(f"{self.name} is an English-only model: use a multilingual model (e.g. -m base) "
                                    f"for language '{language}'")
            if opts.decode.task == "translate":
                raise LanguageError(f"{self.name} is an English-only model: translation needs a multilingual model")
            return "en"
        if language is not None and language not in self.tokenizer.special.languages:
            raise LanguageError(f"unknown language '{language}' (codes as in Whisper: en, de, zh, fr, …)")
        return language

    def _encode(self, samples: np.ndarray, profile: Profile | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One window of samples → (log-mel padded to 30 s, encoder output)."""
        profile = profile if profile is not None else Profile()
        with profile.stage("mel", 1, "windows"):
            mel = pad_or_trim(log_mel_spectrogram(samples, self.model.dims.n_mels, padding=N_SAMPLES - len(samples)))
        with profile.stage("encode", 1, "windows"):
            features = self.model.encoder(mel)
        return mel, features

    def language_probabilities(self, features: np.ndarray) -> tuple[dict[str, float], float]:
        """Language token probabilities after sot for one encoded window, and its no-speech
        probability (read from the same position, as the decoder does)."""
        sp = self.tokenizer.special
        cache = self.model.decoder.new_cache(features)
        logits = self.model.decoder(np.asarray([[sp.sot]]), cache)[0][0, -1]
        no_speech = float(np.exp(log_softmax(logits)[sp.nospeech]))
        lang_ids = np.arange(sp.sot + 1, sp.sot + 1 + len(sp.languages))
        probs = np.exp(log_softmax(logits[lang_ids]))
        return dict(zip(sp.languages, probs.tolist())), no_speech

    def _detect(self, reader: "_WindowReader", opts: TranscribeOptions, profile: Profile) -> tuple[str, float]:
        """Language of the first window that holds speech (at most DETECT_WINDOWS ahead)."""
        best: tuple[float, str, float] | None = None  # (no-speech, language, probability)
        threshold = opts.fallback.no_speech_threshold
        if threshold is None:  # no window is skipped as silent, but detection still wants speech
            threshold = FallbackOptions().no_speech_threshold
        for k in range(DETECT_WINDOWS):
            samples = reader.peek(k * N_SAMPLES, N_SAMPLES)
            if len(samples) < HOP_LENGTH:
                break
            mel, features = self._encode(samples, profile)
            if k == 0:
                reader.encoded = (mel, features)  # the long-form loop starts with this window
            probs, no_speech = self.language_probabilities(features)
            code = max(probs, key=probs.__getitem__)
            if best is None or no_speech < best[0]:
                best = (no_speech, code, probs[code])
            if no_speech < threshold:
                break
        if best is None:  # no audio at all: nothing will be decoded either
            return "en", 0.0
        return best[1], best[2]

    def _segments(self, reader: _WindowReader, opts: TranscribeOptions, info: TranscriptionInfo,
                  report: DecodeReport, speech: SpeechFilter | None) -> Iterator[Segment]:
        profile = info.profile
        assert profile is not None
        windows = self._windows(reader, opts, info, report, speech)
        align = partial(self._add_words, language=info.language, task=opts.decode.task)
        if not opts.word_timestamps:
            batches: Generator[list[Segment], None, None] = (w.segments for w in windows)
        elif self.threads > 1:
            batches = _aligned_behind(windows, align, profile)
        else:
            batches = _aligned_inline(windows, align, profile)
        seg_id = 0
        try:
            for segments in batches:
                for seg in segments:
                    if not seg.text.strip() or seg.end <= seg.start:
                        continue
                    seg.id = seg_id
                    seg_id += 1
                    if speech is not None:
                        _to_input_times(seg, speech)
                    if opts.clip.offset:
                        _shift(seg, opts.clip.offset)
                    yield seg
        finally:
            batches.close()
            windows.close()

    def _windows(self, reader: _WindowReader, opts: TranscribeOptions, info: TranscriptionInfo,
                 report: DecodeReport, speech: SpeechFilter | None) -> Generator[_Window, None, None]:
        """Decode window after window; each yields its segments (words not yet aligned)."""
        tok = self.tokenizer
        decode_opts = replace(opts.decode, language=info.language)
        fallback, context = opts.fallback, opts.context
        prompt: list[int] = []
        if context.initial_prompt:
            prompt = tok.encode(" " + context.initial_prompt.strip())
        # Last in the context, so that trimming a long context to its newest tokens keeps them.
        hotwords = tuple(tok.encode(" " + context.hotwords.strip())) if context.hotwords else ()
        seek = 0  # in mel frames
        profile = info.profile
        assert profile is not None
        while True:
            samples = reader.window(seek * HOP_LENGTH, N_SAMPLES)
            if len(samples) < HOP_LENGTH:
                break
            segment_frames = min(N_FRAMES, len(samples) // HOP_LENGTH)
            if float(np.sqrt(np.mean(np.square(samples)))) < SILENCE_RMS:
                seek += segment_frames  # digital silence: the model would only invent text
                reader.encoded = None
                continue
            if seek == 0 and reader.encoded is not None:  # encoded already for language detection
                mel, features = reader.encoded
                reader.encoded = None
            else:
                mel, features = self._encode(samples, profile)
            with profile.stage("decode", 1, "windows"):
                with profile.stage("decode/cross", 1, "windows"):
                    cross = self.model.decoder.new_cache(features)
                kept = prompt if context.max_context is None else prompt[max(0, len(prompt) - context.max_context):]
                result = decode_with_fallback(self._decoder, cross, replace(decode_opts, prompt=tuple(kept) + hotwords),
                                              fallback, profile)
            time_offset = seek * FRAME_SECONDS
            if (fallback.no_speech_threshold is not None and result.no_speech_prob > fallback.no_speech_threshold
                    and (fallback.logprob_threshold is None or result.avg_logprob < fallback.logprob_threshold)):
                seek += segment_frames  # silence: nothing to emit
                continue
            new_segments, advance = self._split(result, seek, time_offset, segment_frames)
            seek += advance
            yield _Window(new_segments, cross, mel, segment_frames, time_offset)
            if context.condition_on_previous_text and result.temperature < context.prompt_reset_on_temperature:
                prompt.extend(t for s in new_segments for t in s.tokens)
            else:
                prompt = []
        total = speech.input_samples if speech is not None else reader.total_samples()
        if total is not None:
            info.duration = total / SAMPLE_RATE
        info.warning = report.warning

    def _add_words(self, window: _Window, language: str | None, task: str) -> None:
        eot = self.tokenizer.eot
        segments, offset = window.segments, window.time_offset
        texts = [[t for t in s.tokens if t < eot] for s in segments]
        probs = [[p for t, p in zip(s.tokens, s.token_probs) if t < eot] for s in segments]
        words = align_words(self.model, self.tokenizer, window.cross, texts, probs, window.frames, offset, language, task)
        voiced = voiced_frames(window.mel, window.frames)
        for seg, ws in zip(segments, words):
            if voiced is not None:
                snap_to_voice(ws, voiced, offset)
            fit_words(ws, seg.start, seg.end)
            seg.words = ws

    def _split(self, r: DecodeResult, seek: int, time_offset: float, segment_frames: int) -> tuple[list[Segment], int]:
        """Cut a window's tokens into segments at timestamp pairs; returns (segments, frames to advance)."""
        tb = self.tokenizer.timestamp_begin
        tokens = np.asarray(r.tokens, dtype=np.int64)
        is_ts = tokens >= tb
        single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
        consecutive = list(np.where(is_ts[:-1] & is_ts[1:])[0] + 1)

        probs = np.exp(np.asarray(r.token_logprobs, np.float64))

        def make(lo: int, hi: int, start: float, end: float) -> Segment:
            toks = tokens[lo:hi]
            return Segment(id=0, seek=seek, start=round(start, 3), end=round(end, 3),
                           text=self.tokenizer.decode(toks.tolist()), tokens=toks.tolist(),
                           avg_logprob=r.avg_logprob, no_speech_prob=r.no_speech_prob,
                           temperature=r.temperature, compression_ratio=r.compression_ratio,
                           token_probs=[round(float(p), 6) for p in probs[lo:hi]])

        segments: list[Segment] = []
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_ending else [])
            last = 0
            for cur in slices:
                part = tokens[last:cur]
                start = time_offset + (int(part[0]) - tb) * SECONDS_PER_TOKEN
                end = time_offset + (int(part[-1]) - tb) * SECONDS_PER_TOKEN
                segments.append(make(last, cur, start, end))
                last = cur
            if single_ending:
                advance = segment_frames
            else:
                # resume at the last complete timestamp: the rest of the window is decoded again
                advance = (int(tokens[last - 1]) - tb) * INPUT_STRIDE
        else:
            duration = segment_frames * FRAME_SECONDS
            stamps = tokens[is_ts]
            if len(stamps) and stamps[-1] != tb:
                duration = (int(stamps[-1]) - tb) * SECONDS_PER_TOKEN
            segments.append(make(0, len(tokens), time_offset, time_offset + duration))
            advance = segment_frames
        return segments, max(advance, 1)


def _aligned_inline(windows: Iterator[_Window], align: Callable[[_Window], None],
                    profile: Profile) -> Generator[list[Segment], None, None]:
    """Each window's segments, with words (one thread: aligned before the next window decodes)."""
    for window in windows:
        with profile.stage("words", 1, "windows"):
            align(window)
        yield window.segments


def _aligned_behind(windows: Iterator[_Window], align: Callable[[_Window], None],
                    profile: Profile) -> Generator[list[Segment], None, None]:
    """Each window's segments, with words aligned on a worker thread while the caller decodes
    the next window (the seek position does not depend on word times), so a window comes out
    once the next one is decoded and its own alignment is done.

    Token-by-token decoding keeps one core busy; the alignment's decoder pass fills the other.
    Windows come out in order; an error raised by `align` is raised here; the worker ends
    (after the window it is aligning) when this generator does.
    """
    jobs: queue.SimpleQueue[_Window | None] = queue.SimpleQueue()
    done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()

    def work() -> None:
        one_thread_here()  # the worker's products stay on the spare core
        with profile.background():
            while (window := jobs.get()) is not None:
                try:
                    with profile.stage("words", 1, "windows"):
                        align(window)
                except BaseException as e:  # handed to the caller, which raises it
                    done.put(e)
                else:
                    done.put(None)

    def finished(window: _Window) -> list[Segment]:
        mark = profile.start()
        error = done.get()
        profile.stop("words wait", mark)
        if error is not None:
            raise error
        return window.segments

    worker = threading.Thread(target=work, name="whisperlite-words", daemon=True)
    worker.start()
    try:
        previous = None
        for window in windows:
            jobs.put(window)
            if previous is not None:
                yield finished(previous)
            previous = window
        if previous is not None:
            yield finished(previous)
    finally:
        jobs.put(None)
        worker.join()


def _to_input_times(seg: Segment, speech: SpeechFilter) -> None:
    """Times in the VAD-shortened audio → times in the input."""
    tm = speech.time_map
    seg.start, seg.end = round(tm.to_input(seg.start), 3), round(tm.to_input(seg.end, is_end=True), 3)
    for w in seg.words or []:
        w.start, w.end = round(tm.to_input(w.start), 3), round(tm.to_input(w.end, is_end=True), 3)


def _shift(seg: Segment, seconds: float) -> None:
    """Times in the clip → times in the input (-ot: the clip starts `seconds` into it)."""
    seg.start, seg.end = round(seg.start + seconds, 3), round(seg.end + seconds, 3)
    seg.seek += int(round(seconds / FRAME_SECONDS))
    for w in seg.words or []:
        w.start, w.end = round(w.start + seconds, 3), round(w.end + seconds, 3)


def _clip(chunks: Iterable[np.ndarray], clip: ClipOptions) -> Iterator[np.ndarray]:
    """The samples of `chunks` from `clip.offset` for `clip.duration` seconds (to the end: None)."""
    skip = round(clip.offset * SAMPLE_RATE)
    left = None if clip.duration is None else round(clip.duration * SAMPLE_RATE)
    try:
        for chunk in chunks:
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
            if left is not None:
                chunk = chunk[:left]
                left -= len(chunk)
            if len(chunk):
                yield chunk
            if left == 0:
                return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stops ffmpeg when the clip ends before the input


def _prepend(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
