"""compile_once: the warm-up runs once per source version and key, with a notice."""
from whisperlite.core import env as _env
from whisperlite.registry import warmup


def test_warm_up_runs_once_per_key_with_a_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(_env, "CACHE_DIR", str(tmp_path))
    calls = []
    warmup.compile_once("k1", lambda: calls.append("k1"))
    assert calls == ["k1"]
    assert "compiling kernels for first use" in caplog.text
    caplog.clear()
    warmup.compile_once("k1", lambda: calls.append("again"))
    warmup.compile_once("k2", lambda: calls.append("k2"))
    assert calls == ["k1", "k2"]
    assert caplog.text.count("compiling kernels") == 1


def test_failed_warm_up_leaves_no_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(_env, "CACHE_DIR", str(tmp_path))

    def broken() -> None:
        raise RuntimeError("boom")

    try:
        warmup.compile_once("k", broken)
    except RuntimeError:
        pass
    calls = []
    warmup.compile_once("k", lambda: calls.append(1))
    assert calls == [1]


def test_read_only_cache_still_runs(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(_env, "CACHE_DIR", str(blocker))  # a file: no directory can be made in it
    calls = []
    warmup.compile_once("k", lambda: calls.append(1))
    warmup.compile_once("k", lambda: calls.append(2))
    assert calls == [1, 2]


def test_live_line_counts_compiles_and_names_the_stage(tmp_path, monkeypatch):
    import io
    import time

    from numba.core import event

    monkeypatch.setattr(_env, "CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(warmup, "REDRAW_SECONDS", 0.01)
    terminal = io.StringIO()
    monkeypatch.setattr(warmup, "_live_stream", lambda: terminal)

    def warm() -> None:
        warmup.stage("encoder")
        # numba's events for a kernel whose callee compiles inside it: one kernel, not two
        with event.trigger_event("numba:compile", data={}):
            with event.trigger_event("numba:compile", data={}):
                pass
        time.sleep(0.1)

    warmup.compile_once("k", warm, stages=3)
    drawn = terminal.getvalue()
    assert "\r\x1b[Kwhisperlite: compiling kernels: 1 compiled, 1/3 (encoder)," in drawn
    assert "2 compiled" not in drawn
    assert drawn.endswith("\r\x1b[K")  # cleared for the closing notice


def test_model_free_warm_up_has_the_transcription_argument_types(tiny_model, jfk_audio, monkeypatch):
    """The first run compiles these kernels in a helper process (warm_model_free) and in the
    warm-up (warm_decoding_rules) for the
    transcription to load from numba's cache: called with other argument types, it would
    compile them again itself, inside its first window. Compared as the types each kernel is
    called with from Python (this process may have compiled any of them already)."""
    import numba

    from whisperlite.audio import silero
    from whisperlite.transcription import decoding, logits, timing, transcribe

    kernels = [(logits, "_rows_lse"), (logits, "row_topk"), (decoding, "row_topk"), (logits, "apply_timestamp_rules"),
               (decoding, "apply_timestamp_rules"), (timing, "_dtw_numba"), (timing, "_backtrace"),
               (timing, "_add_smoothed_head"), (silero, "lstm_probabilities")]
    seen: set = set()
    for module, name in kernels:
        def recorded(*args, kernel=getattr(module, name)):
            seen.add((kernel.py_func.__name__, tuple(numba.typeof(a) for a in args)))
            return kernel(*args)

        monkeypatch.setattr(module, name, recorded)
    transcribe.warm_model_free()
    transcribe.warm_decoding_rules()
    warmed, _ = set(seen), seen.clear()
    segments, _ = tiny_model.transcribe(jfk_audio, word_timestamps=True, beam_size=5, vad=True)
    assert [w for s in segments for w in s.words]
    assert {name for name, _ in seen} == {name for name, _ in warmed}  # every kernel reached
    assert seen <= warmed
