"""`whisperlite transcribe`: files in, subtitles out."""
from __future__ import annotations

import os
import sys
import time

import click

from whisperlite.cli.common import fail, friendly_errors
from whisperlite.core.errors import WhisperliteError
from whisperlite.output.chinese import CHINESE_LANGUAGES, convert_segment
from whisperlite.output.writers import (
    WORD_FORMATS,
    WRITERS,
    check_output_dir,
    format_timestamp,
    write_outputs,
)
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcription.options import (
    ContextOptions,
    DecodeOptions,
    FallbackOptions,
    OutputOptions,
    SubtitleOptions,
    TranscribeOptions,
    VadOptions,
)
from whisperlite.transcription.results import Segment, TranscriptionInfo

EXAMPLES = """
\b
Examples:
  whisperlite transcribe talk.mp3 -osrt              writes talk.srt next to talk.mp3
  whisperlite transcribe -f a.wav -f b.m4a -osrt -otxt -o subs/ -t 2
  whisperlite transcribe lecture.mp4 -m tiny.en-q5_0 -ovtt -of lecture_en
  whisperlite transcribe talk.mp3 -m ggml-base.en.bin -oj --quiet
"""


def _format_flags(f):
    for fmt, short in (("srt", "-osrt"), ("vtt", "-ovtt"), ("txt", "-otxt"), ("json", "-oj"), ("csv", "-ocsv"), ("lrc", "-olrc")):
        f = click.option(short, f"--output-{fmt}", f"out_{fmt}", is_flag=True, help=f"Write a .{fmt} file.")(f)
    return f


# 256-colour ANSI codes from red (unsure) through yellow to green (confident).
CONFIDENCE_COLORS = (196, 202, 208, 214, 220, 226, 190, 154, 118, 82)


def colored_text(s: Segment, tok: WhisperTokenizer) -> str:
    """Each text token coloured by its probability (whisper.cpp --print-colors)."""
    parts = []
    for t, p in zip(s.tokens, s.token_probs):
        if t < tok.eot:
            level = min(int(p * len(CONFIDENCE_COLORS)), len(CONFIDENCE_COLORS) - 1)
            text = tok.decode([t]) if parts else tok.decode([t]).lstrip()
            parts.append(f"\033[38;5;{CONFIDENCE_COLORS[level]}m{text}\033[0m")
    return "".join(parts)


def print_segment(s: Segment, tok: WhisperTokenizer | None = None) -> None:
    """tok: colour tokens by confidence."""
    text = colored_text(s, tok) if tok is not None else s.text.strip()
    click.echo(f"[{format_timestamp(s.start)} --> {format_timestamp(s.end)}]  {text}")


def profile_report(info: TranscriptionInfo, wall: float, cpu: float) -> str:
    """The --profile table of one input (split inputs, -p N, ran in other processes: totals only)."""
    if info.profile is None:
        return f"whisperlite: profile: stages not measured (parts ran in worker processes); {wall:.2f} s wall"
    return "whisperlite: profile\n" + info.profile.report(info.duration, wall, cpu)


def output_base(path: str, output_file: str | None, output_dir: str | None) -> str:
    """talk.mp3 → talk (beside the input, or in --output-dir); -of BASE wins."""
    if output_file:
        base = output_file
        if output_dir and not os.path.isabs(output_file):
            base = os.path.join(output_dir, output_file)
        return base
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(output_dir if output_dir else os.path.dirname(os.path.abspath(path)), stem)


@click.command(epilog=EXAMPLES)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-f", "--file", "extra_files", multiple=True, type=click.Path(dir_okay=False), help="Input file (repeatable).")
@click.option("-m", "--model", default="tiny.en", show_default=True, help="Model name (tiny.en, tiny.en-q5_0, base …) or path (./base: a folder named like a model).")
@click.option("--compute-type", type=click.Choice(["auto", "f32", "q8_0"]), default="auto", show_default=True,
              help="How weights are held: auto (f32, Q8_0 vocabulary projection), f32 (exact), q8_0 (fastest).")
