"""A multi-topic recording with known topic-change times, for chapter boundaries to be measured.

Six topics, each several sentences written here and read by espeak-ng (voices and speeds
drawn per sentence from a seeded generator, so neither marks a topic), two of them holding a
fixture clip (JFK in the one on public service, a LibriSpeech reader in the one on leaving
home). Pauses between sentences are drawn from one distribution everywhere, so a topic change
is no longer a pause than any other sentence break: the boundaries must come from the words.

    python tests/topics.py OUT.wav      # writes OUT.wav and prints the topic start times
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 16000

TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cooking", (
        "Tonight we are cooking a simple tomato soup in one large pot.",
        "Start by chopping two onions and three cloves of garlic on the cutting board.",
        "Warm some olive oil in the pot and fry the onions until they turn soft and golden.",
        "Add the garlic, a spoon of sugar and the chopped tomatoes, then a litre of vegetable stock.",
        "Let the soup simmer gently for twenty minutes and stir it now and then.",
        "Blend everything until it is smooth, and season it with salt and black pepper.",
        "A little fresh basil and a splash of cream make the flavour richer.",
        "Serve the soup hot in warm bowls with crusty bread from the oven.",
    )),
    ("astronomy", (
        "Now let us look up at the night sky and talk about the planets.",
        "Jupiter is the largest planet in our solar system, a giant ball of gas.",
        "Through a small telescope you can see its four bright moons circling around it.",
        "Saturn is famous for its rings, which are made of ice and rock.",
        "The light from distant stars travels for thousands of years before it reaches the earth.",
        "Astronomers measure those distances in light years and study the stars with huge telescopes.",
        "On a clear night far from the city lights, the galaxy looks like a band of milk across the sky.",
        "If you are patient you may even see a shooting star burn up in the atmosphere.",
    )),
    ("football", (
        "On to football, and what a match we saw on Saturday afternoon.",
        "The home team scored an early goal after a long pass from the midfield.",
        "The striker ran past two defenders and shot the ball into the corner of the net.",
        "In the second half the visitors pressed hard and the goalkeeper made three great saves.",
        "The referee showed a yellow card after a rough tackle near the penalty area.",
        "The coach changed the team and brought on a fast young winger for the last twenty minutes.",
        "The fans in the stadium sang until the final whistle, and the home side won two goals to one.",
        "The league table is now very close with only five games left in the season.",
    )),
    ("public service", (
        "Next, a few words about public service and what citizens owe their country.",
        "Many presidents have asked the people to serve their nation and their neighbours.",
        "Volunteers help in hospitals, schools and libraries without asking for anything in return.",
        "One famous speech put that idea into a single memorable line.",
        "@jfk.wav",
        "Those words still inspire citizens to vote, to volunteer and to take part in their communities.",
        "Serving your country can also mean simply helping the people who live on your street.",
    )),
    ("gardening", (
        "Let us move outside to the garden, where spring is the busiest season.",
        "Dig the soil deeply and mix in plenty of compost before you plant anything.",
        "Seeds of carrots, beans and lettuce can be sown directly into the beds.",
        "Tomato plants need a sunny spot, strong stakes and water every evening.",
        "Pull the weeds while they are small, so their roots do not steal water from the vegetables.",
        "A layer of mulch keeps the soil moist and protects the roots from the summer heat.",
        "Bees and butterflies visit the flowers and help the fruit trees to grow their fruit.",
        "By late summer the garden gives more vegetables than one family can eat.",
    )),
    ("leaving home", (
        "Finally, a story about leaving home and starting a new life abroad.",
        "Some travellers never explain why they left the land where they were born.",
        "One old book begins with a narrator who refuses to tell his reasons.",
        "@librispeech-2412-153948-0000.flac",
        "He only describes the long journey by ship, the storms at sea and the strange harbour where he landed.",
        "In the new country he learned a new language and found work as a clerk in a busy office.",
        "Years later he still wrote letters to his family, although he never travelled back to his home town.",
    )),
)

VOICES = ("en-us", "en-gb", "en+m3", "en-us+m5", "en+f3")
SPEEDS = (150, 165, 180)  # espeak-ng words per minute
PAUSE = (0.4, 1.2)  # seconds between sentences, the same at a topic change as within a topic
FIXTURE_DIRS = (ROOT / "fixtures", Path("/work/shared/fixtures"))


def _load(path: Path) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    from whisperlite.audio.ffmpeg import load_audio

    return load_audio(str(path))


def _fixture(name: str) -> np.ndarray:
    for d in FIXTURE_DIRS:
        if (d / name).exists():
            return _load(d / name)
    raise FileNotFoundError(name)


def _speak(text: str, voice: str, speed: int, tmp: Path) -> np.ndarray:
    raw = tmp / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    return _load(raw)


def build(seed: int = 7) -> tuple[np.ndarray, list[float]]:
    """The recording (16 kHz float32) and the time each topic's first sentence starts."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(0.5 * SAMPLE_RATE), np.float32)]
    starts = []
    pos = len(parts[0])
    with tempfile.TemporaryDirectory() as tmp:
        for _, sentences in TOPICS:
            starts.append(pos / SAMPLE_RATE)
            for s in sentences:
                if s.startswith("@"):
                    samples = _fixture(s[1:])
                else:
                    voice, speed = VOICES[rng.integers(len(VOICES))], int(SPEEDS[rng.integers(len(SPEEDS))])
                    samples = _speak(s, voice, speed, Path(tmp))
                peak = float(np.max(np.abs(samples))) or 1.0
                gap = np.zeros(int(rng.uniform(*PAUSE) * SAMPLE_RATE), np.float32)
                parts += [samples * np.float32(0.5 / peak), gap]
                pos += len(samples) + len(gap)
    return np.concatenate(parts), starts


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


if __name__ == "__main__":
    audio, starts = build()
    write_wav(Path(sys.argv[1]), audio)
    print(json.dumps({"duration": len(audio) / SAMPLE_RATE, "topic_starts": [round(t, 3) for t in starts],
                      "topics": [name for name, _ in TOPICS]}))
