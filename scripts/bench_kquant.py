"""K-quant integer dots (ggml mode) next to Q8_0 on the same shapes: Gemma 3 270M's products.

One activation row (token-by-token generation), activations already quantized (Q8_K for the
K-quants, Q8_0 for the legacy types), the product `gemv.gemv_i8` as the LLaMA layers run it.
Each product reads the next of several copies of its weight (together > 96 MB) so weights
come from DRAM as in a real step; every cell is timed in rounds interleaved with the other
types of its shape and keeps the minimum. "x Q8_0" is the time relative to the Q8_0 weight
of the same shape in the same run. With llama-cpp-python installed, its ggml's repacked
Q4_K GEMV (ggml_gemv_q4_K_8x8_q8_K, one thread: what llama.cpp runs for Q4_K on AVX2) is
timed on the same bytes, repacked, as "ggml Q4_K".

    python scripts/bench_kquant.py [--threads 1,2] [--seconds 0.3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import whisperlite.core.env  # noqa: F401  (OMP_WAIT_POLICY, numba cache dir: before numba loads)
import numpy as np
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels import gemv, quant, set_threads
from whisperlite.kernels.actquant import quantize_activations

from bench_kernels import best_time  # noqa: E402  (this script's folder is on sys.path)

SHAPES = [  # (name, rows, cols): Gemma 3 270M (d 640, 4 heads of 256, 1 KV head, n_ff 2048)
    ("gemma3 attn q", 1024, 640),
    ("gemma3 attn o", 640, 1024),
    ("gemma3 ffn gate|up", 4096, 640),
    ("gemma3 ffn down", 640, 2048),
]
TYPES = [QType.Q8_0, QType.Q5_0, QType.Q4_K, QType.Q5_K, QType.Q6_K]
COLD_BYTES = 96 << 20


def random_blocks(qtype: QType, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Weight bytes of `qtype` (speed does not depend on the values; scales kept finite)."""
    lay = quant.QUANT_TYPES[qtype]
    nb = cols // lay.block
    w = rng.integers(0, 256, (rows, nb, lay.size), dtype=np.uint8)
    for field in ("d", "dmin"):
        at = lay.offset(field)
        if at is not None:
            scale = rng.uniform(1e-3, 0.05, (rows, nb)).astype(np.float16)
            w[:, :, at:at + 2] = scale.view(np.uint8).reshape(rows, nb, 2)
    return w.reshape(rows, -1)


def ggml_q4_k_gemv():
    """(repack, call) for the installed llama.cpp's repacked Q4_K GEMV, or None."""
    try:
        import llama_cpp
    except ImportError:
        return None
    lib = Path(llama_cpp.__file__).parent / "lib"
    ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"))
    cpu.ggml_cpu_init()
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from test_kquant import repack_q4_k_8x8

    def call(packed: np.ndarray, y: np.ndarray, rows: int, k: int, out: np.ndarray) -> None:
        p = ctypes.c_void_p
        cpu.ggml_gemv_q4_K_8x8_q8_K(ctypes.c_int(k), out.ctypes.data_as(p), ctypes.c_size_t(rows),
                                     packed.ctypes.data_as(p), y.ctypes.data_as(p), ctypes.c_int(1), ctypes.c_int(rows))

    def q8_k(x: np.ndarray) -> np.ndarray:
        out = np.zeros(x.size // 256 * 292, np.uint8)
        cpu.quantize_row_q8_K(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
                              ctypes.c_int64(x.size))
        return out

    return repack_q4_k_8x8, call, q8_k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    ref = ggml_q4_k_gemv()
    print(f"numba threads | shape | {' | '.join(t.name + ' us' for t in TYPES)} | "
          f"{' | '.join(t.name + ' x Q8_0' for t in TYPES[1:])}" + (" | ggml Q4_K us (1 thread)" if ref else ""))
    print("|".join(["---"] * (2 + 2 * len(TYPES) - 1 + (1 if ref else 0))))
    for threads in (int(t) for t in args.threads.split(",")):
        set_threads(threads)
        for name, rows, cols in SHAPES:
            x = rng.standard_normal((1, cols)).astype(np.float32)
            cells = {}
            for qtype in TYPES:
                w = random_blocks(qtype, rows, cols, rng)
                ws = [w.copy() for _ in range(max(2, -(-COLD_BYTES // w.nbytes)))]
                xq, xd, xs = quantize_activations(x, qtype, np.int8)
                out = np.empty((1, rows), np.float32)
                it = iter(range(1 << 62))
                cells[qtype] = (lambda ws=ws, k=gemv.I8_KIND[qtype], xq=xq, xd=xd, xs=xs, out=out, it=it:
                                gemv.gemv_i8(k, xq, xd, xs, ws[next(it) % len(ws)], out))
            if ref:
                repack, call, q8_k = ref
                packed = [repack(random_blocks(QType.Q4_K, rows, cols, rng))]
                packed += [packed[0].copy() for _ in range(max(1, -(-COLD_BYTES // packed[0].nbytes)))]
                y, gout, it = q8_k(x[0]), np.empty(rows, np.float32), iter(range(1 << 62))
                cells["ggml"] = lambda: call(packed[next(it) % len(packed)], y, rows, cols, gout)
            best = {key: float("inf") for key in cells}
            for _ in range(args.rounds):
                for key, fn in cells.items():
                    best[key] = min(best[key], best_time(fn, args.seconds))
            us = [f"{best[t] * 1e6:.1f}" for t in TYPES]
            ratio = [f"{best[t] / best[QType.Q8_0]:.2f}" for t in TYPES[1:]]
            extra = [f"{best['ggml'] * 1e6:.1f}"] if ref else []
            print(" | ".join([str(threads), f"{name} {rows}x{cols}", *us, *ratio, *extra]))


if __name__ == "__main__":
    main()
