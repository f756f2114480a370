"""GEMV speed per weight type on Whisper-tiny and SmolLM2 shapes, next to float32.

n activation rows (1: greedy token-by-token decoding; 5: beam search). GB/s counts the
weight bytes read once per product; "x f32" is the time relative to the numba float32
GEMV (`gemv.gemv_f32`, what `matmul` runs for float32 weights and few rows) in the same
run, the number to compare on a noisy machine. Each product uses the next of several
copies of the weight (together > 96 MB, three times the L3) so weights come from DRAM as
in a real decoding step, where every layer's weights pass once per token. The machine's
memory bandwidth is measured with a large numpy copy (bytes read + written).

Every cell is timed in several rounds interleaved with the other cells of its shape and
keeps the minimum, which is robust on a shared machine. Prints a markdown table.

    python scripts/bench_kernels.py [--threads 1,2] [--rows 1,5] [--seconds 0.3]
        [--rounds 3] [--shapes logits,mlp] [--exact]
"""
from __future__ import annotations

import argparse
import time

import whisperlite.core.env  # noqa: F401  (OMP_WAIT_POLICY, numba cache dir: before numba loads)
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
REF = "f32"  # the numba float32 GEMV: the ratio column's denominator


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


def cycler(ring: list):
    """A callable returning the next weight copy on each call."""
    state = [0]

    def nxt():
        state[0] += 1
        return ring[state[0] % len(ring)]

    return nxt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--rows", default="1,5", help="comma-separated activation row counts")
    ap.add_argument("--seconds", type=float, default=0.3, help="timing budget per cell")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per cell (min kept)")
    ap.add_argument("--shapes", default="", help="comma-separated substrings of shape labels")
    ap.add_argument("--exact", action="store_true", help="also time ggml-exact mode")
    ap.add_argument("--numpy", action="store_true", help="also time numpy float32 (BLAS, 1 thread)")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    rows = [int(n) for n in args.rows.split(",")]
    wanted = [s for s in args.shapes.split(",") if s]
    rng = np.random.default_rng(0)

    bw = {n: (set_threads(n), memory_bandwidth(args.seconds))[1] for n in threads}
    print("memory bandwidth (numpy copy, 256 MB): "
          + ", ".join(f"{bw[n]:.1f} GB/s at {n} thread{'s' if n > 1 else ''}" for n in threads))
    print()
    cols = []
    for n in rows:
        cols += [f"n={n} ms", f"n={n} GB/s", f"n={n} x f32"] + ([f"n={n} exact ms"] if args.exact else [])
    print("| shape (d x k) | type | thr | MB | " + " | ".join(cols) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(cols))
    for label, d, k in SHAPES:
        if wanted and not any(s in label for s in wanted):
            continue
        w32 = (rng.standard_normal((d, k)) * 0.05).astype(np.float32)
        xs = {n: rng.standard_normal((n, k)).astype(np.float32) for n in rows}
        weights: list = [(REF, w32)] + [(t.name, QTensor(t, (d, k), quantize(w32, t))) for t in TYPES]
        cells = {}  # (name, threads, n, exact) -> (fn, best seconds)
        for name, w in weights:
            nxt = cycler(copies(w, w.nbytes))
            for th in threads:
                for n in rows:
                    x = xs[n]
                    cells[name, th, n, False] = (lambda x=x, nxt=nxt: matmul(x, nxt()), float("inf"))
                    if args.exact and name != REF:
                        cells[name, th, n, True] = (
                            lambda x=x, nxt=nxt: matmul(x, nxt(), ggml_exact=True), float("inf"))
                    if args.numpy and name == REF:
                        cells["f32 numpy", th, n, False] = (lambda x=x, nxt=nxt: x @ nxt().T, float("inf"))
        for _ in range(args.rounds):
            for th in threads:
                set_threads(th)
                for key, (fn, best) in cells.items():
                    if key[1] == th:
                        cells[key] = (fn, min(best, best_time(fn, args.seconds / args.rounds)))
        names = ([REF, "f32 numpy"] if args.numpy else [REF]) + [t.name for t in TYPES]
        nbytes = {REF: w32.nbytes, "f32 numpy": w32.nbytes, **{name: w.nbytes for name, w in weights}}
        for name in names:
            for th in threads:
                out = []
                for n in rows:
                    t = cells[name, th, n, False][1]
                    out += [f"{t * 1e3:.3f}", f"{nbytes[name] / t / 1e9:.1f}",
                            f"{t / cells[REF, th, n, False][1]:.2f}"]
                    if args.exact:
                        e = cells.get((name, th, n, True))
                        out.append(f"{e[1] * 1e3:.3f}" if e else "")
                print(f"| {label} ({d}x{k}) | {name} | {th} | {nbytes[name] / 1e6:.2f} | "
                      + " | ".join(out) + " |", flush=True)


if __name__ == "__main__":
    main()
