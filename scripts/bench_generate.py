"""Benchmark `generate`: prompt and generation tokens/s at 1 and 2 threads, and the same for
llama.cpp (llama-cpp-python, when installed) in the same run, printed as ratios.

    python scripts/bench_generate.py [-m smollm2] [-n 64] [--threads 1 2] [--repeats 3]

Both sides evaluate the same prompt ids as one batch, then feed back their own greedy
token one at a time; each figure is the best of --repeats runs (shared machines are noisy).
"gen cpu ms" is the process CPU time per generated token (all threads), steadier than wall
time when other processes load the machine; "same tokens" says whether both sides
generated the same ids.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from whisperlite.generation.generate import load_generator
from whisperlite.kernels import set_threads

PROMPT = "Building a website can be done in 10 simple steps:"


@dataclass(frozen=True)
class Speed:
    prompt_tps: float
    gen_tps: float
    gen_cpu_ms: float
    tokens: tuple[int, ...]


def bench_whisperlite(model: str, threads: int, n: int, repeats: int, exact: bool) -> tuple[Speed, str]:
    set_threads(threads)
    gen = load_generator(model, n_ctx=512, ggml_exact=exact)
    ids = gen.encode_prompt(PROMPT)
    best_p = best_g = 0.0
    best_c = float("inf")
    for _ in range(repeats + 1):  # the first run also compiles / warms caches
        cache = gen.model.new_cache(512)
        t0 = time.perf_counter()
        logits = gen.model.forward(ids, cache)
        tp = time.perf_counter() - t0
        out = []
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            out.append(int(np.argmax(logits)))
            logits = gen.model.forward([out[-1]], cache)
        tg, cg = time.perf_counter() - t0, time.process_time() - c0
        best_p, best_g, best_c = max(best_p, len(ids) / tp), max(best_g, n / tg), min(best_c, 1e3 * cg / n)
    return Speed(best_p, best_g, best_c, tuple(out)), gen.path


def bench_llama_cpp(path: str, threads: int, n: int, repeats: int) -> Speed | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(path, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    best_p = best_g = 0.0
    best_c = float("inf")
    for _ in range(repeats + 1):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        tp = time.perf_counter() - t0
        out = []
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            # the last token's logits straight from the context: llama-cpp-python >= 0.3
            # only copies them into `scores` with logits_all=True
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            out.append(int(np.argmax(logits)))
            llm.eval([out[-1]])
        tg, cg = time.perf_counter() - t0, time.process_time() - c0
        best_p, best_g, best_c = max(best_p, len(ids) / tp), max(best_g, n / tg), min(best_c, 1e3 * cg / n)
    return Speed(best_p, best_g, best_c, tuple(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="smollm2")
    ap.add_argument("-n", type=int, default=64, help="tokens to generate per run")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--float-activations", action="store_true", help="whisperlite without ggml-exact products")
    args = ap.parse_args()
    print(f"{'threads':>7} {'engine':>12} {'prompt tok/s':>13} {'gen tok/s':>10} {'gen cpu ms':>11} "
          f"{'ratio prompt':>13} {'ratio gen':>10} {'ratio cpu':>10} {'same tokens':>12}")
    for t in args.threads:
        ours, path = bench_whisperlite(args.model, t, args.n, args.repeats, not args.float_activations)
        ref = bench_llama_cpp(path, t, args.n, args.repeats)
        print(f"{t:>7} {'whisperlite':>12} {ours.prompt_tps:13.1f} {ours.gen_tps:10.1f} {ours.gen_cpu_ms:11.2f}")
        if ref is None:
            print(f"{t:>7} {'llama.cpp':>12} {'(llama-cpp-python not installed)':>24}")
            continue
        print(f"{t:>7} {'llama.cpp':>12} {ref.prompt_tps:13.1f} {ref.gen_tps:10.1f} {ref.gen_cpu_ms:11.2f} "
              f"{ours.prompt_tps / ref.prompt_tps:13.2f} {ours.gen_tps / ref.gen_tps:10.2f} "
              f"{ref.gen_cpu_ms / ours.gen_cpu_ms:10.2f} {str(ours.tokens == ref.tokens):>12}")


if __name__ == "__main__":
    main()
