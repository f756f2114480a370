#!/usr/bin/env python
"""A long, varied test recording with its exact transcript, for word error rates to trust.

A recording of a few clips repeated hides what goes wrong once per stretch of new speech
(a sentence dropped at a window boundary happens at the same place every repeat, or never).
This one holds many different sentences: the English fixtures with exact references (each
once) and sentences of the GPL-3, GPL-2 and LGPL-2.1 texts read by espeak-ng in several voices and speeds, in a
seeded random order, with pauses of 0.3-2 s (and now and then a longer one, which the VAD
cuts), each sentence at its own level, over a little seeded noise. Two seeds give two
recordings with different sentence orders, voices and pauses: tune on one, check on the
other.

`--real` makes a recording of human speech only, from the fixtures that
scripts/bench_stream.py's recording does not use: the English half of multilingual.mp3
(the MIT licence read aloud), each voice of stereo_diarization.wav alone (one per channel)
and speechbrain's sentence, in a seeded order with seeded pauses, twice over (in another
order the second time), over the same noise.

    python scripts/make_recording.py --seed 1 --minutes 10 --out /tmp/wl/rec1
    # -> /tmp/wl/rec1.wav (16 kHz mono 16-bit) and /tmp/wl/rec1.txt (reference text)
    python scripts/make_recording.py --seed 1 --real --out /tmp/wl/real1
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from whisperlite.audio.ffmpeg import SAMPLE_RATE, load_audio

TEXTS = tuple(Path("/usr/share/common-licenses") / name for name in ("GPL-3", "GPL-2", "LGPL-2.1"))
# English clips with exact references, from both fixture folders (stereo_diarization's two
# voices overlap, so its word order is not defined; hotwords has no reference).
FIXTURE_DIRS = (ROOT / "fixtures", Path("/work/shared/fixtures"))
CLIPS = ("jfk.wav", "librispeech-2412-153948-0000.flac", "sppas-eng-ENG_M15_ENG_T02.flac",
         "praatio-bobby.flac", "praatio-mary.flac", "speechbrain-spk1_snt1.wav")
VOICES = ("en-us", "en-gb", "en+f3", "en+m3", "en-us+f4", "en-gb-scotland", "en+f2", "en-us+m5")
SPEEDS = (140, 155, 170, 185)  # espeak-ng words per minute
NOISE_DBFS = -50.0  # white noise under everything: audible, far below speech
LONG_PAUSE = 0.12  # share of pauses of 2-4 s (cut by the VAD's 2 s minimum silence)
# multilingual.mp3 reads the MIT licence in English up to here (seconds), then in German. The
# reader leaves out '(the "Software")'.
MIT_SECONDS = 30.0
MIT_SPOKEN = ("Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
              "associated documentation files, to deal in the software without restriction, including without "
              "limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell "
              "copies of the software, and to permit persons to whom the software is furnished to do so, subject "
              "to the following conditions: The above copyright notice and this permission notice shall be "
              "included in all copies or substantial portions of the software.")


def sentences(text: str) -> list[str]:
    """Plain sentences (or clauses, cut at ; and :) of 5-35 words: letters and simple
    punctuation only, so a transcript written any reasonable way normalizes to the same
    words (no digits, abbreviations or section letters that a speech model spells otherwise)."""
    flat = re.sub(r"\s+", " ", text.replace('"', "").replace("`", ""))
    out = []
    for s in re.split(r"(?<=[.!?;:]) ", flat):
        s = s.strip().rstrip(";:").strip()
        s = s if s.endswith((".", "!", "?")) else s + "."
        words = s.split()
        if not 5 <= len(words) <= 35 or not re.fullmatch(r"[A-Za-z][A-Za-z ,;'-]*[a-z][.?!]", s):
            continue
        if any(w.isupper() and len(w) > 1 for w in words) or "--" in s:
            continue
        out.append(s)
    return list(dict.fromkeys(out))


def speak(text: str, voice: str, speed: int, tmp: Path) -> np.ndarray:
    """espeak-ng reading `text`, as 16 kHz float32 samples."""
    raw, wav16 = tmp / "say.wav", tmp / "say16.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", "-q", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav16), "vol", "0.8"],
                   check=True)
    return load_audio(str(wav16))


def fixture(name: str) -> tuple[Path, dict] | None:
    """The first fixture folder's copy of `name` and its manifest entry."""
    for d in FIXTURE_DIRS:
        manifest = {e["file"]: e for e in json.loads((d / "manifest.json").read_text())}
        if name in manifest and (d / name).exists():
            return d / name, manifest[name]
    return None