@click.option("-t", "--threads", type=click.IntRange(1, 256), default=None, help="Threads for all kernels [default: physical cores].")
@click.option("-p", "--processors", type=click.IntRange(1, 64), default=1, show_default=True, help="Split each input at pauses into up to N parts run in parallel processes (-t threads each).")
@click.option("-l", "--language", default="auto", show_default=True,
              help="Spoken language code (en, de, zh, …) or auto: detected on the first speech (.en models: en).")
@click.option("-tr", "--translate", is_flag=True, help="Translate to English (multilingual models).")
@click.option("--zh", "zh_script", type=click.Choice(["simplified", "traditional"]), default=None,
              help="Write Chinese output in simplified or traditional characters [default: as the model gives it].")
@_format_flags
@click.option("-ojf", "--output-json-full", "out_json_full", is_flag=True, help="Write a .json file with words, token ids and probabilities.")
@click.option("-of", "--output-file", default=None, help="Output base name (extension added per format).")
@click.option("-o", "--output-dir", default=None, help="Directory for outputs [default: beside each input].")
@click.option("-bs", "--beam-size", type=click.IntRange(1, 16), default=5, show_default=True, help="Beam size at temperature 0 (1: greedy).")
@click.option("--patience", type=click.FloatRange(min=1.0), default=1.0, show_default=True, help="Beam search: stop after beam-size × patience finished sequences.")
@click.option("--length-penalty", type=float, default=None, help="Rank beams by logprob / ((5+len)/6)^alpha [default: logprob per token].")
@click.option("-bo", "--best-of", type=click.IntRange(1, 16), default=5, show_default=True, help="Samples per window when the temperature rises.")
@click.option("-tp", "--temperature", type=float, default=0.0, show_default=True, help="Initial sampling temperature.")
@click.option("-tpi", "--temperature-inc", type=float, default=0.2, show_default=True, help="Temperature step on fallback.")
@click.option("-nf", "--no-fallback", is_flag=True, help="Never retry a window at a higher temperature.")
@click.option("--compression-ratio-threshold", type=float, default=2.4, show_default=True, help="Retry when text compresses better than this (loops).")
@click.option("-lpt", "--logprob-threshold", type=float, default=-1.0, show_default=True, help="Retry when the average log-probability is below this.")
@click.option("-nth", "--no-speech-threshold", type=float, default=0.6, show_default=True, help="Skip windows whose no-speech probability is above this.")
@click.option("--prompt", "initial_prompt", default=None, help="Initial prompt: vocabulary and style hints.")
@click.option("--hotwords", default=None, help="Words or names to expect, given to the model as context for every window.")
@click.option("--no-context", is_flag=True, help="Do not condition each window on the previous text.")
@click.option("--word-timestamps/--no-word-timestamps", default=None,
              help="Word times from cross-attention (in JSON; subtitle cues are cut at word times) "
                   "[default: on when writing SRT, VTT or JSON].")
@click.option("-ml", "--max-len", "max_line_width", type=click.IntRange(0), default=SubtitleOptions.max_line_width, show_default=True,
              help="Maximum characters per subtitle line (0: no limit).")
@click.option("--max-line-count", type=click.IntRange(0), default=SubtitleOptions.max_line_count, show_default=True,
              help="Maximum lines per subtitle cue (0: no limit).")
@click.option("-sow/-nsow", "--split-on-word/--no-split-on-word", default=True, show_default=True,
              help="Break lines only between words (off: cut words longer than a line).")
@click.option("--vad/--no-vad", default=True, show_default=True,
              help="Skip pauses of 2 s or more, silence, noise and music before decoding (Silero VAD).")
