"""Whisper encoder time per 30-s window against the machine's sgemm bound, at 1 and 2 threads.

The bound: every matrix product of one window (convolutions, query|key|value, output
projection, MLP, and per head Q·Kᵀ and P·V) timed alone as one numpy/OpenBLAS float32
product, summed; at t threads each product counts at the better of OpenBLAS's own t
threads and t times its single-thread speed (perfect splitting).
The encoder: wall and CPU time per window (minimum over windows), and where its CPU time
goes (each kernel call timed with the calling thread's CPU clock, summed over threads; the
"rest" is Python, scheduling and waiting at hand-offs). On a shared machine wall time
varies with the neighbours' load; the CPU columns are steadier, and "CPU × bound" compares
the encoder's CPU time with the products' single-thread CPU time (1.0: nothing but sgemm
at its best, perfectly split).

    python scripts/bench_encoder.py [-m tiny.en] [--threads 1,2] [--windows 6]
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import whisperlite.core.env  # noqa: F401  (OMP_WAIT_POLICY, numba cache dir: before numba loads)
import numpy as np
from threadpoolctl import threadpool_limits

from whisperlite.kernels import ops, set_threads
from whisperlite.registry.loader import read_checkpoint, resolve
from whisperlite.models import whisper_encoder
from whisperlite.models.whisper_encoder import AudioEncoder

ELEMENTWISE = ("im2col3", "bias_gelu_", "bias_gelu_add_", "layer_norm_into", "bias_residual_", "bias_scale_",
               "divide_heads_")
COLUMNS = ("conv", "qkv", "out", "fc1", "fc2", "QK^T", "softmax", "PV", "elementwise", "rest")


def products(enc: AudioEncoder, t_in: int) -> dict[str, tuple[int, int, int, int]]:
    """Stage -> (m, k, n, count per window) of every matrix product of one window."""
    d, nh, layers = enc.dims.n_audio_state, enc.dims.n_audio_head, enc.dims.n_audio_layer
    t = (t_in - 1) // 2 + 1
    return {
        "conv1": (t_in, enc.conv1.shape[1], d, 1), "conv2": (t, enc.conv2.shape[1], d, 1),
        "qkv": (t, d, 3 * d, layers), "out": (t, d, d, layers),
        "fc1": (t, d, enc.n_mlp, layers), "fc2": (t, enc.n_mlp, d, layers),
        "QK^T": (t, d // nh, t, layers * nh), "PV": (t, t, d // nh, layers * nh),
    }


def best_of(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def sgemm_rates(shapes: dict, threads: int, repeats: int = 7, clock=time.perf_counter) -> dict[str, float]:
    """GFLOP/s of numpy/OpenBLAS float32 on each product shape with OpenBLAS's `threads`."""
    rng = np.random.default_rng(0)
    rates = {}
    with threadpool_limits(limits=threads, user_api="blas"):
        for name, (m, k, n, count) in shapes.items():
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            c = np.empty((m, n), np.float32)
            s = best_of(lambda: np.matmul(a, b, out=c), repeats, clock)
            rates[name] = 2 * m * k * n / s / 1e9
    return rates


class _Timed:
    """Stand-in for the encoder module's numpy: np.matmul timed by stage (operand shapes)."""

    def __init__(self, stages: dict, kinds: dict):
        self._stages, self._kinds = stages, kinds

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, a, b, out=None):
        t0 = time.thread_time()
        r = np.matmul(a, b, out=out)
        self._stages[self._kinds.get((a.shape[1], b.shape[1]), "rest")] += time.thread_time() - t0
        return r


def breakdown(enc: AudioEncoder, mel: np.ndarray, windows: int) -> dict[str, float]:
    """CPU seconds per stage of the window with the least total CPU time."""
    shapes = products(enc, mel.shape[1])
    kinds = {(k, n): ("conv" if name.startswith("conv") else name) for name, (m, k, n, c) in shapes.items()}
    stages: dict[str, float] = defaultdict(float)
    patched = {}

    def timed(kernel, stage):
        def run(*args):
            t0 = time.thread_time()
            r = kernel(*args)
            stages[stage] += time.thread_time() - t0
            return r
        return run

    for name in ELEMENTWISE + ("softmax_unnormalized_",):
        k = getattr(ops, name)
        patched[name] = k.serial
        k.serial = timed(k.serial, "softmax" if name.startswith("softmax") else "elementwise")
    whisper_encoder.np = _Timed(stages, kinds)
    best: dict[str, float] = {}
    try:
        for _ in range(windows):
            stages.clear()
            t0 = time.process_time()
            enc(mel)
            total = time.process_time() - t0
            if not best or total < best["total"]:
                best = dict(stages, total=total)
    finally:
        whisper_encoder.np = np
        for name, fn in patched.items():
            getattr(ops, name).serial = fn
    best["rest"] = best["total"] - sum(v for k, v in best.items() if k != "total")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="tiny.en")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--windows", type=int, default=6)
    args = ap.parse_args()
    ckpt = read_checkpoint(resolve(args.model))
    enc = AudioEncoder(ckpt)
    mel = np.random.default_rng(0).standard_normal((ckpt.dims.n_mels, 2 * ckpt.dims.n_audio_ctx)).astype(np.float32)
    shapes = products(enc, mel.shape[1])
    gflop = sum(2 * m * k * n * c for m, k, n, c in shapes.values()) / 1e9
    print(f"{args.model}: {gflop:.1f} GFLOP per window "
          f"({sum(2 * m * k * n * c for s, (m, k, n, c) in shapes.items() if s in ('QK^T', 'PV')) / 1e9:.1f} in attention)")
    rows = []
    single = sgemm_rates(shapes, 1)
    cpu_bound = sum(2 * m * k * n * c / (r * 1e9) for (m, k, n, c), r in
                    zip(shapes.values(), sgemm_rates(shapes, 1, clock=time.process_time).values()))
    for t in [int(v) for v in args.threads.split(",")]:
        set_threads(t)
        own = single if t == 1 else sgemm_rates(shapes, t)
        rates = {k: max(own[k], t * single[k]) for k in shapes}
        bound = sum(2 * m * k * n * c / (rates[s] * 1e9) for s, (m, k, n, c) in shapes.items())
        print(f"sgemm GFLOP/s at {t} thread(s), OpenBLAS's threads / t x 1 thread: "
              + ", ".join(f"{k} {own[k]:.0f}/{t * single[k]:.0f}" for k in shapes)
              + f" -> bound {bound:.3f} s/window ({gflop / bound:.0f} GFLOP/s)")
        wall = best_of(lambda: enc(mel), args.windows)
        cpu = breakdown(enc, mel, args.windows)
        rows.append((t, wall, cpu, bound))
    print()
    print("| threads | wall s/window | × sgemm bound | GFLOP/s | CPU s/window | CPU × bound | "
          + " | ".join(f"{c} (CPU ms)" for c in COLUMNS) + " |")
    print("|---" * (6 + len(COLUMNS)) + "|")
    for t, wall, cpu, bound in rows:
        print(f"| {t} | {wall:.3f} | {wall / bound:.2f} | {gflop / wall:.0f} | {cpu['total']:.3f} | "
              f"{cpu['total'] / cpu_bound:.2f} | "
              + " | ".join(f"{cpu.get(c, 0.0) * 1000:.0f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