def fixture_clips() -> list[tuple[np.ndarray, str]]:
    found = [fixture(name) for name in CLIPS]
    return [(load_audio(str(path)), entry["transcript"].replace(" / ", ". ")) for path, entry in filter(None, found)]


def real_clips() -> list[tuple[np.ndarray, str]]:
    """The human speech with exact references that the bench recording does not use."""
    path, stereo = fixture("stereo_diarization.wav")
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    channels = [(pcm[:, c].astype(np.float32) / 32768, stereo[f"transcript_{side}"])
                for c, side in enumerate(("left", "right"))]
    path, sentence = fixture("speechbrain-spk1_snt1.wav")
    mit = load_audio(str(fixture("multilingual.mp3")[0]))[: int(MIT_SECONDS * SAMPLE_RATE)]
    return [(mit, MIT_SPOKEN), *channels, (load_audio(str(path)), sentence["transcript"])]


def mix(pieces: list[tuple[np.ndarray, str, float]], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """The pieces (samples, reference, pause after) one after another, each at its own level,
    over the noise."""
    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    for samples, _, pause in pieces:
        peak = float(np.max(np.abs(samples))) or 1.0
        parts.append(samples * (10 ** (rng.uniform(-12, -3) / 20) / peak))
        parts.append(np.zeros(int(pause * SAMPLE_RATE), np.float32))
    audio = np.concatenate(parts)
    audio += rng.standard_normal(len(audio)).astype(np.float32) * np.float32(10 ** (NOISE_DBFS / 20))
    return np.clip(audio, -1.0, 1.0), " ".join(text for _, text, _ in pieces)


def build_real(seed: int) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    clips = real_clips()
    pieces = []
    for _ in range(2):
        for k in rng.permutation(len(clips)):
            pieces.append((*clips[k], rng.uniform(2.0, 4.0) if rng.random() < LONG_PAUSE else rng.uniform(0.3, 2.0)))
    return mix(pieces, rng)


def build(seed: int, minutes: float) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    pool = sentences("\n".join(t.read_text() for t in TEXTS))
    rng.shuffle(pool)
    clips = fixture_clips()
    pieces: list[tuple[np.ndarray, str, float]] = []  # (samples, reference, pause after)
    total = 0.0

    def add(samples: np.ndarray, ref: str) -> None:
        nonlocal total
        pause = rng.uniform(2.0, 4.0) if rng.random() < LONG_PAUSE else rng.uniform(0.3, 2.0)
        pieces.append((samples, ref, pause))
        total += len(samples) / SAMPLE_RATE + pause

    with tempfile.TemporaryDirectory() as tmp:
        # the fixture clips go in at random places among the spoken sentences
        clip_at = set(rng.choice(len(pool), size=len(clips), replace=False).tolist())
        clip_iter = iter(clips)
        for k, text in enumerate(pool):
            if total >= minutes * 60:
                break
            if k in clip_at:
                add(*next(clip_iter))
            voice, speed = VOICES[rng.integers(len(VOICES))], int(SPEEDS[rng.integers(len(SPEEDS))])
            add(speak(text, voice, speed, Path(tmp)), text)
        else:
            raise SystemExit(f"only {total / 60:.1f} min of sentences: ask for fewer --minutes")
    return mix(pieces, rng)


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.round(samples * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path, required=True, help="path without extension: writes OUT.wav and OUT.txt")
    ap.add_argument("--real", action="store_true", help="human speech only, from fixtures the bench recording does not use")
    args = ap.parse_args()
    audio, text = build_real(args.seed) if args.real else build(args.seed, args.minutes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_wav(args.out.with_suffix(".wav"), audio)
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(f"{args.out.with_suffix('.wav')}: {len(audio) / SAMPLE_RATE / 60:.1f} min, {len(text.split())} words")


if __name__ == "__main__":
    main()