@click.option("-pc", "--print-colors", is_flag=True, help="Colour printed words by confidence.")
@click.option("-q", "--quiet", "-np", "--no-prints", is_flag=True, help="Do not print segments to stdout.")
@click.option("--profile", is_flag=True, help="Print wall and CPU time per stage (audio, VAD, mel, encoder, decoder, …) to stderr.")
@friendly_errors
def transcribe(files, extra_files, model, compute_type, threads, language, translate, out_srt, out_vtt, out_txt, out_json, out_csv,
               out_lrc, output_file, output_dir, beam_size, patience, length_penalty, best_of, temperature, temperature_inc, no_fallback,
               compression_ratio_threshold, logprob_threshold, no_speech_threshold, initial_prompt, no_context, quiet, processors,
               out_json_full, word_timestamps, max_line_width, max_line_count, split_on_word, vad, print_colors, hotwords,
               profile, zh_script):
    """Transcribe audio or video files (anything ffmpeg reads) to subtitles and text."""
    inputs = list(files) + list(extra_files)
    if not inputs:
        fail("no input files (give FILE arguments or -f FILE)")
    if not any(os.path.exists(p) for p in inputs):
        # before loading the model, which on a fresh install first compiles the kernels (minutes)
        fail(f"{inputs[0]}: no such file" if len(inputs) == 1 else "none of the input files exists")
    if output_file and len(inputs) > 1:
        fail("-of/--output-file names one output: use it with a single input (or use -o DIR)")
    formats = [fmt for fmt, on in (("srt", out_srt), ("vtt", out_vtt), ("txt", out_txt), ("json", out_json or out_json_full),
                                   ("csv", out_csv), ("lrc", out_lrc)) if on]
    if word_timestamps is None:  # aligning words costs ~60 ms CPU a window: only for outputs that show them
        word_timestamps = any(f in WORD_FORMATS for f in formats)
    writer_options = OutputOptions(tuple(formats), SubtitleOptions(max_line_width, max_line_count, split_on_word), json_full=out_json_full,
                                   zh_script=zh_script)
    assert all(f in WRITERS for f in formats)
    if output_dir:
        check_output_dir(output_dir)
    if output_file:
        check_output_dir(os.path.dirname(os.path.abspath(output_base(inputs[0], output_file, output_dir))))

    if temperature_inc > 0 and not no_fallback:
        temps, t = [], temperature
        while t <= 1.0 + 1e-6:
            temps.append(round(t, 4))
            t += temperature_inc
        temperatures = tuple(temps) or (temperature,)
    else:
        temperatures = (temperature,)
    options = TranscribeOptions(
        decode=DecodeOptions(language=language, task="translate" if translate else "transcribe", beam_size=beam_size,
                             best_of=best_of, patience=patience, length_penalty=length_penalty),
        fallback=FallbackOptions(temperatures, compression_ratio_threshold, logprob_threshold, no_speech_threshold),
        context=ContextOptions(condition_on_previous_text=not no_context, initial_prompt=initial_prompt, hotwords=hotwords),
        vad=VadOptions(enabled=vad), word_timestamps=word_timestamps,
    )

    from whisperlite.transcription.transcribe import load_model

    t0 = time.perf_counter()
    wm = load_model(model, threads=threads, compute_type=compute_type)
    if not quiet:
        click.echo(f"whisperlite: model {model} loaded in {time.perf_counter() - t0:.2f} s, {wm.threads} thread{'s' if wm.threads > 1 else ''}", err=True)
    failed = 0
    for path in inputs:
        try:
            base = output_base(path, output_file, output_dir)
            if not output_dir and not output_file:
                check_output_dir(os.path.dirname(base) or ".")
            start, start_cpu = time.perf_counter(), time.process_time()
            if processors > 1:
                from whisperlite.batch.run import transcribe_split

                segments_iter, info = transcribe_split(wm, path, options, processors, threads)
            else:
                segments_iter, info = wm.transcribe(path, options)
            if not quiet and wm.is_multilingual and options.decode.language in (None, "auto"):
                click.echo(f"whisperlite: {path}: detected language {info.language} "
                           f"(p={info.language_probability:.2f})", err=True)
            segments = []
            for seg in segments_iter:
                if zh_script and info.language in CHINESE_LANGUAGES and options.decode.task == "transcribe":
                    seg = convert_segment(seg, zh_script)
                segments.append(seg)
                if not quiet:
                    print_segment(seg, wm.tokenizer if print_colors else None)
            if info.warning:
                click.echo(f"warning: {info.warning}", err=True)
            if info.profile is not None:
                with info.profile.stage("write", len(segments), "segments"):
                    written = write_outputs(segments, info, base, formats, writer_options)
            else:
                written = write_outputs(segments, info, base, formats, writer_options)
            if not quiet:
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
