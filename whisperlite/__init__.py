"""whisperlite: CPU-first Whisper transcription and GGUF text generation on numpy + numba."""
from whisperlite.core import env as _env  # noqa: F401  (thread and cache settings before numba loads)

__version__ = "0.1.0"

from whisperlite.registry.loader import load_model  # noqa: E402
from whisperlite.transcription.transcribe import Segment, TranscribeOptions, TranscriptionInfo, WhisperModel  # noqa: E402

__all__ = ["load_model", "WhisperModel", "Segment", "TranscribeOptions", "TranscriptionInfo", "__version__"]
