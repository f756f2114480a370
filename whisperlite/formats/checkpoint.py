"""The in-memory Whisper checkpoint every format reader produces and every writer consumes."""
from __future__ import annotations

import mmap
from dataclasses import dataclass, field

import numpy as np

from whisperlite.kernels import Weight
from whisperlite.kernels.tensor import readonly


@dataclass(frozen=True)
class WhisperDims:
    """Hyperparameters, named as openai/whisper's ModelDimensions and whisper.cpp's hparams."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def is_multilingual(self) -> bool:
        # English-only vocabularies have 51864 entries; multilingual ones 51865 or more.
        return self.n_vocab >= 51865


# Cross-attention heads that follow the audio position of the token being predicted, as
# [text layer, head]. whisper.cpp's ggml files do not store them, so whisper.cpp keeps this
# per-model table (its `g_aheads_*`, the same values openai-whisper ships as _ALIGNMENT_HEADS
# and CTranslate2 stores in config.json). Keyed by (n_text_layer, n_text_state, multilingual,
# n_mels): the hyperparameters tell the model sizes apart, and 128 mel bins mark large-v3.
_ALIGNMENT_HEADS: dict[tuple[int, int, bool, int], list[tuple[int, int]]] = {
    (4, 384, False, 80): [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)],  # tiny.en
    (4, 384, True, 80): [(2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)],  # tiny
    (6, 512, False, 80): [(3, 3), (4, 7), (5, 1), (5, 5), (5, 7)],  # base.en
    (6, 512, True, 80): [(3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)],  # base
    (12, 768, False, 80): [(6, 6), (7, 0), (7, 3), (7, 8), (8, 2), (8, 5), (8, 7), (9, 0), (9, 4), (9, 8),
                           (9, 10), (10, 0), (10, 1), (10, 2), (10, 3), (10, 6), (10, 11), (11, 2),
                           (11, 4)],  # small.en
    (12, 768, True, 80): [(5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9),
                          (10, 5)],  # small
    (24, 1024, False, 80): [(11, 4), (14, 1), (14, 12), (14, 14), (15, 4), (16, 0), (16, 4), (16, 9),
                            (17, 12), (17, 14), (18, 7), (18, 10), (18, 15), (20, 0), (20, 3), (20, 9),
                            (20, 14), (21, 12)],  # medium.en
    (24, 1024, True, 80): [(13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)],  # medium
    (32, 1280, True, 128): [(7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4),
                            (24, 1), (25, 6)],  # large-v3
    (4, 1280, True, 128): [(2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)],  # large-v3-turbo
    # large-v1 and large-v2 share every hyperparameter but not their heads: no entry, so
    # they take the generic choice (all heads of the upper decoder half).
}


def preset_alignment_heads(dims: WhisperDims) -> np.ndarray | None:
    """The published alignment heads (k, 2) for the model these dims describe, or None."""
    heads = _ALIGNMENT_HEADS.get((dims.n_text_layer, dims.n_text_state, dims.is_multilingual, dims.n_mels))
    return None if heads is None else np.asarray(heads, dtype=np.int64)


@dataclass
class WhisperCheckpoint:
    """Weights keyed by openai-whisper state-dict names with PyTorch shapes, e.g.
    `encoder.conv1.weight` (n_state, n_mels, 3), `encoder.conv1.bias` (n_state,),
    `encoder.blocks.0.attn.query.weight` (n_state, n_state), `decoder.token_embedding.weight`
    (n_vocab, n_state), `encoder.positional_embedding` (n_audio_ctx, n_state).
    2-D matrices may be `QTensor`s; everything else is a float32 ndarray.

    `token_bytes[i]` is the byte string of regular token i (0 … eot-1); special tokens are
    implied by n_vocab as in whisper.cpp. `tokenizer_json` is a path to a HF tokenizer.json
    when the source had one. `alignment_heads` is (k, 2) [layer, head] or None.
    `mapping` is the memory map the weights view, when the reader mapped the file.
    """

    dims: WhisperDims
    weights: dict[str, Weight]
    token_bytes: list[bytes] | None = None
    tokenizer_json: str | None = None
    alignment_heads: np.ndarray | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)
    mapping: mmap.mmap | None = None

    def __post_init__(self) -> None:
        # Float weights read-only whatever the format, as a QTensor's blocks are: a ggml
        # file's are (mapped), a CTranslate2 model's were not, and numba compiles a kernel
        # once per array mutability (the whole decoder step again, ~50 s, for the second).
        self.weights = {k: readonly(v) if isinstance(v, np.ndarray) else v for k, v in self.weights.items()}

    def release_mapped_pages(self) -> None:
        """Take the mapped file's pages out of this process's resident memory.

        A built model has read most of them once and holds its own copy (the encoder's
        float32, a quantized embedding, fused rows); still counted in the resident set they
        doubled those weights' share of it. Weights used in place fault their pages back in
        from the page cache as they are read, so this is safe at any time: builders call it
        after each piece they copy (a layer's fused rows, a slice of the embedding), so that
        at most one piece's sources are resident beside the copies.
        """
        if self.mapping is not None:
            release_range(self.mapping, 0, len(self.mapping))


def release_range(mapping: mmap.mmap, start: int, stop: int) -> None:
    """Drop the pages of bytes [start, stop) of a read-only file mapping from the resident
    set: reading them again faults them back in from the page cache. A page that also holds
    bytes outside the range (at most one at each end) is kept."""
    if not hasattr(mmap, "MADV_DONTNEED"):  # not on Windows
        return
    page = mmap.PAGESIZE
    first = -(-start // page) * page
    end = len(mapping) if stop >= len(mapping) else stop // page * page  # the file's last page is whole
    if end > first:
        mapping.madvise(mmap.MADV_DONTNEED, first, end - first)


def release_array(mapping: mmap.mmap | None, a: np.ndarray) -> None:
    """`release_range` for the bytes of `a` when it is a contiguous view on `mapping`;
    an array of its own (a copy, a converted weight) has no file pages to release."""
    if mapping is None or not a.flags.c_contiguous:
        return
    start = a.ctypes.data - np.frombuffer(mapping, np.uint8).ctypes.data
    if 0 <= start < len(mapping):
        release_range(mapping, start, start + a.nbytes)
