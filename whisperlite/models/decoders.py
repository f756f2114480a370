"""The text decoders by GGUF architecture: one entry point for `generate` and the server."""
from __future__ import annotations

from typing import Union

from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.gguf import GGUFModel
from whisperlite.kernels.ggml_order import GgmlArith
from whisperlite.models import gemma3, llama
from whisperlite.models.gemma3 import Gemma3
from whisperlite.models.llama import Llama

Decoder = Union[Llama, Gemma3]
DECODERS = {**{a: Llama for a in llama.SUPPORTED_ARCHS}, **{a: Gemma3 for a in gemma3.SUPPORTED_ARCHS}}


def build_decoder(gguf: GGUFModel, ggml_exact: bool = True, arith: GgmlArith | None = None) -> Decoder:
    """The decoder for the file's `general.architecture`; ModelFormatError for any other."""
    cls = DECODERS.get(gguf.architecture)
    if cls is None:
        raise ModelFormatError(f"{gguf.path}: unsupported architecture {gguf.architecture or '(none)'!r} "
                               f"(supported: {', '.join(DECODERS)})")
    return cls(gguf, ggml_exact=ggml_exact, arith=arith)
