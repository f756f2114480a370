"""Benchmark `generate`: prompt and generation tokens/s at 1 and 2 threads, and the same for
llama.cpp (llama-cpp-python, when installed) in the same run, printed as ratios.

    python scripts/bench_generate.py [-m smollm2] [-n 64] [--threads 1 2] [--repeats 3] [--copies 1 4]

Both sides evaluate the same prompt ids (the prompt text --copies times over, for
longer prompts) as one batch, then feed back their own greedy
token one at a time; each figure is the best of --repeats runs (shared machines are noisy),
the two engines' runs interleaved.
"prompt cpu ms" and "gen cpu ms" are the process CPU time of the prompt batch and per
generated token (all threads), steadier than wall time when other processes load the
machine; "same tokens" says whether both sides
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
    prompt_cpu_ms: float
    gen_tps: float
    gen_cpu_ms: float
    tokens: tuple[int, ...]


class Best:
    """The best figures over repeats of one engine."""

    def __init__(self) -> None:
        self.p = self.g = 0.0
        self.cp = self.c = float("inf")
        self.tokens: tuple[int, ...] = ()

    def add(self, n_prompt: int, tp: float, cp: float, n: int, tg: float, cg: float, tokens: list[int]) -> None:
        self.p, self.g, self.c = max(self.p, n_prompt / tp), max(self.g, n / tg), min(self.c, 1e3 * cg / n)
        self.cp = min(self.cp, 1e3 * cp)
        self.tokens = tuple(tokens)

    def speed(self) -> Speed:
        return Speed(self.p, self.cp, self.g, self.c, self.tokens)


def run_whisperlite(gen, ids: list[int], n: int, best: Best) -> None:
    cache = gen.model.new_cache(512)
    t0, c0 = time.perf_counter(), time.process_time()
    logits = gen.model.forward(ids, cache)
    tp, cp = time.perf_counter() - t0, time.process_time() - c0
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = gen.model.forward([out[-1]], cache)
    best.add(len(ids), tp, cp, n, time.perf_counter() - t0, time.process_time() - c0, out)


def run_llama_cpp(llm, ids: list[int], n: int, best: Best) -> None:
    llm.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    llm.eval(ids)
    tp, cp = time.perf_counter() - t0, time.process_time() - c0
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        # the last token's logits straight from the context: llama-cpp-python >= 0.3
        # only copies them into `scores` with logits_all=True
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        out.append(int(np.argmax(logits)))
        llm.eval([out[-1]])
    best.add(len(ids), tp, cp, n, time.perf_counter() - t0, time.process_time() - c0, out)


def bench(model: str, threads: int, n: int, repeats: int, exact: bool,
          copies: int) -> tuple[Speed, Speed | None, int]:
    """Both engines at `threads`, their runs interleaved (on a shared machine the load
    drifts between runs; interleaving gives both the same share of quiet moments)."""
    set_threads(threads)
    gen = load_generator(model, n_ctx=512, ggml_exact=exact)
    prompt = " ".join([PROMPT] * copies)
    ids = gen.encode_prompt(prompt)
    try:
        from llama_cpp import Llama
    except ImportError:
        llm = None
    else:
        llm = Llama(gen.path, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
        assert llm.tokenize(prompt.encode(), add_bos=gen.tokenizer.add_bos, special=True) == ids
    ours, theirs = Best(), Best()
    run_whisperlite(gen, ids, n, Best())  # the first runs also compile / warm caches
    if llm is not None:
        run_llama_cpp(llm, ids, n, Best())
    for _ in range(repeats):
        run_whisperlite(gen, ids, n, ours)
        if llm is not None:
            run_llama_cpp(llm, ids, n, theirs)
    return ours.speed(), theirs.speed() if llm is not None else None, len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default="smollm2")
    ap.add_argument("-n", type=int, default=64, help="tokens to generate per run")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--copies", type=int, nargs="+", default=[1],
                    help="prompt lengths: the prompt text this many times over")
    ap.add_argument("--float-activations", action="store_true", help="whisperlite without ggml-exact products")
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        pass
    else:  # which build the ratios are against (AVX-512 / AMX / BLAS change its speed)
        print(f"llama-cpp-python {llama_cpp.__version__}: {llama_cpp.llama_print_system_info().decode().strip()}")
    print(f"{'tokens':>6} {'threads':>7} {'engine':>12} {'prompt tok/s':>13} {'prompt cpu ms':>14} {'gen tok/s':>10} "
          f"{'gen cpu ms':>11} {'ratio prompt':>13} {'ratio p cpu':>12} {'ratio gen':>10} {'ratio g cpu':>12} "
          f"{'same tokens':>12}")
    for copies, t in ((c, t) for c in args.copies for t in args.threads):
        ours, ref, n_prompt = bench(args.model, t, args.n, args.repeats, not args.float_activations, copies)
        print(f"{n_prompt:>6} {t:>7} {'whisperlite':>12} {ours.prompt_tps:13.1f} {ours.prompt_cpu_ms:14.1f} "
              f"{ours.gen_tps:10.1f} {ours.gen_cpu_ms:11.2f}")
        if ref is None:
            print(f"{n_prompt:>6} {t:>7} {'llama.cpp':>12} {'(llama-cpp-python not installed)':>24}")
            continue
        print(f"{n_prompt:>6} {t:>7} {'llama.cpp':>12} {ref.prompt_tps:13.1f} {ref.prompt_cpu_ms:14.1f} "
              f"{ref.gen_tps:10.1f} {ref.gen_cpu_ms:11.2f} {ours.prompt_tps / ref.prompt_tps:13.2f} "
              f"{ref.prompt_cpu_ms / ours.prompt_cpu_ms:12.2f} {ours.gen_tps / ref.gen_tps:10.2f} "
              f"{ref.gen_cpu_ms / ours.gen_cpu_ms:12.2f} {str(ours.tokens == ref.tokens):>12}")


if __name__ == "__main__":
    main()
