"""Live transcription measured: word latency, final WER, partial churn and CPU, per policy.

The recording is built from fixtures (fixtures/manifest.json, English): each clip in turn
with pauses between them, twice over, plus stretches of silence and of white noise. It is
fed in SIMULATED real time: audio arrives in 0.1 s pieces on a virtual clock; each
`feed` takes its true compute time on that clock, so a slow pass delays the audio after it
exactly as at real time, without waiting minutes of wall time. The compute time is the
process's CPU time (`--clock cpu`, the default: what a feed costs on an idle machine, at
most, since the threads overlap, and hardly moved by other jobs on the cores, which wall
time is, in proportion to their load), its wall time (`--clock wall`: right on a
machine that is otherwise idle only) or nothing (`--clock none`: the policy's own delay,
waiting for audio and for passes, as on an infinitely fast machine). The engine bounds a
final pass's temperature fallback (`fallback_ms`) on the same clock: with `--clock none` it
never runs out, as on that machine.

`--audio FILE --text FILE` measures another recording (e.g. one from
scripts/make_recording.py) instead: word delays are then matched over the whole of it.

Per final word: delay from the end of the word in the audio (word times from offline
`transcribe`, greedy, same model) to the moment it became final (median, p95). Final
transcript: WER against the offline greedy transcript and both against the manifest's
references. Partials: share of partial words shown that later became final differently.
CPU: process CPU time during the feeds / audio seconds (1.0 = one core busy at real time).

    PYTHONPATH=. python scripts/bench_stream.py [-m tiny.en] [-t 2] [--policy agreement --policy window]
"""
from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path
from dataclasses import replace
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from wer import normalize, wer  # noqa: E402

from whisperlite.audio.ffmpeg import SAMPLE_RATE, load_audio  # noqa: E402
from whisperlite.transcription.options import DecodeOptions, TranscribeOptions  # noqa: E402
from whisperlite.transcription.streaming import StreamingTranscriber, StreamOptions  # noqa: E402
from whisperlite.transcription.transcribe import load_model  # noqa: E402

CLIPS = ("jfk.wav", "librispeech-2412-153948-0000.flac", "sppas-eng-ENG_M15_ENG_T02.flac", "praatio-bobby.flac",
         "praatio-mary.flac")
PAUSES = (1.5, 2.5, 1.0, 3.0, 2.0)
TICK = 0.1  # seconds of audio per arrival
SAME_WORD_SECONDS = 5.0  # a final word and an offline word further apart than this are not the same word
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter, "none": lambda: 0.0}


