"""What a transcription produces: segments with their words, and facts about the input.

Writers, subtitles, batch and the loop all read these types; nothing here computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from whisperlite.core.profiling import Profile
from whisperlite.transcription.options import FLAT_NAMES, TranscribeOptions, VadOptions


@dataclass
class Word:
    start: float
    end: float
    word: str  # with its leading space, as the tokens decode
    probability: float
    tokens: list[int]
    speaker: str | None = None  # with diarization: SPEAKER_1, SPEAKER_2, …


@dataclass
class Segment:
    id: int
    seek: int  # mel frame where the window of this segment began
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    words: list[Word] | None = None  # with word_timestamps
    token_probs: list[float] = field(default_factory=list)  # probability of each of `tokens`
    speaker: str | None = None  # with diarization: SPEAKER_1, SPEAKER_2, … (its words' speaker)

@dataclass
class TranscriptionInfo:
    language: str
    language_probability: float
    duration: float | None  # container duration if known up front; exact once segments are consumed
    options: TranscribeOptions
    warning: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage (see `profile`)
    profile: Profile | None = field(default=None, repr=False)  # wall, CPU and counts per stage
    # every language's probability, most probable first, when the language was detected
    all_language_probs: list[tuple[str, float]] | None = None

    @property
    def transcription_options(self) -> SimpleNamespace:
        """The options by flat name (`info.transcription_options.hotwords`), as faster-whisper's."""
        return SimpleNamespace(**{name: getattr(getattr(self.options, group), leaf) if leaf else getattr(self.options, group)
                                  for name, (group, leaf) in FLAT_NAMES.items()})

    @property
    def vad_options(self) -> VadOptions:
        return self.options.vad


