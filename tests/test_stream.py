"""Live transcription: the streaming engine (both policies), its VAD gate, and `whisperlite stream`."""
import difflib
import json
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from conftest import FIXTURES, ROOT, normalize, run_cli
from whisperlite.audio.ffmpeg import SAMPLE_RATE, ffmpeg_exe
from whisperlite.transcription.options import DecodeOptions, TranscribeOptions
from whisperlite.transcription.streaming import StreamingTranscriber, StreamOptions

GREEDY = TranscribeOptions(decode=DecodeOptions(beam_size=1))


def _stream(model, audio: np.ndarray, policy: str, chunk: float = 0.5):
    engine = StreamingTranscriber(model, GREEDY, StreamOptions(policy=policy))
    events = []
    step = int(chunk * SAMPLE_RATE)
    for i in range(0, len(audio), step):
        events += engine.feed(audio[i : i + step])
    events += engine.finish()
    return engine, events


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["agreement", "window"])
def test_jfk_in_chunks_finals_match_offline(tiny_model, jfk_audio, policy):
    audio = np.concatenate([jfk_audio, np.zeros(SAMPLE_RATE, np.float32)])
    engine, events = _stream(tiny_model, audio, policy)
    offline, _ = tiny_model.transcribe(jfk_audio, GREEDY)
    offline_words = normalize(" ".join(s.text for s in offline))
    finals = [w for e in events if e.type == "final" for w in e.words]
    words = normalize("".join(w.word for w in finals))
    if policy == "agreement":
        assert words == offline_words
    else:  # whisper.cpp's lines are cut every few seconds, mid-word too: a few words go or change there
        same = sum(b.size for b in difflib.SequenceMatcher(None, offline_words, words).get_matching_blocks())
        assert same >= len(offline_words) - 5 and len(words) <= len(offline_words) + 2, (words, offline_words)
        assert words[-4:] == ["do", "for", "your", "country"]
    # times on the stream's clock, in order, within the audio; each final word stays (never retracted)
    assert all(0 <= w.start <= w.end <= len(audio) / SAMPLE_RATE for w in finals)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(finals, finals[1:]))
    assert engine.final == finals
    assert events[-1].type == "done" and sum(e.type == "done" for e in events) == 1
    segments = engine.segments()
    assert "".join(s.text for s in segments) == "".join(w.word for w in finals)


@pytest.mark.slow
def test_clip_after_a_short_pause_keeps_its_first_words(tiny_model, jfk_audio):
    """A clip that starts 1.5 s after another: its first words are final too (they were lost
    when a pass re-decoded the words before the pause and dropped the new ones by time)."""
    from whisperlite.audio.ffmpeg import load_audio

    second = load_audio(str(FIXTURES / "librispeech-2412-153948-0000.flac"))[: 5 * SAMPLE_RATE]
    pause = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([jfk_audio, pause, second, pause])
    engine, events = _stream(tiny_model, audio, "agreement", chunk=0.1)
    words = normalize("".join(w.word for w in engine.final))
    start = len(jfk_audio) / SAMPLE_RATE + 1.5
    after = normalize("".join(w.word for w in engine.final if w.start >= start - 0.3))
    assert after[:6] == ["if", "the", "reader", "will", "excuse", "me"], words
    assert words.count("country") == 2 and words.count("reader") == 1  # nothing final twice


@pytest.mark.slow
def test_silence_and_noise_give_no_text_and_no_decoding(tiny_model):
    rng = np.random.default_rng(1)
    quiet = np.concatenate([np.zeros(4 * SAMPLE_RATE, np.float32),
                            (rng.standard_normal(6 * SAMPLE_RATE) * 0.05).astype(np.float32),
                            (0.2 * np.sin(2 * np.pi * 440 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)])
    for policy in ("agreement", "window"):
        engine, events = _stream(tiny_model, quiet, policy)
        assert [e.type for e in events] == ["done"]
        assert engine.passes == 0 and engine.segments() == []


def test_options_checked():
    from whisperlite.transcription.options import OptionError

    for bad in (StreamOptions(policy="fast"), StreamOptions(step_ms=5000, length_ms=3000),
                StreamOptions(length_ms=40000), StreamOptions(keep_ms=4000)):
        with pytest.raises(OptionError):
            bad.check()


def _pcm(path, extra=()) -> bytes:
    """A fixture decoded to raw PCM (16 kHz mono s16le unless `extra` says otherwise), with 1.5 s of silence after it."""
    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-af", "apad=pad_dur=1.5",
                           *(extra or ("-ar", "16000", "-ac", "1")), "-f", "s16le", "-"],
                          capture_output=True, check=True).stdout


