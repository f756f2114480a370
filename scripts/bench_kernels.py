"""GEMV speed per weight type on Whisper-tiny and SmolLM2 shapes, next to numpy float32.

One activation row (token-by-token decoding). GB/s counts the weight bytes read once
per product, GFLOP/s counts 2*d*k. Each product uses the next of several copies of the
weight (together > 96 MB, three times the L3) so weights come from DRAM as in a real
decoding step, where every layer's weights pass once per token. The machine's memory bandwidth is measured with a large
numpy copy (bytes read + written). Times are the minimum over repeats, which is robust on
a shared machine. Prints a markdown table.

    python scripts/bench_kernels.py [--threads 1,2] [--seconds 0.3]
"""
from __future__ import annotations

import argparse
import time

import whisperlite._env  # noqa: F401  (OMP_WAIT_POLICY, numba cache dir: before numba loads)
import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels import QTensor, matmul, set_threads
from whisperlite.kernels.quant import quantize

SHAPES = [
    ("whisper-tiny attn", 384, 384),
    ("whisper-tiny mlp up", 1536, 384),
    ("whisper-tiny mlp down", 384, 1536),
    ("whisper-tiny logits", 51864, 384),
    ("smollm2 attn q/o", 576, 576),
    ("smollm2 attn k/v", 192, 576),
    ("smollm2 ffn gate/up", 1536, 576),
    ("smollm2 ffn down", 576, 1536),
    ("smollm2 logits", 49152, 576),
]
COLD_BYTES = 96 << 20
TYPES = [QType.F16, QType.Q8_0, QType.Q5_1, QType.Q5_0, QType.Q4_1, QType.Q4_0]


def best_time(fn, seconds: float) -> float:
    """Minimum wall time of fn() over repeats filling `seconds` (after one warm-up call)."""
    fn()
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def copies(w, nbytes: int) -> list:
    """Enough copies of weight w to exceed COLD_BYTES together (defeats the caches)."""
    n = max(2, -(-COLD_BYTES // nbytes))
    if isinstance(w, QTensor):
        return [QTensor(w.qtype, w.shape, w.data.copy()) for _ in range(n)]
    return [w.copy() for _ in range(n)]


def memory_bandwidth(seconds: float) -> float:
    """GB/s of a 256 MB numpy copy (read + write), far beyond any cache."""
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    return 2 * src.nbytes / best_time(lambda: np.copyto(dst, src), seconds) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--seconds", type=float, default=0.3, help="timing budget per cell")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)

    bw = {n: (set_threads(n), memory_bandwidth(args.seconds))[1] for n in threads}
    print("memory bandwidth (numpy copy, 256 MB): "
          + ", ".join(f"{bw[n]:.1f} GB/s at {n} thread{'s' if n > 1 else ''}" for n in threads))
    print()
    cols = [f"{n}t ms | {n}t GB/s | {n}t GFLOP/s | {n}t ggml-exact ms" for n in threads]
    print("| shape (d x k) | type | MB | " + " | ".join(cols) + " |")
    print("|---|---|---:|" + "---:|" * (4 * len(threads)))
    for label, d, k in SHAPES:
        w32 = (rng.standard_normal((d, k)) * 0.05).astype(np.float32)
        x = rng.standard_normal((1, k)).astype(np.float32)
        weights: list = [("f32 (numpy)", w32)] + [(t.name, QTensor(t, (d, k), quantize(w32, t))) for t in TYPES]
        for name, w in weights:
            nbytes = w.nbytes
            ring = copies(w, nbytes)
            nxt = iter(range(1 << 62))
            cells = []
            for n in threads:
                set_threads(n)
                t = best_time(lambda: matmul(x, ring[next(nxt) % len(ring)]), args.seconds)
                exact = "" if name.startswith("f32") else f"{best_time(lambda: matmul(x, ring[next(nxt) % len(ring)], ggml_exact=True), args.seconds) * 1e3:.3f}"
                cells.append(f"{t * 1e3:.3f} | {nbytes / t / 1e9:.1f} | {2 * d * k / t / 1e9:.1f} | {exact}")
            print(f"| {label} ({d}x{k}) | {name} | {nbytes / 1e6:.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
