"""Load on `whisperlite serve` over loopback: latency, throughput, fairness, and correctness.

Starts the real server (the CLI in a child process) on a free port and measures:
1. solo latency of each 10-s clip (jfk.wav, librispeech, sppas-eng), as the reference;
2. a 10-s clip sent while a 10-min file (fixtures concatenated) is being transcribed: its
   latency against its solo latency (goal: at most 3x);
3. N concurrent clients for a bounded time, each sending clips in turn (one of them the
   10-min file first, with --long): latency p50/p95/p99, throughput in audio seconds per
   second, errors, and every response's text checked against its own input's solo text;
4. the same work (2 clips per client) by 4 concurrent clients against the CLI transcribing
   those files back to back in one process (goal: at least 90% of the CLI's throughput).
   Both write SRT (words timed), so both do the same work.

    python scripts/bench_server.py [--clients 4] [--seconds 60] [--long] [--llm NAME]

With --llm, one more client sends chat completions during 3 (their latency is printed apart).
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CLIPS = [FIXTURES / "jfk.wav", FIXTURES / "librispeech-2412-153948-0000.flac", FIXTURES / "sppas-eng-ENG_M15_ENG_T02.flac"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def duration(path: Path) -> float:
    sys.path.insert(0, str(ROOT))
    from whisperlite.audio.ffmpeg import probe_duration

    return probe_duration(str(path)) or 0.0


def long_file(folder: str, minutes: int = 10) -> Path:
    """`minutes` of speech: multilingual.mp3 (60 s) repeated, as one 16-kHz WAV."""
    sys.path.insert(0, str(ROOT))
    from whisperlite.audio.ffmpeg import ffmpeg_exe

    listing = Path(folder) / "list.txt"
    listing.write_text("".join(f"file '{FIXTURES / 'multilingual.mp3'}'\n" for _ in range(minutes)))
    out = Path(folder) / "long.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000",
                    "-ac", "1", str(out)], check=True)
    return out


class Server:
    def __init__(self, threads: int, llm: str | None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "whisperlite", "serve", "--port", str(self.port), "-t", str(threads),
                "--max-queue", "64", "--timeout", "3600"] + (["--llm", llm] if llm else [])
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"the server ended: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def transcribe(url: str, path: Path, fmt: str = "json", timeout: float = 3600) -> tuple[float, str]:
    """(seconds, text) of one request."""
    start = time.perf_counter()
    with open(path, "rb") as f:
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": (path.name, f)},
                       data={"model": "whisper-1", "response_format": fmt}, timeout=timeout)
    took = time.perf_counter() - start
    r.raise_for_status()
    return took, r.json()["text"] if fmt == "json" else r.text


def chat(url: str) -> float:
    start = time.perf_counter()
    r = httpx.post(url + "/v1/chat/completions", timeout=600,
                   json={"model": "any", "max_tokens": 32, "messages": [{"role": "user", "content": "Say hello."}]})
    r.raise_for_status()
    return time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long clients start new requests in the load phase")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long", action="store_true", help="one load client sends the 10-min file first")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the server/CLI comparison (median)")
    ap.add_argument("--llm", default=None, help="load this LLM and add a chat client to the load phase")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench-server-")
    long = long_file(tmp)
    seconds = {p: duration(p) for p in [*CLIPS, long]}
    server = Server(args.threads, args.llm)
    url = server.url
    try:
        # 1. solo latency and the reference text of each clip
        for p in CLIPS:
            transcribe(url, p)  # warm
        solo, reference = {}, {}
        for p in CLIPS:
            runs = [transcribe(url, p) for _ in range(3)]
            solo[p] = statistics.median(t for t, _ in runs)
            reference[p] = runs[0][1]
            assert all(text == reference[p] for _, text in runs), f"{p.name}: solo runs differ"
        print("solo latency: " + ", ".join(f"{p.name} {solo[p]:.2f} s ({seconds[p]:.1f} s audio)" for p in CLIPS))

        # 2. a clip behind the 10-min file
        behind = []
        for p in CLIPS:
            with httpx.Client(timeout=3600) as c:
                done = threading.Event()

                def run_long() -> None:
                    try:
                        with open(long, "rb") as f:
                            c.post(url + "/v1/audio/transcriptions", files={"file": ("long.wav", f)},
                                   data={"model": "whisper-1"})
                    except httpx.HTTPError:
                        pass  # closed on purpose below
                    done.set()

                t = threading.Thread(target=run_long, daemon=True)
                t.start()
                time.sleep(3.0)  # the long job is decoding
                took, text = transcribe(url, p)
                behind.append(took / solo[p])
                assert text == reference[p], f"{p.name}: behind the long file, the text differs"
                c.close()  # the long request goes away; its job is dropped
                t.join(30)
            time.sleep(1.0)
        print(f"clip behind a 10-min file: {', '.join(f'{r:.2f}x' for r in behind)} its solo latency "
              f"(worst {max(behind):.2f}x; goal <= 3x)")

        # 3. N concurrent clients for a bounded time
        stop_at = time.perf_counter() + args.seconds
        latencies: list[float] = []
        chats: list[float] = []
        audio, errors, mismatches = 0.0, 0, 0
        lock = threading.Lock()

        def client(k: int) -> None:
            nonlocal audio, errors, mismatches
            queue = ([long] if args.long and k == 0 else []) + [CLIPS[(k + i) % len(CLIPS)] for i in range(10_000)]
            for p in queue:
                if time.perf_counter() >= stop_at:
                    return
                try:
                    took, text = transcribe(url, p)
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                with lock:
                    if p in reference:
                        latencies.append(took)
                        mismatches += text != reference[p]
                    audio += seconds[p]

        def chatter() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                try:
                    chats.append(chat(url))
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    return

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients + 1) as pool:
            futures = [pool.submit(client, k) for k in range(args.clients)]
            if args.llm:
                futures.append(pool.submit(chatter))
            for f in futures:
                f.result()
        wall = time.perf_counter() - start
        print(f"load: {args.clients} clients for {args.seconds:.0f} s{' (+10-min file)' if args.long else ''}: "
              f"{len(latencies)} clips, latency p50 {pct(latencies, 50):.2f} s, p95 {pct(latencies, 95):.2f} s, "
              f"p99 {pct(latencies, 99):.2f} s; throughput {audio / wall:.1f} audio-s/s over {wall:.0f} s; "
              f"errors {errors}; texts not matching their input {mismatches}")
        if chats:
            print(f"chat: {len(chats)} replies, latency p50 {pct(chats, 50):.2f} s, p95 {pct(chats, 95):.2f} s")

        # 4. 4 concurrent clients vs the CLI back to back, the same 8 files, SRT both; the
        # median of --repeats runs each (the machine is shared: single runs vary)
        work = [CLIPS[i % len(CLIPS)] for i in range(8)]
        served_runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda p: transcribe(url, p, "srt"), work))
            served_runs.append(time.perf_counter() - start)
        served = statistics.median(served_runs)
    finally:
        server.stop()
    cli_runs = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-m", "whisperlite", "transcribe", *map(str, work), "-osrt", "-o", tmp,
                              "-t", str(args.threads)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, check=True)
        # each input's own time, as the CLI reports it (the model load once before them is left out)
        cli_runs.append(sum(float(m) for m in re.findall(r"segments? in ([0-9.]+) s", out.stderr)))
    cli = statistics.median(cli_runs)
    total = sum(seconds[p] for p in work)
    print(f"same work (8 clips, {total:.0f} s audio, SRT): 4 concurrent clients {served:.2f} s "
          f"({total / served:.1f} audio-s/s) vs CLI back to back {cli:.2f} s ({total / cli:.1f} audio-s/s): "
          f"{cli / served:.0%} of the CLI's throughput (goal >= 90%)")


if __name__ == "__main__":
    main()
