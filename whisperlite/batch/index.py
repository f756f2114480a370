"""OUTDIR/index.sqlite: a full-text index (SQLite FTS5) of every segment a batch transcribed.

The manifest is the truth; the index is a cache of it. Each done input's segments are also
kept in OUTDIR/.segments/<output base>.json (written with its outputs, before its manifest
line), so the index can always be rebuilt. The index records, per episode, which manifest
record it was built from, and is reconciled with the manifest whenever the manifest has
changed since it last was: episodes the manifest lists as done and the index lacks (a batch
killed between its manifest line and its index commit) are added, episodes the manifest no
longer lists as done are dropped, a redone episode replaces its old rows. An index SQLite
cannot read, or one an older whisperlite built (another schema version), is rebuilt from the
transcripts. Each episode is one transaction, so a kill leaves an episode wholly in the index
or wholly out of it.

Chinese and Japanese are written without spaces between words, and Korean joins particles and
endings to the word they follow (서울에서, "in Seoul"); FTS5's unicode61 tokenizer makes a
whole run of such characters one token: a word inside a sentence could not be found. So the
full-text table indexes the text with every Han, kana or Hangul character on its own
(spaces around it), and a query's run of them becomes the phrase of its characters: a word or
a phrase is found wherever its characters stand in that order, at the cost of reading one
posting list per character. The segments table keeps the text as spoken.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import srt

from whisperlite.batch.manifest import MANIFEST_NAME, read_manifest
from whisperlite.core.errors import OutputError, WhisperliteError
from whisperlite.output.writers import atomic_write_text
from whisperlite.transcription.results import Segment

INDEX_NAME = "index.sqlite"
TRANSCRIPTS_DIR = ".segments"  # hidden: a batch over OUTDIR itself does not pick it up
# 2: Han and kana indexed a character a token (1 indexed runs of them whole); 3: Hangul too
SCHEMA_VERSION = 3
# Ranking reads every match: a query matching more segments than this (a common word)
# returns the ones indexed last, unranked, and says so.
RANK_CAP = 5_000

_SCHEMA = """
CREATE TABLE episodes(id INTEGER PRIMARY KEY, base TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                      stamp TEXT NOT NULL);
CREATE TABLE segments(id INTEGER PRIMARY KEY, episode INTEGER NOT NULL, start REAL NOT NULL,
                      end REAL NOT NULL, speaker TEXT, text TEXT NOT NULL);
CREATE INDEX segments_episode ON segments(episode);
CREATE VIRTUAL TABLE segments_fts USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

Row = tuple[float, float, "str | None", str]  # start, end, speaker, text

# Scripts whose words are not delimited by spaces: Han (CJK unified ideographs, extensions A-H,
# compatibility), the iteration marks 々〆〇, hiragana, katakana (and its extensions and the
# half-width forms), Hangul (syllables, jamo, compatibility and half-width jamo).
_SPACELESS = re.compile("[\u1100-\u11ff\u3005-\u3007\u3040-\u30ff\u3131-\u318e\u31f0-\u31ff\u3400-\u4dbf"
                        "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff66-\uff9f"
                        "\uffa0-\uffdc\U00020000-\U0003134f]")
_STRING = re.compile(r'"(?:[^"]|"")*"?')  # an FTS5 string ("" inside is a quote); one left open runs to the end
_BAREWORD = re.compile(r"(?:\w|[^\x00-\x7f])+")  # what FTS5 reads as one bareword


def index_text(text: str) -> str:
    """The text as the full-text table indexes it: each Han, kana or Hangul character a word of its own."""
    return _SPACELESS.sub(r" \g<0> ", text)


def match_query(query: str) -> str:
    """An FTS5 query for the indexed text: in strings, each Han, kana or Hangul character a token of the
    phrase; a bareword holding any becomes the phrase of its characters (中国* -> "中 国"*)."""
    if not _SPACELESS.search(query):
        return query
    out, pos = [], 0
    for m in _STRING.finditer(query):
        out += [_phrases(query[pos:m.start()]), index_text(m.group())]
        pos = m.end()
    out.append(_phrases(query[pos:]))
    return "".join(out)


