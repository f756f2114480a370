"""`whisperlite models list` through the real CLI: every name -m accepts, with its kind,
size and whether it is here, against a model cache of the test's own."""
import re

import pytest

from conftest import FIXTURES, run_cli


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    assert lines[0].split() == ["name", "kind", "size", "state"]
    # name, kind (words), size ("78 MB" or "-"), then the state text
    rows = {}
    for line in lines[1:]:
        m = re.match(r"(\S+)\s+(.+?)\s+(\d+ MB|-)\s{2}(.+)$", line)
        assert m, line
        rows[m[1]] = [m[2], m[3], m[4]]
    return rows


def test_list_shows_every_name_with_kind_size_and_state(tmp_path):
    models = tmp_path / "models"
    # A derived file already built, and a pulled hub model (the listing only looks for the files).
    models.mkdir()
    (models / "ggml-tiny.en-q5_0.bin").write_bytes(b"\0" * 3_000_000)
    smollm2 = models / "smollm2"
    smollm2.mkdir()
    (smollm2 / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"\0" * 2_000_000)

    r = run_cli("models", "list", env={"WHISPERLITE_CACHE": str(tmp_path)}, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = _rows(r.stdout)

    assert list(rows)[0] == "tiny.en" and rows["tiny.en"][0] == "whisper ct2 f16"
    assert rows["tiny.en"][2].startswith("default")
    assert rows["tiny.en-q5_0"] == ["whisper ggml q5_0", "3 MB", f"built: {models / 'ggml-tiny.en-q5_0.bin'}"]
    assert rows["tiny.en-q8_0"] == ["whisper ggml q8_0", "-", "made from tiny.en on first use"]
    assert rows["base"] == ["whisper ct2", "145 MB", "not pulled: whisperlite models pull base"]
    assert rows["smollm2"] == ["llama gguf", "2 MB", f"pulled: {smollm2 / 'SmolLM2-135M-Instruct.Q4_1.gguf'}"]
    for qtype in ("q8_0", "q5_0", "q5_1", "q4_0", "q4_1", "f16"):
        assert f"tiny.en-{qtype}" in rows


@pytest.mark.slow
def test_every_name_the_model_flag_knows_is_listed(tmp_path):
    """An unknown -m lists the names it knows: each of them is a row of `models list`."""
    env = {"WHISPERLITE_CACHE": str(tmp_path)}
    listed = _rows(run_cli("models", "list", env=env, timeout=120).stdout)
    r = run_cli("transcribe", str(FIXTURES / "jfk.wav"), "-m", "no-such-model", env=env, timeout=120)
    assert r.returncode != 0
    known = re.search(r"known: ([^;)]+)", r.stderr)
    assert known, r.stderr
    assert set(known[1].split(", ")) <= set(listed)


def test_pull_of_an_unknown_name_is_one_line():
    r = run_cli("models", "pull", "no-such-model", timeout=120)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "unknown model 'no-such-model'" in r.stderr
