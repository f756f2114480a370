"""Shared CLI plumbing: one-line errors for every command."""
from __future__ import annotations

import functools
import os
import sys
from typing import Callable

import click

from whisperlite.core.errors import WhisperliteError

EXIT_FAILURE = 1


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


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
