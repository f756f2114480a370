#!/usr/bin/env python
"""Transcription speed, memory and accuracy: whisperlite vs its peers, same file, same run.

Builds a long English recording by concatenating the fixtures (known transcripts, so the
word error rate is exact), then runs each engine in its own process at each thread count
and prints audio-seconds per wall-second, CPU seconds (all threads), peak RSS and WER, with
ratios to whisperlite, then each engine's time per stage (whisperlite's profile, whisper.cpp's
whisper_print_timings, faster-whisper's audio decode, mel, encoder and decoding timed around
its methods). --keep-text DIR keeps each transcript, to compare two builds' text.
Peers run when installed: faster-whisper (int8, on the same CTranslate2 model) and
whisper.cpp (pywhispercpp, on a ggml f16 file converted from the same model). --model base
runs the multilingual base (`whisperlite models pull base`) with the language set to English.
--audio with --text runs the same comparison on any recording and its reference transcript.
--contend runs each engine twice in a row, quiet and then with a competing process busy on
one core for the whole run (a shared 2-core machine), and adds a table of the two speeds and
the share of its quiet speed each engine keeps.

    python scripts/bench_transcribe.py --minutes 10 --threads 1 2 [--model base]
    python scripts/bench_transcribe.py --audio talk.mp3 --text talk.txt --threads 2
    python scripts/bench_transcribe.py --minutes 2 --threads 2 --default-path --contend
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# The tests' word normalization and edit distance (tests/wer.py): the WER column means what a
# test's "the transcript is right" means.
sys.path.insert(0, str(ROOT / "tests"))
from wer import normalize, wer  # noqa: E402

DROPPED_RUN = 8  # reference words missing in one place that count as a dropped sentence
PIECES = ["jfk.wav", "librispeech-2412-153948-0000.flac"]  # single-speaker pieces: exact references

CHILD = r"""
import json, resource, sys, time
engine, path, threads, beam, model, ggml = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
default_path = sys.argv[7] == "default"  # each engine's CLI default instead of plain text decoding
stages = {}  # label -> [seconds, count, unit]: each engine's own breakdown where it has one


def timing(label, fn, unit="calls"):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            st = stages.setdefault(label, [0.0, 0, unit])
            st[0] += time.perf_counter() - t
            st[1] += 1
    return wrapper


t0 = time.perf_counter()
cpu0 = time.process_time()
if engine.startswith("whisperlite"):
    import whisperlite
    from whisperlite.core.profiling import LABELS
    compute_type = engine.partition(":")[2] or "auto"
    m = whisperlite.load_model(model, threads=threads, compute_type=compute_type)
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    if default_path:  # `whisperlite transcribe`'s default: beam 5, the VAD, word-timed subtitles
        segs, info = m.transcribe(path, beam_size=5, language="en", vad=True, word_timestamps=True)
    else:  # text only, as the peers run here: word timing is its own stage
        segs, info = m.transcribe(path, beam_size=beam if beam > 1 else None, language="en", word_timestamps=False)
    text = " ".join(s.text for s in segs)
    for name, st in info.profile.ordered():
        label = ("  " if "/" in name else "") + LABELS.get(name, name)
        stages[label] = [st.wall, st.items or st.calls, st.unit or "calls"]
elif engine == "faster-whisper":
    import faster_whisper.transcribe as fwt
    from faster_whisper import WhisperModel
    from whisperlite.registry.loader import resolve
    m = WhisperModel(str(resolve(model)), device="cpu", compute_type="int8", cpu_threads=threads)
    load = time.perf_counter() - t0
    # No breakdown of its own: time its stages from outside (the mel of the whole file is one call).
    fwt.decode_audio = timing("audio decode (PyAV)", fwt.decode_audio)

    class Features:  # times the mel, passes everything else through
        def __init__(self, fe):
            self._fe, self._call = fe, timing("log-mel", fe.__call__)
        def __call__(self, *a, **k):
            return self._call(*a, **k)
        def __getattr__(self, name):
            return getattr(self._fe, name)

    m.feature_extractor = Features(m.feature_extractor)
    m.encode = timing("encoder", m.encode, "windows")
    m.generate_with_fallback = timing("decoding (with fallback)", m.generate_with_fallback, "windows")
    t1 = time.perf_counter()
    if default_path:
        segs, info = m.transcribe(path, beam_size=5, language="en", vad_filter=True, word_timestamps=True)
    else:
        segs, info = m.transcribe(path, beam_size=beam, language="en", vad_filter=False)
    text = " ".join(s.text for s in segs)
