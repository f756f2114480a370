"""`whisperlite transcribe`: files in, subtitles out."""
from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Callable

import click

from whisperlite.audio.ffmpeg import AudioUrl, url_stem
from whisperlite.cli.common import fail, friendly_errors
from whisperlite.cli.flags import pop_run_options, transcription_flags
from whisperlite.core.errors import WhisperliteError
from whisperlite.output.chinese import CHINESE_LANGUAGES, convert_segment
from whisperlite.output.writers import check_output_dir, format_timestamp, speaker_prefix, write_outputs
from whisperlite.transcription.results import Segment, TranscriptionInfo

if TYPE_CHECKING:  # the tokenizer's module loads numba: only once a model does
    from whisperlite.tokenizer.whisper import WhisperTokenizer

EXAMPLES = """
\b
Examples:
  whisperlite transcribe talk.mp3 -osrt              writes talk.srt next to talk.mp3
  whisperlite transcribe -f a.wav -f b.m4a -osrt -otxt -o subs/ -t 2
  whisperlite transcribe lecture.mp4 -m tiny.en-q5_0 -ovtt -of lecture_en
  whisperlite transcribe talk.mp3 -m ggml-base.en.bin -oj --quiet
"""


# 256-colour ANSI codes from red (unsure) through yellow to green (confident).
CONFIDENCE_COLORS = (196, 202, 208, 214, 220, 226, 190, 154, 118, 82)


def special_name(t: int, tok: WhisperTokenizer) -> str:
    """A special token as whisper.cpp prints it (--print-special)."""
    sp = tok.special
    if t >= sp.timestamp_begin:
        return "[_BEG_]" if t == sp.timestamp_begin else f"[_TT_{t - sp.timestamp_begin}]"
    return {sp.eot: "[_EOT_]", sp.sot: "[_SOT_]", sp.startofprev: "[_PREV_]", sp.nospeech: "[_NOSP_]",
            sp.notimestamps: "[_NOT_]"}.get(t, f"[_extra_token_{t}]")


def segment_text(s: Segment, tok: WhisperTokenizer, colors: bool, special: bool) -> str:
    """The text of a segment token by token: coloured by probability (whisper.cpp
    --print-colors), with its special tokens (--print-special)."""
    parts = []
    for t, p in zip(s.tokens, s.token_probs):
        if t >= tok.eot and not special:
            continue
        text = special_name(t, tok) if t >= tok.eot else tok.decode([t])
        if not parts:
            text = text.lstrip()
        if colors:
            level = min(int(p * len(CONFIDENCE_COLORS)), len(CONFIDENCE_COLORS) - 1)
            text = f"\033[38;5;{CONFIDENCE_COLORS[level]}m{text}\033[0m"
        parts.append(text)
    return "".join(parts)


def print_segment(s: Segment, tok: WhisperTokenizer | None = None, colors: bool = False, special: bool = False,
                  times: bool = True) -> None:
    """One line per segment, as whisper.cpp prints it; `tok` is needed for colours or special tokens."""
    text = segment_text(s, tok, colors, special) if tok is not None and (colors or special) else s.text.strip()
    text = speaker_prefix(s.speaker) + text
    # colours asked for are printed even into a pipe, as whisper.cpp does
    click.echo(f"[{format_timestamp(s.start)} --> {format_timestamp(s.end)}]  {text}" if times else text,
               color=True if colors else None)


def profile_report(info: TranscriptionInfo, wall: float, cpu: float) -> str:
    """The --profile table of one input (split inputs, -p N, ran in other processes: totals only)."""
    if info.profile is None:
        return f"whisperlite: profile: stages not measured (parts ran in worker processes); {wall:.2f} s wall"
    return "whisperlite: profile\n" + info.profile.report(info.duration, wall, cpu)


