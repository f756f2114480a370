#!/usr/bin/env python
"""Encoder time per 30-s window, decoder time per token and peak RSS per Whisper size and
weight type: whisperlite against whisper.cpp on the same ggml files (issue 23).

The files hold random weights with each size's exact hyperparameters (speed does not depend
on the values): matrices N(0, 0.02), layer norms 1, biases 0, written by whisperlite's ggml
writer as f16 and re-quantized from those same float16 values to q8_0 / q5_0.
Each engine runs in its own process per round (peak RSS is that process's ru_maxrss), the
rounds interleave the engines (whisperlite, whisper.cpp, whisperlite, …), and every figure
is the best over rounds (and over the `--reps` windows/passes inside a process).

whisperlite (load_whisper, compute type auto, as a transcription runs): "encoder" is the
encoder on a random log-mel window plus the window's cross-attention keys/values (whisper.cpp
computes those inside its encode), shown apart as "cross"; "per token" is the mean of
`--tokens` greedy steps after a 4-token prompt (sot, language, task, no-timestamps), with no
sampling in the timed part. whisper.cpp (pywhispercpp, its default flash attention, greedy,
no temperature fallback, no timestamps, `max_tokens=--tokens`) on 30 s of low noise: its
whisper_print_timings "encode" per run and "decode" per run (single-token steps, the same
context lengths). "bound" is the bytes a whisperlite step reads (weights, cross keys/values,
cache) over the machine's memory bandwidth (scripts/bench_decode_step.py).

    python scripts/bench_sizes.py --sizes tiny base --types f16 q8_0 q5_0 --dir /tmp/wl-sizes
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# openai/whisper's ModelDimensions per size (multilingual; large-v3 and its turbo: 128 mel
# bins and one more language token; turbo keeps large-v3's encoder with 4 decoder layers).
_COMMON = {"n_audio_ctx": 1500, "n_text_ctx": 448}
# name: (n_mels, n_vocab, n_audio_state, n_audio_head, n_audio_layer, n_text_layer)
_SHAPES = {
    "tiny": (80, 51865, 384, 6, 4, 4),
    "base": (80, 51865, 512, 8, 6, 6),
    "small": (80, 51865, 768, 12, 12, 12),
    "medium": (80, 51865, 1024, 16, 24, 24),
    "large-v3-turbo": (128, 51866, 1280, 20, 32, 4),
    "large-v3": (128, 51866, 1280, 20, 32, 32),
}
_FIELDS = ("n_mels", "n_vocab", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_layer")
SIZES = {name: dict(zip(_FIELDS, shape)) for name, shape in _SHAPES.items()}
TYPES = ("f16", "q8_0", "q5_0")
WEIGHT_STD = 0.02  # GPT-2-style initialisation: activations stay finite through 32 layers


def dims_for(size: str):
    """WhisperDims of `size` (text state and heads equal the audio ones in every Whisper)."""
    from whisperlite.formats.checkpoint import WhisperDims

    s = SIZES[size]
    return WhisperDims(n_text_state=s["n_audio_state"], n_text_head=s["n_audio_head"], **_COMMON, **s)


def random_checkpoint(dims, token_bytes: list[bytes], seed: int = 0):
    """A WhisperCheckpoint of `dims` with random weights: 2-D matrices float16 QTensors
    N(0, WEIGHT_STD) (held as a ggml f16 file holds them), layer-norm gains 1, biases 0,
    convolution kernels and positional embeddings float32 N(0, WEIGHT_STD)."""
    from gguf import GGMLQuantizationType as QType

    from whisperlite.audio.mel import mel_filters
    from whisperlite.formats.checkpoint import WhisperCheckpoint, preset_alignment_heads
    from whisperlite.formats.ggml import expected_shapes
    from whisperlite.kernels.tensor import QTensor

    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(dims).items():
        if len(shape) == 1:
            fill = 1.0 if name.endswith(("ln.weight", "ln_post.weight")) else 0.0
            weights[name] = np.full(shape, fill, np.float32)
            continue
        w = rng.standard_normal(shape, dtype=np.float32)
        w *= WEIGHT_STD
        if len(shape) == 2 and "positional" not in name:
            weights[name] = QTensor(QType.F16, shape, w.astype(np.float16))
        else:
            weights[name] = w
    return WhisperCheckpoint(dims=dims, weights=weights, token_bytes=token_bytes, source=f"random-{seed}",
                             alignment_heads=preset_alignment_heads(dims),
                             extra={"mel_filters": mel_filters(dims.n_mels)})


def model_files(size: str, types: list[str], folder: Path) -> dict[str, Path]:
    """ggml files of `size` per type in `folder`, written (random weights) where missing."""
    paths = {t: folder / f"ggml-random-{size}-{t}.bin" for t in types}
    missing = [t for t, p in paths.items() if not p.exists()]
    if missing:
        from whisperlite.formats.ggml import token_bytes_from_tokenizer_json, write_ggml
        from whisperlite.registry.loader import read_checkpoint, resolve

        # the multilingual vocabulary's regular tokens (ids past them are the special tokens
        # n_vocab implies), from the pulled base model (`whisperlite models pull base`)
        base = read_checkpoint(resolve("base"))
        tokens = base.token_bytes or token_bytes_from_tokenizer_json(base.tokenizer_json)
        ckpt = random_checkpoint(dims_for(size), tokens)
        for t in missing:
            t0 = time.perf_counter()
            write_ggml(ckpt, paths[t], t)
            print(f"# wrote {paths[t]} ({paths[t].stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    return paths


# A child's ru_maxrss is at least its parent's resident size when it was spawned (Linux
# keeps the larger of the old and new address space's high-water mark across exec), and the
# parent holds GBs while writing files: each child reads its own address space's VmHWM.
PEAK_RSS = r"""
def peak_rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
"""

WHISPERLITE = r"""
import json, sys, time
{PEAK_RSS}import whisperlite.core.env  # noqa: F401  (numba cache dir before numba loads)
import numpy as np
from whisperlite.registry.loader import load_whisper
path, threads, reps, n_tokens, breakdown = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
t0 = time.perf_counter()
model, tok, _ = load_whisper(path, threads=threads)
load = time.perf_counter() - t0
d = model.dims
mel = np.random.default_rng(0).standard_normal((d.n_mels, 2 * d.n_audio_ctx)).astype(np.float32)
sp = tok.special
prompt = np.array([[sp.sot, sp.language_token("en"), sp.transcribe, sp.notimestamps]], np.int64)
token = np.array([[440]], np.int64)
best = {"encoder": 1e9, "cross": 1e9, "prompt": 1e9, "token": 1e9}
for _ in range(reps):
    t = time.perf_counter(); features = model.encoder(mel); enc = time.perf_counter() - t
    t = time.perf_counter(); cache = model.decoder.new_cache(features, 1); cross = time.perf_counter() - t
    t = time.perf_counter(); model.decoder(prompt, cache); pr = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(n_tokens):
        logits = model.decoder(token, cache)[0]
    step = (time.perf_counter() - t) / n_tokens
    if not (np.isfinite(features).all() and np.isfinite(logits).all()):
        sys.exit("non-finite encoder output or logits: the random weights' scale is off")
    for k, v in (("encoder", enc), ("cross", cross), ("prompt", pr), ("token", step)):
        best[k] = min(best[k], v)
