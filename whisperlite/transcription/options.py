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

DEFAULT_MODEL = "tiny.en"  # embedded in a dependency: works with no download
COMPUTE_TYPES = ("auto", "f32", "q8_0")


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
    initial_prompt: str | None = None  # vocabulary and style hints before the first window
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


@dataclass(frozen=True)
class RunOptions:
    """A whole run as a front end asks for it: transcription, outputs and runtime."""

    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def _flat_names() -> dict[str, tuple[str, str | None]]:
    """Flat name → (group, field) for every leaf of `TranscribeOptions`: field names as they
    are, the VAD's prefixed (`vad` itself switches it)."""
    names: dict[str, tuple[str, str | None]] = {}
    for group in fields(TranscribeOptions):
        if not is_dataclass(group.default):
            names[group.name] = (group.name, None)
            continue
        for f in fields(group.default):
            flat = f.name
            if group.name == "vad":
                flat = "vad" if f.name == "enabled" else f"vad_{f.name}"
            assert flat not in names, flat
            names[flat] = (group.name, f.name)
    return names


FLAT_NAMES = _flat_names()


def with_values(options: TranscribeOptions, **values: object) -> TranscribeOptions:
    """`options` with leaves replaced by flat name (`beam_size=1`, `vad=False`,
    `no_speech_threshold=0.5`): the keywords of `WhisperModel.transcribe`."""
    unknown = sorted(set(values) - set(FLAT_NAMES))
    if unknown:
        raise TypeError(f"unknown transcription option(s): {', '.join(unknown)}")
    by_group: dict[str, dict[str, object]] = {}
    top: dict[str, object] = {}
    for name, value in values.items():
        group, leaf = FLAT_NAMES[name]
        if leaf is None:
            top[group] = value
        else:
            by_group.setdefault(group, {})[leaf] = value
    for group, changes in by_group.items():
        top[group] = replace(getattr(options, group), **changes)
    return replace(options, **top)
