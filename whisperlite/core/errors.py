"""Named exceptions: every user-facing failure is one of these, so the CLI can print one line."""


class WhisperliteError(Exception):
    """Base class: the message is shown to the user as-is on one line."""


class AudioDecodeError(WhisperliteError):
    """Input could not be decoded to audio (missing, empty, not audio, no audio stream)."""


class ModelFormatError(WhisperliteError):
    """A model file is malformed: bad magic, truncated data, unknown tensor type."""


class ModelNotFoundError(WhisperliteError):
    """A model name or path does not resolve to a model."""


class OutputError(WhisperliteError):
    """An output file could not be written."""


class QuantizationError(WhisperliteError):
    """Values cannot be quantized (e.g. NaN or inf) or a type is unsupported."""
