"""Atomic file output: what a user already has is replaced only by a complete new file."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import IO, Iterator

from whisperlite.core.errors import OutputError


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Write through a fresh temp file beside `path`, fsync it, then rename it over `path`.

    Readers see the old file or the new one, never a partial one; on any failure the temp
    file is removed and an OSError becomes a one-line OutputError naming `path`. The temp
    file is created with open(…, "x") rather than mkstemp so that it gets the umask's
    permissions (mkstemp's 0600 would make subtitles and models private to their writer).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
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
