"""SIGTERM, SIGHUP and Ctrl-C stop a run cleanly; what a SIGKILL leaves, the next run sweeps."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from whisperlite.audio.ffmpeg import ffmpeg_exe
from whisperlite.batch.index import INDEX_NAME, TRANSCRIPTS_DIR
from whisperlite.core.atomic import atomic_output
from whisperlite.registry.loader import _compile_step_elsewhere, resolve

JFK = FIXTURES / "jfk.wav"


@pytest.fixture(scope="module")
def jfk6(tmp_path_factory) -> Path:
    """Six JFK readings back to back (66 s): long enough to be stopped mid-run."""
    src = tmp_path_factory.mktemp("jfk6") / "long.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-stream_loop", "5", "-i", str(JFK), "-c", "copy", str(src)], check=True)
    return src


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI as a user starts it (SIGINT at its default, as in a terminal)."""
    return subprocess.Popen([sys.executable, "-m", "whisperlite", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _stop_after_first_segment(proc: subprocess.Popen, sig: int) -> tuple[str, str]:
    """Send `sig` once the run has printed its first segment; (stdout, stderr) after it exits."""
    first = proc.stdout.readline()
    assert first.startswith("["), first  # a segment line: the run is mid-transcription
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return first + out, err


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "error: terminated"),
                                             (signal.SIGHUP, 129, "error: hung up"),
                                             (signal.SIGINT, 130, "error: interrupted")])
def test_signal_mid_transcribe_exits_cleanly(tmp_path, jfk6, sig, code, line):
    out = tmp_path / "out"
    out.mkdir()
    (out / "long.srt").write_text("an earlier transcript\n")
    proc = _start("transcribe", str(jfk6), "-o", str(out), "-osrt", "-otxt", "-bs", "1", "-t", "1")
    stdout, stderr = _stop_after_first_segment(proc, sig)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == line and "Traceback" not in stderr
    assert stdout.count("\n") < 12  # stopped before the end of the 66 s (about 3 segments per reading)
    assert sorted(p.name for p in out.iterdir()) == ["long.srt"]  # no .tmp, no half output
    assert (out / "long.srt").read_text() == "an earlier transcript\n"


@pytest.mark.slow
def test_sigkill_leftovers_swept_by_next_run(tmp_path, jfk6):
    out = tmp_path / "out"
    out.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    proc = _start("transcribe", str(jfk6), "-o", str(out), "-otxt", "-bs", "1", "-t", "1")
    _stop_after_first_segment(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    # What a kill -9 during a write and during a -p part leaves, named by the killed process.
    dead = proc.pid
    (out / f".jfk.txt.{dead}.0123abcd.tmp").write_text("half a transcript")
    (tmpdir / f"whisperlite-part-{dead}-x1y2").mkdir()
    (tmpdir / f"whisperlite-part-{dead}-x1y2" / "part.wav").write_bytes(b"\0" * 1000)
    # ...and the same of a live process (this one), which must stay.
    live = [out / f".other.txt.{os.getpid()}.89abcdef.tmp", tmpdir / f"whisperlite-part-{os.getpid()}-a1b2"]
    live[0].write_text("being written")
    live[1].mkdir()

    rerun = subprocess.run([sys.executable, "-m", "whisperlite", "batch", str(JFK), "-o", str(out), "-otxt",
                            "-bs", "1", "-t", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "TMPDIR": str(tmpdir)})
    assert rerun.returncode == 0, rerun.stderr
    # The batch's search index and kept segments are its own outputs, not leftovers.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [live[0].name, "jfk.txt", "manifest.jsonl", INDEX_NAME, TRANSCRIPTS_DIR])
    assert [p.name for p in (out / TRANSCRIPTS_DIR).iterdir()] == ["jfk.json"]
    assert [p.name for p in tmpdir.iterdir()] == [live[1].name]


def test_atomic_output_removes_its_temp_file_when_interrupted(tmp_path):
    target = tmp_path / "a.srt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target, "w") as fh:
            fh.write("new, half")
            raise KeyboardInterrupt  # where a SIGTERM lands as the CLI's Terminated
    assert [p.name for p in tmp_path.iterdir()] == ["a.srt"] and target.read_text() == "old"


def test_compile_helper_exits_when_its_parent_does():
    """The helper holds a pipe from its parent: the parent's end closing (the kernel closes it
    when the parent dies, kill -9 included) ends the helper, instead of a compile for nobody."""
    helper = _compile_step_elsewhere(resolve("tiny.en"), "auto", 2)
    helper.stdin.close()  # as the parent's death does
    assert helper.wait(timeout=60) == 1  # its watchdog's exit; a finished compile exits 0


@pytest.mark.slow
def test_ctrl_c_during_first_compile_is_one_line(tmp_path):
    cache = tmp_path / "cache"
    proc = _start("transcribe", str(JFK), "-o", str(tmp_path), "-otxt", "-bs", "1",
                  env={"WHISPERLITE_CACHE": str(cache), "NUMBA_CACHE_DIR": str(cache / "numba")})
    notice = proc.stderr.readline()
    assert "compiling kernels" in notice
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["error: interrupted"]
