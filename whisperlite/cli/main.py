"""Command line: flags map to option objects, nothing more.

whisper.cpp spellings (`-m -f -t -l -tr -osrt -ovtt -otxt -oj -of -bs -bo`) work alongside
long names. Every failure a user can cause prints one line on stderr and exits non-zero.
"""
from __future__ import annotations

import click

from whisperlite import __version__
from whisperlite.cli.common import Group


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="whisperlite")
def main() -> None:
    """whisperlite: CPU-first speech-to-subtitles (Whisper) and GGUF text generation."""


def _register() -> None:
    from whisperlite.cli.batch import batch
    from whisperlite.cli.quantize import convert, quantize
    from whisperlite.cli.transcribe import transcribe

    main.add_command(transcribe)
    main.add_command(batch)
    main.add_command(quantize)
    main.add_command(convert)
    from whisperlite.cli.generate import generate
    from whisperlite.cli.models import models

    main.add_command(generate)
    main.add_command(models)


_register()
