"""Form fields of the audio routes → the options tree, through the CLI's one flag table.

A field is a row of `transcription.flags.FLAGS` by its own name (`beam_size`, `vad`,
`hotwords` …) or by the name whisper.cpp's server gives it (`no_speech_thold`, `max_len`,
`prompt` …). Fields whisper.cpp takes that whisperlite cannot honour, and rows that are fixed
when the server starts, are refused by name: a field is never silently read as another.
"""
from __future__ import annotations

from typing import Any, Mapping

from whisperlite.core.errors import WhisperliteError
from whisperlite.transcription.flags import BY_NAME, FORMATS, Flag, run_options
from whisperlite.transcription.options import RunOptions
from whisperlite.server.errors import ApiError

# whisper.cpp server's field (examples/server/server.cpp get_req_parameters) → the row it sets
CPP_FIELDS = {
    "offset_t": "offset", "max_len": "max_line_width", "logprob_thold": "logprob_threshold",
    "no_speech_thold": "no_speech_threshold", "no_timestamps": "without_timestamps",
    "token_timestamps": "word_timestamps", "prompt": "initial_prompt",
}
# whisper.cpp's fields with no row here: why, in a few words
CPP_UNSUPPORTED = {
    "offset_n": "SRT cue numbers always start at 1",
    "audio_ctx": "the encoder always sees the whole 30-s window",
    "word_thold": "word times come from cross-attention (word_timestamps)",
    "entropy_thold": "repetition is caught by compression_ratio_threshold",
    "debug_mode": "no debug dumps",
    "tinydiarize": "no speaker diarization",
    "carry_initial_prompt": "use hotwords: context kept for every window",
    "vad_max_speech_duration_s": "speech is never cut by length",
    "vad_samples_overlap": "speech stretches are joined on one timeline",
}
# whisper.cpp's fields that ask for what whisperlite always does
CPP_ALWAYS = frozenset({"suppress_non_speech", "suppress_nst"})
# rows that are not a request's to set
_FIXED = {"model": "set when the server starts (whisperlite serve -m)",
          "compute_type": "set when the server starts", "threads": "set when the server starts (-t)",
          "processors": "not taken by the server", "zh_script": "not taken by the server",
          # a server that fetched URLs would fetch them for anyone who asks, inside its network
          "allow_urls": "the server transcribes the audio sent to it and never fetches a URL",
          "output_json_full": "use response_format",
          **{f"output_{fmt}": "use response_format" for fmt in FORMATS}}
TRUE, FALSE = ("true", "1", "yes", "y", "on"), ("false", "0", "no", "n", "off")


def parse_bool(field: str, text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise ApiError(400, f"{field}: {_show(text)} is not true or false", param=field, code="invalid_value")


def _value(field: str, flag: Flag, text: str) -> Any:
    if flag.type is bool:
        return parse_bool(field, text)
    if flag.type in (int, float):
        try:
            value = flag.type(text.strip())
        except ValueError:
            kind = "an integer" if flag.type is int else "a number"
            raise ApiError(400, f"{field}: {_show(text)} is not {kind}", param=field, code="invalid_value") from None
        if (flag.min is not None and value < flag.min) or (flag.max is not None and value > flag.max):
            bounds = f"{flag.min:g} to {flag.max:g}" if flag.min is not None and flag.max is not None else (
                f"at least {flag.min:g}" if flag.min is not None else f"at most {flag.max:g}")
            raise ApiError(400, f"{field}: {value:g} is out of range ({bounds})", param=field, code="invalid_value")
        return value
    if flag.choices and text not in flag.choices:
        raise ApiError(400, f"{field}: {_show(text)} is not one of {', '.join(flag.choices)}", param=field,
                       code="invalid_value")
    return text


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def flag_values(fields: Mapping[str, str], own: frozenset[str]) -> dict[str, Any]:
    """The table's values out of form `fields`; the `own` fields are the face's to read.
    Unknown and unsupported fields are a 400 naming the field."""
    values: dict[str, Any] = {}
    for field, text in fields.items():
        if field in own or field in CPP_ALWAYS:
            continue
        if field in CPP_UNSUPPORTED:
            raise ApiError(400, f"{field} (whisper.cpp) is not supported: {CPP_UNSUPPORTED[field]}", param=field,
                           code="unsupported_field")
        if field in _FIXED:
            raise ApiError(400, f"{field}: {_FIXED[field]}", param=field, code="unsupported_field")
        name = CPP_FIELDS.get(field, field)
        flag = BY_NAME.get(name)
        if flag is None:
            raise ApiError(400, f"unknown field '{field}'", param=field, code="unknown_field")
        if name in values:
            raise ApiError(400, f"{field}: given twice (also as {name})", param=field, code="invalid_value")
        values[name] = _value(field, flag, text)
    return values


def run_options_of(fields: Mapping[str, str], own: frozenset[str], formats: tuple[str, ...],
                   word_formats: frozenset[str], words: bool = False) -> RunOptions:
    """The options tree the CLI would build from the same values. Words are timed when asked
    (`word_timestamps`, or `words`), else exactly when a format given (`formats`) shows word
    times, as the CLI decides."""
    values = flag_values(fields, own)
    # turns are cut at word times: diarization times words as the CLI does
    diarize = bool(values.get("diarize")) or values.get("speakers") is not None
    values.setdefault("word_timestamps", words or diarize or any(f in word_formats for f in formats))
    try:
        return run_options(values)
    except WhisperliteError as e:
        raise ApiError(400, str(e), code="invalid_value") from None
