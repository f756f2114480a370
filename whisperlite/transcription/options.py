"""Every option of a transcription, once: frozen dataclasses that compose.

`TranscribeOptions` is what the long-form loop reads: how windows are decoded
(`DecodeOptions`), when a window is retried or skipped (`FallbackOptions`), what text
conditions it (`ContextOptions`), which audio is decoded (`VadOptions`, `ClipOptions`) and
whether words are timed. `RunOptions` adds what a front end decides around it: the model
and its compute type, threads and processes (`RuntimeOptions`), and the files written
(`OutputOptions`). A front end builds the tree once and passes it whole; each default is
written here and nowhere else.

This module is plain data: writers, batch workers and servers read it without loading
numba or a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Callable

from whisperlite.core.errors import WhisperliteError

DEFAULT_MODEL = "tiny.en"  # embedded in a dependency: works with no download
COMPUTE_TYPES = ("auto", "f32", "q8_0")
# faster-whisper's compute types that have a CPU equivalent here, and whisperlite's own
COMPUTE_TYPE_NAMES = {"default": "auto", "int8": "q8_0", "int8_float32": "q8_0", "float32": "f32",
                      **{name: name for name in COMPUTE_TYPES}}


@dataclass(frozen=True)
class DecodeOptions:
    """How one 30-second window is decoded (openai/whisper `DecodingOptions`)."""

    task: str = "transcribe"  # or "translate": into English (multilingual models)
    language: str | None = None  # None or "auto": detected on the first speech; .en models: en
    temperature: float = 0.0  # of one attempt; the fallback sets it per attempt
    sample_len: int | None = None  # most new tokens per window; None: half the text context
    best_of: int = 5  # independent samples per attempt at temperature > 0
    beam_size: int | None = 5  # None or 1: greedy (5: whisper.cpp's and faster-whisper's CLI default)
    patience: float = 1.0  # beam search stops after beam_size * patience finished sequences
    length_penalty: float | None = None  # None: rank beams by logprob per token; else ((5+len)/6)^alpha
    prompt: tuple[int, ...] = ()  # context tokens before <|startoftranscript|>; the loop sets it per window
    suppress_tokens: tuple[int, ...] | None = None  # None: the non-speech symbol set
    suppress_blank: bool = True  # no blank or end-of-text as the first sampled token
    without_timestamps: bool = False  # text only: one segment per window
    max_initial_timestamp: float = 1.0  # seconds: latest first timestamp of a window
    seed: int | None = 0  # sampling seed at temperature > 0 (None: fresh entropy)
    prefix: str | None = None  # text the first window's transcript starts with (decoding continues after it)
    multilingual: bool = False  # detect the language of every window, not only of the first speech
    language_detection_segments: int = 4  # windows searched for speech to detect the language on
    language_detection_threshold: float | None = None  # stop the search at this top-language probability; None: at speech


@dataclass(frozen=True)
class FallbackOptions:
    """Quality gates of the long-form loop (openai/whisper and whisper.cpp defaults)."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # tried in turn
    compression_ratio_threshold: float | None = 2.4  # retry text that compresses better (loops)
    logprob_threshold: float | None = -1.0  # retry text whose mean token logprob is lower
    no_speech_threshold: float | None = 0.6  # skip a window more likely silent than this (with a low logprob)


@dataclass(frozen=True)
class ContextOptions:
    """Text that conditions each window."""

    condition_on_previous_text: bool = True  # previous windows' text as the prompt
    prompt_reset_on_temperature: float = 0.5  # drop that context after an attempt this hot
    initial_prompt: str | tuple[int, ...] | None = None  # vocabulary and style hints (text or token ids) before the first window
    hotwords: str | None = None  # words to expect: in the context of every window, even after a reset
    max_context: int | None = None  # most previous-text tokens kept as context (whisper.cpp -mc); None: half the text context


@dataclass(frozen=True)
class VadOptions:
    """Silero VAD before decoding (Silero/faster-whisper defaults: cut pauses of 2 s or more,
    keep 0.4 s around speech)."""

    enabled: bool = True  # off: decode every window, silence and music included
    threshold: float = 0.5  # a frame at or above this starts speech
    neg_threshold: float | None = None  # speech continues down to this; None: threshold - 0.15
    min_speech_duration_ms: int = 250  # shorter bursts (clicks, coughs) are dropped
    min_silence_duration_ms: int = 2000  # shorter pauses are kept
    speech_pad_ms: int = 400  # audio kept before and after each stretch of speech