@pytest.mark.slow
def test_cli_stdin_writes_outputs(tmp_path):
    pcm = _pcm(FIXTURES / "jfk.wav", ("-ar", "48000", "-ac", "2"))
    proc = subprocess.run([sys.executable, "-m", "whisperlite", "stream", "-", "--rate", "48000", "--channels", "2",
                           "-osrt", "-otxt", "-oj", "-of", "live", "-o", str(tmp_path), "-t", "2"],
                          input=pcm, capture_output=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()
    printed = normalize(proc.stdout.decode())
    assert printed[-4:] == ["do", "for", "your", "country"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.json", "live.srt", "live.txt"]
    assert normalize((tmp_path / "live.txt").read_text()) == printed
    data = json.loads((tmp_path / "live.json").read_text())
    starts = [s["start"] for s in data["segments"]]
    assert starts == sorted(starts) and data["segments"][-1]["end"] <= 12.6
    assert "-->" in (tmp_path / "live.srt").read_text()


@pytest.mark.slow
def test_cli_sigint_mid_stream_writes_complete_outputs(tmp_path):
    """Ctrl-C while the pipe is still open: what was final is written, exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "whisperlite", "stream", "-", "-otxt", "-osrt", "-of", "live",
                             "-o", str(tmp_path), "-t", "2"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.stdin.write(_pcm(FIXTURES / "jfk.wav"))
    proc.stdin.flush()  # and left open: the stream goes on until the signal
    lines = []
    while not (lines and "country" in lines[-1]):
        line = proc.stdout.readline().decode()
        assert line, proc.stderr.read().decode()
        lines.append(line)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    text = (tmp_path / "live.txt").read_text()
    assert normalize(text)[-4:] == ["do", "for", "your", "country"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.srt", "live.txt"]


def test_cli_devices_and_missing_microphone_one_line():
    # no capture device on a test machine: a clean line either way (a listing where there is one)
    for args in (("stream", "--list-devices"), ("stream", "--device", "no-such-device-xyz")):
        r = run_cli(*args, timeout=60)
        if r.returncode == 0:
            assert args[1] == "--list-devices" and r.stdout.strip()
            continue
        assert r.returncode == 1 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr


def test_cli_bad_inputs_one_line(tmp_path):
    for args in (("stream", str(tmp_path / "missing.wav")), ("stream", str(tmp_path)),
                 ("stream", "-", "--format", "u8"), ("stream", "--policy", "fast"), ("stream", "-", "--length", "0"),
                 ("stream", "-", "--wait", "-1"), ("stream", "-", "--fallback", "-1")):
        r = run_cli(*args, timeout=60)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_loop_cut_in_lower_case():
    """A phrase said again with its first word capitalized is a loop too; a phrase said once is kept whole."""
    from whisperlite.transcription.streaming import _loop_end

    spell = {1: " and", 2: " so", 3: " my", 4: " fellow", 5: " Americans", 6: ".", 7: " And"}.__getitem__
    stamp = 100
    assert _loop_end([100, 1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6, 120], stamp, spell) == 7
    assert _loop_end([100, 1, 2, 3, 4, 5, 6, 120], stamp, spell) == 8


def test_held_words_opening_a_pass_are_skipped_whatever_their_times():
    """The buffer starts in the last final word; the pass re-times it onto the speech after a
    pause: it is still that word, not a new one (it was made final twice: 'myself. myself.'),
    and so are its end alone and its spelling as two words."""
    from whisperlite.transcription.results import Word

    held = [Word(23.08, 23.41, " myself.", 0.9, [1])]
    words = [Word(26.30, 26.70, " myself.", 0.9, [1]), Word(26.70, 28.06, " I", 0.9, [2]),
             Word(28.06, 28.24, " have", 0.9, [3])]
    assert StreamingTranscriber._after(words, held) == words[1:]
    # the buffer starts inside it, or the pass spells it as two words ('myself. self.')
    words[0] = Word(23.20, 26.70, " self.", 0.9, [5])
    assert StreamingTranscriber._after(words, held) == words[1:]
    split = [Word(23.08, 23.20, " my", 0.9, [6]), Word(23.20, 26.30, "self.", 0.9, [5]), *words[1:]]
    assert StreamingTranscriber._after(split, held) == words[1:]
    # new speech after it that happens to spell its end is new
    after = [Word(26.30, 26.70, " self", 0.9, [7]), *words[1:]]
    assert StreamingTranscriber._after(after, held) == after
    # a new word that merely equals the last final one, later in the pass, is new
    words = [Word(26.30, 26.70, " I", 0.9, [2]), Word(26.70, 27.0, " said", 0.9, [4]),
             Word(27.0, 27.4, " myself.", 0.9, [1])]
    assert StreamingTranscriber._after(words, held) == words


@pytest.mark.slow
def test_short_utterance_before_silence_one_try_per_pass(tiny_model, monkeypatch):
    """'Mary rolled the barrel.' then silence: greedy decoding loops on it ('... barrel. Mary
    rolled the barrel. ...'). The loop is cut before the gates judge the pass, so the final
    pass tries no hotter temperature (six tries each looped again, seconds of CPU that every
    later word waited for), and its words are aligned within the speech, so the last one is
    not squeezed into the pause and dropped."""
    from whisperlite.audio.ffmpeg import load_audio

    bobby, mary = (load_audio(str(FIXTURES / f"praatio-{name}.flac")) for name in ("bobby", "mary"))
    audio = np.concatenate([bobby, np.zeros(3 * SAMPLE_RATE, np.float32), mary, np.zeros(2 * SAMPLE_RATE, np.float32)])
    decoder, tries = tiny_model._decoder, []
    decode = decoder.decode
    monkeypatch.setattr(decoder, "decode", lambda *a, **k: tries.append(1) or decode(*a, **k))
    engine, events = _stream(tiny_model, audio, "agreement", chunk=0.1)
    assert normalize("".join(w.word for w in engine.final)) == "bobby ripped the ledger mary rolled the barrel".split()
    assert len(tries) == engine.passes


def test_unsure_words_wait_by_time_and_unsure_passes_only_confirm(tiny_model, monkeypatch):
    """Scripted passes (`_decode` replaced): a run of words neither pass is sure of becomes
    final together once a pass has `wait_ms` of audio after them, not one wait after
    another; a pass that failed the log-probability gate confirms the last pass's words but
    its own different words are not proposed."""
    from whisperlite.transcription.results import Word
    wait = StreamOptions().wait_ms / 1000

    engine = StreamingTranscriber(tiny_model, GREEDY)
    sure = [Word(0.0, 0.4, " So", 0.9, [1]), Word(0.4, 0.8, " we", 0.9, [2])]
    unsure = [Word(0.8, 1.1, " protect", 0.2, [3]), Word(1.1, 1.4, " your", 0.3, [4]), Word(1.4, 1.7, " rights", 0.9, [5])]
    script = iter([(sure + unsure, True), (sure + unsure, True), (unsure, True), (unsure[:1] + [Word(1.1, 1.4, " made", 0.9, [6])], False),
                   (unsure, True)])
    monkeypatch.setattr(engine, "_decode", lambda *a: next(script))
    final = lambda events: "".join(w.word for e in events if e.type == "final" for w in e.words)  # noqa: E731
    at = lambda s: int(s * SAMPLE_RATE)  # noqa: E731
    assert final(engine._agree(at(1.8))) == ""  # one pass: nothing agreed yet
    assert final(engine._agree(at(2.5))) == " So we"  # agreed; the unsure ones wait
    assert final(engine._agree(at(2.9))) == ""  # 1.8 s after "protect": still waiting
    # unsure pass: it agrees on "protect", which has waited long enough; its "made" is not proposed
    assert final(engine._agree(at(1.2 + wait))) == " protect"
    assert [w.word for w in engine._pending] == [" your", " rights"]
    assert final(engine._agree(at(1.5 + wait))) == " your rights"


def test_disputed_words_final_by_two_of_three_passes_or_by_time(tiny_model, monkeypatch):
    """Scripted passes: a word the pass before the last read as this one does becomes final
    though the last pass read it differently; a word passes keep reading differently becomes
    final as the latest pass reads it once that pass has `wait_ms` of audio after it."""
    from whisperlite.transcription.results import Word
    wait = StreamOptions().wait_ms / 1000

    engine = StreamingTranscriber(tiny_model, GREEDY)
    one, two, too = Word(0.0, 0.4, " one", 0.9, [1]), Word(0.4, 0.8, " two", 0.9, [2]), Word(0.4, 0.8, " too", 0.9, [3])
    three, tree, free = (Word(0.8, 1.2, f" {w}", 0.9, [k]) for k, w in enumerate(("three", "tree", "free"), 4))
    script = iter([([one, two, three], True), ([one, too, tree], True), ([two, free], True), ([three], True),
                   ([tree], True)])
    monkeypatch.setattr(engine, "_decode", lambda *a: next(script))
    final = lambda events: "".join(w.word for e in events if e.type == "final" for w in e.words)  # noqa: E731
    at = lambda s: int(s * SAMPLE_RATE)  # noqa: E731
    assert final(engine._agree(at(1.3))) == ""
    assert final(engine._agree(at(2.0))) == " one"
    assert final(engine._agree(at(2.7))) == " two"  # as two passes of the last three read it
    assert final(engine._agree(at(1.2 + wait - 0.1))) == ""  # "three", "tree", "free", "three"
    assert final(engine._agree(at(1.2 + wait + 0.05))) == " tree"  # the latest, once it has the time


@pytest.mark.slow
def test_final_pass_fallback_bounded_by_time(tiny_model, jfk_audio, monkeypatch):
    """A final pass whose tries all fail the log-probability gate starts no hotter try that
    would end past `fallback_ms` (at the pace of its tries so far, on the engine's clock), and
    keeps its best try, flagged not sure; a clock that does not move lets it try every
    temperature."""
    from whisperlite.transcription.options import FallbackOptions

    decoder = tiny_model._decoder
    decode = decoder.decode
    now = [0.0]

    def unsure_try(*a, **k):  # each try takes 0.8 s on the fake clock and fails the gate
        now[0] += 0.8
        return replace(decode(*a, **k), avg_logprob=-1.5)

    monkeypatch.setattr(decoder, "decode", unsure_try)
    options = replace(GREEDY, fallback=FallbackOptions(temperatures=(0.0, 0.3, 0.6, 1.0)))
    samples = jfk_audio[: 2 * SAMPLE_RATE]
    for budget, clock, tries in ((2000, lambda: now[0], 2), (1000, lambda: now[0], 1), (1000, lambda: 0.0, 4)):
        engine = StreamingTranscriber(tiny_model, options, StreamOptions(fallback_ms=budget), clock=clock)
        before = now[0]
        segments, sure = engine._decode_window(samples, [], final=True)
        assert round((now[0] - before) / 0.8) == tries
        assert not sure and normalize(" ".join(s.text for s in segments))[:3] == ["and", "so", "my"]


def test_last_segment_closes_at_the_end_of_the_speech(tiny_model, jfk_audio, monkeypatch):
    """A pass whose text the model closes with a timestamp long before the end of its speech:
    its words are aligned over the speech, not all squeezed onto that timestamp (they were
    then made final at once by the time bound, seconds before they were said)."""
    decoder = tiny_model._decoder
    decode = decoder.decode
    stamp = tiny_model.tokenizer.timestamp_begin

    def closes_early(*a, **k):
        r = decode(*a, **k)
        text = [t for t in r.tokens if t < stamp]
        return replace(r, tokens=[stamp, *text, stamp + 10], token_logprobs=[0.0, *r.token_logprobs[: len(text)], 0.0])

    monkeypatch.setattr(decoder, "decode", closes_early)
    engine = StreamingTranscriber(tiny_model, GREEDY)
    segments, _ = engine._decode_window(jfk_audio[: 4 * SAMPLE_RATE], [], final=False)
    words = [w for s in segments for w in s.words]
    assert normalize("".join(w.word for w in words))[:4] == ["and", "so", "my", "fellow"]
    assert words[-1].end > 2.5 and len({w.end for w in words}) == len(words)


def test_unsure_final_pass_keeps_the_last_sure_reading(tiny_model, monkeypatch):
    """Scripted passes: the pass that ends an utterance failed the gates on every try (its
    likeliest try read the speech as one short word): the last sure pass's words become
    final, not the unsure pass's."""
    from whisperlite.transcription.results import Word

    engine = StreamingTranscriber(tiny_model, GREEDY)
    read = [Word(0.0, 0.4, " one", 0.9, [1]), Word(0.4, 0.8, " two", 0.9, [2]), Word(0.8, 1.2, " three", 0.9, [3])]
    garbled = [Word(0.0, 1.2, " f", 0.9, [4]), Word(1.3, 1.6, " four", 0.6, [5])]
    script = iter([(read, True), (garbled, False)])
    monkeypatch.setattr(engine, "_decode", lambda *a: next(script))
    at = lambda s: int(s * SAMPLE_RATE)  # noqa: E731
    assert engine._agree(at(1.4))[-1].type == "partial" and not engine.final
    events = engine._agree(at(1.8), final=at(1.7))
    assert "".join(w.word for e in events if e.type == "final" for w in e.words) == " one two three"
