"""Where a window resumes after its last timestamp: never inside the first word of the next
sentence (beam search's coarse timestamps can lie just past its onset, and a window started
inside a word skips the whole sentence)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from wer import normalize

from whisperlite.transcription.timing import MIN_UNHEARD, RESUME_PAD, RESUME_SLACK, resume_before_voice, sound_after


def voiced(*runs: tuple[int, int], n: int = 3000) -> np.ndarray:
    """Mel frames [start, end) that hold sound."""
    v = np.zeros(n, bool)
    for start, end in runs:
        v[start:end] = True
    return v


def test_seek_just_inside_a_sentence_after_a_pause_moves_into_the_pause():
    # sentence ends at 2570, 1.2 s pause, the next starts at 2692; the timestamp says 2700
    v = voiced((1300, 2570), (2692, 2990))
    assert resume_before_voice(v, 2700, earliest=1300) == 2692 - RESUME_PAD


def test_short_pause_keeps_half_of_it_before_the_onset():
    v = voiced((1300, 2570), (2600, 2990))  # 0.3 s pause
    assert resume_before_voice(v, 2650, earliest=1300) == 2600 - 15


def test_gaps_inside_the_first_word_are_not_the_pause():
    # the onset's word has stops of 50-100 ms; the timestamp falls in one of them
    v = voiced((1300, 2570), (2692, 2720), (2730, 2750), (2760, 2990))
    assert resume_before_voice(v, 2755, earliest=1300) == 2692 - RESUME_PAD


def test_seek_in_a_pause_stays():
    v = voiced((1300, 2570), (2692, 2990))
    assert resume_before_voice(v, 2600, earliest=1300) == 2600


@pytest.mark.parametrize("seek", [2400, 2560])
def test_seek_in_a_sound_that_began_long_before_stays(seek):
    # a segment cut mid-speech (more than the timestamp resolution past its onset)
    v = voiced((1300, 2570), (2692, 2990))
    assert resume_before_voice(v, seek, earliest=1000) == seek


def test_sound_that_began_before_the_last_segment_stays():
    # the onset is the last segment's own start: moving back would decode it again
    v = voiced((2650, 2990))
    assert resume_before_voice(v, 2700, earliest=2650) == 2700


def test_no_pause_long_enough_stays():
    v = voiced((1300, 2685), (2692, 2990))  # 70 ms gap: inside a phrase
    assert resume_before_voice(v, 2700, earliest=1300) == 2700


def test_no_contrast_stays():
    assert resume_before_voice(None, 2700, earliest=0) == 2700


# 45 s of `scripts/make_recording.py --seed 1` from 256.552 s (lossless: a lossy copy moves the
# timestamps and no longer shows the fault). Its second window's last timestamp, on a whole
# second, fell 80 ms inside "These actions infringe copyright …"; resumed there, the next
# window skipped that sentence.
RECORDING = Path(__file__).parent / "data" / "recordings" / "rec1-seed1-256.552s-45s.flac"


def test_speech_after_a_lone_final_timestamp_is_heard():
    # the transcript ends at 600 (one sentence); the window's sound goes on to its end
    v = voiced((0, 560), (640, 1500), (1530, 3000))
    assert sound_after(v, 600)


def test_a_pause_or_a_short_tail_after_the_end_is_not_speech_left_out():
    assert not sound_after(voiced((0, 2400)), 2400)  # silence to the window's end
    # sound only within the coarse timestamp's slack, or too little of it after
    assert not sound_after(voiced((0, 2400 + RESUME_SLACK)), 2400)
    assert not sound_after(voiced((0, 2400), (2600, 2600 + MIN_UNHEARD - 1)), 2400)
    assert sound_after(voiced((0, 2400), (2600, 2600 + MIN_UNHEARD)), 2400)
    assert not sound_after(None, 600)  # no contrast: nothing to go by


@pytest.mark.slow
def test_default_path_keeps_the_sentence_after_a_coarse_timestamp(tmp_path):
    r = run_cli("transcribe", str(RECORDING), "-osrt", "-otxt", "-of", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    words = normalize((tmp_path / "out.txt").read_text())
    text = " ".join(words)
    assert "copyright if you do not accept this license" in text  # the sentence once dropped
    # the sentences on either side, once each (resuming earlier must not decode them twice)
    assert text.count("subject to this license") == 1
    assert text.count("to protect your") == 1
    assert (tmp_path / "out.srt").read_text().count(" --> ") >= 5
