"""OUTDIR/manifest.jsonl: one durable JSON line per finished input, so a batch killed at any
moment resumes by skipping what the manifest says is done."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import asdict

from whisperlite.core.errors import OutputError
from whisperlite.transcription.options import RunOptions

MANIFEST_NAME = "manifest.jsonl"


def printable(path: str) -> str:
    """A path as text any UTF-8 stream takes: a name that is not UTF-8 on disk (its bytes
    arrive as lone surrogates, PEP 383) shows � where its undecodable bytes are."""
    return os.fsencode(path).decode("utf-8", "replace")


def path_fields(path: str) -> dict:
    """How an input path is recorded: {"input": text}, plus its exact bytes in hex under
    "input_bytes" when the name is not UTF-8, so the record is valid UTF-8 JSON and a re-run
    still finds it."""
    text = printable(path)
    return {"input": text} if text == path else {"input": text, "input_bytes": os.fsencode(path).hex()}


def recorded_path(record: dict) -> str | None:
    """The input path a record is about (the inverse of `path_fields`)."""
    raw = record.get("input_bytes")
    if isinstance(raw, str):
        try:
            return os.fsdecode(bytes.fromhex(raw))
        except ValueError:
            return None
    return record.get("input")


def read_manifest(path: str) -> list[dict]:
    """Records in file order; a torn last line (a kill mid-append) or a garbled line is skipped."""
    records = []
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return records
    with fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


class ManifestWriter:
    """Appends one JSON line per finished input, durable before `append` returns.

    Holding the file open also holds an exclusive lock: two batches writing into one OUTDIR
    would interleave their skips and redo each other's work.
    """

    def __init__(self, path: str):
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise OutputError(f"{path}: cannot open manifest ({e.strerror or e})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise OutputError(f"{os.path.dirname(path) or '.'}: another whisperlite batch is writing here") from None
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        # A new line appended after a torn one would be glued to it and lost with it.
        size = os.fstat(self._fd).st_size
        if size == 0 or os.pread(self._fd, 1, size - 1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            nl = os.pread(self._fd, end - start, start).rfind(b"\n")
            if nl >= 0:
                os.ftruncate(self._fd, start + nl + 1)
                break
            end = start
        else:
            os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def append(self, record: dict) -> None:
        """Append `record`; text in it that is not UTF-8 (a message quoting a path whose name
        is not) is written with ? there rather than stopping the batch."""
        data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8", "replace")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot append ({e.strerror or e})") from None

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Leaves that do not change what an input's outputs say (a missing format is redone anyway).
NOT_IN_KEY = (("runtime", "threads"), ("output", "formats"))


def options_record(options: RunOptions) -> dict:
    """The options tree as JSON values (tuples → lists), the form it takes in the manifest."""
    return json.loads(json.dumps(asdict(options)))


def options_key(record: dict | None) -> str:
    """What of a recorded options tree decides an input's outputs, as one comparable string."""
    if not isinstance(record, dict):
        return ""
    record = {group: dict(leaves) if isinstance(leaves, dict) else leaves for group, leaves in record.items()}
    for group, leaf in NOT_IN_KEY:
        if isinstance(record.get(group), dict):
            record[group].pop(leaf, None)
    return json.dumps(record, sort_keys=True)


def file_sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
