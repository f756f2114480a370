"""`whisperlite search`: the FTS5 index a batch keeps beside its manifest, and the command."""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import FIXTURES, run_cli

CLIPS = ["jfk.wav", "librispeech-2412-153948-0000.flac", "praatio-bobby.flac", "praatio-mary.flac"]
FAST = ["-m", "tiny.en", "-t", "2", "-bs", "1", "-osrt"]
# (query, episode of the best hit, the time in the recording where those words begin)
PHRASES = [
    ('"ask what you can do"', "jfk.wav", 8.2),
    ('"fellow americans"', "jfk.wav", 0.3),
    ('"native country"', "librispeech-2412-153948-0000.flac", 5.6),
    ("tedious", "librispeech-2412-153948-0000.flac", 8.4),
    ("ledger", "praatio-bobby.flac", 0.0),
    ("barrel", "praatio-mary.flac", 0.3),
]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real batch of the fixtures, run in two goes: the index as it stood after the first
    (three inputs) is kept as `index_before_last.sqlite`."""
    root = tmp_path_factory.mktemp("archive")
    inputs = root / "in"
    inputs.mkdir()
    for name in CLIPS:
        shutil.copy(FIXTURES / name, inputs / name)
    out = root / "out"
    first = run_cli("batch", *[str(inputs / n) for n in CLIPS[:3]], "-o", str(out), *FAST)
    assert first.returncode == 0, first.stderr
    shutil.copy(out / "index.sqlite", root / "index_before_last.sqlite")
    second = run_cli("batch", str(inputs), "-o", str(out), *FAST)
    assert second.returncode == 0, second.stderr
    assert "3 input(s) already done" in second.stdout
    assert "warning" not in second.stderr
    return out


def _copy(archive, tmp_path):
    dest = tmp_path / "out"
    shutil.copytree(archive, dest)
    return dest


def search_json(folder, *args):
    proc = run_cli("search", str(folder), *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.mark.parametrize("query,episode,start", PHRASES)
def test_phrase_finds_its_episode_and_time(archive, query, episode, start):
    hits, _ = search_json(archive, query)
    assert hits and hits[0]["episode"] == episode
    assert abs(hits[0]["start"] - start) < 1.0


def test_printed_hits_are_episode_time_text(archive):
    proc = run_cli("search", str(archive), '"ask what you can do"')
    assert proc.returncode == 0 and proc.stderr == ""
    line = proc.stdout.splitlines()[0]
    assert re.fullmatch(r"jfk\.wav  00:00:0[78]  ask what you can do for your country\.?", line), line


def test_prefix_and_phrase_queries(archive):
    prefix, _ = search_json(archive, "countr*")
    assert {h["episode"] for h in prefix} == {"jfk.wav", "librispeech-2412-153948-0000.flac"}
    assert len(prefix) == 3  # both of jfk's segments and one of librispeech's
    # the words next to each other: a phrase; anywhere in the segment: plain words
    assert [h["episode"] for h in search_json(archive, '"country can do"')[0]] == ["jfk.wav"]
    assert search_json(archive, '"country do"')[0] == []
    assert [h["episode"] for h in search_json(archive, "country do")[0]] == ["jfk.wav", "jfk.wav"]
    assert {h["episode"] for h in search_json(archive, "barrel OR ledger")[0]} == {"praatio-bobby.flac", "praatio-mary.flac"}
    assert search_json(archive, "country NOT native")[0] and all(
        h["episode"] == "jfk.wav" for h in search_json(archive, "country NOT native")[0])


def test_json_shape_limit_and_ranking(archive):
    hits, _ = search_json(archive, "country OR ledger OR barrel OR tedious")
    assert len(hits) == 6
    for h in hits:
        assert set(h) == {"episode", "start", "end", "speaker", "text", "score"}
        assert isinstance(h["start"], float) and h["start"] < h["end"] and h["speaker"] is None
        assert isinstance(h["score"], float)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert len(search_json(archive, "country", "--limit", "1")[0]) == 1
    assert search_json(archive, "country", "--speaker", "SPEAKER_1")[0] == []  # no speakers yet


@pytest.mark.parametrize("query", ['"unbalanced', 'ask "not', "AND", "OR", "*", "NOT country", "(", ")",
                                   "what?!", "-x", "foo:bar", "NEAR(", "country*:", "^", "'", "@#$%"])
def test_bad_queries_never_trace_back(archive, query):
    proc = run_cli("search", str(archive), query)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) <= 1
    if proc.returncode != 0:
        assert proc.stderr.startswith("error: ")


def test_unbalanced_quote_still_searches_the_words(archive):
    hits, _ = search_json(archive, '"native country')
    assert hits[0]["episode"] == "librispeech-2412-153948-0000.flac"


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate"])
def test_missing_or_corrupt_index_is_rebuilt_with_a_warning(archive, tmp_path, damage):
    folder = _copy(archive, tmp_path)
    before, _ = search_json(archive, "country OR ledger OR barrel OR tedious")
    index = folder / "index.sqlite"
    if damage == "delete":
        index.unlink()
    elif damage == "garbage":
        index.write_bytes(b"this is not an index\n" * 500)
    else:
        data = index.read_bytes()
        index.write_bytes(data[: len(data) // 3])
    after, err = search_json(folder, "country OR ledger OR barrel OR tedious")
    assert after == before
    assert len(err.splitlines()) == 1 and err.startswith("warning: ") and "index.sqlite" in err
    again, err = search_json(folder, "country OR ledger OR barrel OR tedious")  # repaired for good
    assert again == before and err == ""


def test_index_killed_before_its_last_commit_catches_up(archive, tmp_path):
    """kill -9 between an input's manifest line and its index commit: the manifest lists the
    input as done, the index does not have it; the next search adds it from its transcript."""
    folder = _copy(archive, tmp_path)
    shutil.copy(archive.parent / "index_before_last.sqlite", folder / "index.sqlite")
    assert search_json(folder, "barrel")[0][0]["episode"] == "praatio-mary.flac"
    with sqlite3.connect(folder / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM episodes").fetchone()[0] == 4


def test_index_follows_the_manifest(tmp_path):
    """A folder written by hand: a done record per episode and its kept transcript. A redo
    replaces an episode's rows; an old batch's episode without a kept transcript is read from
    its SRT; speakers filter."""
    out = tmp_path / "out"
    (out / ".segments" / "show").mkdir(parents=True)

    def done(base, name, finished, outputs=()):
        return {"input": f"/media/{name}", "output_base": base, "status": "done", "sha256": "0" * 64,
                "finished": finished, "wall_time": 1.0, "outputs": list(outputs)}

    def keep(base, segments):
        doc = {"segments": [{"start": s, "end": s + 2.0, "speaker": spk, "text": t} for s, spk, t in segments]}
        (out / ".segments" / f"{base}.json").write_text(json.dumps(doc))

    keep("show/ep1", [(754.0, "Alice", "the aurora over the fjord"), (900.0, "Bob", "aurora borealis again")])
    (out / "old.srt").write_text("1\n00:01:02,500 --> 00:01:04,000\nan old zeppelin story\n\n")
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [
        done("show/ep1", "ep1.mp3", "t1"), done("old", "old.wav", "t1", ["old.srt"]),
        {"input": "/media/bad.mp3", "output_base": "bad", "status": "failed", "error": "x"},
    ]))
    proc = run_cli("search", str(out), "aurora")
    assert proc.returncode == 0
    # the shorter segment ranks first (bm25 weighs a match by the segment's length)
    assert proc.stdout.splitlines() == ["show/ep1.mp3  00:15:00  [Bob]  aurora borealis again",
                                        "show/ep1.mp3  00:12:34  [Alice]  the aurora over the fjord"]
    assert proc.stderr.startswith("warning: ") and "missing" in proc.stderr  # built the first time
    assert [h["start"] for h in search_json(out, "aurora", "--speaker", "bob")[0]] == [900.0]
    assert search_json(out, "zeppelin")[0][0]["episode"] == "old.wav"
    assert search_json(out, "zeppelin")[0][0]["start"] == 62.5

    keep("show/ep1", [(10.0, None, "a new cut without the lights")])  # --force redid it
    with manifest.open("a") as fh:
        fh.write(json.dumps(done("show/ep1", "ep1.mp3", "t2")) + "\n")
    assert search_json(out, "aurora")[0] == []
    assert [h["start"] for h in search_json(out, "lights")[0]] == [10.0]


def test_not_a_batch_folder_and_empty_query(archive, tmp_path):
    for folder, query in [(tmp_path, "country"), (tmp_path / "missing", "country"), (archive, ""), (archive, "   ")]:
        proc = run_cli("search", str(folder), query)
        assert proc.returncode == 1
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
        assert proc.stdout == ""


@pytest.mark.slow
def test_kill_9_mid_batch_leaves_index_and_manifest_agreeing(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in CLIPS:
        shutil.copy(FIXTURES / name, inputs / name)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(FIXTURES.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "whisperlite", "batch", str(inputs), "-o", str(out), *FAST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    done = {json.loads(line)["output_base"] for line in manifest.read_text().splitlines()}
    assert len(done) >= 2
    hits, _ = search_json(out, " OR ".join(["country", "tedious", "ledger", "barrel"]))
    found = {h["episode"].rsplit(".", 1)[0] for h in hits}
    assert found == done


def test_too_many_matches_to_rank_come_newest_first_with_a_note(tmp_path):
    from whisperlite.batch.index import RANK_CAP

    out = tmp_path / "out"
    (out / ".segments").mkdir(parents=True)
    (out / "manifest.jsonl").write_text("".join(json.dumps(
        {"input": f"/m/{b}.mp3", "output_base": b, "status": "done", "sha256": "0", "finished": "t", "wall_time": 1.0,
         "outputs": []}) + "\n" for b in ("a", "b")))
    for base, n in [("a", RANK_CAP), ("b", 3)]:  # b is indexed after a
        doc = {"segments": [{"start": float(i), "end": i + 1.0, "speaker": None, "text": f"common word {i}"}
                            for i in range(n)]}
        (out / ".segments" / f"{base}.json").write_text(json.dumps(doc))
    proc = run_cli("search", str(out), "common", "--json", "--limit", "5")
    assert proc.returncode == 0
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(h["episode"], h["start"], h["score"]) for h in hits] == [
        ("b.mp3", 2.0, None), ("b.mp3", 1.0, None), ("b.mp3", 0.0, None), ("a.mp3", RANK_CAP - 1.0, None),
        ("a.mp3", RANK_CAP - 2.0, None)]
    assert proc.stderr.splitlines()[-1].startswith(f"note: over {RANK_CAP} segments match")
    ranked, err = search_json(out, '"word 7"')  # few matches: ranked
    assert ranked and all(isinstance(h["score"], float) for h in ranked) and "note" not in err


# Chinese and Japanese: no spaces between words; Korean: particles joined to the word before
# them. Yet a word inside a sentence is found.
CJK_SEGMENTS = [
    (0.0, "我们今天讨论中国经济的发展。"),
    (5.0, "北京是中华人民共和国的首都。"),
    (10.0, "东京に行きました。桜がとても綺麗でした。"),
    (15.0, "カタカナのコンピューターを使います。"),
    (20.0, "He bought an iPhone手机 yesterday."),
    (25.0, "서울에서 친구를 만났습니다."),
]
# (query, starts of the segments it finds): words, phrases, prefixes, kana, mixed scripts
CJK_QUERIES = [
    ("中国", [0.0]),
    ("经济", [0.0]),
    ('"中国经济"', [0.0]),
    ('"经济中国"', []),
    ("中国 发展", [0.0]),
    ("首都", [5.0]),
    ("中华*", [5.0]),
    ("的", [0.0, 5.0]),
    ("桜", [10.0]),
    ("東京 OR 东京", [10.0]),
    ("コンピューター", [15.0]),
    ("手机", [20.0]),
    ('"iPhone手机"', [20.0]),
    ("首都 NOT 北京", []),
    ("서울", [25.0]),
    ("친구", [25.0]),
    ('"서울에서 친구를"', [25.0]),
    ("만났*", [25.0]),
    ("부산", []),
]


def _cjk_folder(tmp_path):
    out = tmp_path / "out"
    (out / ".segments").mkdir(parents=True)
    (out / "manifest.jsonl").write_text(json.dumps(
        {"input": "/m/cjk.mp3", "output_base": "cjk", "status": "done", "sha256": "0", "finished": "t",
         "wall_time": 1.0, "outputs": []}) + "\n")
    doc = {"segments": [{"start": s, "end": s + 4.0, "speaker": None, "text": t} for s, t in CJK_SEGMENTS]}
    (out / ".segments" / "cjk.json").write_text(json.dumps(doc, ensure_ascii=False))
    return out


def test_chinese_and_japanese_words_inside_sentences(tmp_path):
    from whisperlite.batch.index import SearchIndex

    out = _cjk_folder(tmp_path)
    with SearchIndex(str(out), lambda line: None) as index:
        index.sync()
        for query, starts in CJK_QUERIES:
            hits, _ = index.search(query, None, 20)
            assert sorted(h.start for h in hits) == starts, query
            assert all(h.text == dict(CJK_SEGMENTS)[h.start] for h in hits)  # the text as spoken
    hits, _ = search_json(out, "中国")  # through the command, as users meet it
    assert [h["text"] for h in hits] == [CJK_SEGMENTS[0][1]]


def test_an_index_from_before_cjk_search_is_rebuilt_with_a_warning(tmp_path):
    """Schema 1 indexed a run of Han or kana as one token (2, a run of Hangul): opened now, it is rebuilt (one
    warning line), and then finds words inside sentences."""
    out = _cjk_folder(tmp_path)
    with sqlite3.connect(out / "index.sqlite") as db:
        db.executescript("""
            CREATE TABLE episodes(id INTEGER PRIMARY KEY, base TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                                  stamp TEXT NOT NULL);
            CREATE TABLE segments(id INTEGER PRIMARY KEY, episode INTEGER NOT NULL, start REAL NOT NULL,
                                  end REAL NOT NULL, speaker TEXT, text TEXT NOT NULL);
            CREATE VIRTUAL TABLE segments_fts USING fts5(text, content='segments', content_rowid='id',
                                                         tokenize='unicode61 remove_diacritics 2');
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO episodes VALUES (1, 'cjk', 'cjk.mp3', '0/t/1.0');
            INSERT INTO segments VALUES (1, 1, 0.0, 4.0, NULL, '我们今天讨论中国经济的发展。');
            INSERT INTO segments_fts(rowid, text) SELECT id, text FROM segments;
            PRAGMA user_version=1;""")
    db.close()
    hits, err = search_json(out, "经济")
    assert [h["start"] for h in hits] == [0.0]
    assert len(err.splitlines()) == 1 and err.startswith("warning: ") and "index.sqlite" in err
    assert "another whisperlite version" in err and "rebuilding it from the transcripts" in err
    again, err = search_json(out, "首都")
    assert [h["start"] for h in again] == [5.0] and err == ""
