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


def _dispatchers(value, depth: int = 0):
    """numba dispatchers in value: itself, or (two levels deep) in a dict's values, a
    tuple or list, or a function's attributes (ops._dual's builds)."""
    from numba.core.dispatcher import Dispatcher

    if isinstance(value, Dispatcher):
        yield value
    elif depth < 2 and isinstance(value, dict):
        for v in value.values():
            yield from _dispatchers(v, depth + 1)
    elif depth < 2 and isinstance(value, (tuple, list)):
        for v in value:
            yield from _dispatchers(v, depth + 1)
    elif depth < 2 and callable(value) and hasattr(value, "__dict__"):
        for v in vars(value).values():
            yield from _dispatchers(v, depth + 1)


def test_no_two_builds_share_cache_files():
    """numba names a function's cache files by module, qualified name and first line and
    keys their entries without the compile options, so two builds of one function (a
    parallel and a serial one) load each other's code from the cache unless each is a
    copy of its own name (kernels/variants.py)."""
    import pkgutil

    owners: dict[tuple, list] = {}
    for info in pkgutil.walk_packages([str(PACKAGE)], "whisperlite."):
        if info.name.endswith("__main__"):  # runs the CLI
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # optional dependencies (the server's)
            continue
        for value in list(vars(module).values()):
            for d in _dispatchers(value):
                f = d.py_func
                owners.setdefault((f.__code__.co_filename, f.__qualname__, f.__code__.co_firstlineno), []).append(d)
    shared = {key: ds for key, ds in owners.items()
              if len({id(d) for d in ds}) > 1 and len({repr(sorted(d.targetoptions.items())) for d in ds}) > 1}
    assert not shared, sorted(key[1] for key in shared)
    assert sum(len(ds) for ds in owners.values()) > 100  # the walk found the kernels


def test_a_variant_does_not_load_another_variants_code(tmp_path, monkeypatch):
    import sys

    import numba

    from whisperlite.kernels.variants import njit_variant

    (tmp_path / "variant_mod.py").write_text(
        "from numba import prange\n\n\ndef body(x):\n    s = 0.0\n    for i in prange(x.shape[0]):\n"
        "        s += x[i]\n    return s\n")
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import numpy as np

    x = np.ones(8)
    mod = importlib.import_module("variant_mod")
    try:
        assert njit_variant(mod.body, "seq", cache=True)(x) == 8.0  # compiled and saved
        # a later process's builds: the serial one loads its own entry, the parallel
        # one finds none to load and compiles
        seq, par = njit_variant(mod.body, "seq", cache=True), njit_variant(mod.body, "par", parallel=True, cache=True)
        assert seq(x) == par(x) == 8.0
        assert sum(seq.stats.cache_hits.values()) == 1 and not seq.stats.cache_misses
        assert not par.stats.cache_hits and sum(par.stats.cache_misses.values()) == 1
    finally:
        sys.modules.pop("variant_mod", None)
