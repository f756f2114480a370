"""Every flag whisper.cpp's CLI prints (examples/cli/cli.cpp `whisper_print_usage`, ggml-org/whisper.cpp
233fe1fc) either works with its meaning or fails with one line naming it: none is read as another
flag (click would take `-owts` for `-o wts`, `-fa` for the input file `a`), and none leaves files behind."""
import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, run_cli
from whisperlite.audio.ffmpeg import ffmpeg_exe
from whisperlite.cli.flags import pop_run_options
from whisperlite.cli.main import main
from whisperlite.cli.transcribe import transcribe

# whisper_print_usage, in its order: (short, long) and whether a value follows.
USAGE = [
    ("-h", "--help", False), (None, "--version", False), ("-t", "--threads", True), ("-p", "--processors", True),
    ("-ot", "--offset-t", True), ("-on", "--offset-n", True), ("-d", "--duration", True),
    ("-mc", "--max-context", True), ("-ml", "--max-len", True), ("-sow", "--split-on-word", False),
    ("-bo", "--best-of", True), ("-bs", "--beam-size", True), ("-ac", "--audio-ctx", True),
    ("-wt", "--word-thold", True), ("-et", "--entropy-thold", True), ("-lpt", "--logprob-thold", True),
    ("-nth", "--no-speech-thold", True), ("-tp", "--temperature", True), ("-tpi", "--temperature-inc", True),
    ("-debug", "--debug-mode", False), ("-tr", "--translate", False), ("-di", "--diarize", False),
    ("-tdrz", "--tinydiarize", False), ("-nf", "--no-fallback", False), ("-otxt", "--output-txt", False),
    ("-ovtt", "--output-vtt", False), ("-osrt", "--output-srt", False), ("-olrc", "--output-lrc", False),
    ("-owts", "--output-words", False), ("-fp", "--font-path", True), ("-ocsv", "--output-csv", False),
    ("-oj", "--output-json", False), ("-ojf", "--output-json-full", False), ("-of", "--output-file", True),
    ("-np", "--no-prints", False), ("-ps", "--print-special", False), ("-pc", "--print-colors", False),
    (None, "--print-confidence", False), ("-pp", "--print-progress", False), ("-nt", "--no-timestamps", False),
    ("-l", "--language", True), ("-dl", "--detect-language", False), (None, "--prompt", True),
    (None, "--carry-initial-prompt", False), ("-m", "--model", True), ("-f", "--file", True),
    ("-oved", "--ov-e-device", True), ("-dtw", "--dtw", True), ("-ls", "--log-score", False),
    ("-ng", "--no-gpu", False), ("-dev", "--device", True), ("-fa", "--flash-attn", False),
    ("-nfa", "--no-flash-attn", False), ("-sns", "--suppress-nst", False), (None, "--suppress-regex", True),
    (None, "--grammar", True), (None, "--grammar-rule", True), (None, "--grammar-penalty", True),
    (None, "--vad", False), ("-vm", "--vad-model", True), ("-vt", "--vad-threshold", True),
    ("-vspd", "--vad-min-speech-duration-ms", True), ("-vsd", "--vad-min-silence-duration-ms", True),
    ("-vmsd", "--vad-max-speech-duration-s", True), ("-vp", "--vad-speech-pad-ms", True),
    ("-vo", "--vad-samples-overlap", True),
]
REJECTED = {"-on", "-ac", "-wt", "-et", "-debug", "-tdrz", "-owts", "-fp", "--print-confidence",
            "--carry-initial-prompt", "-oved", "-dtw", "-ls", "-dev", "-fa", "--suppress-regex", "--grammar",
            "--grammar-rule", "--grammar-penalty", "-vm", "-vmsd", "-vo"}
CLIP = "clip.wav"  # 3 s of jfk.wav, copied into each test's folder


def spellings(short, long):
    return [s for s in (short, long) if s]


def test_usage_list_is_whole():
    names = [short or long for short, long, _ in USAGE]
    assert len(names) == len(set(names)) == 66
    assert REJECTED <= set(names)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / CLIP
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(FIXTURES / "jfk.wav"), "-t", "3", str(path)],
                   check=True)
    return path


@pytest.mark.parametrize("flag", [(s, v) for short, long, v in USAGE for s in spellings(short, long)
                                  if (short or long) in REJECTED], ids=lambda f: f[0])
