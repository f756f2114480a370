"""One flag table: `transcribe` and `batch` take the same transcription flags with the same
defaults, every row sets a leaf of RunOptions, and parsed values become the options tree."""
import pytest

from whisperlite.cli.batch import batch
from whisperlite.cli.flags import NOT_TAKEN, pop_run_options
from whisperlite.cli.main import COMMANDS, main
from whisperlite.cli.transcribe import transcribe
from whisperlite.output.writers import WORD_FORMATS
from whisperlite.transcription.flags import BY_NAME, FLAGS, leaves, run_options
from whisperlite.transcription.options import (
    ClipOptions,
    ContextOptions,
    FallbackOptions,
    RunOptions,
    TranscribeOptions,
)


def table_params(command):
    return {p.name: p for p in command.params if p.name in BY_NAME}


def describe(p):
    return (p.opts, p.secondary_opts, p.default, p.show_default, p.is_flag, repr(p.type), p.help)


def test_transcribe_and_batch_take_the_same_flags_with_the_same_defaults():
    ours, theirs = table_params(transcribe), table_params(batch)
    assert set(ours) == set(theirs) == set(BY_NAME)
    for name in BY_NAME:
        if name in NOT_TAKEN["batch"]:  # refused by name: hidden, and an error when given
            assert theirs[name].hidden and not theirs[name].expose_value and theirs[name].opts == ours[name].opts
            continue
        assert describe(ours[name]) == describe(theirs[name]), name
    assert set(NOT_TAKEN["batch"]) == {"allow_urls"}  # batch reads files it can hash and resume
    # what batch adds of its own, and nothing else
    own = {p.name for p in batch.params} - set(BY_NAME) - {p.name for p in batch.params if getattr(p, "hidden", False)}
    assert own == {"inputs", "output_dir", "jobs", "force", "scheduler", "version"}


def test_every_row_sets_a_leaf_of_run_options():
    tree = set(leaves())
    for flag in FLAGS:
        assert flag.leaf in tree, flag.name
    names = [s for flag in FLAGS for s in (*flag.spellings, *flag.off)]
    assert len(names) == len(set(names))  # no spelling means two things


def parsed(*args: str) -> RunOptions:
    ctx = transcribe.make_context("transcribe", ["in.wav", *args])
    return pop_run_options(dict(ctx.params))


def test_defaults_are_the_options_tree_defaults():
    # words are timed when an output shows them; no output asked for here
    assert parsed() == RunOptions(transcribe=TranscribeOptions(word_timestamps=False))
    with_srt = parsed("-osrt")
    assert with_srt.transcribe == RunOptions().transcribe and with_srt.output.formats == ("srt",)


def test_values_become_leaves():
    run = parsed("-tp", "0.2", "-tpi", "0.3", "-ot", "1500", "-d", "2500", "-mc", "0", "-l", "de", "-tr",
                 "-ojf", "-otxt", "--no-context", "--compute-type", "f32", "-p", "3", "-t", "2", "-ml", "30",
                 "-nsow", "--no-vad", "-vt", "0.4", "--zh", "traditional", "-nt", "--no-word-timestamps")
    t = run.transcribe
    assert t.fallback.temperatures == (0.2, 0.5, 0.8)
    assert t.clip == ClipOptions(offset=1.5, duration=2.5)
    assert t.context == ContextOptions(condition_on_previous_text=False, max_context=0)
    assert (t.decode.language, t.decode.task, t.decode.without_timestamps) == ("de", "translate", True)
    assert not t.vad.enabled and t.vad.threshold == 0.4 and not t.word_timestamps
    assert run.output.formats == ("txt", "json") and run.output.json_full and run.output.zh_script == "traditional"
    assert run.output.subtitles.max_line_width == 30 and not run.output.subtitles.split_on_word
    assert (run.runtime.compute_type, run.runtime.processors, run.runtime.threads) == ("f32", 3, 2)
    assert not run.runtime.allow_urls and parsed("--allow-urls").runtime.allow_urls
    assert parsed("-tp", "0.2", "-nf").transcribe.fallback.temperatures == (0.2,)
    assert parsed("-tpi", "0").transcribe.fallback.temperatures == (0.0,)
    assert parsed("-l", "auto", "-mc", "-1", "-d", "0").transcribe.decode.language is None
    assert parsed("-mc", "-1").transcribe.context.max_context is None
    assert parsed("-d", "0").transcribe.clip.duration is None


def test_run_options_is_front_end_neutral():
    # a server's form fields: only what was sent; the rest keeps the tree's defaults
    run = run_options({"beam_size": 1, "output_vtt": True}, WORD_FORMATS)
    assert run.transcribe.decode.beam_size == 1 and run.output.formats == ("vtt",) and run.transcribe.word_timestamps
    assert run.transcribe.fallback == FallbackOptions()
    with pytest.raises(TypeError, match="no_such"):
        run_options({"no_such": 1})


def test_group_help_lists_each_command_by_its_own_first_line():
    for name, (_, _, short) in COMMANDS.items():
        command = main.get_command(None, name)
        assert " ".join(command.help.split()).startswith(short.rstrip(".")), name
