import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation: what 'no word errors' is judged on."""
    keep = "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text)
    return keep.split()


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real CLI in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "whisperlite", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model():
    import whisperlite

    return whisperlite.load_model("tiny.en", threads=2)


@pytest.fixture(scope="session")
def jfk_audio() -> np.ndarray:
    from whisperlite.audio import load_audio

    return load_audio(str(FIXTURES / "jfk.wav"))
