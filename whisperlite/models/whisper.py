"""Whisper: encoder + decoder on the shared kernels (see whisper_encoder / whisper_decoder)."""
from __future__ import annotations

from whisperlite.formats.checkpoint import WhisperCheckpoint
from whisperlite.models.whisper_decoder import KVCache, TextDecoder
from whisperlite.models.whisper_encoder import AudioEncoder

__all__ = ["AudioEncoder", "KVCache", "TextDecoder", "Whisper"]


class Whisper:
    """Encoder + decoder for one checkpoint (weights are shared, not copied, where possible)."""

    def __init__(self, ckpt: WhisperCheckpoint):
        self.dims = ckpt.dims
        self.encoder = AudioEncoder(ckpt)
        self.decoder = TextDecoder(ckpt)
        self.alignment_heads = ckpt.alignment_heads