@dataclass(frozen=True)
class ClipOptions:
    """Which part of the input is transcribed (whisper.cpp -ot/-d)."""

    offset: float = 0.0  # seconds skipped at the start
    duration: float | None = None  # seconds transcribed from the offset; None: to the end
    # start, end, start, end, … seconds decoded (odd count: the last to the end); (): all.
    # Given, they say where the speech is: the VAD is not run.
    clip_timestamps: tuple[float, ...] = ()


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything that shapes a transcription's segments."""

    decode: DecodeOptions = DecodeOptions()
    fallback: FallbackOptions = FallbackOptions()
    context: ContextOptions = ContextOptions()
    vad: VadOptions = VadOptions()
    clip: ClipOptions = ClipOptions()
    # Word times from cross-attention: subtitle cues are cut at them and segments span their
    # words. On by default so that the API's segments give the same cues as the CLI's.
    word_timestamps: bool = True
    # Speaker turns (SPEAKER_1, …) on segments and words from a speaker-embedding model;
    # segments are split where the speaker changes. `speakers`: how many; None: found.
    diarize: bool = False
    speakers: int | None = None
    # whisper.cpp's -di: a stereo input with one speaker per channel; each segment and word is
    # labelled by the channel that is louder over it (SPEAKER_0 left, SPEAKER_1 right, SPEAKER_?).
    stereo_diarize: bool = False


@dataclass(frozen=True)
class SubtitleOptions:
    """How segments become cues; 0 means no limit (whisper.cpp's -ml 0).

    Broadcast subtitle guidelines (e.g. BBC, Netflix): about 42 characters, at most two lines."""

    max_line_width: int = 42  # -ml: characters per line
    max_line_count: int = 2  # lines per cue
    split_on_word: bool = True  # -sow: break only between words; off: cut words longer than a line


@dataclass(frozen=True)
class OutputOptions:
    """What is written for each input."""

    formats: tuple[str, ...] = ()  # srt, vtt, txt, json, csv, lrc
    subtitles: SubtitleOptions = SubtitleOptions()
    json_full: bool = False  # -ojf: per-token ids and probabilities in the .json
    zh_script: str | None = None  # "simplified" or "traditional": Chinese output converted


@dataclass(frozen=True)
class RuntimeOptions:
    """Which model runs, and on how much of the machine."""

    model: str = DEFAULT_MODEL  # a name (tiny.en, tiny.en-q5_0, base, …) or a path
    compute_type: str = "auto"  # one of COMPUTE_TYPES
    threads: int | None = None  # per process; None: physical cores (shared out between processes)
    processors: int = 1  # -p: split each input at pauses into up to this many processes
    allow_urls: bool = False  # inputs named http:// or https:// are fetched by ffmpeg (else: files only)


@dataclass(frozen=True)
class RunOptions:
    """A whole run as a front end asks for it: transcription, outputs and runtime."""

    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


# Leaves the loop sets per attempt and per window: no option of a transcription.
_PER_WINDOW = frozenset({("decode", "temperature"), ("decode", "prompt")})


def _flat_names() -> dict[str, tuple[str, str | None]]:
    """Flat name → (group, field) for every leaf of `TranscribeOptions`: field names as they
    are, the VAD's prefixed (`vad` itself switches it)."""
    names: dict[str, tuple[str, str | None]] = {}
    for group in fields(TranscribeOptions):
        if not is_dataclass(group.default):
            names[group.name] = (group.name, None)
            continue
        for f in fields(group.default):
            if (group.name, f.name) in _PER_WINDOW:
                continue
            flat = f.name
            if group.name == "vad":
                flat = "vad" if f.name == "enabled" else f"vad_{f.name}"
            assert flat not in names, flat
            names[flat] = (group.name, f.name)
    return names


FLAT_NAMES = _flat_names()


class OptionError(WhisperliteError, ValueError):
    """A transcription option with a value it cannot take."""


