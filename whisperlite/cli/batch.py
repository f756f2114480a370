"""`whisperlite batch`: folders and lists of inputs, resumable, on local processes or Dask."""
from __future__ import annotations

import os
import sys

import click

from whisperlite.cli.common import fail, friendly_errors
from whisperlite.cli.flags import pop_run_options, transcription_flags

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


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@transcription_flags
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output-dir", required=True, help="Directory for outputs and manifest.jsonl (input folders are mirrored).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None, help="Worker processes, each loading the model once [default: 1, or N with -p N].")
@click.option("--force", is_flag=True, help="Redo inputs the manifest records as done.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:8786", help="Run on this Dask distributed scheduler (needs whisperlite[dask]).")
@friendly_errors
def batch(inputs, output_dir, jobs, force, scheduler, **flags):
    """Transcribe many files, folders (searched recursively) or input lists into OUTDIR.

    -t is per worker [default: cores / workers; all cores on Dask workers]."""
    from whisperlite.batch.run import BatchOptions, run_batch

    run = pop_run_options(flags)
    if not run.output.formats:
        fail("choose at least one output format (-osrt, -ovtt, -otxt, -oj, -ocsv, -olrc)")
    if scheduler and jobs:
        fail("-j sets local worker processes; with --scheduler the cluster's workers do the work")
    opts = BatchOptions(output_dir=os.path.abspath(output_dir), run=run, jobs=jobs or run.runtime.processors,
                        force=force, scheduler=scheduler)
    summary = run_batch(inputs, opts)
    if summary.failed:
        sys.exit(1)
