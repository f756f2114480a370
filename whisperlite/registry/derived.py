"""Quantized Whisper checkpoints as whisper.cpp's `quantize` makes them, and the derived
model names (`tiny.en-q5_0`, …) built once from the embedded default model and cached."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gguf import GGMLQuantizationType as QType

from whisperlite.formats.checkpoint import WhisperCheckpoint
from whisperlite.formats.ggml import (
    FTYPES,
    as_file_weight,
    parse_ftype,
    tensor_type,
    write_ggml,
)
from whisperlite.registry.embedded import DERIVED_NAMES, derived_path, embedded_model_dir
from whisperlite.transcription.options import DEFAULT_MODEL

# Notices for the user (the CLI shows them on stderr; elsewhere logging's default does).
log = logging.getLogger("whisperlite")

def _ftype_name(qtype: str | QType) -> str:
    if isinstance(qtype, QType):
        for name, (_, wtype) in FTYPES.items():
            if wtype == qtype:
                return name
        qtype = qtype.name
    parse_ftype(qtype)  # raises, listing the choices, on an unknown name
    return qtype.lower()


def quantize_checkpoint(ckpt: WhisperCheckpoint, qtype: str | QType) -> WhisperCheckpoint:
    """`ckpt` with every tensor in the type a whisper.cpp file of `qtype` gives it: 2-D
    matrices (token embedding included) quantized, conv kernels f16, 1-D tensors, conv
    biases and positional embeddings f32. Blocks are bit-identical to whisper.cpp's."""
    name = _ftype_name(qtype)
    wtype = FTYPES[name][1]
    weights = {k: as_file_weight(w, tensor_type(k, len(w.shape), wtype)) for k, w in ckpt.weights.items()}
    return dataclasses.replace(ckpt, weights=weights, extra={**ckpt.extra, "ftype": name})


def resolve_derived(name: str) -> Path | None:
    """Path of the cached ggml file for a derived name such as 'tiny.en-q5_0', made from the
    default model on first use; None for names that are not derived models."""
    if name not in DERIVED_NAMES:
        return None
    path = derived_path(name)
    if not path.is_file():
        from whisperlite.formats.ct2 import load_ct2

        qtype = name.rsplit("-", 1)[1]
        log.warning("whisperlite: making %s from %s (once) -> %s", name, DEFAULT_MODEL, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write_ggml is atomic, so a killed run leaves no half file to be mistaken for a model
        write_ggml(quantize_checkpoint(load_ct2(embedded_model_dir()), qtype), path, qtype)
    return path