def _show(value: object) -> str:
    """A value for a one-line message: raw bytes are never printed."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _temperatures(value: object) -> tuple[float, ...]:
    try:
        if isinstance(value, (str, bytes, bytearray)):
            raise TypeError
        temps = (float(value),) if isinstance(value, (int, float)) else tuple(float(t) for t in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise OptionError(f"temperature: expected a number or a list of numbers, got {_show(value)}") from None
    if not temps or min(temps) < 0:
        raise OptionError(f"temperature: expected numbers >= 0, got {_show(value)}")
    return temps


def parse_clip_timestamps(value: object) -> tuple[float, ...]:
    """faster-whisper's clip_timestamps — "0,10,20,30", [0, 10, 20, 30] or
    [{"start": 0, "end": 10}, …] — as (start, end, start, end, …) seconds; () for the whole input."""
    if isinstance(value, str):
        items: list = [p for p in value.split(",") if p.strip()]
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            items += [item["start"], item["end"]] if isinstance(item, dict) and {"start", "end"} <= set(item) else [item]
    else:
        raise OptionError(f"clip_timestamps: expected \"start,end,…\" or a list of seconds, got {_show(value)}")
    try:
        times = tuple(float(t) for t in items)
    except (TypeError, ValueError):
        raise OptionError(f"clip_timestamps: expected seconds, got {_show(value)}") from None
    # each span ends after it starts; the next may start where it ended
    if any(t < 0 for t in times) or any(b < a or (b == a and k % 2 == 0) for k, (a, b) in enumerate(zip(times, times[1:]))):
        raise OptionError(f"clip_timestamps: expected spans of increasing seconds >= 0, got {_show(value)}")
    return () if times == (0.0,) else times


_VAD_PARAMETERS = ("threshold", "neg_threshold", "min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms")


def _vad_parameters(value: object) -> dict[str, object]:
    """faster-whisper's vad_parameters (a dict, or a VadOptions) as VAD leaves by flat name."""
    if isinstance(value, VadOptions):
        return {f"vad_{k}": getattr(value, k) for k in _VAD_PARAMETERS}
    if not isinstance(value, dict):
        raise OptionError(f"vad_parameters: expected a dict or VadOptions, got {_show(value)}")
    params = dict(value)
    if params.pop("max_speech_duration_s", float("inf")) != float("inf"):
        raise OptionError("vad_parameters: max_speech_duration_s is not supported (speech is never cut by length)")
    unknown = sorted(set(params) - set(_VAD_PARAMETERS))
    if unknown:
        raise OptionError(f"vad_parameters: unknown {', '.join(unknown)} (known: {', '.join(_VAD_PARAMETERS)})")
    return {f"vad_{k}": v for k, v in params.items()}


# faster-whisper's names (and value forms) for leaves: name → (flat names and values).
ALIASES: dict[str, Callable[[object], dict[str, object]]] = {
    "temperature": lambda v: {"temperatures": v},
    "log_prob_threshold": lambda v: {"logprob_threshold": v},
    "vad_filter": lambda v: {"vad": bool(v)},
    "vad_parameters": lambda v: {} if v is None else _vad_parameters(v),
    "max_new_tokens": lambda v: {"sample_len": v},
}
# faster-whisper arguments of features whisperlite does not have: accepted at the value that
# turns them off (or faster-whisper's default), refused otherwise.
INERT: dict[str, tuple[object, ...]] = {
    "repetition_penalty": (1, 1.0),
    "no_repeat_ngram_size": (0,),
    "chunk_length": (None, 30),
    "hallucination_silence_threshold": (None,),
    "log_progress": (False,),
    "prepend_punctuations": ("\"'“¿([{-",),
    "append_punctuations": ("\"'.。,，!！?？:：”)]}、",),
}
# Value forms taken for a leaf besides its own type.
_FORMS: dict[str, Callable[[object], object]] = {
    "temperatures": _temperatures,
    "clip_timestamps": parse_clip_timestamps,
    "suppress_tokens": lambda v: None if v is None else tuple(int(t) for t in v),  # type: ignore[union-attr]
    "initial_prompt": lambda v: v if v is None or isinstance(v, str) else tuple(int(t) for t in v),  # type: ignore[union-attr]
}


