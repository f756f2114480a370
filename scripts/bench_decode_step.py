#!/usr/bin/env python
"""Decoder step time (one token per sequence) per weight type: the fused step against the
general path it replaced ("before": per-product kernels, float32 cross keys/values), same
run, rounds interleaved so that load from other processes hits both alike.

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
from whisperlite.loader import apply_compute_type, read_checkpoint, resolve
from whisperlite.models.whisper_decoder import TextDecoder

# (label, model name, compute type)
VARIANTS = [("auto (f16)", "tiny.en", "auto"), ("f32", "tiny.en", "f32"), ("q8_0", "tiny.en", "q8_0"),
            ("q5_0", "tiny.en-q5_0", "auto"), ("q4_0", "tiny.en-q4_0", "auto")]
EXTRA = [("q5_1", "tiny.en-q5_1", "auto"), ("q4_1", "tiny.en-q4_1", "auto")]
CONTEXT = 40  # tokens already in the cache when a step is timed (a typical mid-window length)


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


def measure(new: TextDecoder, old: TextDecoder, beams: int, rounds: int) -> tuple[float, float]:
    """Best wall time of one step (s): fused, general path."""
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

    fused(), before()  # compile / warm caches
    tn, to = [], []
    for _ in range(rounds):
        tn.append(_timed(fused))
        to.append(_timed(before))
    return min(tn), min(to)


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
    print("| weights | threads | MB read / step | bound ms | greedy ms | before | × | beam 5 ms | before | × |")
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
            print(f"| {label} | {t} | {mb / 1e6:.1f} | {mb / bw * 1e3:.2f} | {g_new * 1e3:.2f} | {g_old * 1e3:.2f} | "
                  f"{g_old / g_new:.2f} | {b_new * 1e3:.2f} | {b_old * 1e3:.2f} | {b_old / b_new:.2f} |", flush=True)


if __name__ == "__main__":
    main()
