#!/usr/bin/env python
"""Word error rate per weight type: whisperlite and whisper.cpp on the same ggml files.

For each type the derived file (`tiny.en-q5_0` …, what `-m tiny.en-q5_0` loads) is
transcribed (greedy, or --beam N) by whisperlite and by whisper.cpp (pywhispercpp, when installed), each
in its own process on one thread; `tiny.en` rows are the CTranslate2 default model with
`--compute-type` auto (float16 decoder), f32 and q8_0. Errors are also split into
substitutions, insertions and deletions: on a recording built from a few repeated pieces,
greedy decoding's failures are mostly whole repeated or skipped sentences at window
boundaries, which a one-ulp change can move, so the split shows whether a type misrecognises
words or only moves those events. Without --audio the recording is the fixtures concatenated
to --minutes (as bench_transcribe.py builds it).

A second table (--agreement) measures the weights themselves, free of those events: the
float32 model decodes 30-second windows of the recording greedily, then every whisperlite
row is fed the same tokens one at a time (the decoding path) and compared with it: how often
its most likely next token is the same (all tokens, and timestamp tokens alone) and the mean
KL divergence of its next-token distribution from float32's.

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transcribe import build_input, normalize  # noqa: E402

TYPES = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")

CHILD = r"""
import json, sys, time
engine, model, compute_type, path, beam = *sys.argv[1:5], int(sys.argv[5])
if engine == "whisperlite":
    import whisperlite
    m = whisperlite.load_model(model, threads=1, compute_type=compute_type)
    m.transcribe("fixtures/jfk.wav", beam_size=beam)  # compiled and warm before timing
    t0 = time.process_time()
    segs, _ = m.transcribe(path, beam_size=beam, word_timestamps=False)
    text = " ".join(s.text for s in segs)
else:
    from pywhispercpp.model import Model
    from whisperlite.registry.derived import resolve_derived
    m = Model(str(resolve_derived(model)), n_threads=1, print_realtime=False, print_progress=False)
    t0 = time.process_time()
    params = {"strategy": 1, "beam_search": {"beam_size": beam, "patience": -1.0}} if beam > 1 else {}
    text = " ".join(s.text for s in m.transcribe(path, language="en", **params))
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


def run(engine: str, model: str, compute_type: str, path: Path, beam: int = 1) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    p = subprocess.run([sys.executable, "-c", CHILD, engine, model, compute_type, str(path), str(beam)],
                       capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{engine} {model} failed: {p.stderr[-2000:]}")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    return z - np.log(np.exp(z).sum())


def agreement(wav: Path, models: list[tuple[str, str]], window_s: float = 30.0) -> None:
    """Teacher-forced comparison of each (model, compute type) with float32 tiny.en."""
    import whisperlite
    from whisperlite.audio.ffmpeg import N_SAMPLES, SAMPLE_RATE, load_audio
    from whisperlite.audio.mel import log_mel_spectrogram, pad_or_trim

    audio = load_audio(str(wav))
    step = int(window_s * SAMPLE_RATE)
    mels = [pad_or_trim(log_mel_spectrogram(audio[s:s + N_SAMPLES], 80, padding=N_SAMPLES - len(audio[s:s + N_SAMPLES])))
            for s in range(0, len(audio), step)]

    def steps(m, mel: np.ndarray, forced: list[int] | None):
        """Log-probabilities before each token: of `forced`, or of greedy decoding if None."""
        tok = m.tokenizer
        cache = m.model.decoder.new_cache(m.model.encoder(mel))
        logits, _ = m.model.decoder(np.array([tok.sot_sequence("en")]), cache)
        out, seq = [], []
        while True:
            lp = _log_softmax(logits[0, -1])
            out.append(lp)
            t = forced[len(seq)] if forced is not None else int(np.argmax(lp))
            seq.append(t)
            if t == tok.eot or len(seq) == (len(forced) if forced is not None else 224):
                return seq, out
            logits, _ = m.model.decoder(np.array([[t]]), cache)

    ref = whisperlite.load_model("tiny.en", threads=1, compute_type="f32")
    refs = [steps(ref, mel, None) for mel in mels]
    ts = ref.tokenizer.timestamp_begin
    n_tok = sum(len(seq) for seq, _ in refs)
    print(f"\n{len(mels)} windows of {window_s:g} s, {n_tok} tokens decoded greedily by tiny.en f32 and fed to each:\n")
    print("| model | compute type | same next token % | same timestamp token % | mean KL from f32 (1e-3 nats) |")
    print("|---|---|---|---|---|")
    for name, ct in models:
        m = whisperlite.load_model(name, threads=1, compute_type=ct)
        same = same_ts = n_ts = 0
        kl = 0.0
        for mel, (seq, ref_lps) in zip(mels, refs):
            _, lps = steps(m, mel, seq)
            for t, r, lp in zip(seq, ref_lps, lps):
                hit = int(np.argmax(lp)) == t
                same += hit
                if t >= ts:
                    same_ts, n_ts = same_ts + hit, n_ts + 1
                kl += float((np.exp(r) * (r - lp)).sum())
        print(f"| {name} | {ct} | {100 * same / n_tok:.2f} | {f'{100 * same_ts / n_ts:.1f}' if n_ts else '-'} | "
              f"{1000 * kl / n_tok:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, help="recording to transcribe (default: build one from the fixtures)")
    ap.add_argument("--ref", type=Path, help="its exact transcript (with --audio)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--types", nargs="+", default=list(TYPES))
    ap.add_argument("--compute-types", nargs="+", default=["auto", "f32", "q8_0"],
                    help="compute types for the tiny.en rows")
    ap.add_argument("--beam", type=int, default=1, help="1: greedy (default), else beam search of that width")
    ap.add_argument("--no-whisper-cpp", action="store_true")
    ap.add_argument("--agreement", action="store_true", help="also the teacher-forced agreement table")
    ap.add_argument("--no-wer", action="store_true", help="skip the WER table")
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
        print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {wav.name} ({len(ref)} words) · "
              f"{'greedy' if args.beam == 1 else f'beam {args.beam}'} · "
              f"1 thread · `{' '.join(sys.argv)}`\n")
        if not args.no_wer:
            print("| engine | model | compute type | WER % | sub | ins | del | decode CPU s |")
            print("|---|---|---|---|---|---|---|---|")
        for engine, model, ct in [] if args.no_wer else jobs:
            r = run(engine, model, ct, wav, args.beam)
            sub, ins, dele = edit_counts(ref, normalize(r["text"]))
            print(f"| {engine} | {model} | {ct if engine == 'whisperlite' else '-'} | "
                  f"{100 * (sub + ins + dele) / len(ref):.1f} | {sub} | {ins} | {dele} | {r['cpu']:.0f} |", flush=True)
        if args.agreement:
            agreement(wav, [(model, ct) for engine, model, ct in jobs if engine == "whisperlite"])


if __name__ == "__main__":
    main()