def _phrases(syntax: str) -> str:
    return _BAREWORD.sub(lambda m: f'"{index_text(m.group())}"' if _SPACELESS.search(m.group()) else m.group(),
                         syntax)


@dataclass(frozen=True)
class Hit:
    episode: str
    start: float
    end: float
    speaker: str | None
    text: str
    score: float | None  # FTS5 bm25, negated: higher is more relevant (None: too many matches to rank)


def transcript_path(output_dir: str, base: str) -> str:
    return os.path.join(output_dir, TRANSCRIPTS_DIR, f"{base}.json")


def segment_rows(segments: Iterable[Segment]) -> list[Row]:
    # The speaker column is empty without --diarize.
    return [(s.start, s.end, s.speaker, s.text.strip()) for s in segments if s.text.strip()]


def write_transcript(output_dir: str, base: str, rows: Sequence[Row]) -> str:
    """Keep an input's segments for rebuilding the index (atomically); returns the path."""
    path = transcript_path(output_dir, base)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise OutputError(f"{os.path.dirname(path)}: cannot create folder ({e.strerror or e})") from None
    doc = {"segments": [{"start": a, "end": b, "speaker": sp, "text": t} for a, b, sp, t in rows]}
    atomic_write_text(path, json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def episode_name(record: dict) -> str:
    """How hits name an input: its place under OUTDIR with its own file name (show/ep1.mp3)."""
    return os.path.join(os.path.dirname(record["output_base"]), os.path.basename(record["input"]))


def record_stamp(record: dict) -> str:
    """Which manifest record an episode's rows came from (a redo writes a new record)."""
    return f"{record.get('sha256')}/{record.get('finished')}/{record.get('wall_time')}"


def done_records(records: Iterable[dict]) -> dict[str, dict]:
    """Output base → the latest record saying that input is done (a later failed redo leaves
    the earlier outputs in place, so the earlier record stands)."""
    done = {}
    for r in records:
        if r.get("status") == "done" and isinstance(r.get("output_base"), str) and isinstance(r.get("input"), str):
            done[r["output_base"]] = r
    return done


class SearchIndex:
    """The index of one batch output folder. `warn` receives the one-line warnings."""

    def __init__(self, output_dir: str, warn: Callable[[str], None]):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, INDEX_NAME)
        self.manifest_path = os.path.join(output_dir, MANIFEST_NAME)
        self.warn = warn
        self._conn: sqlite3.Connection | None = None
        existed = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        try:
            self._connect()
        except _OldSchema as e:
            self._rebuild(str(e))
            return
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and not _is_corruption(e):
                raise OutputError(f"{self.path}: cannot open the search index ({e})") from None
            self._rebuild(f"{self.path} was unreadable ({e}); rebuilding it from the transcripts")
            return
        self._missing = not existed

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        conn.create_function("index_text", 1, index_text, deterministic=True)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL commits survive a killed process without an fsync; power loss can only
            # lose the last commits, which reconciling with the manifest restores.
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and not conn.execute("SELECT 1 FROM sqlite_master").fetchone():
                conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            elif version != SCHEMA_VERSION:
                raise _OldSchema(f"{self.path} was built by another whisperlite version (index schema {version}, "
                                 f"this one reads {SCHEMA_VERSION}); rebuilding it from the transcripts")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _rebuild(self, message: str) -> None:
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise OutputError(f"{self.path + suffix}: cannot remove ({e.strerror or e})") from None
        self.warn(f"warning: {message}")
        self._connect()
        self._missing = False
        stamp = self._manifest_stamp()
        self._sync(read_manifest(self.manifest_path), stamp)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- keeping it in step with the manifest -------------------------------------------------

    def sync(self, records: list[dict] | None = None) -> None:
        """Reconcile with the manifest (`records`: its records, if already read); does nothing
        when the manifest has not changed since the last reconcile."""
        try:
            # taken before reading: a line appended meanwhile makes the next call look again
            stamp = self._manifest_stamp()
            if records is None:
                if stamp == self._meta("manifest"):
                    return
                records = read_manifest(self.manifest_path)
            if self._missing and done_records(records):
                self.warn(f"warning: {self.path} was missing; building it from the transcripts")
            self._missing = False
            self._sync(records, stamp)
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and not _is_corruption(e):
                raise OutputError(f"{self.path}: cannot update the search index ({e})") from None
            self._rebuild(f"{self.path} was unreadable ({e}); rebuilding it from the transcripts")

    def _sync(self, records: list[dict], stamp: str) -> None:
        """Make the index hold exactly the done episodes of `records`, read from the manifest
        when it had `stamp`."""
        done = done_records(records)
        indexed = dict(self._conn.execute("SELECT base, stamp FROM episodes"))
        unreadable = []
        for base in indexed.keys() - done.keys():
            self._replace(base, None, None, [])
        for base, record in done.items():
            if indexed.get(base) != record_stamp(record):
                rows = self._load_rows(record)
                if rows is None:
                    unreadable.append(base)
                self._replace(base, episode_name(record), record_stamp(record), rows or [])
        if unreadable:
            self.warn(f"warning: no transcript to index for {len(unreadable)} episode(s) (first: {unreadable[0]}): "
                      f"not searchable until redone (batch --force)")
        self._set_meta("manifest", stamp)

    def add(self, record: dict, rows: Sequence[Row]) -> None:
        """Index one input the batch just finished (after its manifest line)."""
        self._replace(record["output_base"], episode_name(record), record_stamp(record), rows)

    def _replace(self, base: str, name: str | None, stamp: str | None, rows: Sequence[Row]) -> None:
        """One transaction: the episode's old rows out, its new ones in (None: only out)."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            old = c.execute("SELECT id FROM episodes WHERE base = ?", (base,)).fetchone()
            # The full-text table is filled per statement, not by triggers (one per row).
            if old:
                c.execute("INSERT INTO segments_fts(segments_fts, rowid, text) "
                          "SELECT 'delete', id, index_text(text) FROM segments WHERE episode = ?", old)
                c.execute("DELETE FROM segments WHERE episode = ?", old)
                c.execute("DELETE FROM episodes WHERE id = ?", old)
            if stamp is not None:
                eid = c.execute("INSERT INTO episodes(base, name, stamp) VALUES (?, ?, ?)", (base, name, stamp)).lastrowid
                c.executemany("INSERT INTO segments(episode, start, end, speaker, text) VALUES (?, ?, ?, ?, ?)",
                              [(eid, *row) for row in rows])
                c.execute("INSERT INTO segments_fts(rowid, text) SELECT id, index_text(text) FROM segments "
                          "WHERE episode = ?", (eid,))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _load_rows(self, record: dict) -> list[Row] | None:
        """An episode's segments from its kept transcript, else from a JSON or SRT output
        (a batch from before the index); None if none is readable."""
        base = record["output_base"]
        candidates = [transcript_path(self.output_dir, base)]
        for out in record.get("outputs") or ():
            if isinstance(out, str) and out.endswith((".json", ".srt")):
                candidates.append(os.path.join(self.output_dir, out))
        for path in candidates:
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError):
                continue
            try:
                return _parse_transcript(path, text)
            except (ValueError, KeyError, TypeError, srt.SRTParseError):
                continue
        return None

    def _manifest_stamp(self) -> str:
        try:
            st = os.stat(self.manifest_path)
        except FileNotFoundError:
            return "none"
        return f"{st.st_ino}/{st.st_size}/{st.st_mtime_ns}"

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def episode_rows(self, name: str) -> list[Row] | None:
        """The segments of the episode hits call `name`, in time order; None if there is none."""
        row = self._conn.execute("SELECT id FROM episodes WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return [tuple(r) for r in self._conn.execute(
            "SELECT start, end, speaker, text FROM segments WHERE episode = ? ORDER BY start, id", row)]

    # --- searching -----------------------------------------------------------------------------

    def search(self, query: str, speaker: str | None = None, limit: int = 20) -> tuple[list[Hit], bool]:
        """Hits for `query` in FTS5 syntax (phrases "…", prefixes word*, AND/OR/NOT), best
        first; text that is not valid FTS5 syntax is searched as its words, all of them. The
        flag says the matches were too many to rank all (see RANK_CAP)."""
        if not query.strip():
            raise WhisperliteError("empty query")
        try:
            return self._search(query, speaker, limit)
        except sqlite3.DatabaseError as e:
            if not _is_corruption(e):
                raise OutputError(f"{self.path}: cannot search ({e})") from None
            self._rebuild(f"{self.path} was unreadable ({e}); rebuilding it from the transcripts")
            return self._search(query, speaker, limit)

    def _search(self, query: str, speaker: str | None, limit: int) -> tuple[list[Hit], bool]:
        try:
            return self._query(query, speaker, limit)
        except sqlite3.OperationalError as e:
            if _is_corruption(e) or "locked" in str(e):
                raise
            words = fallback_query(query)
            if not words:
                raise WhisperliteError(f"nothing to search for in {query!r} (no words)") from None
            return self._query(words, speaker, limit)

    def _query(self, query: str, speaker: str | None, limit: int) -> tuple[list[Hit], bool]:
        match = match_query(query)
        # The newest matches up to the cap first: reading their rowids is cheap, while bm25
        # reads every match of every phrase (its idf) before it can rank one.
        where = "WHERE segments_fts MATCH ?"
        args: tuple = (match,)
        if speaker is not None:
            where = "JOIN segments s ON s.id = segments_fts.rowid " + where + " AND s.speaker = ? COLLATE NOCASE"
            args = (match, speaker)
        newest = [r for r, in self._conn.execute(
            f"SELECT segments_fts.rowid FROM segments_fts {where} ORDER BY segments_fts.rowid DESC LIMIT ?",
            (*args, RANK_CAP + 1))]
        capped = len(newest) > RANK_CAP
        if capped:
            scores = {rowid: None for rowid in newest[:limit]}
        else:
            scores = dict(self._conn.execute(
                f"SELECT segments_fts.rowid, -bm25(segments_fts) AS score FROM segments_fts {where} "
                "ORDER BY score DESC, segments_fts.rowid DESC LIMIT ?", (*args, limit)))
        found = {row[0]: row[1:] for row in self._conn.execute(
            "SELECT s.id, e.name, s.start, s.end, s.speaker, s.text FROM segments s JOIN episodes e ON e.id = s.episode "
            f"WHERE s.id IN ({','.join('?' * len(scores))})", list(scores))}
        return [Hit(*found[rowid], score) for rowid, score in scores.items()], capped


def fallback_query(query: str) -> str:
    """`query` as FTS5 syntax that cannot fail: each of its words quoted (all must match)."""
    return " ".join(f'"{w}"' for w in re.findall(r"\w+", query))


class _OldSchema(sqlite3.DatabaseError):
    """The index file is one another whisperlite version wrote (its message says so)."""


def _is_corruption(e: sqlite3.Error) -> bool:
    text = str(e)
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _parse_transcript(path: str, text: str) -> list[Row]:
    if path.endswith(".srt"):
        return [(s.start.total_seconds(), s.end.total_seconds(), None, " ".join(s.content.split()))
                for s in srt.parse(text) if s.content.strip()]
    doc = json.loads(text)
    return [(float(s["start"]), float(s["end"]), s.get("speaker"), s["text"].strip())
            for s in doc["segments"] if s["text"].strip()]


class BatchIndex:
    """The index as a batch keeps it: a failure to update it is one warning, never a failed
    input (the manifest stays the truth, and the next search or batch reconciles)."""

    def __init__(self, output_dir: str, records: list[dict], warn: Callable[[str], None]):
        self._warn = warn
        self._index: SearchIndex | None = None

        def open_index() -> None:
            self._index = SearchIndex(output_dir, warn)
            self._index.sync(records)

        self._guard(open_index)

    def add(self, record: dict, rows: Sequence[Row]) -> None:
        if self._index is not None:
            self._guard(lambda: self._index.add(record, rows))

    def close(self) -> None:
        """Reconcile once more (the manifest grew as inputs finished) and close."""
        if self._index is not None:
            self._guard(self._index.sync)
        if self._index is not None:
            self._index.close()
            self._index = None

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (WhisperliteError, sqlite3.Error, OSError) as e:
            self._warn(f"warning: search index not updated ({e}); the next search brings it up to date")
            if self._index is not None:
                self._index.close()
            self._index = None
