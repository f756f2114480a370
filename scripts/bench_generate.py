"""Benchmark `generate`: prompt and generation tokens/s at 1 and 2 threads, and the same for
llama.cpp (llama-cpp-python, when installed) in the same run, printed as ratios.

    python scripts/bench_generate.py [-m smollm2] [-n 64] [--threads 1 2] [--repeats 3] [--copies 1 4]

Each engine runs in its own process (llama.cpp with its own OpenMP settings, not the
passive waiting whisperlite sets for its process), started per thread count; the parent
interleaves their runs (whisperlite, llama.cpp, whisperlite, ...) with a pause between runs
so that the idle engine's threads have gone to sleep before the other starts. Both sides
evaluate the same prompt ids (the prompt text --copies times over, for longer prompts) as
one batch, then feed back their own greedy token one at a time; each figure is the best
of --repeats runs (shared machines are noisy), after one warm-up run each.
"prompt cpu ms" and "gen cpu ms" are the process CPU time of the prompt batch and per
generated token (all threads), steadier than wall time when other processes load the
machine; "main ms" is the calling thread's own CPU time of the prompt (what the prompt
costs the thread that waits for it); "same tokens" says whether both sides generated the
same ids. The last lines give each engine's prompt and generation tok/s at each thread
count over its tok/s at the first (2 threads over 1).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

PROMPT = "Building a website can be done in 10 simple steps:"
PAUSE = 0.3  # seconds between runs: the other engine's threads stop spinning and sleep


@dataclass(frozen=True)
class Speed:
    prompt_tps: float
    prompt_cpu_ms: float
    prompt_main_ms: float
    gen_tps: float
    gen_cpu_ms: float
    tokens: tuple[int, ...]


class Best:
    """The best figures over repeats of one engine."""

    def __init__(self) -> None:
        self.p = self.g = 0.0
        self.cp = self.mp = self.c = float("inf")
        self.tokens: tuple[int, ...] = ()

    def add(self, run: tuple) -> None:
        n_prompt, tp, cp, mp_, n, tg, cg, tokens = run
        self.p, self.g, self.c = max(self.p, n_prompt / tp), max(self.g, n / tg), min(self.c, 1e3 * cg / n)
        self.cp, self.mp = min(self.cp, 1e3 * cp), min(self.mp, 1e3 * mp_)
        self.tokens = tuple(tokens)

    def speed(self) -> Speed:
        return Speed(self.p, self.cp, self.mp, self.g, self.c, self.tokens)


def _clocks() -> tuple[float, float, float]:
    return time.perf_counter(), time.process_time(), time.thread_time()


def _timed_runs(reset, prompt_eval, next_logits, step, ids: list[int], n: int) -> tuple:
    """(prompt tokens, prompt wall s, prompt CPU s, prompt calling-thread CPU s, generated
    tokens, generation wall s, generation CPU s, tokens) of one run, after reset() (an
    empty context, untimed)."""
    import numpy as np

    reset()
    t0, c0, m0 = _clocks()
    prompt_eval(ids)
    t1, c1, m1 = _clocks()
    out = []
    for _ in range(n):
        out.append(int(np.argmax(next_logits())))
        step(out[-1])
    t2, c2, _ = _clocks()
    return len(ids), t1 - t0, c1 - c0, m1 - m0, n, t2 - t1, c2 - c1, out


def _whisperlite(conn, model: str, threads: int, exact: bool, prompt: str) -> None:
    """Engine process: whisperlite at `threads`; answers the prompt ids, then one run per request."""
    from whisperlite.generation.generate import load_generator
    from whisperlite.kernels import set_threads

    set_threads(threads)
    gen = load_generator(model, n_ctx=512, ggml_exact=exact)
    ids = gen.encode_prompt(prompt)
    conn.send((gen.path, ids, gen.tokenizer.add_bos))
    # one KV cache for every run, as llama.cpp allocates its own with the context: a new
    # one per run would time the zeroing of its pages inside the prompt
    state = {"cache": gen.model.new_cache(512)}

    def reset():
        for a in (*state["cache"].k, *state["cache"].v):
            a.fill(0)
        state["cache"].n_past = 0

    def prompt_eval(ids):
        state["logits"] = gen.model.forward(ids, state["cache"])

    def step(tok):
        state["logits"] = gen.model.forward([tok], state["cache"])

    _serve(conn, reset, prompt_eval, lambda: state["logits"], step)


def _llama_cpp(conn, path: str, threads: int, prompt: str, add_bos: bool, ids: list[int]) -> None:
    """Engine process: llama.cpp at `threads` on the same file and prompt ids."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(path, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    conn.send(llm.tokenize(prompt.encode(), add_bos=add_bos, special=True) == ids)

    def prompt_eval(ids):
        llm.eval(ids)

    def next_logits():
        # the last token's logits straight from the context: llama-cpp-python >= 0.3
        # only copies them into `scores` with logits_all=True
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))

    _serve(conn, llm.reset, prompt_eval, next_logits, lambda tok: llm.eval([tok]))


