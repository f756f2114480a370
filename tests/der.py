"""Diarization error rate as pyannote.metrics' DiarizationErrorRate defines it, and test
recordings of several real speakers (and espeak-ng voices) with known turns.

DER = (missed speech + false alarm + confusion) / total reference speech, where at each
instant missed = max(0, #ref − #hyp), false alarm = max(0, #hyp − #ref) and confusion =
min(#ref, #hyp) − #correct, #correct counted after the one-to-one speaker mapping that
maximises the matched time (Hungarian assignment). `collar` seconds around every reference
turn boundary (half before, half after, as pyannote) are not scored. Time is sampled every
FRAME seconds. Missed speech and false alarm are the segmentation error; confusion the
clustering error.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

FRAME = 0.01
ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIRS = (ROOT / "fixtures", Path("/work/shared/fixtures"))
SAMPLE_RATE = 16000

Turn = tuple[float, float, str]  # start, end seconds, speaker label


@dataclass
class DerResult:
    total: float  # seconds of scored reference speech
    missed: float
    false_alarm: float
    confusion: float

    @property
    def der(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / self.total if self.total else 0.0

    @property
    def segmentation(self) -> float:
        return (self.missed + self.false_alarm) / self.total if self.total else 0.0

    @property
    def clustering(self) -> float:
        return self.confusion / self.total if self.total else 0.0

    def __str__(self) -> str:
        return (f"DER {100 * self.der:.1f}% (segmentation {100 * self.segmentation:.1f}%: missed "
                f"{self.missed:.2f} s, false alarm {self.false_alarm:.2f} s; clustering {100 * self.clustering:.1f}%) "
                f"of {self.total:.1f} s")


def _grid(turns: list[Turn], labels: list[str], n: int) -> np.ndarray:
    g = np.zeros((n, len(labels)), bool)
    for a, b, who in turns:
        g[int(round(a / FRAME)) : int(round(b / FRAME)), labels.index(who)] = True
    return g


def der(reference: list[Turn], hypothesis: list[Turn], collar: float = 0.0) -> DerResult:
    """pyannote.metrics' DER of `hypothesis` against `reference` (turns may overlap)."""
    end = max([b for _, b, _ in reference + hypothesis] + [0.0])
    n = int(np.ceil(end / FRAME)) + 1
    ref_labels = sorted({w for _, _, w in reference})
    hyp_labels = sorted({w for _, _, w in hypothesis})
    ref, hyp = _grid(reference, ref_labels, n), _grid(hypothesis, hyp_labels, n)
    scored = np.ones(n, bool)
    for a, b, _ in reference:
        for t in (a, b):
            scored[max(0, int(round((t - collar / 2) / FRAME))) : int(round((t + collar / 2) / FRAME))] = False
    ref, hyp = ref[scored], hyp[scored]
    n_ref, n_hyp = ref.sum(axis=1), hyp.sum(axis=1)
    # matched time of every (reference, hypothesis) pair, then the best one-to-one mapping
    overlap = ref.T.astype(np.float64) @ hyp.astype(np.float64)
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    correct = np.zeros(len(n_ref))
    for r, c in zip(rows, cols):
        correct += ref[:, r] & hyp[:, c]
    return DerResult(total=float(n_ref.sum()) * FRAME,
                     missed=float(np.maximum(n_ref - n_hyp, 0).sum()) * FRAME,
                     false_alarm=float(np.maximum(n_hyp - n_ref, 0).sum()) * FRAME,
                     confusion=float((np.minimum(n_ref, n_hyp) - correct).sum()) * FRAME)


def turns_of_segments(segments: list[dict], join_gap: float = 1.0) -> list[Turn]:
    """A transcript's speaker turns (segments as JSON dicts with start, end, speaker): the
    segments of one speaker joined across pauses shorter than `join_gap`."""
    turns: list[list] = []
    for s in segments:
        if turns and turns[-1][2] == s["speaker"] and s["start"] - turns[-1][1] < join_gap:
            turns[-1][1] = max(turns[-1][1], s["end"])
        else:
            turns.append([s["start"], s["end"], s["speaker"]])
    return [(a, b, w) for a, b, w in turns]


