"""whisperlite: CPU-first Whisper transcription and GGUF text generation on numpy + numba."""
from whisperlite import _env  # noqa: F401  (thread and cache settings before numba loads)

__version__ = "0.1.0"

from whisperlite.loader import load_model  # noqa: E402
from whisperlite.transcribe import Segment, TranscribeOptions, TranscriptionInfo, WhisperModel  # noqa: E402

__all__ = ["load_model", "WhisperModel", "Segment", "TranscribeOptions", "TranscriptionInfo", "__version__"]
