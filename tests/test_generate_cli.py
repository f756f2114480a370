"""`generate` checks its numbers before loading anything, as `transcribe` does, and -n 0 generates nothing."""
import pytest

from conftest import run_cli
from llama_tiny import write_tiny_llama


@pytest.mark.parametrize("args,message", [
    (("-t", "0"), "'-t' / '--threads': 0 is not in the range 1<=x<=256"),
    (("-t", "-3"), "'-t' / '--threads': -3 is not in the range 1<=x<=256"),
    (("--top-p", "nan"), "'--top-p': nan is not a finite number"),
    (("--top-p", "1.5"), "'--top-p': 1.5 is not in the range 0.0<=x<=1.0"),
    (("--temp", "-1"), "'--temp': -1.0 is not in the range x>=0.0"),
    (("--temp", "inf"), "'--temp': inf is not a finite number"),
    (("-c", "-5"), "'-c' / '--ctx-size': -5 is not in the range x>=0"),
    (("-n", "-2"), "'-n' / '--n-predict': -2 is not in the range x>=-1"),
    (("--repeat-penalty", "0"), "'--repeat-penalty': 0.0 is not in the range x>0.0"),
])
def test_bad_numbers_are_one_line_errors(tmp_path, args, message):
    # the model named does not exist: the numbers are checked first
    r = run_cli("generate", "-m", str(tmp_path / "none.gguf"), "-p", "hi", *args, timeout=120)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"error: Invalid value for {message}."]


@pytest.mark.slow
def test_zero_tokens_asked_for_emits_nothing(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path)
    r = run_cli("generate", "-m", str(path), "-p", "hi", "-n", "0", "--no-display-prompt", timeout=600)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    r = run_cli("generate", "-m", str(path), "-p", "hi", "-n", "0", timeout=600)
    assert r.returncode == 0 and r.stdout == "hi\n", r.stderr
    r = run_cli("generate", "-m", str(path), "-p", "hi", "-n", "0", "--chat", timeout=600)
    assert r.returncode == 0 and r.stdout == "\n", r.stderr