def recording() -> tuple[np.ndarray, list[str], list[tuple[float, float]], list[tuple[float, float]]]:
    """(samples, reference transcripts in order, (start, end) of the silence and noise spans,
    (start, end) of each clip with the pause after it)."""
    refs = {e["file"]: e.get("transcript", "") for e in json.loads((ROOT / "fixtures/manifest.json").read_text())}
    rng = np.random.default_rng(0)
    parts, texts, quiet, spans, at = [], [], [], [], 0.0
    for round_ in range(2):
        for clip, pause in zip(CLIPS, PAUSES):
            audio = load_audio(str(ROOT / "fixtures" / clip))
            parts += [audio, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
            texts.append(refs[clip].replace(" / ", " "))
            spans.append((at, at + len(audio) / SAMPLE_RATE + pause))
            at += len(audio) / SAMPLE_RATE + pause
        filler = (np.zeros(5 * SAMPLE_RATE, np.float32) if round_ == 0
                  else (rng.standard_normal(5 * SAMPLE_RATE) * 0.03).astype(np.float32))
        parts.append(filler)
        quiet.append((at, at + 5.0))
        at += 5.0
    return np.concatenate(parts), texts, quiet, spans


def user_recording(audio_path: str, text_path: str) -> tuple[np.ndarray, list[str], list, list]:
    """(samples, [reference], no quiet spans, one span: the whole recording)."""
    audio = load_audio(audio_path)
    return audio, [Path(text_path).read_text()], [], [(0.0, len(audio) / SAMPLE_RATE + 1.0)]


def simulate(engine: StreamingTranscriber, audio: np.ndarray,
             now: Callable[[], float]) -> tuple[list[tuple[float, object]], float, float]:
    """Feed at simulated real time, each feed taking `now()`'s difference across it:
    [(virtual time, event)], CPU seconds, wall seconds."""
    tick = int(TICK * SAMPLE_RATE)
    clock, pos, log = 0.0, 0, []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while pos < len(audio):
        avail = min(len(audio), int(clock * SAMPLE_RATE + 1e-6) // tick * tick)  # no float shortfall
        if avail <= pos:
            clock = (pos + tick) / SAMPLE_RATE
            continue
        t0 = now()
        events = engine.feed(audio[pos:avail])
        clock += now() - t0
        pos = avail
        log += [(clock, e) for e in events]
    t0 = now()
    events = engine.finish()
    clock += now() - t0
    log += [(clock, e) for e in events]
    return log, time.process_time() - cpu0, time.perf_counter() - wall0


def measure(model, audio, refs, quiet, spans, offline_words, policy: str, opts: TranscribeOptions,
            stream: StreamOptions, now: Callable[[], float]) -> dict:
    engine = StreamingTranscriber(model, opts, replace(stream, policy=policy), clock=now)
    log, cpu, wall = simulate(engine, audio, now)
    finals = [(t, w) for t, e in log if e.type == "final" for w in e.words]
    final_norm = [n for _, w in finals for n in normalize(w.word)]
    # Each final word's delay: matched to the offline word it equals within the same clip
    # (the recording says everything twice, so a match across the whole would pair repeats),
    # and only if the two are about the same time (`--audio` recordings are one span, and
    # make_recording.py --real's says everything twice too).
    delays = []
    for lo, hi in spans:
        def inside(w) -> bool:
            return lo <= (w.start + w.end) / 2 < hi
        off = [(n, w.end) for w in offline_words if inside(w) for n in normalize(w.word)]
        got = [(n, t, w.end) for t, w in finals if inside(w) for n in normalize(w.word)]
        sm = difflib.SequenceMatcher(None, [n for n, _ in off], [n for n, _, _ in got], autojunk=False)
        delays += [got[b + k][1] - off[a + k][1] for a, b, size in sm.get_matching_blocks() for k in range(size)
                   if abs(got[b + k][2] - off[a + k][1]) < SAME_WORD_SECONDS]
    off_norm = [(n, w.end) for w in offline_words for n in normalize(w.word)]
    # partial churn: each partial's words against the final words at the same places
    shown = changed = 0
    committed = 0
    for _, e in log:
        if e.type == "final":
            committed += sum(len(normalize(w.word)) for w in e.words)
        elif e.type == "partial":
            words = [n for w in e.words for n in normalize(w.word)]
            later = final_norm[committed : committed + len(words)]
            shown += len(words)
            changed += sum(a != b for a, b in zip(words, later)) + max(0, len(words) - len(later))
    on_quiet = [w for _, w in finals if any(s <= (w.start + w.end) / 2 < e for s, e in quiet)]
    retracted = any(b.start < a.end - 1e-6 for (_, a), (_, b) in zip(finals, finals[1:]))
    ref = normalize(" ".join(refs))
    return {
        "policy": policy, "passes": engine.passes, "words": len(final_norm),
        "latency_median": float(np.median(delays)) if delays else None,
        "latency_p95": float(np.percentile(delays, 95)) if delays else None,
        "wer_vs_offline": 100 * wer([n for n, _ in off_norm], final_norm),
        "wer_vs_reference": 100 * wer(ref, final_norm),
        "partial_words": shown, "partial_changed": changed / max(1, shown),
        "cpu_per_audio_second": cpu / (len(audio) / SAMPLE_RATE), "wall": wall,
        "words_on_silence_or_noise": len(on_quiet), "times_went_back": retracted,
        "text": " ".join(w.word.strip() for _, w in finals),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="tiny.en")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--policy", action="append", choices=["agreement", "window"])
    ap.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="compute time of a feed on the virtual clock")
    ap.add_argument("--audio", help="another recording (with --text, its reference transcript)")
    ap.add_argument("--text")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=NUMBER",
                    help="a StreamOptions field (e.g. min_chunk_ms=500, trim_seconds=8.5)")
    ap.add_argument("--show-text", action="store_true")
    args = ap.parse_args()
    stream = StreamOptions(**{k: float(v) if "." in v else int(v) for k, v in (item.split("=", 1) for item in args.set)})
    model = load_model(args.model, threads=args.threads)
    if bool(args.audio) != bool(args.text):
        ap.error("--audio and --text go together")
    audio, refs, quiet, spans = user_recording(args.audio, args.text) if args.audio else recording()
    opts = TranscribeOptions(decode=DecodeOptions(beam_size=1))
    t0 = time.perf_counter()
    segments, _ = model.transcribe(audio, opts)
    offline_words = [w for s in segments for w in s.words or []]
    offline_wall = time.perf_counter() - t0
    offline_ref_wer = 100 * wer(normalize(" ".join(refs)), [n for w in offline_words for n in normalize(w.word)])
    seconds = len(audio) / SAMPLE_RATE
    what = args.audio or f"{len(refs)} clips with pauses, 5 s silence, 5 s noise"
    print(f"recording: {seconds:.1f} s ({what}); model {args.model}, "
          f"{args.threads} threads; {stream}; simulated real time (virtual clock; a feed takes its {args.clock} time)")
    print(f"offline greedy transcribe: {offline_wall:.1f} s wall, WER vs reference {offline_ref_wer:.1f}%")
    print("| policy | passes | median latency s | p95 latency s | WER vs offline % | WER vs ref % (offline's + gap) "
          "| partial words changed "
          "| CPU (cores at real time) | words on silence/noise | final times went back |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for policy in args.policy or ["agreement", "window"]:
        r = measure(model, audio, refs, quiet, spans, offline_words, policy, opts, stream,
                    CLOCKS[args.clock])
        print(f"| {policy} | {r['passes']} | {r['latency_median']:.2f} | {r['latency_p95']:.2f} | "
              f"{r['wer_vs_offline']:.1f} | {r['wer_vs_reference']:.1f} ({offline_ref_wer:.1f} "
              f"{r['wer_vs_reference'] - offline_ref_wer:+.1f}) | {100 * r['partial_changed']:.0f}% of "
              f"{r['partial_words']} | {r['cpu_per_audio_second']:.2f} | {r['words_on_silence_or_noise']} | "
              f"{'yes' if r['times_went_back'] else 'no'} |", flush=True)
        if args.show_text:
            print("   ", r["text"])


if __name__ == "__main__":
    main()