class Progress:
    """How far into an input the transcript is, on stderr: a bar with an ETA on a terminal, or
    whisper.cpp's `progress = N%` lines every 5 % with -pp (also into a pipe or a log)."""

    STEP = 5  # percent between -pp lines, as whisper.cpp's cli

    def __init__(self, duration: float | None, bar: bool, lines: bool):
        self.duration, self.lines, self.last = duration, lines, 0
        self.bar = None
        if bar and duration:
            from tqdm import tqdm

            # A terminal that reports no size (some ptys say 0x0) would hide the bar.
            sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
            self.bar = tqdm(total=round(duration, 1), file=sys.stderr, leave=False, dynamic_ncols=sized,
                            ncols=None if sized else 80, nrows=None if sized else 24,
                            bar_format="{percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")

    def echo(self, show: Callable[[], None]) -> None:
        """Print a segment line without tearing the bar."""
        if self.bar is None:
            return show()
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stdout):
            show()

    def advance(self, seconds: float) -> None:
        if not self.duration:
            return
        seconds = min(seconds, self.duration)
        if self.bar is not None:
            self.bar.update(max(0.0, round(seconds, 1) - self.bar.n))
        percent = int(100 * seconds / self.duration)
        if self.lines and percent >= self.last + self.STEP:
            self.last = percent - percent % self.STEP
            click.echo(f"whisperlite: progress = {self.last:3d}%", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def output_base(path: str | AudioUrl, output_file: str | None, output_dir: str | None) -> str:
    """talk.mp3 → talk (beside the input, or in --output-dir); -of BASE wins. A URL's outputs
    go to --output-dir or the current folder, named after its last path segment."""
    if output_file:
        base = output_file
        if output_dir and not os.path.isabs(output_file):
            base = os.path.join(output_dir, output_file)
        return base
    if isinstance(path, AudioUrl):
        return os.path.join(output_dir or ".", url_stem(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(output_dir if output_dir else os.path.dirname(os.path.abspath(path)), stem)


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@transcription_flags
@click.argument("files", nargs=-1)
@click.option("-f", "--file", "extra_files", multiple=True, help="Input file (repeatable).")
@click.option("-of", "--output-file", default=None, help="Output base name (extension added per format).")
@click.option("-o", "--output-dir", default=None, help="Directory for outputs [default: beside each input].")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors and warnings.")
@click.option("-np", "--no-prints", is_flag=True, help="Print the segments and nothing else (no notices on stderr).")
@click.option("-pc", "--print-colors", is_flag=True, help="Colour printed words by confidence.")
@click.option("-ps", "--print-special", is_flag=True, help="Print special tokens (timestamps) within segments.")
@click.option("-dl", "--detect-language", is_flag=True, help="Print each input's language and exit (nothing is transcribed).")
@click.option("-pp", "--print-progress", is_flag=True,
              help="Print `progress = N%` lines to stderr (a terminal shows a progress bar anyway).")
@click.option("--profile", is_flag=True, help="Print wall and CPU time per stage (audio, VAD, mel, encoder, decoder, …) to stderr.")
@friendly_errors
def transcribe(files, extra_files, output_file, output_dir, quiet, no_prints, print_colors, print_special, detect_language,
               print_progress, profile, **flags):
    """Transcribe audio or video files (anything ffmpeg reads) to subtitles and text."""
    if detect_language:
        flags["language"] = "auto"
    run = pop_run_options(flags)
    options, formats = run.transcribe, run.output.formats
    inputs = list(files) + list(extra_files)
    if not inputs:
        fail("no input files (give FILE arguments or -f FILE)")
    # Before loading the model, which on a fresh install first compiles the kernels (minutes).
    from whisperlite.audio.ffmpeg import input_source, require_stereo

    failed = 0
    readable = []
    for path in inputs:
        try:
            source = input_source(path, run.runtime.allow_urls)
            if options.stereo_diarize:
                require_stereo(source)
            readable.append((path, source))
        except WhisperliteError as e:
            failed += 1
            click.echo(f"error: {e}", err=True)
    if not readable:
        sys.exit(1)
    if output_file and len(inputs) > 1:
        fail("-of/--output-file names one output: use it with a single input (or use -o DIR)")
    if not detect_language:
        if output_dir:
            check_output_dir(output_dir)
        if output_file:
            check_output_dir(os.path.dirname(os.path.abspath(output_base(readable[0][1], output_file, output_dir))))
    notices = not (quiet or no_prints)

    from whisperlite.transcription.transcribe import load_model

    t0 = time.perf_counter()
    wm = load_model(run.runtime.model, threads=run.runtime.threads, compute_type=run.runtime.compute_type)
    if notices:
        click.echo(f"whisperlite: model {run.runtime.model} loaded in {time.perf_counter() - t0:.2f} s, "
                   f"{wm.threads} thread{'s' if wm.threads > 1 else ''}", err=True)
    for path, source in readable:
        try:
            if detect_language:
                _, info = wm.transcribe(source, options)
                click.echo(f"{path}: detected language {info.language} (p={info.language_probability:.2f})")
                continue
            base = output_base(source, output_file, output_dir)
            if not output_dir and not output_file:
                check_output_dir(os.path.dirname(base) or ".")
            start, start_cpu = time.perf_counter(), time.process_time()
            if run.runtime.processors > 1:
                from whisperlite.batch.split import transcribe_split

                segments_iter, info = transcribe_split(wm, source, run)
            else:
                segments_iter, info = wm.transcribe(source, options)
            if notices and wm.is_multilingual and options.decode.language is None:
                click.echo(f"whisperlite: {path}: detected language {info.language} "
                           f"(p={info.language_probability:.2f})", err=True)
            zh_script = run.output.zh_script
            segments = []
            progress = Progress(info.duration, bar=notices and sys.stderr.isatty(), lines=print_progress and not quiet)
            try:
                for seg in segments_iter:
                    if zh_script and info.language in CHINESE_LANGUAGES and options.decode.task == "transcribe":
                        seg = convert_segment(seg, zh_script)
                    segments.append(seg)
                    if not quiet:
                        progress.echo(lambda: print_segment(seg, wm.tokenizer, print_colors, print_special,
                                                            not options.decode.without_timestamps))
                    progress.advance(seg.end)
                progress.advance(info.duration or 0.0)
            finally:
                progress.close()
            if info.warning:
                click.echo(f"warning: {info.warning}", err=True)
            if info.profile is not None:
                with info.profile.stage("write", len(segments), "segments"):
                    written = write_outputs(segments, info, base, formats, run.output)
            else:
                written = write_outputs(segments, info, base, formats, run.output)
            if notices:
                took = time.perf_counter() - start
                speed = f", {info.duration / took:.1f}x real time" if info.duration else ""
                count = f"{len(segments)} segment{'' if len(segments) == 1 else 's'}"
                click.echo(f"whisperlite: {path}: {count} in {took:.1f} s{speed}"
                           + (f" → {', '.join(written)}" if written else ""), err=True)
            if profile:
                click.echo(profile_report(info, time.perf_counter() - start, time.process_time() - start_cpu), err=True)
        except WhisperliteError as e:
            failed += 1
            click.echo(f"error: {e}", err=True)
    if failed:
        sys.exit(1)
