#!/usr/bin/env python
"""Per-window encoder time and per-token decoder step time for each weight type, same run.

The decoder step is the memory-bound part of transcription: every decoded token reads all
decoder weights once, so fewer bytes per weight should mean a faster step. Models are the
derived whisper.cpp files (tiny.en-f16, -q8_0, -q5_0, …) built once from the default model;
"as stored" keeps each file's own types; for the default model the compute types of
`load_model` are shown (auto keeps its float16 matrices as stored).

    python scripts/bench_decode_step.py --threads 1 2
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import whisperlite  # noqa: F401  (environment before numba loads)
from whisperlite.kernels import set_threads
from whisperlite.loader import apply_compute_type, read_checkpoint, resolve
from whisperlite.models.whisper import Whisper

TYPES = ["f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]


def best_of(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(model: Whisper, rounds: int) -> tuple[float, float, float]:
    mel = np.random.default_rng(0).standard_normal((model.dims.n_mels, 3000)).astype(np.float32)
    enc = best_of(lambda: model.encoder(mel), max(2, rounds // 10))
    features = model.encoder(mel)
    steps = {}
    for beams in (1, 5):
        cache = model.decoder.new_cache(features, batch=beams)
        model.decoder(np.full((beams, 40), 50257, np.int64), cache)  # a 40-token context

        def step() -> None:
            cache.length = 40
            model.decoder(np.full((beams, 1), 440, np.int64), cache)

        steps[beams] = best_of(step, rounds)
    return enc, steps[1], steps[5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {os.cpu_count()} cores · "
          f"`python scripts/bench_decode_step.py --threads {' '.join(map(str, args.threads))}`\n")
    print("| model | weights held as | threads | encoder s / 30 s window | decoder step ms (greedy) | step ms (beam 5) |")
    print("|---|---|---|---|---|---|")
    for t in args.threads:
        set_threads(t)
        for name in ["tiny.en"] + [f"tiny.en-{q}" for q in TYPES]:
            ckpt = read_checkpoint(resolve(name))
            variants = [("as stored", ckpt)]
            if name == "tiny.en":
                variants = [(ct, apply_compute_type(ckpt, ct)) for ct in ("auto", "f32", "q8_0")]
            for label, ck in variants:
                enc, s1, s5 = measure(Whisper(ck), args.rounds)
                print(f"| {name} | {label} | {t} | {enc:.3f} | {s1 * 1e3:.2f} | {s5 * 1e3:.2f} |", flush=True)


if __name__ == "__main__":
    main()
