"""The kernel, model and format tests again with numba's bounds checks on: an out-of-bounds
index then raises IndexError and fails a test, where the normal build would read or write
past an array (the memory a hostile model file would aim at). A child pytest, because the
checks are compiled in: a cache of its own keeps those builds apart from the normal ones."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

CHECKED = ["tests/test_llama.py", "tests/test_llama_kernels.py", "tests/test_fuzz_formats.py", "tests/test_quant.py"]


@pytest.mark.slow
def test_kernels_and_formats_pass_with_bounds_checks(tmp_path):
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not slow", *CHECKED],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"\d+ passed", r.stdout), r.stdout[-3000:]
