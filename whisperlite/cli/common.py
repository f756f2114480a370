"""Shared CLI plumbing: one-line errors for every command, usage errors included."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from typing import Callable

import click

from whisperlite.core.errors import WhisperliteError

EXIT_FAILURE = 1


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class OneLineUsageError(click.UsageError):
    """A usage error as one line, like every other error (click prints usage and a hint too)."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Group(click.Group):
    """A command group whose usage errors, and its commands', are one line on stderr."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _one_line_usage():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context):
        with _one_line_usage():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line_usage():
    try:
        yield
    except OneLineUsageError:
        raise
    except click.UsageError as e:
        raise OneLineUsageError(e.format_message(), e.ctx) from None


class _Notices(logging.Handler):
    """The package's notices (model made, kernels compiling) as plain lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=True)


def show_notices() -> None:
    log = logging.getLogger("whisperlite")
    if not any(isinstance(h, _Notices) for h in log.handlers):
        log.addHandler(_Notices())
    log.setLevel(logging.INFO)


def friendly_errors(fn: Callable) -> Callable:
    """Turn expected failures into one line on stderr; tracebacks only with WHISPERLITE_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WhisperliteError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: still one line, with a way to see more
            if os.environ.get("WHISPERLITE_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} (set WHISPERLITE_DEBUG=1 for a traceback)")

    return wrapper
