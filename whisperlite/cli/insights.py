"""`whisperlite chapters` and `whisperlite summarize`: a transcript (or a media file, transcribed
first) to YouTube-style chapters, or to a summary with key quotes, by the local LLM."""
from __future__ import annotations

import json
import os
import sys
from typing import Callable

import click

from whisperlite.cli.common import friendly_errors
from whisperlite.cli.transcribe import Progress
from whisperlite.core.errors import WhisperliteError
from whisperlite.insights.options import AUTO, STRONGEST_FIRST, ChapterOptions, SummaryOptions
from whisperlite.transcription.options import RuntimeOptions

_C = ChapterOptions()
_S = SummaryOptions()
_R = RuntimeOptions()
_AUTO_HELP = f"or {AUTO}: the strongest one pulled here ({', else '.join(STRONGEST_FIRST)})."

CHAPTER_EXAMPLES = """
\b
Examples:
  whisperlite chapters episode.mp3                    transcribe, then print `00:00 Title` lines
  whisperlite chapters episode.json -o chapters.txt   from a transcript (`transcribe -oj`, or .srt)
  whisperlite chapters episode.srt --json --llm ./my-model.gguf
"""

SUMMARY_EXAMPLES = """
\b
Examples:
  whisperlite summarize episode.mp3
  whisperlite summarize episode.json --json -o summary.json
\b
Long transcripts are summarized in chunks that fit the model's context, then the partial
summaries are joined: nothing is left out. Quotes are whole transcript lines, verbatim, with
their times.
"""


def _common(fn: Callable) -> Callable:
    for option in reversed([
        click.argument("input_path", metavar="IN"),
        click.option("--json", "as_json", is_flag=True, help="Write JSON instead of text."),
        click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
                     help="Write to this file (atomically) instead of stdout."),
        click.option("-m", "--model", default=_R.model, show_default=True,
                     help="Whisper model that transcribes a media IN (see `whisperlite models list`)."),
        click.option("-t", "--threads", default=None, type=click.IntRange(1, 256), help="Threads (default: all cores)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress on stderr."),
    ]):
        fn = option(fn)
    return fn


def _inputs(path: str, output: str | None, model: str, threads: int | None, quiet: bool, llm: str, n_ctx: int):
    """The transcript lines of IN and the loaded LLM, once -o's folder is checked. A transcript
    file is read first (a bad one fails at once); a media file is transcribed after the LLM
    loads (a bad --llm fails before minutes of transcription)."""
    from whisperlite.insights.transcript import is_transcript
    from whisperlite.kernels import set_threads

    _check_output(output)
    set_threads(threads)
    if is_transcript(path):
        lines = _lines(path, model, threads, quiet)
        return lines, _writer(llm, n_ctx, quiet)
    from whisperlite.audio.ffmpeg import check_input_file

    if os.path.isdir(path):
        raise WhisperliteError(f"{path}: is a folder, not a media or transcript file")
    check_input_file(path)
    writer = _writer(llm, n_ctx, quiet)
    return _lines(path, model, threads, quiet), writer


def _writer(llm: str, n_ctx: int, quiet: bool):
    """The LLM loaded; when it was chosen for the user (--llm auto), one line says which."""
    from whisperlite.insights.llm import choose_llm, load_writer

    name = choose_llm(llm)
    writer = load_writer(name, n_ctx)
    if llm == AUTO and not quiet:
        click.echo(f"whisperlite: LLM {name}, the strongest one pulled here (--llm chooses another)", err=True)
    return writer


def _lines(path: str, model: str, threads: int | None, quiet: bool):
    """The transcript of IN, with a progress bar on a terminal while a media file is transcribed."""
    from whisperlite.insights.transcript import load_lines

    bar: list[Progress] = []

    def progress(done: float, duration: float | None) -> None:
        if not bar:
            bar.append(Progress(duration, bar=not quiet and sys.stderr.isatty(), lines=False))
        bar[0].advance(done)

    try:
        return load_lines(path, model, threads, progress)
    finally:
        if bar:
            bar[0].close()


