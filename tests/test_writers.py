import json
import os

import pytest
import srt

from whisperlite.core.errors import OutputError
from whisperlite.transcription.options import TranscribeOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo
from whisperlite.output.writers import WRITERS, atomic_write_text, format_timestamp, write_outputs

SEGS = [
    Segment(0, 0, 0.0, 7.6, " And so my fellow Americans,", [1, 2], -0.2, 0.01, 0.0, 1.1),
    Segment(1, 0, 7.6, 3725.125, " ask not --> what", [3], -0.3, 0.02, 0.2, 1.2),
]
INFO = TranscriptionInfo("en", 1.0, 3726.0, TranscribeOptions())


def test_timestamp_format():
    assert format_timestamp(3725.125) == "01:02:05.125"
    assert format_timestamp(7.6, ",") == "00:00:07,600"
    assert format_timestamp(-0.001) == "00:00:00.000"


def test_srt_parses_back():
    subs = list(srt.parse(WRITERS["srt"](SEGS, INFO)))
    assert [s.content for s in subs] == ["And so my fellow Americans,", "ask not --> what"]
    assert subs[1].end.total_seconds() == pytest.approx(3725.125)


def test_vtt_txt_json_csv_lrc():
    vtt = WRITERS["vtt"](SEGS, INFO)
    assert vtt.startswith("WEBVTT\n") and "00:00:00.000 --> 00:00:07.600" in vtt and "ask not -> what" in vtt
    assert WRITERS["txt"](SEGS, INFO) == "And so my fellow Americans,\nask not --> what\n"
    doc = json.loads(WRITERS["json"](SEGS, INFO))
    seg = doc["segments"][0]
    assert set(seg) >= {"start", "end", "text", "avg_logprob", "no_speech_prob"}
    assert doc["segments"][1]["end"] == 3725.125
    assert WRITERS["csv"](SEGS, INFO).splitlines()[1] == "0,7600,\"And so my fellow Americans,\""
    assert WRITERS["lrc"](SEGS, INFO).splitlines()[1] == "[00:07.60]ask not --> what"


def test_write_outputs_is_atomic_and_leaves_no_temp(tmp_path):
    base = str(tmp_path / "talk")
    paths = write_outputs(SEGS, INFO, base, ["srt", "txt"])
    assert sorted(os.listdir(tmp_path)) == ["talk.srt", "talk.txt"]
    assert paths == [base + ".srt", base + ".txt"]


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "out.srt"
    target.write_text("previous")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write_text(str(target), "new")
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["out.srt"]


def test_outputs_get_normal_permissions(tmp_path):
    """Outputs are created with the umask's permissions like any file (mkstemp would give 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_text(str(tmp_path / "talk.srt"), "x")
    assert (tmp_path / "talk.srt").stat().st_mode & 0o777 == 0o666 & ~umask