# ------------------------------------------------------------------ test recordings

def load(name: str, channel: int | None = None) -> np.ndarray:
    """A fixture at 16 kHz float32 (mono mix, or one channel of a stereo file)."""
    import soundfile as sf

    for d in FIXTURE_DIRS:
        if (d / name).exists():
            path = d / name
            break
    else:
        raise FileNotFoundError(name)
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    x = data[:, channel] if channel is not None else data.mean(axis=1)
    if rate != SAMPLE_RATE:
        import librosa

        x = librosa.resample(x, orig_sr=rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(x, np.float32)


def speak(text: str, voice: str, speed: int = 160) -> np.ndarray:
    """espeak-ng reading `text` in `voice`, at 16 kHz."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True)
        x, rate = sf.read(str(out), dtype="float32")
    import librosa

    return 0.5 * librosa.resample(x, orig_sr=rate, target_sr=SAMPLE_RATE).astype(np.float32)


def _speech_bounds(x: np.ndarray) -> tuple[int, int]:
    """First and last sample of 20-ms frames within 35 dB of the loudest frame."""
    hop = SAMPLE_RATE // 50
    frames = x[: len(x) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - 35)
    return int(loud[0]) * hop, (int(loud[-1]) + 1) * hop


def halves(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A clip cut at its quietest 100 ms between 35% and 65% of its length."""
    hop = SAMPLE_RATE // 10
    lo, hi = int(0.35 * len(x)) // hop, int(0.65 * len(x)) // hop
    energy = [float(np.mean(x[k * hop : (k + 1) * hop] ** 2)) for k in range(lo, hi)]
    cut = (lo + int(np.argmin(energy))) * hop + hop // 2
    return x[:cut], x[cut:]


def concatenate(pieces: list[tuple[np.ndarray, str]], gap: float = 0.7, seed: int = 0) -> tuple[np.ndarray, list[Turn]]:
    """Pieces (trimmed to their speech) one after another with `gap` s of faint noise between
    them; the reference turns are where each piece's speech is."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    turns: list[Turn] = []
    at = 0
    pad = int(gap * SAMPLE_RATE)
    for x, who in pieces:
        a, b = _speech_bounds(x)
        x = x[a:b] / max(1e-3, float(np.abs(x[a:b]).max())) * 0.5
        out.append(np.zeros(pad, np.float32))
        at += pad
        out.append(x.astype(np.float32))
        turns.append((at / SAMPLE_RATE, (at + len(x)) / SAMPLE_RATE, who))
        at += len(x)
    out.append(np.zeros(pad, np.float32))
    audio = np.concatenate(out)
    audio += rng.normal(0, 1e-3, len(audio)).astype(np.float32)
    return audio, turns


def two_speakers() -> tuple[np.ndarray, list[Turn]]:
    """Kennedy (jfk) and a LibriSpeech reader, two turns each."""
    j1, j2 = halves(load("jfk.wav"))
    l1, l2 = halves(load("librispeech-2412-153948-0000.flac"))
    return concatenate([(j1, "jfk"), (l1, "libri"), (j2, "jfk"), (l2, "libri")])


def stereo_two_speakers(bleed: float = 0.1) -> tuple[np.ndarray, list[Turn]]:
    """`two_speakers` as a two-microphone recording (frames (n, 2)): jfk on the left channel,
    the LibriSpeech reader on the right, each heard on the other microphone at `bleed`."""
    audio, turns = two_speakers()
    frames = np.stack([audio, audio], axis=1)
    for a, b, who in turns:
        other = 1 if who == "jfk" else 0
        frames[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE), other] *= bleed
    return frames, turns


def three_speakers() -> tuple[np.ndarray, list[Turn]]:
    """Kennedy, a LibriSpeech reader and an SPPAS English speaker, two turns each."""
    j1, j2 = halves(load("jfk.wav"))
    l1, l2 = halves(load("librispeech-2412-153948-0000.flac"))
    s1, s2 = halves(load("sppas-eng-ENG_M15_ENG_T02.flac"))
    return concatenate([(j1, "jfk"), (l1, "libri"), (s1, "sppas"), (j2, "jfk"), (s2, "sppas"), (l2, "libri")])


SENTENCES = (
    "The committee will meet again next Tuesday to review the budget for the coming year.",
    "I think we should start with the results from the second experiment before lunch.",
    "That sounds reasonable, but the numbers from the first trial still worry me a little.",
    "Could you send me the slides tonight so that I can read them on the train tomorrow?",
    "Of course, and I will add a short summary of the open questions at the very end.",
    "Thank you, that helps a lot, and please keep the figures as simple as you can.",
)


def espeak_three() -> tuple[np.ndarray, list[Turn]]:
    """Three espeak-ng voices taking turns over six sentences. (espeak-ng's male variants are
    one voice to the speaker encoder: en-us and en-gb-scotland+m3 embed at cosine 0.93.)"""
    voices = (("en-us", "A"), ("en+f3", "B"), ("en+anika", "C"))
    order = (0, 1, 2, 0, 1, 2)
    return concatenate([(speak(s, voices[v][0]), voices[v][1]) for s, v in zip(SENTENCES, order)], seed=1)


def held_out() -> tuple[np.ndarray, list[Turn]]:
    """Speakers not tuned on: the two voices of stereo_diarization.wav (one per channel) and
    the SpeechBrain speaker, with an SPPAS speaker's turns in between."""
    left, right = load("stereo_diarization.wav", 0), load("stereo_diarization.wav", 1)
    s1, s2 = halves(load("sppas-eng-ENG_M15_ENG_T02.flac"))
    sb = load("speechbrain-spk1_snt1.wav")
    return concatenate([(left, "left"), (s1, "sppas"), (right, "right"), (sb, "speechbrain"), (s2, "sppas")], seed=2)





def write_wav(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")


def reference_json(turns: list[Turn]) -> str:
    return json.dumps([{"start": a, "end": b, "speaker": w} for a, b, w in turns])


def one_speaker() -> tuple[np.ndarray, list[Turn]]:
    """One SPPAS speaker in two turns: no second speaker may be invented."""
    s1, s2 = halves(load("sppas-eng-ENG_M15_ENG_T02.flac"))
    return concatenate([(s1, "sppas"), (s2, "sppas")], gap=1.5, seed=3)


def fresh() -> tuple[np.ndarray, list[Turn]]:
    """Made after the clustering was settled, never tuned on: a German SPPAS speaker, the
    hotwords.mp3 speaker and an espeak-ng voice used nowhere else."""
    d1, d2 = halves(load("sppas-deu-DEU_F10_DEU_T02.flac"))
    k1, k2 = speak(SENTENCES[2], "en-us+klatt"), speak(SENTENCES[5], "en-us+klatt")
    return concatenate([(d1, "deu"), (k1, "klatt"), (load("hotwords.mp3"), "hotwords"), (d2, "deu"), (k2, "klatt")],
                       seed=4)


def fresh_english() -> tuple[np.ndarray, list[Turn]]:
    """Also made after the rule was fixed, in English so that tiny.en gives words: the
    hotwords.mp3 speaker and two espeak-ng voices used nowhere else."""
    k1, k2 = speak(SENTENCES[0], "en-us+klatt"), speak(SENTENCES[3], "en-us+klatt")
    f1, f2 = speak(SENTENCES[1], "en+f2"), speak(SENTENCES[4], "en+f2")
    return concatenate([(k1, "klatt"), (f1, "f2"), (load("hotwords.mp3"), "hotwords"), (k2, "klatt"), (f2, "f2")],
                       seed=5)


RECORDINGS = {"one": one_speaker, "two": two_speakers, "three": three_speakers, "espeak": espeak_three,
              "held_out": held_out, "fresh": fresh, "fresh_english": fresh_english}