elif engine == "whisper.cpp":
    from pywhispercpp.model import Model
    m = Model(ggml, n_threads=threads, print_realtime=False, print_progress=False)
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    beam = 5 if default_path else beam  # whisper-cli's default: beam 5, no VAD
    from _pywhispercpp import WHISPER_SAMPLING_BEAM_SEARCH  # the setter takes the enum, not its value
    params = {"strategy": WHISPER_SAMPLING_BEAM_SEARCH, "beam_search": {"beam_size": beam, "patience": -1.0}} if beam > 1 else {}
    text = " ".join(s.text for s in m.transcribe(path, language="en", **params))
wall = time.perf_counter() - t1
cpu = time.process_time() - cpu0  # every thread of the process, load included: what a busy machine pays
if engine == "whisper.cpp":
    sys.stderr.flush()
    m.print_timings()  # whisper_print_timings on stderr, parsed by the parent
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"load": load, "wall": wall, "cpu": cpu, "rss_mb": rss, "text": text, "stages": stages}))
"""

# whisper.cpp's file: the model converted to ggml float16 (whisperlite's own writer)
GGML = r"""
import sys
from whisperlite.formats.ggml import write_ggml
from whisperlite.registry.loader import read_checkpoint, resolve
from whisperlite.registry.derived import quantize_checkpoint
write_ggml(quantize_checkpoint(read_checkpoint(resolve(sys.argv[1])), "f16"), sys.argv[2], "f16")
"""


def to_wav16k(src: Path, dst: Path, *filters: str) -> Path:
    """src as 16 kHz mono 16-bit wav (after ffmpeg audio `filters`), what every engine reads."""
    from whisperlite.audio.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(src), "-ar", "16000", "-ac", "1",
                    "-c:a", "pcm_s16le", *(("-af", ",".join(filters)) if filters else ()), str(dst)], check=True)
    return dst


def build_input(minutes: float, out: Path) -> tuple[Path, str, float]:
    """Concatenate the fixtures (with 0.5 s gaps) until `minutes`; returns path, transcript, seconds."""
    from whisperlite.audio.ffmpeg import ffmpeg_exe

    manifest = {e["file"]: e for e in json.loads((FIXTURES / "manifest.json").read_text())}
    # the concat demuxer needs identical stream parameters: normalise each piece first
    uniform = {}
    for name in PIECES:
        uniform[name] = to_wav16k(FIXTURES / name, out / (Path(name).stem + ".wav"), "apad=pad_dur=0.5")
    listing, words, total = [], [], 0.0
    i = 0
    while total < minutes * 60:
        name = PIECES[i % len(PIECES)]
        listing.append(f"file '{uniform[name]}'")
        words.append(manifest[name]["transcript"])
        total += manifest[name]["duration_s"] + 0.5
        i += 1
    lst = out / "list.txt"
    lst.write_text("\n".join(listing) + "\n")
    wav = out / f"bench_{minutes:g}min.wav"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst),
                    "-c", "copy", str(wav)], check=True)
    return wav, " ".join(words), total


def available(engine: str) -> bool:
    mod = {"whisperlite": "whisperlite", "faster-whisper": "faster_whisper", "whisper.cpp": "pywhispercpp"}[engine.split(":")[0]]
    return subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True).returncode == 0


# whisper_print_timings lines: "whisper_print_timings:   encode time =  1234.56 ms /    21 runs (  58.79 ms per run)"
WHISPER_CPP_TIMING = re.compile(r"whisper_print_timings:\s+(\w+) time =\s+([\d.]+) ms(?: /\s+(\d+) runs)?")
WHISPER_CPP_STAGES = {"mel": "log-mel", "sample": "sampling (decoding logic)", "encode": "encoder",
                      "decode": "token steps (decoder)", "batchd": "batched steps (beams)", "prompt": "prompt pass"}


def run(engine: str, path: Path, threads: int, beam: int, model: str, ggml: Path, default_path: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    p = subprocess.run([sys.executable, "-c", CHILD, engine, str(path), str(threads), str(beam), model, str(ggml),
                        "default" if default_path else "plain"],
                       capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            for m in WHISPER_CPP_TIMING.finditer(p.stderr):  # whisper.cpp's own breakdown
                if m.group(1) in WHISPER_CPP_STAGES:
                    runs = int(m.group(3) or 0)
                    result["stages"][WHISPER_CPP_STAGES[m.group(1)]] = [float(m.group(2)) / 1e3, runs, "runs" if runs else ""]
            return result
    raise RuntimeError(f"{engine} failed: {p.stderr[-2000:]}")


# One core's worth of outside work: a process that never sleeps.
BUSY = "while True: pass"


@contextlib.contextmanager
def competing_process():
    """A process busy on one core for as long as the block runs."""
    p = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(0.2)  # running before the engine starts
        yield
    finally:
        p.kill()
        p.wait()


def dropped_runs(ref: list[str], hyp: list[str], least: int = DROPPED_RUN) -> list[int]:
    """Lengths of the stretches of the reference the transcript leaves out (at least `least`
    words more deleted than inserted in one place): whole sentences skipped, which WER alone
    mixes up with many small errors."""
    ops = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes()
    return [n for _, a0, a1, b0, b1 in ops if (n := (a1 - a0) - (b1 - b0)) >= least]


def print_stages(rows: list[tuple[str, int, dict]]) -> None:
    """Each engine's time per stage: whisperlite's --profile stages, whisper.cpp's
    whisper_print_timings, faster-whisper timed around its methods (wall seconds)."""
    print("\n| engine | threads | stage | s | count | ms each |")
    print("|---|---|---|---|---|---|")
    for engine, threads, stages in rows:
        for label, (seconds, count, unit) in stages.items():
            each = f"{1e3 * seconds / count:.2f}" if count else ""
            print(f"| {engine} | {threads} | {label} | {seconds:.2f} | {count} {unit} | {each} |")


def print_contended(rows: list[tuple[str, int, float, float, float]]) -> None:
    """Each engine's speed quiet and with one core busy elsewhere, and the share it keeps."""
    print(f"\n| engine | threads | quiet: audio s / wall s | one core busy: audio s / wall s | kept | "
          f"vs whisperlite (busy) | WER % (busy) |")
    print("|---|---|---|---|---|---|---|")
    base: dict[int, float] = {}
    for engine, t, quiet, busy, err in rows:
        base.setdefault(t, busy)
        print(f"| {engine} | {t} | {quiet:.1f} | {busy:.1f} | {100 * busy / quiet:.0f}% | {busy / base[t]:.2f}x | "
              f"{err:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--beam", type=int, default=1, help="1: greedy for every engine")
    ap.add_argument("--default-path", action="store_true",
                    help="each engine's default path instead of --beam: whisperlite beam 5 + VAD + word timestamps, "
                         "faster-whisper beam_size=5, vad_filter=True, word_timestamps=True, whisper.cpp beam 5")
    ap.add_argument("--model", default="tiny.en", choices=["tiny.en", "base"], help="the same weights for every engine")
    ap.add_argument("--audio", type=Path, help="a recording to use instead of the concatenated fixtures")
    ap.add_argument("--text", type=Path, help="--audio's reference transcript (a text file)")
    ap.add_argument("--keep-text", type=Path, metavar="DIR",
                    help="write each engine's transcript to DIR/ENGINE-THREADS.txt (to compare two builds' text)")
    ap.add_argument("--contend", action="store_true",
                    help="also run each engine with another process busy on one core, and compare the two speeds")
    ap.add_argument("--engines", nargs="+", default=["whisperlite", "whisperlite:q8_0", "faster-whisper", "whisper.cpp"],
                    help="whisperlite:COMPUTE_TYPE selects load_model's compute_type")
    args = ap.parse_args()
    if (args.audio is None) != (args.text is None):
        ap.error("--audio and --text go together")
    engines = [e for e in args.engines if available(e)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.audio:
            from whisperlite.audio.ffmpeg import probe_duration

            # every engine reads the same 16 kHz mono wav (pywhispercpp decodes other formats only
            # with an ffmpeg on PATH): decoding the original is not part of the comparison
            seconds = probe_duration(str(args.audio))
            if not seconds:
                ap.error(f"{args.audio}: cannot read its duration")
            wav, transcript = to_wav16k(args.audio, Path(tmp) / (args.audio.stem + ".wav")), args.text.read_text()
        else:
            wav, transcript, seconds = build_input(args.minutes, Path(tmp))
        ref = normalize(transcript)
        # numba's compile cache and the ggml file are made once, outside the timed runs
        for engine in engines:
            if engine.startswith("whisperlite"):
                ct = engine.partition(":")[2] or "auto"
                for t in args.threads:
                    subprocess.run([sys.executable, "-m", "whisperlite", "transcribe", str(FIXTURES / "jfk.wav"), "-q",
                                    "--compute-type", ct, "-m", args.model, "-l", "en", "-t", str(t)], check=True)
        ggml = Path(tmp) / f"ggml-{args.model}-f16.bin"
        if "whisper.cpp" in engines:
            subprocess.run([sys.executable, "-c", GGML, args.model, str(ggml)], check=True)
        print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {os.cpu_count()} cores · {args.model} · "
              f"{seconds / 60:.1f} min of {args.audio.name if args.audio else 'speech'} · "
              f"{'default path' if args.default_path else f'beam {args.beam}'} · `{' '.join(sys.argv)}`\n")
        print("| engine | threads | load s | wall s | audio s / wall s | vs whisperlite | CPU s | vs whisperlite | "
              "peak RSS MB | WER % | dropped runs (words) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        breakdowns, contended = [], []
        for t in args.threads:
            base = base_cpu = None
            for engine in engines:
                r = run(engine, wav, t, args.beam, args.model, ggml, args.default_path)
                speed = seconds / r["wall"]
                base, base_cpu = base or speed, base_cpu or r["cpu"]
                hyp = normalize(r["text"])
                runs = dropped_runs(ref, hyp)
                if args.keep_text:
                    (args.keep_text / f"{engine.replace(':', '-')}-{t}.txt").write_text(r["text"] + "\n")
                print(f"| {engine} | {t} | {r['load']:.2f} | {r['wall']:.1f} | {speed:.1f} | {speed / base:.2f}x | "
                      f"{r['cpu']:.1f} | {base_cpu / r['cpu']:.2f}x | {r['rss_mb']:.0f} | {100 * wer(ref, hyp):.1f} | "
                      f"{len(runs)} ({sum(runs)}) |", flush=True)
                breakdowns.append((engine, t, r["stages"]))
                if args.contend:  # right after the quiet run: the same conditions but the competitor
                    with competing_process():
                        busy = run(engine, wav, t, args.beam, args.model, ggml, args.default_path)
                    contended.append((engine, t, speed, seconds / busy["wall"],
                                      100 * wer(ref, normalize(busy["text"]))))
        if contended:
            print_contended(contended)
        print_stages(breakdowns)


if __name__ == "__main__":
    main()