def _canonical(values: dict[str, object]) -> dict[str, object]:
    """Keywords with faster-whisper's names → whisperlite's flat names, values in leaf form."""
    out: dict[str, object] = {}
    given_as: dict[str, str] = {}
    for name, value in values.items():
        if name in INERT:
            if value not in INERT[name]:
                raise OptionError(f"{name}={_show(value)} is not supported by whisperlite "
                                  f"(accepted: {', '.join(map(repr, INERT[name]))})")
            continue
        for flat, v in (ALIASES[name](value) if name in ALIASES else {name: value}).items():
            if flat in out:
                raise TypeError(f"transcription option {flat} given twice (as {given_as[flat]} and as {name})")
            out[flat], given_as[flat] = (_leaf_form(flat, v) if flat in _FORMS else v), name
    return out


def _leaf_form(flat: str, value: object) -> object:
    try:
        return _FORMS[flat](value)
    except OptionError:
        raise
    except (TypeError, ValueError):
        raise OptionError(f"{flat}: cannot take {_show(value)}") from None


def with_values(options: TranscribeOptions, **values: object) -> TranscribeOptions:
    """`options` with leaves replaced by flat name (`beam_size=1`, `vad=False`,
    `no_speech_threshold=0.5`) or by faster-whisper's name (`temperature=[0, 0.5]`,
    `vad_filter=True`, `vad_parameters={...}`, `log_prob_threshold`, `max_new_tokens`):
    the keywords of `WhisperModel.transcribe`."""
    unknown = sorted(set(values) - set(FLAT_NAMES) - set(ALIASES) - set(INERT))
    if unknown:
        raise TypeError(f"unknown transcription option(s): {', '.join(unknown)}")
    by_group: dict[str, dict[str, object]] = {}
    top: dict[str, object] = {}
    for name, value in _canonical(values).items():
        group, leaf = FLAT_NAMES[name]
        if leaf is None:
            top[group] = value
        else:
            by_group.setdefault(group, {})[leaf] = value
    for group, changes in by_group.items():
        top[group] = replace(getattr(options, group), **changes)
    return replace(options, **top)


POLICIES = ("agreement", "window")  # of a live stream (transcription/streaming.py)


@dataclass(frozen=True)
class StreamOptions:
    """How a live stream is cut into passes and when its words become final."""

    policy: str = "agreement"  # or "window"
    min_chunk_ms: int = 700  # agreement: new audio between passes
    # agreement: cut the buffer at a final sentence end past this; None: from the model's pass
    # cost (streaming.trim_seconds_for)
    trim_seconds: float | None = None
    step_ms: int = 3000  # window: whisper.cpp --step (0: decode each utterance when it ends)
    length_ms: int = 10000  # window: whisper.cpp --length, audio per pass
    keep_ms: int = 200  # window: whisper.cpp --keep, audio carried into the next line
    end_silence_ms: int = 600  # a pause this long ends an utterance: its words become final
    # The encoder sees a pass's audio plus this much silence, rounded up to whole seconds,
    # not a 30-s window (whisper.cpp's audio_ctx, per pass); 0: the 30-s window, as transcribe.
    encoder_pad_ms: int = 4000
    context_ms: int = 5000  # audio of final words kept before an utterance that follows a short pause
    # agreement: audio after a word that makes it final whatever the passes said, and that a
    # word no agreeing pass is sure of waits for (streaming.UNSURE)
    wait_ms: int = 3000
    # A pass starts no hotter try (the temperature fallback) that would end past this long
    # after its first began (judged by what its tries so far took): a final pass then keeps
    # its best reading so far. 0: the first try only.
    fallback_ms: int = 1500

    def check(self) -> None:
        if self.policy not in POLICIES:
            raise OptionError(f"policy '{self.policy}': choose from {', '.join(POLICIES)}")
        if self.min_chunk_ms <= 0 or self.end_silence_ms <= 0 or (self.trim_seconds is not None and self.trim_seconds <= 0):
            raise OptionError("min_chunk_ms, end_silence_ms and trim_seconds must be > 0")
        if self.encoder_pad_ms < 0 or self.context_ms < 0 or self.wait_ms < 0 or self.fallback_ms < 0:
            raise OptionError("encoder_pad_ms, context_ms, fallback_ms and wait_ms must be >= 0")
        if self.step_ms < 0 or self.keep_ms < 0 or self.length_ms <= 0 or self.length_ms > 30000:
            raise OptionError("step >= 0, keep >= 0 and 0 < length <= 30000 ms")
        if self.step_ms > self.length_ms or (self.step_ms and self.keep_ms > self.step_ms):
            raise OptionError("window policy: need keep <= step <= length (ms)")
