#!/usr/bin/env python
"""First run from an empty kernel cache: the README's first command
(`whisperlite transcribe fixtures/jfk.wav -osrt`), CPU seconds of the main process and of its
children (the helper that compiles the decoder step, ffmpeg), wall seconds, and the main
process's slowest first compiles (numba compile events, thread CPU seconds).

Each run gets a fresh `$WHISPERLITE_CACHE`. With `--vs OTHER_TREE` the sources in this
checkout and in OTHER_TREE (another checkout, say of an earlier commit) run in turn, so that
load from other processes hits both alike. On a shared machine the CPU seconds are the
figures to compare: wall seconds stretch with the load, the CPU seconds a compile takes hardly.

    python scripts/bench_first_run.py -n 3 --vs /tmp/whisperlite-before
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "fixtures" / "jfk.wav"

# Run in the child: the CLI in-process under a compile listener, then one JSON line on stderr.
CHILD = r"""
import json, resource, sys, threading, time
import whisperlite
from numba.core import event

stack, first = [], {}

class Compiles(event.Listener):
    def on_start(self, ev):
        if threading.current_thread() is threading.main_thread():
            f = ev.data["dispatcher"].py_func
            stack.append((f.__module__.rsplit(".", 1)[-1] + "." + f.__qualname__, time.thread_time()))

    def on_end(self, ev):
        if threading.current_thread() is threading.main_thread():
            name, t0 = stack.pop()
            if not stack:  # outermost: its callees' compiles are inside it
                first[name] = first.get(name, 0.0) + time.thread_time() - t0

event.register("numba:compile", Compiles())
from whisperlite.cli.main import main
t0 = time.perf_counter()
main(sys.argv[1:], standalone_mode=False)
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"main": own.ru_utime + own.ru_stime, "children": kids.ru_utime + kids.ru_stime,
                  "wall": time.perf_counter() - t0, "compiles": first}), file=sys.stderr)
"""


def cold_run(tree: Path, out_dir: Path) -> dict:
    """One run of the README's command on the sources at `tree`, from an empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, WHISPERLITE_CACHE=cache, PYTHONPATH=str(tree))
        env.pop("NUMBA_CACHE_DIR", None)
        proc = subprocess.run([sys.executable, "-c", CHILD, "transcribe", str(AUDIO), "-osrt", "-of",
                               str(out_dir / "jfk")], env=env, cwd=out_dir, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: the run on {tree} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    result["srt"] = (out_dir / "jfk.srt").read_bytes()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="runs of each tree")
    ap.add_argument("--vs", type=Path, help="a second source tree, run in turn with this one")
    ap.add_argument("--top", type=int, default=12, help="slowest first compiles of the main process to list")
    args = ap.parse_args()
    trees = {"this": ROOT} | ({"vs": args.vs.resolve()} if args.vs else {})
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.n):
            for name, tree in trees.items():
                d = Path(out) / f"{name}-{i}"
                d.mkdir()
                r = cold_run(tree, d)
                runs[name].append(r)
                print(f"run {i + 1} {name}: main {r['main']:.1f} CPU s, children {r['children']:.1f} CPU s, "
                      f"wall {r['wall']:.1f} s", flush=True)
    print("\n| sources | CPU s, both processes | main process | children (step helper) | wall s |")
    print("|---|---|---|---|---|")
    for name, rs in runs.items():
        main_s, kids, wall = (statistics.median(r[key] for r in rs) for key in ("main", "children", "wall"))
        both = statistics.median(r["main"] + r["children"] for r in rs)
        print(f"| {name} ({trees[name]}) | {both:.1f} | {main_s:.1f} | {kids:.1f} | {wall:.0f} |")
    if args.vs:
        same = all(a["srt"] == b["srt"] for a, b in zip(runs["this"], runs["vs"]))
        print(f"\nsubtitles byte-identical between the trees: {same}")
    for name, rs in runs.items():
        total: dict[str, float] = {}
        for r in rs:
            for kernel, s in r["compiles"].items():
                total[kernel] = total.get(kernel, 0.0) + s / len(rs)
        slow = sorted(total.items(), key=lambda kv: -kv[1])[: args.top]
        print(f"\n{name}: slowest first compiles in the main process (mean thread CPU s): "
              + ", ".join(f"{k} {s:.1f}" for k, s in slow))


if __name__ == "__main__":
    main()
