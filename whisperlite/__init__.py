"""whisperlite: CPU-first Whisper transcription and GGUF text generation on numpy + numba.

The names below load on first use, so `import whisperlite` (and the CLI's `--help`) stays
cheap: the model code and numba load with `load_model` or `WhisperModel`.
"""
from whisperlite.core import env as _env  # noqa: F401  (thread and cache settings before numba loads)

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "whisperlite.transcription.transcribe",
    "WhisperModel": "whisperlite.transcription.transcribe",
    "BatchedInferencePipeline": "whisperlite.transcription.transcribe",
    "available_models": "whisperlite.transcription.transcribe",
    "download_model": "whisperlite.transcription.transcribe",
    "decode_audio": "whisperlite.audio.ffmpeg",
    "audio_url": "whisperlite.audio.ffmpeg",
    "VadOptions": "whisperlite.transcription.options",
    "Segment": "whisperlite.transcription.results",
    "Word": "whisperlite.transcription.results",
    "TranscriptionInfo": "whisperlite.transcription.results",
    "TranscribeOptions": "whisperlite.transcription.options",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'whisperlite' has no attribute {name!r}")
