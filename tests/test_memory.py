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
from whisperlite.audio.ffmpeg import load_audio

def resident_mb():
    # resident pages of each mapped file of interest, from this process's smaps
    mb, name = {"model.bin": 0.0, "libllvmlite.so": 0.0}, None
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            name = next((n for n in mb if line.rstrip().endswith(n)), None)
        elif name and first == "Rss:":
            mb[name] += int(line.split()[1]) / 1024
    return mb

m = whisperlite.load_model("tiny.en", threads=2)
loaded = resident_mb()
segments, _ = m.transcribe(load_audio(sys.argv[1]), beam_size=1, vad=False, word_timestamps=False)
text = " ".join(s.text for s in segments)
print(json.dumps({"loaded": loaded, "transcribed": resident_mb(), "text": text}))
"""


@pytest.fixture(scope="module")
def resident():
    """Resident MB of model.bin and libllvmlite.so after load_model and after a transcription."""
    for _ in range(2):  # the first run compiles any kernel numba's cache lacks, in LLVM
        out = subprocess.run([sys.executable, "-c", _CHILD, str(FIXTURES / "jfk.wav")], check=False,
                             capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.splitlines()[-1])
    assert "ask not what your country can do for you" in r["text"]
    return r


@pytest.mark.slow
def test_model_file_pages_are_not_kept_resident(resident):
    """tiny.en's model.bin is 75 MB; once the model is built, only the float16 matrices read
    in place come back as they are used: the decoder's (about 13 MB) and the encoder's
    (about 11 MB; it converts one layer at a time per window, where a float32 copy of all
    of them took 28 MB)."""
    assert resident["loaded"]["model.bin"] < 5
    assert resident["transcribed"]["model.bin"] < 30


def test_compiler_code_is_not_kept_resident(resident):
    """numba runs ~70 MB of LLVM's code to load the kernels; decoding does not need it."""
    assert resident["loaded"]["libllvmlite.so"] < 10
    assert resident["transcribed"]["libllvmlite.so"] < 30