def _check_output(output: str | None) -> None:
    if output:
        from whisperlite.output.writers import check_output_dir

        check_output_dir(os.path.dirname(os.path.abspath(output)))


def _emit(text: str, output: str | None) -> None:
    if output:
        from whisperlite.output.writers import atomic_write_text

        atomic_write_text(output, text)
    else:
        click.echo(text, nl=False)


class _Steps:
    """A bar of LLM calls on a terminal (nothing in a pipe or a log)."""

    def __init__(self, show: bool, unit: str):
        self.show, self.unit, self.bar = show, unit, None

    def __call__(self, done: int, total: int) -> None:
        if not self.show:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, leave=False, unit=self.unit)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(epilog=CHAPTER_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@_common
@click.option("--llm", default=_C.llm, show_default=True,
              help="The model that writes titles: a GGUF file, a name from `whisperlite models list`, "
                   + _AUTO_HELP)
@click.option("--min-chapter", default=_C.min_chapter, show_default=True, type=click.FloatRange(min=0),
              help="Shortest chapter, in seconds.")
@click.option("--window", default=_C.window, show_default=True, type=click.IntRange(min=1),
              help="Transcript lines on each side of a break compared for a change of topic.")
@friendly_errors
def chapters(input_path: str, as_json: bool, output: str | None, model: str, threads: int | None, quiet: bool,
             llm: str, min_chapter: float, window: int) -> None:
    """Chapters of IN (a media file, or a whisperlite JSON or SRT transcript): `00:00 Title` lines."""
    from whisperlite.insights.chapters import chapters_json, format_chapters, split_chapters, titles

    opts = ChapterOptions(min_chapter=min_chapter, window=window, llm=llm)
    lines, writer = _inputs(input_path, output, model, threads, quiet, opts.llm, opts.n_ctx)
    parts = split_chapters(lines, opts)
    steps = _Steps(not quiet and sys.stderr.isatty(), "title")
    titled = []
    try:
        for chapter in titles(parts, writer, opts):
            titled.append(chapter)
            steps(len(titled), len(parts))
    finally:
        steps.close()
    text = json.dumps(chapters_json(titled), ensure_ascii=False, indent=2) + "\n" if as_json else format_chapters(titled)
    _emit(text, output)


@click.command(epilog=SUMMARY_EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@_common
@click.option("--llm", default=_S.llm, show_default=True,
              help="The model that writes the summary: a GGUF file, a name from `whisperlite models list`, "
                   + _AUTO_HELP)
@click.option("-c", "--ctx-size", default=_S.n_ctx, show_default=True, type=click.IntRange(min=64),
              help="The LLM's context in tokens (capped at the model's own): each chunk and its answer fit in it.")
@click.option("--quotes", default=_S.quotes, show_default=True, type=click.IntRange(min=0), help="Key quotes to pick.")
@friendly_errors
def summarize(input_path: str, as_json: bool, output: str | None, model: str, threads: int | None, quiet: bool,
              llm: str, ctx_size: int, quotes: int) -> None:
    """Summary and key quotes (verbatim, with their times) of IN: a media file or a transcript."""
    from whisperlite.insights.summary import format_summary, run_summary, summarize as summary_steps, summary_json

    opts = SummaryOptions(llm=llm, n_ctx=ctx_size, quotes=quotes)
    lines, writer = _inputs(input_path, output, model, threads, quiet, opts.llm, opts.n_ctx)
    steps = _Steps(not quiet and sys.stderr.isatty(), "chunk")
    try:
        result = run_summary(summary_steps(lines, writer, opts), steps)
    finally:
        steps.close()
    text = json.dumps(summary_json(result), ensure_ascii=False, indent=2) + "\n" if as_json else format_summary(result)
    _emit(text, output)
