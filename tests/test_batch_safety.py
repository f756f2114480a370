"""A batch never loses a transcript: clashing names, names that are not UTF-8, dead workers, Ctrl-C."""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, normalize, run_cli
from whisperlite.audio.ffmpeg import ffmpeg_exe
from whisperlite.batch.discover import discover
from whisperlite.batch.jobs import Job, WorkerConfig, run_in_processes
from whisperlite.batch.manifest import read_manifest, recorded_path
from whisperlite.transcription.options import DecodeOptions, OutputOptions, RunOptions, RuntimeOptions, TranscribeOptions

JFK = FIXTURES / "jfk.wav"
NOT_UTF8 = os.fsdecode(b"caf\xe9.wav")  # Latin-1 bytes, as an old Windows share names files


def test_output_names_never_clash(tmp_path):
    for name in ("a.wav", "a.mp3", "a.wav.mp3", "b.wav", "b.wav.mp3", "C.wav", "c.wav", NOT_UTF8):
        (tmp_path / name).write_bytes(b"x")
    rels = {os.path.basename(f.path): f.rel for f in discover([str(tmp_path)])}
    assert len({r.casefold() for r in rels.values()}) == len(rels) == 8
    assert rels["a.wav"] == "a.wav" and rels["a.mp3"] == "a.mp3" and rels["a.wav.mp3"] == "a.wav.mp3"
    assert rels["b.wav"] == "b" and rels["b.wav.mp3"] == "b.wav"  # no clash: stems as before
    assert {rels["C.wav"], rels["c.wav"]} == {"C.wav", "c.wav~2"}  # one name on a case-insensitive disk
    assert rels[NOT_UTF8] == os.fsdecode(b"caf\xe9")
    assert discover([str(tmp_path)]) == discover([str(tmp_path)])  # deterministic


@pytest.mark.slow
def test_clashing_and_non_utf8_names_all_written_and_resumed(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name, fixture in (("a.wav", "jfk.wav"), ("a.mp3", "jfk.mp3"), ("a.wav.mp3", "jfk.mp3"), (NOT_UTF8, "jfk.wav")):
        shutil.copy(FIXTURES / fixture, src / name)
    out = tmp_path / "out"
    args = ["batch", str(src), "-o", str(out), "-otxt", "-bs", "1", "-t", "2"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "4 done, 0 skipped, 0 failed" in first.stdout
    texts = sorted(p.name for p in out.glob("*.txt"))
    assert texts == sorted(["a.wav.txt", "a.mp3.txt", "a.wav.mp3.txt", os.fsdecode(b"caf\xe9.txt")])
    assert all(normalize(p.read_text())[:4] == ["and", "so", "my", "fellow"] for p in out.glob("*.txt"))
    records = read_manifest(str(out / "manifest.jsonl"))  # valid UTF-8 JSON lines, every one
    assert sorted(recorded_path(r) for r in records) == sorted(str(src / n) for n in ("a.wav", "a.mp3", "a.wav.mp3", NOT_UTF8))
    assert len({r["output_base"] for r in records}) == 4 and all(r["status"] == "done" for r in records)
    (odd,) = [r for r in records if "input_bytes" in r]
    assert odd["input"].endswith("caf\N{REPLACEMENT CHARACTER}.wav") and odd["outputs"] == ["caf\N{REPLACEMENT CHARACTER}.txt"]

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "0 done, 4 skipped, 0 failed" in again.stdout


def _greedy_config() -> WorkerConfig:
    return WorkerConfig(RunOptions(TranscribeOptions(decode=DecodeOptions(beam_size=1)), OutputOptions(("txt",)),
                                   RuntimeOptions(threads=1)))


def _kill_workers(stop: threading.Event, times: int) -> list[int]:
    """Kill the first `times` worker processes seen (the OOM killer's part), in the background."""
    import multiprocessing

    killed: list[int] = []

    def hunt():
        while not stop.is_set() and len(killed) < times:
            for p in multiprocessing.active_children():
                if p.pid not in killed and len(killed) < times:
                    os.kill(p.pid, signal.SIGKILL)
                    killed.append(p.pid)
            time.sleep(0.01)

    threading.Thread(target=hunt, daemon=True).start()
    return killed


@pytest.mark.slow
def test_a_killed_worker_fails_nothing_its_job_is_retried():
    jobs = [Job(i, 0, str(JFK)) for i in range(3)]
    stop = threading.Event()
    killed = _kill_workers(stop, 1)
    try:
        results = list(run_in_processes(jobs, _greedy_config(), 2))
    finally:
        stop.set()
    assert len(killed) == 1  # one worker died with a job in hand
    assert sorted(r.job.index for r in results) == [0, 1, 2]
    assert all(r.error is None and normalize(" ".join(s.text for s in r.segments))[:2] == ["and", "so"] for r in results)


def test_a_job_that_kills_every_worker_fails_alone_after_one_retry():
    stop = threading.Event()
    killed = _kill_workers(stop, 2)
    try:
        (result,) = run_in_processes([Job(0, 0, str(JFK))], _greedy_config(), 1)
    finally:
        stop.set()
    assert len(killed) == 2
    assert result.error and "worker process died twice" in result.error


@pytest.fixture(scope="module")
def long_inputs(tmp_path_factory) -> Path:
    """Four inputs of 66 s (six JFK readings each)."""
    folder = tmp_path_factory.mktemp("long")
    first = folder / "ep0.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-stream_loop", "5", "-i", str(JFK), "-c", "copy", str(first)], check=True)
    for i in range(1, 4):
        shutil.copy(first, folder / f"ep{i}.wav")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stopping_a_parallel_batch_cancels_queued_inputs(tmp_path, long_inputs, sig, code):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "whisperlite", "batch", str(long_inputs), "-o", str(out), "-otxt",
                             "-j", "2", "-t", "1", "-bs", "1"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not (line := proc.stdout.readline()).startswith("[1/4]"):  # one input done, one running, two queued
        assert line, proc.stderr.read()
    workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "multiprocessing.spawn"],
                             capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err
    done = [r for r in read_manifest(str(out / "manifest.jsonl")) if r["status"] == "done"]
    assert 1 <= len(done) < 4  # the queued inputs never ran
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")]  # no worker runs on for nobody
    assert not list(out.glob(".*.tmp"))
