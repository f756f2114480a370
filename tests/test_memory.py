"""Resident memory of a loaded model, measured in a fresh process (Linux /proc)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")

# Run in a child: the test process has other models and buffers resident.
_CHILD = r"""
import json, sys
import whisperlite
from whisperlite.audio import load_audio

def model_file_mb():
    # resident pages of the mapped model file (model.bin), from this process's smaps
    mb, inside = 0.0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith("model.bin")
        elif inside and first == "Rss:":
            mb += int(line.split()[1]) / 1024
    return mb

m = whisperlite.load_model("tiny.en", threads=2)
loaded = model_file_mb()
segments, _ = m.transcribe(load_audio(sys.argv[1]), beam_size=1, vad=False, word_timestamps=False)
text = " ".join(s.text for s in segments)
print(json.dumps({"loaded": loaded, "transcribed": model_file_mb(), "text": text}))
"""


def test_model_file_pages_are_not_kept_resident():
    """tiny.en's model.bin is 75 MB; once the model is built, only the float16 decoder
    matrices read in place (about 13 MB) come back as they are used."""
    out = subprocess.run([sys.executable, "-c", _CHILD, str(FIXTURES / "jfk.wav")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.splitlines()[-1])
    assert "ask not what your country can do for you" in r["text"]
    assert r["loaded"] < 5
    assert r["transcribed"] < 20