def test_unsupported_flag_fails_with_one_line_naming_it(flag, tmp_path):
    spelling, takes_value = flag
    shutil.copy(FIXTURES / "jfk.wav", tmp_path / "in.wav")
    args = ["in.wav", spelling, *(["5"] if takes_value else []), "-otxt"]
    for command in ("transcribe", "batch"):
        extra = ["-o", "out"] if command == "batch" else []
        r = run_cli(command, *args, *extra, cwd=tmp_path)
        assert r.returncode != 0
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and spelling in lines[0], r.stderr
        assert "(whisper.cpp) is not supported: " in lines[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # no stray files or folders


@pytest.fixture
def folder(tmp_path, clip, monkeypatch):
    shutil.copy(clip, tmp_path / CLIP)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args):
    r = CliRunner().invoke(main, ["transcribe", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def parsed(*args):
    return pop_run_options(dict(transcribe.make_context("transcribe", [CLIP, *args]).params))


def files(folder):
    return sorted(p.name for p in folder.iterdir())


# flag → (arguments, check of the options tree it gives); the run must exit 0 and write nothing
TREE_EFFECTS = {
    "-t": (["-t", "1"], lambda o: o.runtime.threads == 1),
    "-p": (["-p", "2"], lambda o: o.runtime.processors == 2),  # 3 s: too short to split, runs whole
    "-mc": (["-mc", "0"], lambda o: o.transcribe.context.max_context == 0),
    "-sow": (["-sow"], lambda o: o.output.subtitles.split_on_word),
    "-bo": (["-bo", "2", "-tp", "0.5"], lambda o: o.transcribe.decode.best_of == 2),
    "-bs": (["-bs", "2"], lambda o: o.transcribe.decode.beam_size == 2),
    "-lpt": (["-lpt", "-1.5"], lambda o: o.transcribe.fallback.logprob_threshold == -1.5),
    "-nth": (["-nth", "0.5"], lambda o: o.transcribe.fallback.no_speech_threshold == 0.5),
    "-tp": (["-tp", "0.4"], lambda o: o.transcribe.fallback.temperatures == (0.4, 0.6, 0.8, 1.0)),
    "-tpi": (["-tpi", "0.5"], lambda o: o.transcribe.fallback.temperatures == (0.0, 0.5, 1.0)),
    "-nf": (["-nf"], lambda o: o.transcribe.fallback.temperatures == (0.0,)),
    "-l": (["-l", "auto"], lambda o: o.transcribe.decode.language is None),
    "--prompt": (["--prompt", "Kennedy."], lambda o: o.transcribe.context.initial_prompt == "Kennedy."),
    "-m": (["-m", "tiny.en"], lambda o: o.runtime.model == "tiny.en"),
    "-ng": (["-ng"], lambda o: True),  # no GPU: always so
    "-nfa": (["-nfa"], lambda o: True),  # no flash attention: always so
    "-sns": (["-sns"], lambda o: o.transcribe.decode.suppress_tokens is None),  # the non-speech set: always
    "--vad": (["--vad"], lambda o: o.transcribe.vad.enabled),
    "-vt": (["-vt", "0.6"], lambda o: o.transcribe.vad.threshold == 0.6),
    "-vspd": (["-vspd", "100"], lambda o: o.transcribe.vad.min_speech_duration_ms == 100),
    "-vsd": (["-vsd", "500"], lambda o: o.transcribe.vad.min_silence_duration_ms == 500),
    "-vp": (["-vp", "100"], lambda o: o.transcribe.vad.speech_pad_ms == 100),
}
OUTPUTS = {"-otxt": "txt", "-ovtt": "vtt", "-osrt": "srt", "-olrc": "lrc", "-ocsv": "csv", "-oj": "json",
           "-ojf": "json"}
LONG = {short: long for short, long, _ in USAGE if short}


def test_every_supported_flag_is_covered():
    # -di (stereo channels; its long spelling --diarize is the voice embeddings here): test_diarize.py
    covered = {*TREE_EFFECTS, *OUTPUTS, "-h", "--version", "-ot", "-d", "-ml", "-tr", "-of", "-np", "-ps", "-pc",
               "-nt", "-dl", "-f", "-pp", "-di"}
    assert covered | REJECTED == {short or long for short, long, _ in USAGE}


@pytest.mark.parametrize("flag", sorted(TREE_EFFECTS))
def test_flag_sets_its_option_and_runs(flag, folder):
    args, effect = TREE_EFFECTS[flag]
    for spelling in {flag, LONG.get(flag, flag)}:
        assert effect(parsed(spelling, *args[1:])), spelling
    r = cli(CLIP, *args, *([] if flag == "-bs" else ["-bs", "1"]))
    assert r.exit_code == 0, r.stderr
    assert re.search(r"\] +\w", r.stdout), r.stdout  # a segment with text (each option changes which)
    assert files(folder) == [CLIP]


@pytest.mark.parametrize("flag", sorted(OUTPUTS))
def test_output_flags_write_their_file(flag, folder):
    for spelling in (flag, LONG[flag]):
        r = cli(CLIP, spelling, "-bs", "1", "-q")
        assert r.exit_code == 0, r.stderr
        assert files(folder) == sorted([CLIP, f"clip.{OUTPUTS[flag]}"])
        (folder / f"clip.{OUTPUTS[flag]}").unlink()
    assert parsed("-ojf").output.json_full


def test_print_progress_lines_as_whisper_cpp(folder):
    for spelling in ("-pp", "--print-progress"):
        r = cli(CLIP, spelling, "-bs", "1")
        assert r.exit_code == 0, r.stderr
        percents = [int(m) for m in re.findall(r"progress = +(\d+)%", r.stderr)]
        assert percents and percents[-1] == 100 and percents == sorted(percents), r.stderr
        assert all(p % 5 == 0 for p in percents)
        assert re.search(r"\] +\w", r.stdout)  # the segments still go to stdout
    assert "progress" not in cli(CLIP, "-bs", "1").stderr  # not asked, not a terminal: no progress
    assert "progress" not in cli(CLIP, "-pp", "-q", "-bs", "1").stderr


def test_help_and_version(folder):
    for spelling in ("-h", "--help"):
        r = cli(spelling)
        assert r.exit_code == 0 and "-osrt" in r.stdout
    r = cli("--version")
    assert r.exit_code == 0 and "whisperlite" in r.stdout


def test_offset_and_duration_in_milliseconds(folder):
    """-ot/-d as in whisper.cpp: milliseconds; segment and word times stay on the input's timeline."""
    shutil.copy(FIXTURES / "jfk.wav", folder / "jfk.wav")
    r = cli("jfk.wav", "--offset-t", "3000", "-d", "5000", "-bs", "1", "-oj", "-q")
    assert r.exit_code == 0, r.stderr
    segments = json.loads((folder / "jfk.json").read_text())["segments"]
    assert segments[0]["start"] >= 3.0 and segments[-1]["end"] <= 8.0
    assert segments[0]["text"].strip().lower().startswith("ask not")
    assert all(3.0 <= w["start"] <= 8.0 for s in segments for w in s["words"])
    r = cli(CLIP, "-ot", "1000", "--duration", "1000", "-bs", "1")
    assert r.exit_code == 0 and "[00:00:01.000 -->" in r.stdout, r.stdout


def test_max_len_limits_lines(folder):
    r = cli(CLIP, "-ml", "12", "-osrt", "-bs", "1", "-q")
    assert r.exit_code == 0, r.stderr
    text_lines = [ln for ln in (folder / "clip.srt").read_text().splitlines() if ln and not ln[0].isdigit()]
    assert text_lines and all(len(ln) <= 12 for ln in text_lines)


def test_translate_on_an_english_model_fails_with_one_line(folder):
    for spelling in ("-tr", "--translate"):
        r = cli(CLIP, spelling)
        assert r.exit_code == 1 and r.stderr.count("error:") == 1 and "translation" in r.stderr
    assert files(folder) == [CLIP]


def test_output_file_and_file(folder):
    for spelling in ("-of", "--output-file"):
        r = cli("-f", CLIP, spelling, "named", "-otxt", "-bs", "1", "-q")
        assert r.exit_code == 0 and (folder / "named.txt").exists(), r.stderr
        (folder / "named.txt").unlink()
    r = cli("--file", CLIP, "-bs", "1", "-q", "-otxt")
    assert r.exit_code == 0 and (folder / "clip.txt").exists()


@pytest.mark.slow
def test_printing_flags(folder):
    for spelling in ("-np", "--no-prints"):  # the results and nothing else
        r = cli(CLIP, spelling, "-bs", "1")
        assert r.exit_code == 0 and "fellow" in r.stdout and r.stderr == ""
    for spelling in ("-ps", "--print-special"):
        r = cli(CLIP, spelling, "-bs", "1")
        assert r.exit_code == 0 and re.search(r"\[_(BEG|TT_\d+)_?\]", r.stdout), r.stdout
    for spelling in ("-pc", "--print-colors"):
        r = cli(CLIP, spelling, "-bs", "1")
        assert r.exit_code == 0 and "\033[38;5;" in r.stdout
    for spelling in ("-nt", "--no-timestamps"):
        r = cli(CLIP, spelling, "-bs", "1")
        assert r.exit_code == 0 and "fellow" in r.stdout and "-->" not in r.stdout
    for spelling in ("-dl", "--detect-language"):
        r = cli(CLIP, spelling)
        assert r.exit_code == 0 and "detected language en" in r.stdout and "fellow" not in r.stdout
    assert files(folder) == [CLIP]


def test_clip_of_samples_through_the_api(tiny_model, jfk_audio):
    """ClipOptions on an array: only [offset, offset + duration) is decoded, times stay the input's."""
    from whisperlite.transcription.options import ClipOptions, TranscribeOptions, with_values

    options = with_values(TranscribeOptions(clip=ClipOptions(3.0, 5.0)), beam_size=1)
    segments, info = tiny_model.transcribe(jfk_audio, options)
    segments = list(segments)
    assert info.duration == pytest.approx(5.0)
    assert segments[0].start >= 3.0 and segments[-1].end <= 8.0
    assert segments[0].text.strip().lower().startswith("ask not")
