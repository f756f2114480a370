#!/usr/bin/env python
"""What --diarize costs on the CLI's default path: wall time and peak memory, same run.

Varied recordings (scripts/make_recording.py: many sentences, fixtures and espeak-ng
voices, pauses) of the lengths given are transcribed by the real CLI, with and
without --diarize, at the same thread count, runs interleaved so that load from other
processes falls on both alike. Prints the wall-time and CPU-time ratios and each run's peak
resident memory (rusage of that child, from wait4): on a shared machine the CPU ratio is
the steadier one.

    python scripts/bench_diarize.py --minutes 1 3 8 --threads 2 --repeat 2
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], cwd: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds) of one CLI run."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "whisperlite", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"whisperlite {' '.join(args)} failed: {err.strip().splitlines()[-1:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=(1.0, 3.0, 8.0), help="recording lengths")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    env_path = str(ROOT)
    os.environ["PYTHONPATH"] = env_path + os.pathsep + os.environ.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recs = []
        for minutes in args.minutes:
            out = work / f"rec{minutes:g}"
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_recording.py"), "--seed", str(args.seed),
                            "--minutes", str(minutes), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
            recs.append((minutes, out.with_suffix(".wav")))
        # The resemblyzer model pulled and every kernel compiled before anything is timed.
        run(["transcribe", str(recs[0][1]), "--diarize", "-t", str(args.threads), "-osrt", "-q",
             "-o", str(work / "warm")], work)
        print(f"whisperlite transcribe (defaults: beam 5, VAD, word-timed SRT), -t {args.threads}; "
              f"{os.cpu_count()} CPUs; runs interleaved, best of {args.repeat}")
        results: dict[tuple[float, bool], list[tuple[float, float, float]]] = {}
        for _ in range(args.repeat):
            for minutes, wav in recs:
                for diarize in (False, True):
                    flags = ["--diarize"] if diarize else []
                    results.setdefault((minutes, diarize), []).append(
                        run(["transcribe", str(wav), *flags, "-t", str(args.threads), "-osrt", "-q",
                             "-o", str(work / "out")], work))
        for minutes, _ in recs:
            plain, diar = results[(minutes, False)], results[(minutes, True)]
            wall_p, wall_d = min(r[0] for r in plain), min(r[0] for r in diar)
            cpu_p, cpu_d = min(r[2] for r in plain), min(r[2] for r in diar)
            rss_p, rss_d = max(r[1] for r in plain), max(r[1] for r in diar)
            print(f"{minutes:g} min: default {wall_p:.1f} s wall, {cpu_p:.1f} s CPU ({60 * minutes / wall_p:.0f}x real "
                  f"time); --diarize {wall_d:.1f} s wall (x{wall_d / wall_p:.3f}), {cpu_d:.1f} s CPU "
                  f"(x{cpu_d / cpu_p:.3f}); peak RSS {rss_p:.0f} MB -> {rss_d:.0f} MB")
        short = args.minutes[0]
        for diarize in (False, True):
            base = max(r[1] for r in results[(short, diarize)])
            growth = ", ".join(f"{m:g} min x{max(r[1] for r in results[(m, diarize)]) / base:.3f}"
                               for m in args.minutes[1:])
            print(f"{'--diarize' if diarize else 'default'} peak RSS over {short:g} min: {growth}")


if __name__ == "__main__":
    main()
