"""Beam search against greedy decoding on real speech (tiny.en, one window per fixture)."""
from __future__ import annotations

import numpy as np
import pytest

from whisperlite.audio.ffmpeg import N_SAMPLES, load_audio
from whisperlite.transcription.decoding import BeamSearchDecoder, WindowDecoder
from whisperlite.transcription.options import DecodeOptions
from whisperlite.audio.mel import log_mel_spectrogram, pad_or_trim

from conftest import FIXTURES


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _cross(model, name: str):
    audio = load_audio(str(FIXTURES / name))[:N_SAMPLES]
    mel = pad_or_trim(log_mel_spectrogram(audio, model.model.dims.n_mels, padding=N_SAMPLES - len(audio)))
    return model.model.decoder.new_cache(model.model.encoder(mel))


def _score(result) -> float:
    # The ranking beam search uses when no length penalty is set: log-probability per token.
    return result.sum_logprob / max(len(result.tokens), 1)


@pytest.mark.parametrize("name", ["stereo_diarization.wav", "jfk.wav"])
@pytest.mark.slow
def test_beam_never_scores_worse_than_greedy(model, name):
    dec = WindowDecoder(model.model, model.tokenizer)
    cross = _cross(model, name)
    greedy = dec.decode(cross, DecodeOptions(language="en", beam_size=1))
    beam = dec.decode(cross, DecodeOptions(language="en", beam_size=5))
    assert _score(beam) >= _score(greedy) - 1e-6
    if name == "stereo_diarization.wav":
        # Two overlapping talkers: greedy commits to a poor first word that beam search avoids.
        assert beam.text != greedy.text
        assert _score(beam) > _score(greedy) + 0.05
    else:
        assert "ask not what your country can do for you" in beam.text.lower()


def test_beam_step_keeps_best_candidates_and_sets_finished_aside():
    eot = 9
    bs = BeamSearchDecoder(beam_size=2, patience=1.0, eot=eot)
    tokens = np.zeros((2, 1), np.int64)
    lp = np.log(np.full((2, 10), 1e-6))
    lp[0, [3, 4, eot]] = np.log([0.5, 0.3, 0.2])
    rows, nxt = bs.step(tokens, lp, np.zeros(2))  # log-probabilities: their lse is 0
    # First step: only row 0 proposes (all rows are copies of the prompt).
    assert rows.tolist() == [0, 0] and nxt.tolist() == [3, 4]
    assert len(bs.finished) == 0  # eot ranked third: not among the beam_size best
    tokens = np.concatenate([tokens[rows], nxt[:, None]], axis=1)
    lp2 = np.log(np.full((2, 10), 1e-6))
    lp2[0, eot], lp2[0, 5] = np.log(0.9), np.log(0.1)
    lp2[1, 6], lp2[1, eot] = np.log(0.99), np.log(0.01)
    rows, nxt = bs.step(tokens, lp2, np.zeros(2))
    assert [h.tokens for h in bs.finished] == [[0, 3]]
    assert rows.tolist() == [1, 0] and nxt.tolist() == [6, 5]
    bs.step(np.concatenate([tokens[rows], nxt[:, None]], axis=1), lp2, np.zeros(2))
    assert bs.done  # patience 1.0: two finished sequences for a beam of two


def test_no_finite_candidate_is_a_model_error_not_a_crash():
    """NaN logits (weights that load finite but overflow) leave no candidate: one line."""
    from whisperlite.core.errors import ModelFormatError

    with pytest.raises(ModelFormatError, match="no finite scores"):
        WindowDecoder._pick(None, [], 0.0, DecodeOptions())


def test_beam_search_runs_on_while_its_best_candidate_continues():
    """Enough eot proposals from weaker beams do not end the window while the best candidate
    still continues: ending there made the long-form loop skip the rest of the window (a
    sentence or more of speech) as silence."""
    eot = 9
    bs = BeamSearchDecoder(beam_size=2, patience=1.0, eot=eot)
    tokens = np.zeros((2, 1), np.int64)
    lp = np.log(np.full((2, 10), 1e-6))
    lp[0, [3, 4, eot]] = np.log([0.4, 0.35, 0.25])
    rows, nxt = bs.step(tokens, lp, np.zeros(2))
    tokens = np.concatenate([tokens[rows], nxt[:, None]], axis=1)
    # both beams' eot rank above the second live candidate: two finished, the best continues
    lp2 = np.log(np.full((2, 10), 1e-6))
    lp2[0, 5], lp2[0, eot] = np.log(0.6), np.log(0.4)
    lp2[1, eot], lp2[1, 6] = np.log(0.45), np.log(0.3)
    bs.step(tokens, lp2, np.zeros(2))
    assert len(bs.finished) == 2 and not bs.done
    # the best candidate is eot: done
    lp3 = np.log(np.full((2, 10), 1e-6))
    lp3[:, eot] = np.log(0.99)
    bs.step(tokens, lp3, np.zeros(2))
    assert bs.done
