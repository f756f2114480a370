#!/usr/bin/env python
"""Decoder step time (one token per sequence) per weight type: the fused step against the
general path it replaced ("before": per-product kernels, float32 cross keys/values), same
run, rounds interleaved so that load from other processes hits both alike. Before every
timed step a 48 MB sweep evicts the caches, as the decoding logic between steps does in a
real transcription (a tight loop of steps keeps part of the weights in the 32 MB L3 and
looks faster than transcription sees). Times are medians: wall ms (CPU ms of the process).

Every step reads all decoder weights, the window's cross-attention keys/values and the
self-attention cache once, so "bound" is those bytes over the machine's memory bandwidth
(a large numpy copy, read + write bytes per second): what a purely memory-bound step costs.

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
from whisperlite.registry.loader import apply_compute_type, read_checkpoint, resolve
from whisperlite.models.whisper_decoder import TextDecoder

# (label, model name, compute type)
VARIANTS = [("auto (f16)", "tiny.en", "auto"), ("f32", "tiny.en", "f32"), ("q8_0", "tiny.en", "q8_0"),
            ("q5_0", "tiny.en-q5_0", "auto"), ("q4_0", "tiny.en-q4_0", "auto")]
EXTRA = [("q5_1", "tiny.en-q5_1", "auto"), ("q4_1", "tiny.en-q4_1", "auto")]
CONTEXT = 40  # tokens already in the cache when a step is timed (a typical mid-window length)
SWEEP = np.ones(12 << 20, np.float32)  # 48 MB: more than the L3


def bandwidth() -> float:
    """Bytes per second of a 256 MB numpy copy (read + write), best of 5."""
    a = np.ones(64 << 20, np.float32)
    b = np.empty_like(a)
    best = min(_timed(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def step_bytes(dec: TextDecoder, beams: int) -> int:
    """Bytes one fused step must read: weights, cross keys/values, the self-attention cache."""
    w = dec.step_weights
    mats = sum(m.nbytes for role in w.mats for m in role) + w.emb.nbytes
    d = dec.dims
    cross = 2 * d.n_text_layer * d.n_audio_ctx * d.n_text_state * np.dtype(dec.cross_dtype).itemsize
    self_kv = 2 * d.n_text_layer * beams * (CONTEXT + 1) * d.n_text_state * 4
    return mats + cross + self_kv


def measure(new: TextDecoder, old: TextDecoder, beams: int, rounds: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, CPU) seconds of one step: fused, general path."""
    features = np.random.default_rng(0).standard_normal((new.dims.n_audio_ctx, new.dims.n_text_state)).astype(np.float32)
    prompt = np.full((beams, CONTEXT), 50257, np.int64)
    token = np.full((beams, 1), 440, np.int64)
    cn, co = new.new_cache(features, beams), old.new_cache(features, beams)
    new.forward(prompt, cn)
    old.forward(prompt, co)

    def fused() -> None:
        cn.length = CONTEXT
        new(token, cn)

    def before() -> None:
        co.length = CONTEXT
        old.forward(token, co)

    fused(), before()  # compile
    times: dict = {fused: [], before: []}
    for _ in range(rounds):
        for fn in (fused, before):
            SWEEP.sum()
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[fn].append((time.perf_counter() - t, time.process_time() - c))
    return tuple(tuple(np.median(np.asarray(times[fn]), axis=0)) for fn in (fused, before))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--all-types", action="store_true", help="also q5_1 and q4_1")
    args = ap.parse_args()
    bw = bandwidth()
    print(f"# {time.strftime('%Y-%m-%d')} · {platform.machine()} · {os.cpu_count()} cores · "
          f"`python scripts/bench_decode_step.py --threads {' '.join(map(str, args.threads))}`")
    print(f"# memory bandwidth (numpy copy): {bw / 1e9:.1f} GB/s; step at context {CONTEXT}\n")
    print("| weights | threads | MB read / step | bound ms | greedy ms (CPU) | before | × | beam 5 ms (CPU) | before | × |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    variants = VARIANTS + (EXTRA if args.all_types else [])
    decoders = {}
    for label, name, ct in variants:
        ckpt = apply_compute_type(read_checkpoint(resolve(name)), ct)
        decoders[label] = (TextDecoder(ckpt), TextDecoder(ckpt, cross_f16=False))
    for t in args.threads:
        set_threads(t)
        for label, (new, old) in decoders.items():
            g_new, g_old = measure(new, old, 1, args.rounds)
            b_new, b_old = measure(new, old, 5, args.rounds)
            mb = step_bytes(new, 1)
            ms = lambda wc: f"{wc[0] * 1e3:.2f} ({wc[1] * 1e3:.2f})"  # noqa: E731
            print(f"| {label} | {t} | {mb / 1e6:.1f} | {mb / bw * 1e3:.2f} | {ms(g_new)} | {ms(g_old)} | "
                  f"{g_old[0] / g_new[0]:.2f} | {ms(b_new)} | {ms(b_old)} | {b_old[0] / b_new[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
