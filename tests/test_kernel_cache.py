"""numba's cache directory is keyed on the kernel sources (core/env.py): numba checks only
the timestamp of the file defining each compiled function, so an edit to llvm_ir.py (whose
IR gemv.py and rowdots.py compile) must move every kernel to a fresh directory."""
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

import whisperlite

PACKAGE = Path(whisperlite.__file__).parent


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the package's sources and its core/env.py loaded from there, with no
    NUMBA_CACHE_DIR set: (package root, a function that loads env.py afresh)."""
    root = tmp_path / "whisperlite"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("WHISPERLITE_CACHE", str(tmp_path / "cache"))

    def load_env():
        monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
        spec = importlib.util.spec_from_file_location("env_copy", root / "core" / "env.py")
        env = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(env)
        return env

    return root, load_env


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_cache_directory_follows_the_kernel_sources(package_copy, tmp_path):
    root, load_env = package_copy
    env = load_env()
    first = os.environ["NUMBA_CACHE_DIR"]
    assert first == str(tmp_path / "cache" / "numba" / env.kernel_digest())
    assert load_env().kernel_digest() == env.kernel_digest()  # stable for the same sources

    _append(root / "cli" / "main.py", "\n# no kernel here\n")
    load_env()
    assert os.environ["NUMBA_CACHE_DIR"] == first  # an edit outside the kernels keeps the cache

    seen = {first}
    for edited in ("kernels/llvm_ir.py", "kernels/quant.py", "models/whisper_step.py", "transcription/logits.py"):
        _append(root / edited, "\n# edited\n")
        load_env()
        assert os.environ["NUMBA_CACHE_DIR"] not in seen, edited
        seen.add(os.environ["NUMBA_CACHE_DIR"])

    (root / "audio" / "new_kernel.py").write_text("import numba\n")  # any module numba compiles
    load_env()
    assert os.environ["NUMBA_CACHE_DIR"] not in seen


def test_a_chosen_numba_cache_directory_is_kept(package_copy, tmp_path, monkeypatch):
    _, load_env = package_copy
    load_env()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    spec = importlib.util.spec_from_file_location("env_copy2", PACKAGE / "core" / "env.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")
