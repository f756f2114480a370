"""The per-stage profile: what `whisperlite transcribe --profile` prints and what it counts."""
from __future__ import annotations

import threading
import time

import pytest

from conftest import FIXTURES, run_cli
from whisperlite.core.profiling import Profile, timed


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stages_accumulate_wall_cpu_and_counts():
    p = Profile()
    for _ in range(3):
        with p.stage("decode/steps", 2, "tokens"):
            _burn(0.01)
    s = p.stages["decode/steps"]
    assert s.calls == 3 and s.items == 6 and s.unit == "tokens"
    assert s.cpu >= 0.025 and s.wall >= s.cpu * 0.5
    assert p.timings["decode/steps"] == s.wall


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")
def test_background_cpu_is_not_charged_to_main_thread_stages():
    p = Profile()
    started = threading.Event()

    def work():
        with p.background():
            started.set()
            with p.stage("vad"):
                _burn(0.3)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    with p.stage("encode"):
        time.sleep(0.2)  # the main thread idles while the background thread burns CPU
    t.join()
    assert p.stages["encode"].cpu < 0.1
    assert p.stages["vad"].cpu >= 0.25


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")
def test_stage_timed_on_a_background_thread_is_reported_apart():
    # Word alignment of one window runs on a worker while the main thread decodes the next:
    # its wall time overlaps the main thread's and must not be subtracted from "other".
    p = Profile()
    started = threading.Event()

    def work():
        with p.background():
            started.set()
            with p.stage("words", 1, "windows"):
                _burn(0.2)

    t = threading.Thread(target=work)
    t0 = time.perf_counter()
    t.start()
    started.wait()
    with p.stage("decode", 1, "windows"):
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    t.join()
    assert p.stages["words"].background and not p.stages["decode"].background
    other = next(ln for ln in p.report(None, wall, 0.25).splitlines() if ln.startswith("other (main thread)"))
    assert 0 <= float(other.split()[3]) < 0.1  # the main thread's wall less its stage, not less the worker's


def test_timed_charges_production_of_each_item():
    p = Profile()

    def slow():
        for i in range(3):
            _burn(0.01)
            yield i

    assert list(timed(slow(), p, "audio", "chunks")) == [0, 1, 2]
    assert p.stages["audio"].items == 3 and p.stages["audio"].cpu >= 0.025


def test_transcription_profile_counts_windows_and_tokens(tiny_model):
    segments, info = tiny_model.transcribe(str(FIXTURES / "jfk.wav"), beam_size=1)
    segments = list(segments)
    st = info.profile.stages
    assert {"audio", "vad", "mel", "encode", "decode", "decode/prompt", "decode/steps", "decode/logic"} <= set(st)
    assert st["encode"].items == st["mel"].items == 1
    assert st["vad"].items == 11 * 16000 // 512  # every 32 ms frame of the 11 s clip
    # one choice per sampled token (eot included); the decoder runs for all but the last
    n_sampled = sum(len(s.tokens) for s in segments) + 1
    assert st["decode/logic"].items == n_sampled and st["decode/steps"].items == n_sampled - 1
    assert st["decode/prompt"].calls == 1 and st["decode/prompt"].items >= 1  # one pass: start of transcript
    children = sum(st[k].wall for k in st if k.startswith("decode/"))
    assert children <= st["decode"].wall + 1e-6
    report = info.profile.report(info.duration, 10.0, 10.0)
    assert "token steps (decoder)" in report and "voice activity" in report and report.splitlines()[-1].startswith("total:")


@pytest.mark.slow
def test_cli_profile_flag(tmp_path):
    r = run_cli("transcribe", str(FIXTURES / "jfk.wav"), "-bs", "1", "--profile", "-osrt", "-o", str(tmp_path), "-t", "1")
    assert r.returncode == 0, r.stderr
    for label in ("audio decode", "log-mel", "encoder", "prompt pass", "token steps (decoder)", "decoding logic",
                  "word timestamps", "writing outputs", "total: 11.0 s of audio"):
        assert label in r.stderr
    assert "Traceback" not in r.stderr


def test_report_lists_parts_under_their_stage_and_orphans_alone():
    p = Profile()
    with p.stage("decode", 1, "windows"):
        with p.stage("decode/steps", 5, "tokens"):
            pass
    with p.stage("words/extra"):  # a part whose stage was never timed
        pass
    lines = p.report(60.0, 1.0, 1.0).splitlines()
    labels = [ln[:30].rstrip() for ln in lines[1:-1]]
    assert labels == ["decoding (with fallback)", "  token steps (decoder)", "  rest", "words/extra", "other (main thread)"]
    assert lines[-1] == "total: 60.0 s of audio in 1.00 s wall, 1.00 s CPU, 60.0x real time"


def test_profile_pickles_for_worker_processes():
    import pickle

    p = Profile()
    with p.stage("encode", 1, "windows"):
        pass
    q = pickle.loads(pickle.dumps(p))
    assert q.stages == p.stages and q.timings == p.timings
    with q.stage("encode", 1, "windows"):
        pass
    assert q.stages["encode"].calls == 2
