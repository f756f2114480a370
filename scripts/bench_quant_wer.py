#!/usr/bin/env python
"""Word error rate per weight type: whisperlite and whisper.cpp on the same ggml files.

For each type the derived file (`tiny.en-q5_0` …, what `-m tiny.en-q5_0` loads) is
transcribed greedily by whisperlite and by whisper.cpp (pywhispercpp, when installed), each
in its own process on one thread; `tiny.en` rows are the CTranslate2 default model with
`--compute-type` auto (float16 decoder), f32 and q8_0. Errors are also split into
substitutions, insertions and deletions: on a recording built from a few repeated pieces,
greedy decoding's failures are mostly whole repeated or skipped sentences at window
boundaries, which a one-ulp change can move, so the split shows whether a type misrecognises
words or only moves those events. Without --audio the recording is the fixtures concatenated
to --minutes (as bench_transcribe.py builds it).

    python scripts/bench_quant_wer.py --minutes 10
    python scripts/bench_quant_wer.py --audio /tmp/b10/bench_10min.wav --ref /tmp/b10/ref.txt
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transcribe import build_input, normalize  # noqa: E402

TYPES = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")

CHILD = r"""
import json, sys, time
engine, model, compute_type, path = sys.argv[1:5]
if engine == "whisperlite":
    import whisperlite
    m = whisperlite.load_model(model, threads=1, compute_type=compute_type)
    m.transcribe("fixtures/jfk.wav", beam_size=None)  # compiled and warm before timing
    t0 = time.process_time()
    segs, _ = m.transcribe(path, beam_size=None)
    text = " ".join(s.text for s in segs)
else:
    from pywhispercpp.model import Model
    from whisperlite.quantize import resolve_derived
    m = Model(str(resolve_derived(model)), n_threads=1, print_realtime=False, print_progress=False)
    t0 = time.process_time()
    text = " ".join(s.text for s in m.transcribe(path, language="en"))
print("RESULT " + json.dumps({"cpu": time.process_time() - t0, "text": text}))
"""


def edit_counts(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, insertions, deletions) of one minimal edit script from ref to hyp."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    sub = ins = dele = 0
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            sub += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif j and d[i][j] == d[i][j - 1] + 1:
            ins, j = ins + 1, j - 1
        else:
            dele, i = dele + 1, i - 1
    return sub, ins, dele


def run(engine: str, model: str, compute_type: str, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    p = subprocess.run([sys.executable, "-c", CHILD, engine, model, compute_type, str(path)],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{engine} {model} failed: {p.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, help="recording to transcribe (default: build one from the fixtures)")
    ap.add_argument("--ref", type=Path, help="its exact transcript (with --audio)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--types", nargs="+", default=list(TYPES))
    ap.add_argument("--compute-types", nargs="+", default=["auto", "f32", "q8_0"],
                    help="compute types for the tiny.en rows")
    ap.add_argument("--no-whisper-cpp", action="store_true")
    args = ap.parse_args()
    if bool(args.audio) != bool(args.ref):
        ap.error("--audio and --ref go together")
    has_cpp = not args.no_whisper_cpp and subprocess.run([sys.executable, "-c", "import pywhispercpp"],
                                                         capture_output=True).returncode == 0
    jobs = [("whisperlite", "tiny.en", ct) for ct in args.compute_types]
    for t in args.types:
        jobs.append(("whisperlite", f"tiny.en-{t}", "auto"))
        if has_cpp:
            jobs.append(("whisper.cpp", f"tiny.en-{t}", "auto"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.audio:
            wav, transcript = args.audio, args.ref.read_text()
        else:
            wav, transcript, _ = build_input(args.minutes, Path(tmp))
        ref = normalize(transcript)
        print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {wav.name} ({len(ref)} words) · greedy · "
              f"1 thread · `{' '.join(sys.argv)}`\n")
        print("| engine | model | compute type | WER % | sub | ins | del | decode CPU s |")
        print("|---|---|---|---|---|---|---|---|")
        for engine, model, ct in jobs:
            r = run(engine, model, ct, wav)
            sub, ins, dele = edit_counts(ref, normalize(r["text"]))
            print(f"| {engine} | {model} | {ct if engine == 'whisperlite' else '-'} | "
                  f"{100 * (sub + ins + dele) / len(ref):.1f} | {sub} | {ins} | {dele} | {r['cpu']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
