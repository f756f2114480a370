"""Shared CLI plumbing: one-line errors for every command, usage errors included."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
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


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, as Ctrl-C's KeyboardInterrupt is: every
    cleanup that runs on Ctrl-C (temp files removed, workers and helpers stopped) runs for them."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


# What a stopped run prints and its exit status: 128 + the signal's number, as a shell reports it.
STOPPED = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


@contextlib.contextmanager
def _signals_as_interrupts():
    """SIGTERM and SIGHUP raise Terminated while a command runs (the main thread only can)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _exit_stopped(message: str, code: int) -> None:
    """Exit a stopped command with one line, now.

    The cleanup a stop needs ran as the exception unwound (temp files, workers, helpers). An
    exit would then wait for every thread that is not a daemon, and the kernels' row-split
    pool's are not: one that was compiling a kernel runs on for as long as that takes, and
    one started at the moment of the signal never learns of the exit (the process hung for
    good, once the first compile was interrupted). So with such threads alive, the process
    ends without waiting for them."""
    click.echo(f"error: {message}", err=True)
    others = [t for t in threading.enumerate() if not t.daemon and t is not threading.current_thread()]
    if others:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def friendly_errors(fn: Callable) -> Callable:
    """Turn expected failures into one line on stderr; tracebacks only with WHISPERLITE_DEBUG=1.
    Ctrl-C, SIGTERM and SIGHUP stop a command cleanly with exit 130, 143 and 129."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _signals_as_interrupts():
                return fn(*args, **kwargs)
        except WhisperliteError as e:
            fail(str(e))
        except KeyboardInterrupt as e:
            signum = getattr(e, "signum", signal.SIGINT)
            _exit_stopped(STOPPED[signum], 128 + signum)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: still one line, with a way to see more
            if os.environ.get("WHISPERLITE_DEBUG"):
                raise
            fail(f"internal error: {type(e).__name__}: {e} (set WHISPERLITE_DEBUG=1 for a traceback)")

    return wrapper