stages = {}
if breakdown:  # CPU seconds per encoder stage of one more window (scripts/bench_encoder.py)
    sys.path.insert(0, sys.argv[6])
    from bench_encoder import breakdown as encoder_breakdown
    stages = encoder_breakdown(model.encoder, mel, 1)
rss = peak_rss_mb()
print("RESULT " + json.dumps({"load": load, **best, "rss_mb": rss, "stages": stages}))
""".replace("{PEAK_RSS}", PEAK_RSS)

WHISPER_CPP = r"""
import json, sys, time
{PEAK_RSS}import numpy as np
import _pywhispercpp as pw
from pywhispercpp.model import Model
path, threads, reps, n_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
m = Model(path, n_threads=threads, print_realtime=False, print_progress=False, language="en", no_timestamps=True,
          temperature_inc=0.0, max_tokens=n_tokens)
load = time.perf_counter() - t0
audio = (0.01 * np.random.default_rng(0).standard_normal(30 * 16000)).astype(np.float32)
for _ in range(reps):
    pw.whisper_reset_timings(m._ctx)
    m.transcribe(audio)
    sys.stderr.flush()
    m.print_timings()  # whisper_print_timings on stderr, one block per pass, parsed by the parent
rss = peak_rss_mb()
print("RESULT " + json.dumps({"load": load, "rss_mb": rss}))
""".replace("{PEAK_RSS}", PEAK_RSS)

# "whisper_print_timings:   encode time =  1234.56 ms /     1 runs ( 1234.56 ms per run)"
TIMING = re.compile(r"whisper_print_timings:\s+(\w+) time =\s+([\d.]+) ms /\s+(\d+) runs")


def child(code: str, *args: str) -> tuple[dict, str]:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:]), p.stderr
    raise RuntimeError(f"child failed ({p.returncode}): {p.stderr[-3000:]}")


def run_whisperlite(path: Path, threads: int, reps: int, tokens: int, breakdown: bool) -> dict:
    r, _ = child(WHISPERLITE, str(path), str(threads), str(reps), str(tokens), "1" if breakdown else "0",
                 str(ROOT / "scripts"))
    return r


def run_whisper_cpp(path: Path, threads: int, reps: int, tokens: int) -> dict:
    r, err = child(WHISPER_CPP, str(path), str(threads), str(reps), str(tokens))
    passes: list[dict] = []
    for m in TIMING.finditer(err):
        name, ms, runs = m.group(1), float(m.group(2)), int(m.group(3))
        if name == "encode":
            passes.append({})
        if passes and runs:
            passes[-1][name] = (ms / 1e3, runs)
    enc = [p["encode"][0] / p["encode"][1] for p in passes if "encode" in p]
    dec = [p["decode"][0] / p["decode"][1] for p in passes if "decode" in p]
    if not enc or not dec:
        raise RuntimeError(f"whisper.cpp printed no encode/decode timings: {err[-2000:]}")
    r.update(encoder=min(enc), token=min(dec))
    return r


def bandwidth() -> float:
    """Bytes per second of a 256 MB numpy copy (read + write), best of 5."""
    a = np.ones(64 << 20, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best


def step_megabytes(path: Path, tokens: int) -> float:
    """MB a whisperlite step reads on this file (compute type auto) at the middle context."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_decode_step

    from whisperlite.models.whisper_decoder import TextDecoder
    from whisperlite.registry.loader import apply_compute_type, read_checkpoint

    bench_decode_step.CONTEXT = 4 + tokens // 2
    dec = TextDecoder(apply_compute_type(read_checkpoint(path), "auto"))
    return bench_decode_step.step_bytes(dec, 1) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="processes per engine, interleaved")
    ap.add_argument("--reps", type=int, default=2, help="windows / token passes per process")
    ap.add_argument("--tokens", type=int, default=48, help="greedy steps per pass")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/wl-sizes"), help="where the model files go (GBs)")
    ap.add_argument("--breakdown", action="store_true", help="whisperlite's encoder CPU time per stage")
    ap.add_argument("--keep", action="store_true", help="keep each size's files after measuring it")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    bw = bandwidth()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} · {platform.machine()} · {os.cpu_count()} cores · "
          f"{args.threads} threads · memory bandwidth {bw / 1e9:.1f} GB/s · `python {' '.join(sys.argv)}`\n", flush=True)
    print("| size | type | file GB | encoder s: whisperlite (cross) | whisper.cpp | × | ms/token: whisperlite | "
          "whisper.cpp | × | MB/step, bound ms | peak RSS MB: whisperlite | whisper.cpp | × |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    breakdowns = []
    warm: set[str] = set()
    for size in args.sizes:
        files = model_files(size, args.types, args.dir)
        for wtype, path in files.items():
            if wtype not in warm:  # numba's compile (memory, time) outside the measured processes
                run_whisperlite(path, args.threads, 0, args.tokens, False)
                warm.add(wtype)
            wl: dict = {}
            cpp: dict = {}
            for r in range(args.rounds):
                last = r == args.rounds - 1
                a = run_whisperlite(path, args.threads, args.reps, args.tokens, args.breakdown and last)
                b = run_whisper_cpp(path, args.threads, args.reps, args.tokens)
                for best, new in ((wl, a), (cpp, b)):
                    for k, v in new.items():
                        if isinstance(v, float):
                            best[k] = min(best.get(k, v), v)
                if a["stages"]:
                    breakdowns.append((size, wtype, a["stages"]))
            mb = step_megabytes(path, args.tokens)
            enc_wl = wl["encoder"] + wl["cross"]
            print(f"| {size} | {wtype} | {path.stat().st_size / 1e9:.2f} | {enc_wl:.2f} ({wl['cross']:.2f}) | "
                  f"{cpp['encoder']:.2f} | {enc_wl / cpp['encoder']:.2f} | {wl['token'] * 1e3:.1f} | "
                  f"{cpp['token'] * 1e3:.1f} | {wl['token'] / cpp['token']:.2f} | {mb:.0f}, {mb * 1e6 / bw * 1e3:.1f} | "
                  f"{wl['rss_mb']:.0f} | {cpp['rss_mb']:.0f} | {wl['rss_mb'] / cpp['rss_mb']:.2f} |", flush=True)
        if not args.keep:
            for path in files.values():
                path.unlink()
    if breakdowns:
        cols = ("conv", "qkv", "out", "fc1", "fc2", "QK^T", "softmax", "PV", "elementwise", "rest", "total")
        print("\nwhisperlite encoder, CPU s per stage (one window, both threads summed):\n")
        print("| size | type | " + " | ".join(cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for size, wtype, st in breakdowns:
            print(f"| {size} | {wtype} | " + " | ".join(f"{st.get(c, 0.0):.2f}" for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
