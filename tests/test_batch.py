"""`whisperlite batch`: discovery, manifest durability, resume after kill -9, failures, -p, Dask."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, ROOT, normalize
from whisperlite.audio.ffmpeg import SAMPLE_RATE, ffmpeg_exe
from whisperlite.batch import split
from whisperlite.batch.discover import discover
from whisperlite.batch.manifest import ManifestWriter, read_manifest
from whisperlite.batch.run import BatchOptions, run_batch
from whisperlite.batch.split import quietest_point
from whisperlite.cli.main import main
from whisperlite.core.errors import OutputError
from whisperlite.kernels import get_threads, set_threads
from whisperlite.batch.dask import run_on_dask
from whisperlite.batch.jobs import Job, WorkerConfig, run_in_processes
from whisperlite.transcription.flags import leaf_value, leaves
from whisperlite.transcription.options import (
    ClipOptions,
    ContextOptions,
    DecodeOptions,
    FallbackOptions,
    OutputOptions,
    RunOptions,
    RuntimeOptions,
    SubtitleOptions,
    TranscribeOptions,
    VadOptions,
)

JFK = FIXTURES / "jfk.wav"


def greedy(*formats: str, threads: int | None = 1, processors: int = 1) -> RunOptions:
    """These tests are about the batch machinery: the fastest decoding."""
    return RunOptions(TranscribeOptions(decode=DecodeOptions(beam_size=1)), OutputOptions(formats),
                      RuntimeOptions(threads=threads, processors=processors))


@pytest.fixture(autouse=True)
def _keep_thread_count():
    # In-process batches set 1 thread; later tests in this process expect what they had.
    before = get_threads()
    yield
    set_threads(before)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_mirrors_folders_and_reads_lists(tmp_path):
    _touch(tmp_path / "shows/a/ep1.mp3")
    _touch(tmp_path / "shows/b/ep1.mp3")  # same name in another folder
    _touch(tmp_path / "shows/b/deep/talk.wav")
    _touch(tmp_path / "shows/b/deep/talk.mp4")  # same stem in one folder
    _touch(tmp_path / "shows/b/notes.doc")
    _touch(tmp_path / "shows/.cache/x.mp3")
    other = _touch(tmp_path / "elsewhere/solo.flac")
    lst = tmp_path / "lists/todo.txt"
    _touch(lst, f"# episodes\n\n../shows/a/ep1.mp3\n{other}\n../missing.ogg\n".encode())

    found = {f.path: f.rel for f in discover([str(tmp_path / "shows"), str(lst)])}
    assert found == {
        str(tmp_path / "shows/a/ep1.mp3"): "shows/a/ep1",
        str(tmp_path / "shows/b/ep1.mp3"): "shows/b/ep1",
        str(tmp_path / "shows/b/deep/talk.mp4"): "shows/b/deep/talk.mp4",
        str(tmp_path / "shows/b/deep/talk.wav"): "shows/b/deep/talk.wav",
        str(other): "elsewhere/solo",
        str(tmp_path / "missing.ogg"): "missing",  # kept: it fails and is recorded, the batch goes on
    }
    # a single folder is its own root: its layout does not depend on what else it holds
    assert {f.rel for f in discover([str(tmp_path / "shows/b")])} == {"ep1", "deep/talk.mp4", "deep/talk.wav"}


def test_manifest_tolerates_torn_line_and_locks(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(b'{"input": "a", "status": "done"}\n{"input": "b", "sta')  # kill -9 mid-append
    assert read_manifest(str(path)) == [{"input": "a", "status": "done"}]
    with ManifestWriter(str(path)) as w:
        with pytest.raises(OutputError, match="another whisperlite batch"):
            ManifestWriter(str(path))
        w.append({"input": "c", "status": "done"})
    assert [r["input"] for r in read_manifest(str(path))] == ["a", "c"]
    assert path.read_bytes().endswith(b"}\n")


def test_quietest_point_prefers_silence_near_the_target():
    rng = np.random.default_rng(0)
    sig = rng.standard_normal(10 * SAMPLE_RATE).astype(np.float32) * 0.1
    sig[2 * SAMPLE_RATE: 3 * SAMPLE_RATE] = 0  # two equally silent pauses
    sig[6 * SAMPLE_RATE: 7 * SAMPLE_RATE] = 0
    assert 6.0 < quietest_point(sig, near=8.0) < 7.0
    assert 2.0 < quietest_point(sig, near=1.0) < 3.0


def _srt_texts(path: Path) -> str:
    import srt

    return " ".join(s.content for s in srt.parse(path.read_text()))


@pytest.mark.slow
def test_batch_records_failures_goes_on_and_skips_done(tmp_path):
    shutil.copy(JFK, _touch(tmp_path / "in/a/jfk.wav"))
    shutil.copy(JFK, _touch(tmp_path / "in/b/jfk.wav"))
    _touch(tmp_path / "in/b/corrupt.mp3", b"this is not audio" * 100)
    _touch(tmp_path / "in/b/empty.wav", b"")
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "-o", str(out), "-osrt", "-otxt", "-t", "1", "-bs", "1"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 1, first.output
    assert "2 done, 0 skipped, 2 failed" in first.stdout
    assert "corrupt.mp3" in first.stderr and "empty.wav" in first.stderr and "Traceback" not in first.output
    for d in "ab":
        assert normalize(_srt_texts(out / d / "jfk.srt"))[:4] == ["and", "so", "my", "fellow"]
        assert (out / d / "jfk.txt").exists()
    records = read_manifest(str(out / "manifest.jsonl"))
    assert sorted(r["status"] for r in records) == ["done", "done", "failed", "failed"]
    done = [r for r in records if r["status"] == "done"]
    assert all(r["duration"] == pytest.approx(11.0) and len(r["sha256"]) == 64 and r["model"] == "tiny.en" for r in done)
    # SRT asked for: cues cut at word times, as `transcribe` writes them
    assert all(r["options"]["transcribe"]["word_timestamps"] for r in done)
    assert all(r["error"] for r in records if r["status"] == "failed")
    assert not list(out.rglob(".whisperlite-*"))  # no temp files left

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.srt")}
    again = CliRunner().invoke(main, args)
    assert "0 done, 2 skipped, 2 failed" in again.stdout  # failures are retried, done inputs are not
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.srt")} == mtimes


@pytest.mark.slow
def test_split_long_input_stitches_timeline(tmp_path, monkeypatch, jfk2):
    # Two JFK readings back to back, split into two parts transcribed by two worker processes.
    monkeypatch.setattr(split, "MIN_PART_SECONDS", 10.0)
    src = jfk2
    out = tmp_path / "out"
    opts = BatchOptions(output_dir=str(out), run=greedy("json", processors=2), jobs=2)
    summary = run_batch([str(src)], opts, out=io.StringIO())
    assert summary.done == 1
    (record,) = read_manifest(str(out / "manifest.jsonl"))
    assert record["parts"] == 2 and record["duration"] == pytest.approx(22.0, abs=0.05)
    doc = json.loads((out / "jfk2.json").read_text())
    segs = doc["segments"]
    assert [s["id"] for s in segs] == list(range(len(segs)))
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(segs, segs[1:]))
    assert normalize(doc["text"]).count("fellow") == 2
    second = [s for s in segs if "fellow" in s["text"].lower()][1]
    assert 10.0 < second["start"] < 13.0 and segs[-1]["end"] <= 22.0


@pytest.mark.slow
def test_kill_9_then_rerun_keeps_finished_inputs(tmp_path):
    for i in range(2):
        shutil.copy(JFK, tmp_path / f"ep{i}.wav")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "whisperlite", "batch", str(tmp_path), "-o", str(out), "-osrt", "-t", "1", "-bs", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 90
    while not read_manifest(str(manifest)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {r["input"] for r in read_manifest(str(manifest)) if r["status"] == "done"}
    assert finished
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.srt")}

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{2 - len(finished)} done, {len(finished)} skipped, 0 failed" in rerun.stdout
    records = read_manifest(str(manifest))
    assert sorted(r["input"] for r in records if r["status"] == "done") == sorted(str(tmp_path / f"ep{i}.wav") for i in range(2))
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())  # finished outputs untouched


@pytest.mark.slow
def test_dask_cluster_matches_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    shutil.copy(JFK, _touch(tmp_path / "in/one/jfk.wav"))
    shutil.copy(FIXTURES / "jfk.mp3", _touch(tmp_path / "in/two/jfk.mp3"))
    local = BatchOptions(output_dir=str(tmp_path / "local"), run=greedy("srt"))
    assert run_batch([str(tmp_path / "in")], local, out=io.StringIO()).done == 2
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        remote = BatchOptions(output_dir=str(tmp_path / "dask"), run=greedy("srt"), scheduler=cluster.scheduler_address)
        assert run_batch([str(tmp_path / "in")], remote, out=io.StringIO()).done == 2
    for rel in ("one/jfk.srt", "two/jfk.srt"):
        assert (tmp_path / "dask" / rel).read_text() == (tmp_path / "local" / rel).read_text()


def every_leaf_changed() -> RunOptions:
    """A tree whose every leaf differs from its default, but for the model (one is embedded),
    the task (tiny.en cannot translate), the API's clip_timestamps (spans of their own, which
    -p parts replace as they replace -ot/-d) and speaker labels (--diarize pulls its model,
    -di needs a stereo input: tests/test_diarize.py runs them, --diarize with -p parts)."""
    run = RunOptions(
        TranscribeOptions(
            DecodeOptions(language="en", temperature=0.1, sample_len=100, best_of=2, beam_size=2, patience=1.5,
                          length_penalty=0.5, prompt=(50256,), suppress_tokens=(1, 2), suppress_blank=False,
                          without_timestamps=True, max_initial_timestamp=0.5, seed=3, prefix="And so",
                          multilingual=True, language_detection_segments=2, language_detection_threshold=0.5),
            FallbackOptions((0.0, 0.5), 2.0, -2.0, 0.7),
            ContextOptions(False, 0.3, "Kennedy.", "Americans", 10),
            VadOptions(False, 0.4, 0.3, 200, 1000, 300),
            ClipOptions(0.5, 21.0),
            word_timestamps=False),
        OutputOptions(("srt",), SubtitleOptions(30, 1, False), True, "simplified"),
        RuntimeOptions(compute_type="f32", threads=1, processors=2, allow_urls=True),
    )
    default = RunOptions()
    same = [leaf for leaf in leaves() if leaf_value(run, leaf) == leaf_value(default, leaf)]
    assert same == ["transcribe.decode.task", "transcribe.clip.clip_timestamps", "transcribe.diarize",
                    "transcribe.speakers", "transcribe.stereo_diarize", "runtime.model"]
    return run


@pytest.fixture(scope="module")
def jfk2(tmp_path_factory) -> Path:
    """Two JFK readings back to back (22 s)."""
    src = tmp_path_factory.mktemp("jfk2") / "jfk2.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-stream_loop", "1", "-i", str(JFK), "-c", "copy", str(src)], check=True)
    return src


def test_every_option_reaches_each_part(jfk2, tiny_model, monkeypatch):
    """`transcribe -p 2`: each part's worker loads the model as asked (compute type and threads
    too) and decodes with the whole tree; the clip is the parts' spans."""
    monkeypatch.setattr(split, "MIN_PART_SECONDS", 5.0)
    seen = []

    def recording(*args, **kwargs):
        results = list(run_in_processes(*args, **kwargs))
        seen.extend(results)
        return results

    monkeypatch.setattr(split, "run_in_processes", recording)
    run = every_leaf_changed()
    _, info = split.transcribe_split(tiny_model, str(jfk2), run)
    assert info.options == run.transcribe  # the stitched info: the options asked for
    assert sorted((r.job.start, r.job.end) for r in seen)[0][0] == 0.5
    assert sorted((r.job.start, r.job.end) for r in seen)[-1][1] == 21.5
    assert len(seen) == 2 and not any(r.error for r in seen)
    for r in seen:
        assert r.info.options == replace(run.transcribe, clip=ClipOptions())
        assert r.runtime == run.runtime


def test_every_option_reaches_a_dask_worker():
    distributed = pytest.importorskip("distributed")
    run = every_leaf_changed()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        (result,) = run_on_dask(cluster.scheduler_address, [Job(0, 0, str(JFK))], WorkerConfig(run))
    assert result.error is None
    assert result.info.options == run.transcribe and result.runtime == run.runtime
    assert result.segments and result.segments[0].start >= 0.5  # the clip was honoured
