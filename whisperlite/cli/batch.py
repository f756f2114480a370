"""`whisperlite batch`: folders and lists of inputs, resumable, on local processes or Dask."""
from __future__ import annotations

import os
import sys

import click

from whisperlite.cli.common import fail, friendly_errors
from whisperlite.cli.transcribe import _format_flags
from whisperlite.output.writers import WORD_FORMATS
from whisperlite.transcription.options import (
    ContextOptions,
    DecodeOptions,
    TranscribeOptions,
)

EXAMPLES = """
\b
Examples:
  whisperlite batch podcasts/ -o subs/ -osrt -otxt -j 2 -t 1
  whisperlite batch episodes.txt -o subs/ -osrt              (one path per line, # comments)
  whisperlite batch long_show.mp3 -o subs/ -osrt -p 2        (split at pauses, 2 processes)
  whisperlite batch /shared/audio -o subs/ -osrt --scheduler tcp://head:8786
\b
Re-running skips inputs already in subs/manifest.jsonl with the same content, model and
options; --force redoes them. Exit status 1 if any input failed.
"""


@click.command(epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output-dir", required=True, help="Directory for outputs and manifest.jsonl (input folders are mirrored).")
@_format_flags
@click.option("-m", "--model", default="tiny.en", show_default=True, help="Model name (tiny.en, tiny.en-q5_0, base …) or path (./base: a folder named like a model).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None, help="Worker processes, each loading the model once [default: 1, or N with -p N].")
@click.option("-t", "--threads", type=click.IntRange(1, 256), default=None, help="Threads per worker [default: cores / workers; all cores on Dask workers].")
@click.option("-p", "--processors", type=click.IntRange(1, 64), default=1, show_default=True, help="Split inputs longer than a minute at pauses into up to N parts run in parallel.")
@click.option("-l", "--language", default=None, help="Spoken language code (en, de, …) [default: en for .en models].")
@click.option("-tr", "--translate", is_flag=True, help="Translate to English (multilingual models).")
@click.option("-bs", "--beam-size", type=click.IntRange(1, 16), default=DecodeOptions.beam_size, show_default=True, help="Beam size (1 or unset: greedy).")
@click.option("--prompt", "initial_prompt", default=None, help="Initial prompt: vocabulary and style hints.")
@click.option("--no-context", is_flag=True, help="Do not condition each window on the previous text.")
@click.option("--word-timestamps/--no-word-timestamps", default=None,
              help="Word times from cross-attention (in JSON; subtitle cues are cut at word times) "
                   "[default: on when writing SRT, VTT or JSON].")
@click.option("--force", is_flag=True, help="Redo inputs the manifest records as done.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786", help="Run on this Dask distributed scheduler (needs whisperlite[dask]).")
@friendly_errors
def batch(inputs, output_dir, out_srt, out_vtt, out_txt, out_json, out_csv, out_lrc, model, jobs, threads, processors,
          language, translate, beam_size, initial_prompt, no_context, word_timestamps, force, scheduler):
    """Transcribe many files, folders (searched recursively) or input lists into OUTDIR."""
    from whisperlite.batch.run import BatchOptions, run_batch

    formats = tuple(fmt for fmt, on in (("srt", out_srt), ("vtt", out_vtt), ("txt", out_txt), ("json", out_json),
                                        ("csv", out_csv), ("lrc", out_lrc)) if on)
    if not formats:
        fail("choose at least one output format (-osrt, -ovtt, -otxt, -oj, -ocsv, -olrc)")
    if scheduler and jobs:
        fail("-j sets local worker processes; with --scheduler the cluster's workers do the work")
    if word_timestamps is None:  # as `transcribe`: the same subtitles from either command
        word_timestamps = any(f in WORD_FORMATS for f in formats)
    options = TranscribeOptions(
        decode=DecodeOptions(language=language, task="translate" if translate else "transcribe", beam_size=beam_size),
        context=ContextOptions(condition_on_previous_text=not no_context, initial_prompt=initial_prompt),
        word_timestamps=word_timestamps)
    opts = BatchOptions(output_dir=os.path.abspath(output_dir), formats=formats, model=model,
                        jobs=jobs or processors, threads=threads, processors=processors, force=force,
                        scheduler=scheduler, options=options)
    summary = run_batch(inputs, opts)
    if summary.failed:
        sys.exit(1)