def _serve(conn, reset, prompt_eval, next_logits, step) -> None:
    while (req := conn.recv()) is not None:
        conn.send(_timed_runs(reset, prompt_eval, next_logits, step, *req))


def _start(target, *args):
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    return proc, parent


def bench(model: str, threads: int, n: int, repeats: int, exact: bool, prompt: str,
          with_llama: bool) -> tuple[Speed, Speed | None, int]:
    """Both engines at `threads`, each in its own process, their runs interleaved (on a
    shared machine the load drifts between runs; interleaving gives both the same share
    of quiet moments)."""
    procs = [_start(_whisperlite, model, threads, exact, prompt)]
    path, ids, add_bos = procs[0][1].recv()
    if with_llama:
        procs.append(_start(_llama_cpp, path, threads, prompt, add_bos, ids))
        assert procs[1][1].recv(), "llama.cpp tokenizes the prompt differently"
    best = [Best() for _ in procs]
    for r in range(repeats + 1):  # the first runs also compile / warm caches
        for (_, conn), b in zip(procs, best):
            time.sleep(PAUSE)
            conn.send((ids, n))
            run = conn.recv()
            if r:
                b.add(run)
    for proc, conn in procs:
        conn.send(None)
        proc.join()
    return best[0].speed(), best[1].speed() if with_llama else None, len(ids)


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
        with_llama = False
    else:  # which build the ratios are against (AVX-512 / AMX / BLAS change its speed)
        with_llama = True
        print(f"llama-cpp-python {llama_cpp.__version__}: {llama_cpp.llama_print_system_info().decode().strip()}")
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{'tokens':>6} {'threads':>7} {'engine':>12} {'prompt tok/s':>13} {'prompt cpu ms':>14} {'main ms':>8} "
          f"{'gen tok/s':>10} {'gen cpu ms':>11} {'ratio prompt':>13} {'ratio p cpu':>12} {'ratio gen':>10} "
          f"{'ratio g cpu':>12} {'same tokens':>12}")
    scaling = []
    for copies in args.copies:
        rows = {}
        for t in args.threads:
            ours, ref, n_prompt = bench(args.model, t, args.n, args.repeats, not args.float_activations,
                                        " ".join([PROMPT] * copies), with_llama)
            rows[t] = (ours, ref)
            print(f"{n_prompt:>6} {t:>7} {'whisperlite':>12} {ours.prompt_tps:13.1f} {ours.prompt_cpu_ms:14.1f} "
                  f"{ours.prompt_main_ms:8.1f} {ours.gen_tps:10.1f} {ours.gen_cpu_ms:11.2f}")
            if ref is None:
                print(f"{n_prompt:>6} {t:>7} {'llama.cpp':>12} {'(llama-cpp-python not installed)':>24}")
                continue
            print(f"{n_prompt:>6} {t:>7} {'llama.cpp':>12} {ref.prompt_tps:13.1f} {ref.prompt_cpu_ms:14.1f} "
                  f"{ref.prompt_main_ms:8.1f} {ref.gen_tps:10.1f} {ref.gen_cpu_ms:11.2f} "
                  f"{ours.prompt_tps / ref.prompt_tps:13.2f} {ref.prompt_cpu_ms / ours.prompt_cpu_ms:12.2f} "
                  f"{ours.gen_tps / ref.gen_tps:10.2f} {ref.gen_cpu_ms / ours.gen_cpu_ms:12.2f} "
                  f"{str(ours.tokens == ref.tokens):>12}")
        t0 = args.threads[0]
        for t in args.threads[1:]:
            for i, engine in enumerate(("whisperlite", "llama.cpp")):
                a, b = rows[t0][i], rows[t][i]
                if a is not None:
                    scaling.append(f"{n_prompt:>6} {engine:>12} {t} threads / {t0}: prompt "
                                   f"{b.prompt_tps / a.prompt_tps:.2f}, generation {b.gen_tps / a.gen_tps:.2f}")
    print("\n".join(scaling))


if __name__ == "__main__":
    main()
