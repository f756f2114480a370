"""The kernel, model and format tests again with numba's bounds checks on: an out-of-bounds
index then raises IndexError and fails a test, where the normal build would read or write
past an array (the memory a hostile model file would aim at). A child pytest, because the
checks are compiled in: a cache of its own keeps those builds apart from the normal ones.
It compiles every kernel again, so it runs in the background beside the session."""
import re
import sys
from pathlib import Path

import pytest

from conftest import Child

CHECKED = ["tests/test_llama.py", "tests/test_llama_kernels.py", "tests/test_fuzz_formats.py", "tests/test_quant.py"]


def background_children(workdir: Path) -> list[Child]:
    return [Child([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow", *CHECKED],
                  {"NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(workdir / "numba")})]


@pytest.mark.slow
@pytest.mark.background
def test_kernels_and_formats_pass_with_bounds_checks(background):
    (r,) = background.wait()
    assert r.returncode == 0, r.stdout[-5000:]
    assert re.search(r"\d+ passed", r.stdout), r.stdout[-3000:]
