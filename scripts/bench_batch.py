"""Benchmark `whisperlite batch`: throughput at -j 1 vs -j 2, peak memory for short vs long input.

Inputs are made here, in a temporary directory, by looping the speech fixtures with ffmpeg
(never committed). Every measurement runs the real CLI in a child process:

  throughput  the same N inputs with -j 1 -t T and with -j 2 -t T/2 (same cores in total):
              hours of audio per hour of wall time, model loading and worker start-up included
  memory      one SHORT-minute and one LONG-minute input, -j 1: peak RSS of the process doing
              the transcription (the CLI itself at -j 1), from getrusage of a wrapper process

    python scripts/bench_batch.py                       # all, 10-min vs 2-hour
    python scripts/bench_batch.py --long-cap 900        # stop the 2-hour run after 15 min
    python scripts/bench_batch.py --only memory --long-minutes 120
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SPEECH = ["jfk.wav", "librispeech-2412-153948-0000.flac"]

# Runs a command, optionally stopping it after a time cap, and reports the largest peak RSS
# of any process it waited for: at -j 1 the CLI, at -j N also its workers (they are reaped
# by the CLI, so their rusage rolls up into the CLI's children and then into ours).
_WRAPPER = r"""
import json, resource, subprocess, sys, time
cap = float(sys.argv[1]); cmd = sys.argv[2:]
t0 = time.perf_counter()
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    out, err = proc.communicate(timeout=cap if cap > 0 else None)
    capped = False
except subprocess.TimeoutExpired:
    proc.kill(); out, err = proc.communicate(); capped = True
wall = time.perf_counter() - t0
print(json.dumps({"rc": proc.returncode, "wall": wall, "capped": capped,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "stdout": out[-2000:], "stderr": err[-2000:]}))
"""


def ffmpeg() -> str:
    from whisperlite.audio.ffmpeg import ffmpeg_exe

    return ffmpeg_exe()


def make_input(dest: Path, seconds: float, offset: int = 0) -> Path:
    """`seconds` of looped fixture speech as 16 kHz mono wav; `offset` rotates the fixtures so
    inputs differ in content (and so in sha256)."""
    order = SPEECH[offset % len(SPEECH):] + SPEECH[: offset % len(SPEECH)]
    base = dest.with_suffix(".base.wav")
    inputs = sum((["-i", str(FIXTURES / f)] for f in order), [])
    subprocess.run([ffmpeg(), "-v", "error", "-y", *inputs, "-filter_complex",
                    f"concat=n={len(order)}:v=0:a=1,aresample=16000,pan=mono|c0=c0", "-c:a", "pcm_s16le", str(base)],
                   check=True)
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(base), "-t", f"{seconds}",
                    "-c:a", "pcm_s16le", str(dest)], check=True)
    base.unlink()
    return dest


def run_batch(inputs: list[Path], out: Path, jobs: int, threads: int, model: str, cap: float = 0.0) -> dict:
    cmd = [sys.executable, "-m", "whisperlite", "batch", *map(str, inputs), "-o", str(out), "-osrt",
           "-m", model, "-j", str(jobs), "-t", str(threads)]
    res = subprocess.run([sys.executable, "-c", _WRAPPER, str(cap), *cmd], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def audio_done(out: Path) -> float:
    from whisperlite.batch.manifest import read_manifest

    return sum(r.get("duration") or 0.0 for r in read_manifest(str(out / "manifest.jsonl")) if r["status"] == "done")


def bench_throughput(tmp: Path, args) -> dict:
    inputs = [make_input(tmp / f"tp{i}.wav", args.tp_seconds, i) for i in range(args.tp_inputs)]
    rows = {}
    for jobs in (1, 2):
        threads = max(1, args.threads // jobs)
        r = run_batch(inputs, tmp / f"out-j{jobs}", jobs, threads, args.model)
        audio = audio_done(tmp / f"out-j{jobs}")
        rows[f"-j {jobs} -t {threads}"] = {"audio_h": audio / 3600, "wall_h": r["wall"] / 3600,
                                           "audio_h_per_wall_h": audio / r["wall"], "peak_rss_mb": r["peak_rss_mb"],
                                           "rc": r["rc"]}
        print(f"throughput -j {jobs} -t {threads}: {audio:.0f} s audio in {r['wall']:.1f} s = "
              f"{audio / r['wall']:.2f} h audio per h, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def bench_memory(tmp: Path, args) -> dict:
    rows = {}
    for label, minutes, cap in (("short", args.short_minutes, 0.0), ("long", args.long_minutes, args.long_cap)):
        t0 = time.perf_counter()
        src = make_input(tmp / f"{label}.wav", minutes * 60, 0)
        made = time.perf_counter() - t0
        out = tmp / f"out-{label}"
        r = run_batch([src], out, 1, args.threads, args.model, cap)
        audio = audio_done(out)
        rows[f"{minutes:g} min"] = {"peak_rss_mb": r["peak_rss_mb"], "wall_s": r["wall"], "capped": r["capped"],
                                    "audio_s_done": audio, "rc": r["rc"], "input_made_s": made}
        note = f"stopped after {r['wall']:.0f} s (cap)" if r["capped"] else f"{audio:.0f} s audio in {r['wall']:.0f} s"
        print(f"memory {minutes:g}-min input, -j 1 -t {args.threads}: peak RSS {r['peak_rss_mb']:.0f} MB; {note}", flush=True)
        src.unlink()
    keys = list(rows)
    ratio = rows[keys[1]]["peak_rss_mb"] / rows[keys[0]]["peak_rss_mb"]
    print(f"memory ratio long/short: {ratio:.3f} (target <= 1.2)", flush=True)
    return {"runs": rows, "ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores in total for each run")
    ap.add_argument("--only", choices=("throughput", "memory"), default=None)
    ap.add_argument("--tp-inputs", type=int, default=4, help="inputs for the throughput runs")
    ap.add_argument("--tp-seconds", type=float, default=150.0, help="length of each throughput input")
    ap.add_argument("--short-minutes", type=float, default=10.0)
    ap.add_argument("--long-minutes", type=float, default=120.0)
    ap.add_argument("--long-cap", type=float, default=0.0, help="stop the long run after this many seconds (0: run it all)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    results = {"model": args.model, "threads": args.threads, "cpus": os.cpu_count(),
               "load_avg_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="whisperlite-bench-batch-") as tmp:
        if args.only in (None, "throughput"):
            results["throughput"] = bench_throughput(Path(tmp), args)
        if args.only in (None, "memory"):
            results["memory"] = bench_memory(Path(tmp), args)
    results["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
