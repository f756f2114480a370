"""Atomic file output: what a user already has is replaced only by a complete new file."""
from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager
from typing import IO, Iterator

from whisperlite.core.errors import OutputError

# `.NAME.PID.RAND.tmp`, the temp file of `atomic_output` in the process PID
_TEMP_NAME = re.compile(r"\..+\.(\d+)\.[0-9a-f]{8}\.tmp")
_SWEPT: set[str] = set()  # directories this process has swept


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Write through a fresh temp file beside `path`, fsync it, then rename it over `path`.

    Readers see the old file or the new one, never a partial one; on any failure the temp
    file is removed and an OSError becomes a one-line OutputError naming `path`. The temp
    file is created with open(…, "x") rather than mkstemp so that it gets the umask's
    permissions (mkstemp's 0600 would make subtitles and models private to their writer).
    The first write into a directory sweeps the temp files killed processes left there.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if directory not in _SWEPT:
        _SWEPT.add(directory)
        sweep_temp_files(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def sweep_temp_files(directory: str) -> list[str]:
    """Remove the temp files of `atomic_output` that killed processes (SIGKILL, power loss)
    left in `directory`; returns their names. Those of live processes are being written."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.fullmatch(name)
        if m and not pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                continue  # gone already, or not ours to remove
            removed.append(name)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (a reused pid counts: its files wait
    for a later sweep)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False  # not a pid at all
    return True
