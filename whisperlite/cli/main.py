"""Command line: flags map to option objects, nothing more.

whisper.cpp spellings (`-m -f -t -l -tr -osrt -ovtt -otxt -oj -of -bs -bo`) work alongside
long names. Every failure a user can cause prints one line on stderr and exits non-zero.
A command's module is imported only when that command runs (or shows its help), so
`whisperlite --help` loads neither numba nor a model.
"""
from __future__ import annotations

import importlib

import click

from whisperlite import __version__
from whisperlite.cli.common import Group, show_notices

# name → (module, function, the one-line help `whisperlite --help` lists without importing it)
COMMANDS = {
    "transcribe": ("whisperlite.cli.transcribe", "transcribe",
                   "Transcribe audio or video files (anything ffmpeg reads) to subtitles and text."),
    "stream": ("whisperlite.cli.stream", "stream",
               "Transcribe live from the microphone, raw PCM on stdin, or a file played in real time."),
    "batch": ("whisperlite.cli.batch", "batch",
              "Transcribe many files, folders (searched recursively) or input lists into OUTDIR."),
    "search": ("whisperlite.cli.search", "search",
               "Search the transcripts of a batch output folder OUT_DIR for QUERY, best hits first."),
    "chapters": ("whisperlite.cli.insights", "chapters",
                 "Chapters of IN (a media file, or a whisperlite JSON or SRT transcript): `00:00 Title` lines."),
    "summarize": ("whisperlite.cli.insights", "summarize",
                  "Summary and key quotes (verbatim, with their times) of IN: a media file or a transcript."),
    "quantize": ("whisperlite.cli.quantize", "quantize", "Quantize IN into the whisper.cpp ggml file OUT."),
    "convert": ("whisperlite.cli.quantize", "convert", "Convert IN into the whisper.cpp ggml file OUT."),
    "generate": ("whisperlite.cli.generate", "generate", "Generate text with a LLaMA-family GGUF model."),
    "models": ("whisperlite.cli.models", "models", "Model names for -m, and the local cache."),
    "serve": ("whisperlite.cli.serve", "serve", "Serve whisper.cpp's, OpenAI's and llama.cpp's HTTP APIs and a web page."),
}


class LazyGroup(Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="whisperlite")
def main() -> None:
    """whisperlite: CPU-first speech-to-subtitles (Whisper) and GGUF text generation."""
    show_notices()
