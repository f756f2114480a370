"""The in-memory Whisper checkpoint every format reader produces and every writer consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from whisperlite.kernels import Weight


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
    """

    dims: WhisperDims
    weights: dict[str, Weight]
    token_bytes: list[bytes] | None = None
    tokenizer_json: str | None = None
    alignment_heads: np.ndarray | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)
