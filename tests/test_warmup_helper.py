"""The warm-up's helper processes, which compile the decoder step, its row kernels and the
model-free kernels while the warm-up compiles the rest: they work, a failure costs only
time, an interrupted warm-up leaves no helper behind, and without helpers the warm-up
compiles everything itself."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

from whisperlite.registry import loader
from whisperlite.models import whisper_step
from whisperlite.models.whisper import Whisper


@pytest.fixture(scope="module")
def model_path():
    """The embedded tiny.en: the step kernels it compiles are the ones the transcription
    tests use (same argument types), so they are compiled once for the whole suite."""
    return loader.resolve(loader.DEFAULT_MODEL)


@pytest.mark.slow
def test_helper_compiles_the_step(model_path):
    helper = loader._compile_step_elsewhere(model_path, "auto", 2)
    assert helper is not None
    assert helper.wait(timeout=600) == 0


def test_failed_helper_leaves_the_step_to_the_warm_up(model_path, monkeypatch):
    """The warm-up waits for its helper, which failed, then compiles the step itself. What it
    did is recorded: an earlier test in this process may have compiled the step already, and
    the kernels' signatures alone would then pass whatever the warm-up did."""
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    stepped = []
    warm_step = loader._warm_step

    def recorded(decoder, threads, cache=None):
        stepped.append((threads, failing.poll()))
        warm_step(decoder, threads, cache)

    monkeypatch.setattr(loader, "_warm_step", recorded)
    model = Whisper(loader.apply_compute_type(loader.read_checkpoint(model_path), "auto"))
    loader._warm_up(model, 2, {"step": failing}, None, None)
    assert stepped == [(2, 3)]  # both thread counts' steps, after the helper had exited with 3
    assert whisper_step.step_body.signatures


@pytest.mark.parametrize("cores, processes", [(2, 2), (4, 3)])
def test_interrupted_warm_up_kills_the_helpers(model_path, monkeypatch, cores, processes):
    """The model-free kernels get a process of their own from a third core on, and follow
    the row kernels in their helper on two; whatever was started is killed when the warm-up
    is interrupted."""
    targets = []

    def sleeper(*args):
        targets.append(args)
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    monkeypatch.setattr(loader, "_compile_step_elsewhere", sleeper)
    monkeypatch.setattr(loader, "compile_elsewhere", sleeper)
    monkeypatch.setattr(loader, "physical_cores", lambda: cores)
    with pytest.raises(KeyboardInterrupt):
        with loader._start_helpers(model_path, "auto", 2, "whisperlite.transcription.transcribe:warm_model_free") \
                as helpers:
            raise KeyboardInterrupt
    assert sorted(helpers) == ["apart", "rows", "step"]
    assert len({id(h) for h in helpers.values()}) == processes == len(targets)
    assert (helpers["apart"] is helpers["rows"]) == (cores == 2)
    assert all(h.wait(timeout=10) != 0 for h in helpers.values())


def test_no_helper_without_a_writable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "numba"))  # no directory can be made in a file
    assert not loader.numba_cache_writable()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert loader.numba_cache_writable()


def test_helper_imports_this_package_whatever_the_working_directory(model_path, tmp_path, monkeypatch):
    """From a checkout after `pip install .`, `python -c` would import the checkout's sources,
    whose compiled kernels the installed package never finds."""
    decoy = tmp_path / "whisperlite"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(tmp_path)
    assert loader._compile_step_elsewhere(model_path, "auto", 1).wait(timeout=600) == 0


def test_helper_steps_with_the_transcription_argument_types(model_path):
    """The helper's zero Q8_0 stand-ins give the step the argument types of the real
    quantized weights: otherwise the transcription would compile the step again itself."""
    import numba
    import numpy as np

    stored = loader.read_checkpoint(model_path)
    types = []
    for to_q8_0 in (None, loader._zero_q8_0):
        decoder = loader.TextDecoder(loader.apply_compute_type(stored, "auto", to_q8_0))
        d = decoder.dims
        cache = decoder.new_cache(np.zeros((d.n_audio_ctx, d.n_audio_state), np.float32), batch=2)
        _, args = decoder._step_args(np.zeros((2, 1), np.int64), cache)
        types.append(tuple(numba.typeof(a) for a in args))
    assert types[0] == types[1]


def test_step_compiled_ahead_is_the_one_the_step_calls(model_path):
    """compile_step's helper compiles the step's body before it runs a step (its row kernels
    come from another helper meanwhile): with the types the step then calls it with, or the
    body would compile twice."""
    import numpy as np

    decoder = loader._step_decoder(model_path, "auto")
    d = decoder.dims
    cache = decoder.new_cache(np.zeros((d.n_audio_ctx, d.n_audio_state), np.float32), batch=2)
    decoder.compile_step(cache, 2)
    compiled = set(whisper_step.step_body.overloads)
    decoder.step_serial(np.zeros((2, 1), np.int64), cache)
    assert set(whisper_step.step_body.overloads) == compiled


def test_model_free_kernels_compile_here_without_a_helper(monkeypatch):
    """One core (or no writable cache): no helper process, so the warm-up calls `warm_apart` itself."""
    class Reached(Exception):
        pass

    def encoder(_mel):
        raise Reached  # the model's part of the warm-up: not this test's

    calls = []
    monkeypatch.setattr(loader, "run", calls.append)
    model = SimpleNamespace(encoder=encoder, dims=SimpleNamespace(n_mels=80, n_audio_ctx=1500))
    with pytest.raises(Reached):
        loader._warm_up(model, 1, {}, None, "whisperlite.transcription.transcribe:warm_model_free")
    assert calls == ["whisperlite.transcription.transcribe:warm_model_free"]
