"""Benchmark the archive search: query time on a synthetic 1,000-episode index, and what the
index adds to a batch.

  query    a folder as a batch of 1,000 one-hour episodes leaves it (manifest.jsonl and a kept
           transcript per episode; ~800 segments of ~14 words each, words drawn from a Zipf
           law as in speech), indexed by `whisperlite search`'s own reconcile; then each query
           kind timed in this process as the command runs it (open the index, check it against
           the manifest, search, 20 hits): the rarest and the commonest word, a phrase, a
           prefix, three words, and text that is not FTS5 syntax. `--script cjk` makes the
           episodes Chinese-like instead: words of one to three Han characters, written
           without spaces, the characters themselves Zipf-distributed (so a rare word is
           often made of common characters: the index's hardest case, each query word a
           phrase of its characters' posting lists)
  cost     a real `whisperlite batch` of the speech fixtures, then the index's share of its
           wall time: the same index work again (open and reconcile, per input its kept
           transcript written and its rows added, the closing reconcile), timed in this process

    python scripts/bench_search.py                  # both
    python scripts/bench_search.py --only query --episodes 1000 --repeat 20
    python scripts/bench_search.py --only query --script cjk
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from whisperlite.batch.index import (BatchIndex, SearchIndex, fallback_query, match_query, segment_rows,  # noqa: E402
                                     write_transcript)
from whisperlite.batch.manifest import MANIFEST_NAME, read_manifest  # noqa: E402
from whisperlite.transcription.results import Segment  # noqa: E402

FIXTURES = ROOT / "fixtures"
SPEECH = ["jfk.wav", "librispeech-2412-153948-0000.flac", "praatio-bobby.flac", "praatio-mary.flac",
          "sppas-eng-ENG_M15_ENG_T02.flac"]
VOCABULARY = 30_000
HAN = 3_500  # characters a Chinese reader knows (GB 2312's level 1 has 3,755)
SEGMENT_SECONDS = 4.5  # a Whisper segment of conversational speech: ~4-5 s, ~14 words


def make_vocabulary(rng: random.Random, script: str = "latin") -> list[str]:
    if script == "cjk":
        chars = [chr(0x4E00 + i) for i in rng.sample(range(0x5000), HAN)]
        cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(HAN)))
        words: set[str] = set()
        while len(words) < VOCABULARY:
            words.add("".join(rng.choices(chars, cum_weights=cumulative, k=rng.choice((1, 2, 2, 2, 3)))))
        return sorted(words, key=lambda w: (len(w), w))
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 4)))))
    return sorted(words, key=lambda w: (len(w), w))  # short words common, as in speech


def synthetic_archive(folder: Path, episodes: int, hours: float, seed: int = 0,
                      write: bool = True, script: str = "latin") -> tuple[list[str], int]:
    """Write the manifest and kept transcripts (unless `write` is false: they are there);
    returns the vocabulary by rank and the row count."""
    rng = random.Random(seed)
    vocab = make_vocabulary(rng, script)
    sep, stop = ("", "。") if script == "cjk" else (" ", ".")
    weights = [1.0 / (rank + 1) ** 1.07 for rank in range(len(vocab))]
    cumulative = list(itertools.accumulate(weights))
    rows = 0
    with open(folder / MANIFEST_NAME, "w" if write else "r") as manifest:
        for e in range(episodes):
            base = f"show{e % 20:02d}/episode{e:04d}"
            segments, t = [], 0.0
            while t < hours * 3600:
                words = rng.choices(vocab, cum_weights=cumulative, k=max(3, int(rng.gauss(14, 5))))
                length = rng.uniform(0.6, 1.4) * SEGMENT_SECONDS
                text = " " + sep.join(words).capitalize() + stop
                segments.append(Segment(len(segments), 0, round(t, 2), round(t + length, 2), text, [], 0.0, 0.0, 0.0, 0.0))
                t += length
            rows += len(segments)
            if not write:
                continue
            write_transcript(str(folder), base, segment_rows(segments))
            record = {"input": f"/archive/{base}.mp3", "output_base": base, "status": "done", "sha256": f"{e:064x}",
                      "finished": "2026-12-07T00:00:00+00:00", "wall_time": 360.0, "duration": t,
                      "outputs": [f"{base}.srt"], "model": "base", "options": {}}
            manifest.write(json.dumps(record) + "\n")
    return vocab, rows


def timed(fn, repeat: int) -> tuple[float, float, float, object]:
    """Median wall ms, worst wall ms, median CPU ms (the machine may be shared), last result."""
    wall, cpu, result = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1000, max(wall) * 1000, statistics.median(cpu) * 1000, result


def bench_query(episodes: int, hours: float, repeat: int, keep: str | None, script: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        folder = Path(keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        made = (folder / "index.sqlite").exists()
        t0 = time.perf_counter()
        vocab, rows = synthetic_archive(folder, episodes, hours, write=not made, script=script)
        print(f"synthetic {script} archive: {episodes} episodes x {hours:g} h, {rows} segments "
              f"({rows / episodes:.0f} per episode){'' if made else f', written in {time.perf_counter() - t0:.1f} s'}")
        if not made:
            t0 = time.perf_counter()
            with SearchIndex(str(folder), lambda line: None) as index:
                index.sync()
            build = time.perf_counter() - t0
            print(f"index built from the transcripts in {build:.1f} s ({build / episodes * 1000:.1f} ms per episode)")
        print(f"index: {os.path.getsize(folder / 'index.sqlite') / 1e6:.0f} MB")
        rare, mid1, mid2 = vocab[-1], vocab[200], vocab[201]
        queries = {
            "rare word": rare,
            "commonest word": vocab[0],
            "phrase": f'"{vocab[5]} {vocab[6]}"',
            "prefix": (vocab[300][:1] if script == "cjk" else vocab[300][:3]) + "*",
            "three words": f"{vocab[40]} {vocab[50]} {vocab[60]}",
            "not FTS5 syntax": f'{mid1}?! "{mid2}',
        }
        if script == "cjk":
            # a rare word whose characters are all common: each a long posting list to intersect
            share: dict[str, float] = {}  # each character's share of the text
            for rank, word in enumerate(vocab):
                for c in word:
                    share[c] = share.get(c, 0.0) + 1.0 / (rank + 1) ** 1.07
            queries["rare, common chars"] = max((w for w in vocab[len(vocab) // 2:] if len(set(w)) == len(w) >= 2),
                                                key=lambda w: min(share[c] for c in w))

        def run(query: str):
            with SearchIndex(str(folder), lambda line: None) as idx:
                idx.sync()
                return idx.search(query, None, 20)[0]

        print(f"{'query':<18} {'median ms':>10} {'max ms':>8} {'CPU ms':>7}  matches  (open + check against the "
              f"manifest + search for 20 hits; {repeat} runs)")
        with SearchIndex(str(folder), lambda line: None) as idx:
            count = {kind: idx._conn.execute("SELECT count(*) FROM segments_fts WHERE segments_fts MATCH ?",
                                             (match_query(fallback_query(q) if "?" in q else q),)).fetchone()[0]
                     for kind, q in queries.items()}
        for kind, query in queries.items():
            median, worst, cpu, hits = timed(lambda: run(query), repeat)
            print(f"{kind:<18.18} {median:10.1f} {worst:8.1f} {cpu:7.1f}  {count[kind]:7d}  {query}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "whisperlite", "search", str(folder), queries["rare word"]],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        print(f"whole command (Python start-up included): {(time.perf_counter() - t0) * 1000:.0f} ms, "
              f"exit {proc.returncode} {proc.stderr.strip()}")


def bench_cost() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-search-cost-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "whisperlite", "batch", *[str(FIXTURES / n) for n in SPEECH], "-o", str(out),
               "-m", "tiny.en", "-t", "2", "-osrt"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"batch failed: {proc.stderr.strip()}")
        records = read_manifest(str(out / MANIFEST_NAME))
        kept = {}
        for r in records:
            with open(out / ".segments" / f"{r['output_base']}.json") as fh:
                kept[r["output_base"]] = [tuple(s.values()) for s in json.load(fh)["segments"]]
        t0 = time.perf_counter()
        index = BatchIndex(str(out), records, print)
        for r in records:
            write_transcript(str(out), r["output_base"], kept[r["output_base"]])
            index.add({**r, "finished": "again"}, kept[r["output_base"]])  # a new record: rows replaced
        index.close()
        cost = time.perf_counter() - t0
        audio = sum(r.get("duration") or 0.0 for r in records)
        transcribing = sum(r.get("wall_time") or 0.0 for r in records)
        print(f"batch of {len(records)} fixtures ({audio:.0f} s of audio, tiny.en, -t 2): {wall:.2f} s wall, "
              f"{transcribing:.2f} s of it transcribing; index work {cost * 1000:.1f} ms = {cost / wall:.2%} of the "
              f"batch, {cost / transcribing:.2%} of its transcribing")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["query", "cost"])
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=1.0, help="length of each synthetic episode")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--keep", metavar="DIR", help="build the synthetic archive here, or reuse the one built here before")
    ap.add_argument("--script", choices=["latin", "cjk"], default="latin",
                    help="the synthetic episodes' writing: words with spaces, or Han characters without")
    args = ap.parse_args()
    if args.only in (None, "query"):
        bench_query(args.episodes, args.hours, args.repeat, args.keep, args.script)
    if args.only in (None, "cost"):
        bench_cost()


if __name__ == "__main__":
    main()
