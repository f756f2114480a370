"""Imports cost what they use: help, version and the writers load neither numba, llvmlite nor
the models (numba alone takes most of a second to import)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = ("numba", "llvmlite", "whisperlite.models", "whisperlite.kernels")

PROBE = """
import json, runpy, sys
sys.argv = ["whisperlite", *json.loads(sys.argv[1])]
try:
    runpy.run_module("whisperlite", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*argv: str) -> set[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    return set(json.loads(r.stderr.strip().splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("argv", [("--help",), ("--version",), ("transcribe", "--help"), ("batch", "--help")])
def test_help_and_version_stay_light(argv):
    assert heavy(modules_after(*argv)) == []


def test_writers_stay_light():
    code = "import sys, whisperlite.output.writers; print(' '.join(sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert heavy(set(r.stdout.split())) == []


def test_the_probe_sees_heavy_imports():
    # the same probe on a command that loads the kernels (its help too) finds them
    assert "numba" in heavy(modules_after("quantize", "--help"))
