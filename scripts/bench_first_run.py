#!/usr/bin/env python
"""First run from an empty kernel cache: the README's first command
(`whisperlite transcribe fixtures/jfk.wav -osrt`), CPU seconds of the main process and of its
children (the warm-up's helper processes, ffmpeg) and of each helper, wall seconds, and each
process's slowest first compiles (numba compile events, thread CPU seconds; --timeline: all
of them in order, with the wall second each started at).

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

# Loaded by every Python process of a run (the CLI and the step helper it starts) through
# sitecustomize: once numba is imported (after the package's env.py has set numba's cache
# directory), a compile-event listener records each outermost first compile (thread CPU
# seconds, and the wall second it started at); at exit one JSON file per process.
SITE = r"""
import atexit, json, os, resource, sys, threading, time

_dir, _t0 = os.environ["WHISPERLITE_BENCH_LOG"], time.time()
_local, _compiles = threading.local(), []


def _hook(event):
    class Compiles(event.Listener):
        def on_start(self, ev):
            f = ev.data["dispatcher"].py_func
            stack = _local.__dict__.setdefault("stack", [])
            stack.append((f.__module__.rsplit(".", 1)[-1] + "." + f.__qualname__, time.thread_time(), time.time()))

        def on_end(self, ev):
            stack = _local.stack
            name, c0, w0 = stack.pop()
            if not stack:  # outermost: its callees' compiles are inside it
                _compiles.append((name, time.thread_time() - c0, w0 - _t0))

    event.register("numba:compile", Compiles())


class _Finder:
    # registers the listener as soon as numba.core.event has been executed
    def find_spec(self, name, path=None, target=None):
        if name != "numba.core.event":
            return None
        import importlib.util

        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _hook(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())


@atexit.register
def _dump():
    own = resource.getrusage(resource.RUSAGE_SELF)
    role = "main" if sys.argv[1:2] == ["transcribe"] else "helper"
    with open(os.path.join(_dir, f"{role}-{os.getpid()}.json"), "w") as fh:
        json.dump({"role": role, "cpu": own.ru_utime + own.ru_stime, "rss_mb": own.ru_maxrss / 1024,
                   "start": _t0, "end": time.time(),
                   "compiles": _compiles}, fh)
"""

# Run in the child: the CLI in-process, then one JSON line on stderr.
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from whisperlite.cli.main import main
main(sys.argv[1:], standalone_mode=False)
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"main": own.ru_utime + own.ru_stime, "children": kids.ru_utime + kids.ru_stime,
                  "wall": time.perf_counter() - t0}), file=sys.stderr)
"""


def cold_run(tree: Path, out_dir: Path) -> dict:
    """One run of the README's command on the sources at `tree`, from an empty cache."""
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as site:
        (Path(site) / "sitecustomize.py").write_text(SITE)
        logs = Path(site) / "logs"
        logs.mkdir()
        env = dict(os.environ, WHISPERLITE_CACHE=cache, PYTHONPATH=f"{tree}{os.pathsep}{site}",
                   WHISPERLITE_BENCH_LOG=str(logs))
        env.pop("NUMBA_CACHE_DIR", None)
        proc = subprocess.run([sys.executable, "-c", CHILD, "transcribe", str(AUDIO), "-osrt", "-of",
                               str(out_dir / "jfk")], env=env, cwd=out_dir, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"error: the run on {tree} failed:\n{proc.stderr[-2000:]}")
        result = json.loads(proc.stderr.strip().splitlines()[-1])
        result["processes"] = [json.loads(f.read_text()) for f in sorted(logs.glob("*.json"))]
    result["srt"] = (out_dir / "jfk.srt").read_bytes()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=3, help="runs of each tree")
    ap.add_argument("--vs", type=Path, help="a second source tree, run in turn with this one")
    ap.add_argument("--top", type=int, default=12, help="slowest first compiles of the main process to list")
    ap.add_argument("--timeline", action="store_true", help="list every process's compiles in order")
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
                helpers = sorted((p["cpu"] for p in r["processes"] if p["role"] == "helper"), reverse=True)
                peak = sum(p["rss_mb"] for p in r["processes"])
                print(f"run {i + 1} {name}: main {r['main']:.1f} CPU s, children {r['children']:.1f} CPU s "
                      f"(helpers {', '.join(f'{c:.1f}' for c in helpers)}), wall {r['wall']:.1f} s, "
                      f"peak RSS summed over the processes {peak:.0f} MB", flush=True)
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
        for role in ("main", "helper"):
            total: dict[str, float] = {}
            cpu = []
            for r in rs:
                for p in r["processes"]:
                    if p["role"] == role:
                        cpu.append(p["cpu"])
                        for kernel, s, _ in p["compiles"]:
                            total[kernel] = total.get(kernel, 0.0) + s / len(rs)
            slow = sorted(total.items(), key=lambda kv: -kv[1])[: args.top]
            print(f"\n{name}, {role} process ({statistics.median(cpu) if cpu else 0:.1f} CPU s, compiles "
                  f"{sum(total.values()):.1f}): slowest first compiles (mean thread CPU s): "
                  + ", ".join(f"{k} {s:.1f}" for k, s in slow))
    if args.timeline:
        for name, rs in runs.items():
            for p in rs[-1]["processes"]:
                print(f"\n{name} {p['role']} timeline (wall s from its start: kernel CPU s), ends at "
                      f"{p['end'] - p['start']:.1f}:")
                print("  " + ", ".join(f"{w:.1f}: {k} {s:.1f}" for k, s, w in p["compiles"]))

if __name__ == "__main__":
    main()
