"""The transcription flags of `transcribe` and `batch`, generated from the one table
(`transcription.flags.FLAGS`), and every whisper.cpp CLI flag a command does not take
rejected by name: click would otherwise read `-owts` as `-o wts` or `-fa` as an input file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import click

from whisperlite import __version__
from whisperlite.output.writers import WORD_FORMATS
from whisperlite.transcription.flags import FLAGS, Flag, run_options
from whisperlite.transcription.options import RunOptions


@dataclass(frozen=True)
class CppFlag:
    """A whisper.cpp CLI flag (examples/cli/cli.cpp `whisper_print_usage`) that is not a row
    of the table: taken by some commands, or not supported, or meaningless here."""

    spellings: tuple[str, ...]
    takes_value: bool = False
    why: str | None = None  # not supported: why, in a few words; None: a command's own flag
    noop: bool = False  # asks for what whisperlite always does: accepted and ignored


WHISPER_CPP = (
    CppFlag(("-on", "--offset-n"), True, "SRT cue numbers always start at 1"),
    CppFlag(("-ac", "--audio-ctx"), True, "the encoder always sees the whole 30-s window"),
    CppFlag(("-wt", "--word-thold"), True, "word times come from cross-attention (--word-timestamps)"),
    CppFlag(("-et", "--entropy-thold"), True, "repetition is caught by --compression-ratio-threshold"),
    CppFlag(("-debug", "--debug-mode"), why="use --profile, or WHISPERLITE_DEBUG=1 for tracebacks"),
    CppFlag(("-tdrz", "--tinydiarize"), why="no speaker diarization"),
    CppFlag(("-owts", "--output-words"), why="no karaoke script output (-osrt -ovtt -otxt -oj -ocsv -olrc are)"),
    CppFlag(("-fp", "--font-path"), True, "no karaoke script output"),
    CppFlag(("--print-confidence",), why="use -pc/--print-colors"),
    CppFlag(("--carry-initial-prompt",), why="use --hotwords: context kept for every window"),
    CppFlag(("-oved", "--ov-e-device"), True, "no OpenVINO: whisperlite runs on the CPU"),
    CppFlag(("-dtw", "--dtw"), True, "word times always use DTW on the model's alignment heads (--word-timestamps)"),
    CppFlag(("-ls", "--log-score"), why="no score log (-ojf writes token probabilities)"),
    CppFlag(("-dev", "--device"), True, "no GPU: whisperlite runs on the CPU"),
    CppFlag(("-fa", "--flash-attn"), why="no GPU flash attention: whisperlite runs on the CPU"),
    CppFlag(("--suppress-regex",), True, "no token suppression by regular expression"),
    CppFlag(("--grammar",), True, "no grammar-guided decoding"),
    CppFlag(("--grammar-rule",), True, "no grammar-guided decoding"),
    CppFlag(("--grammar-penalty",), True, "no grammar-guided decoding"),
    CppFlag(("-vm", "--vad-model"), True, "the Silero VAD is built in"),
    CppFlag(("-vmsd", "--vad-max-speech-duration-s"), True, "speech is never cut by length"),
    CppFlag(("-vo", "--vad-samples-overlap"), True, "speech stretches are joined on one timeline"),
    CppFlag(("-ng", "--no-gpu"), noop=True),
    CppFlag(("-nfa", "--no-flash-attn"), noop=True),
    CppFlag(("-sns", "--suppress-nst"), noop=True),  # non-speech tokens are always suppressed
    # What some commands take (transcribe: all of these) and others do not (batch).
    CppFlag(("-f", "--file"), True),
    CppFlag(("-of", "--output-file"), True),
    CppFlag(("-np", "--no-prints")),
    CppFlag(("-ps", "--print-special")),
    CppFlag(("-pc", "--print-colors")),
    CppFlag(("-dl", "--detect-language")),
    CppFlag(("-pp", "--print-progress")),
)


# Rows of the table a command does not take, and why: refused by name, as whisper.cpp's flags are.
NOT_TAKEN = {
    "batch": {"allow_urls": "batch reads files, folders and lists of files; fetch a URL with "
                            "`whisperlite transcribe --allow-urls URL`"},
}


def _reject(why: str, whose: str = " (whisper.cpp)") -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:  # given (an empty string counts)
            given = "/".join(param.opts)
            raise click.UsageError(f"{given}{whose} is not supported: {why}", ctx)

    return callback


def _click_option(flag: Flag) -> Callable:
    if flag.type is bool:
        decls = [f"{on}/{off}" for on, off in zip(flag.spellings, flag.off)] if flag.off else list(flag.spellings)
        kind: dict[str, Any] = {} if flag.off else {"is_flag": True}
    else:
        decls = list(flag.spellings)
        if flag.choices:
            kind = {"type": click.Choice(flag.choices)}
        elif flag.min is not None or flag.max is not None:
            kind = {"type": click.IntRange(flag.min, flag.max) if flag.type is int else click.FloatRange(flag.min, flag.max)}
        else:
            kind = {"type": flag.type}
    show = flag.default_help if flag.default_help else (flag.default is not None and flag.default is not False)
    return click.Option([*decls, flag.name], default=flag.default, show_default=show, help=flag.help, **kind)


def transcription_flags(fn: Callable) -> Callable:
    """Every row of the flag table as a click option, `--version`, and every whisper.cpp flag
    the command does not take as an error naming it. Goes right under `@click.command`, so that
    it sees the command's own options."""
    own = getattr(fn, "__click_params__", [])
    claimed = {s for p in own for s in [*p.opts, *p.secondary_opts]}
    # click lists the parameters in reverse: these come after the command's own in --help
    refused = NOT_TAKEN.get(fn.__name__, {})
    table = [_click_option(flag) for flag in FLAGS if flag.name not in refused]
    for flag in FLAGS:
        if flag.name in refused:
            table.append(click.Option([*flag.spellings, flag.name], is_flag=flag.type is bool, hidden=True,
                                      expose_value=False, callback=_reject(refused[flag.name], "")))
    for cpp in WHISPER_CPP:
        if not claimed & set(cpp.spellings):
            why = cpp.why or f"`whisperlite transcribe` takes it, `{fn.__name__}` does not"
            table.append(click.Option([*cpp.spellings, f"cpp_{cpp.spellings[-1].lstrip('-').replace('-', '_')}"],
                                      is_flag=not cpp.takes_value, expose_value=False, hidden=True,
                                      callback=None if cpp.noop else _reject(why)))
    fn.__click_params__ = [*reversed(table), *own]
    return click.version_option(__version__, "--version", prog_name="whisperlite")(fn)


def pop_run_options(kwargs: dict[str, Any]) -> RunOptions:
    """The table's values out of a command's keyword arguments, as the options tree."""
    values = {flag.name: kwargs.pop(flag.name) for flag in FLAGS if flag.name in kwargs}
    return run_options(values, WORD_FORMATS)
