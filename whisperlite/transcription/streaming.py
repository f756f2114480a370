"""Live transcription: a stream of 16 kHz samples in, events out, with no I/O of its own.

`StreamingTranscriber(model, options).feed(samples)` takes float32 mono samples as they
arrive and returns events: `partial` (the words not yet final: they may still change),
`final` (words that will never change, with times on the stream's clock: seconds since the
first sample fed) and, from `finish()`, `done`. A front end (the `stream` command, a
WebSocket) owns the clock and the audio source; this class only decodes.

Silero scores every 32 ms frame as it arrives: only stretches of speech are decoded, so
silence, noise and music cost no decoding and never produce text. A pause of
`end_silence_ms` ends an utterance: its words that start before the pause all become final
at once. The next utterance is decoded with up to `context_ms` of the final words before it
(a short utterance alone is often misheard); a pass skips the final words it decodes again
by matching their text. A pass's encoder sees its audio plus `encoder_pad_ms` of silence
rather than a 30-s window (whisper.cpp's `audio_ctx`, chosen per pass), so a pass over a few
seconds costs a fraction of a window.
A pass whose words are not final yet is decoded once, at temperature 0, and skipped when it
loops; one that is unsure (a low average log probability) may confirm the last pass's words
but not propose its own; new tokens are capped by the pass's length, and a phrase said twice
in a row is cut (a short utterance before silence makes greedy decoding loop).

Two policies decide when words become final within an utterance:

- `agreement` (LocalAgreement-2, as whisper_streaming): the utterance so far is decoded again
  whenever `min_chunk_ms` of new audio has arrived; a word is final once the pass and the
  last one, or the one before the last, agree on it and on every word before it (one that
  neither is sure of waits until a pass has `wait_ms` of audio after it), or, whatever the
  passes said, once the stream has `wait_ms` of audio after it. Each pass is prompted with
  the final text that has left the buffer, and the buffer is cut after a final sentence end
  once it is longer than `trim_seconds` (by default from the model's size), so a pass never
  decodes more than one 30-s window.
- `window` (whisper.cpp's `stream`): every `step_ms` the last `length_ms` of audio is decoded
  and shown as partial; every `length_ms / step_ms - 1` steps that text becomes final and
  only `keep_ms` of audio is carried into the next line. `step_ms` 0: each utterance is
  decoded once, when it ends (at most `length_ms` at a time).
"""
from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from whisperlite.audio.ffmpeg import HOP_LENGTH, N_FRAMES, SAMPLE_RATE
from whisperlite.audio.mel import log_mel_spectrogram
from whisperlite.audio.silero import FRAME, SileroVad
from whisperlite.audio.vad import silero_weights
from whisperlite.formats.checkpoint import WhisperDims
from whisperlite.transcription.decoding import DecodeResult, compression_ratio
from whisperlite.transcription.options import FallbackOptions, OptionError, StreamOptions, TranscribeOptions
from whisperlite.transcription.results import Segment, TranscriptionInfo, Word
from whisperlite.transcription.transcribe import INPUT_STRIDE, WhisperModel, _Window

SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")
# A window holds 30 s; cutting the buffer by 25 s at the latest leaves room for a pass's new audio.
MAX_BUFFER_SECONDS = 25.0
PROMPT_CHARS = 200  # final text given as the prompt (whisper_streaming's amount)
SEGMENT_GAP = 1.0  # seconds between final words that start a new output segment
# New tokens a pass may give per second of its audio (and once more): speech needs a few; a
# pass that loops on a short utterance would otherwise run to half the text context.
TOKENS_PER_SECOND = 10
# Seconds of an utterance after which a pass that gives nothing past its context words
# decodes again without them.
CONTEXT_GIVE_UP = 2.0
FRAGMENT_CHARS = 3  # the shortest end of a final word a pass may give as its first words (`_after`)
LOOP_TOKENS = 4  # a phrase this long said twice in a row is a decoding loop, not speech
# The buffer is cut after a final sentence end once it is longer than this on tiny (4 layers
# of width 384 in the encoder); a model whose encoder costs more per second of audio gets
# proportionally less, so that its pass over a full buffer costs about what tiny's does and
# fits between passes (`trim_seconds_for`), but never less than a sentence or so.
TRIM_SECONDS, TRIM_REFERENCE, TRIM_FLOOR = 15.0, 4 * 384**2, 5.0
# A word becomes final when the pass and the last one agree on it (LocalAgreement-2), or the
# pass and the one before the last (passes disagreeing on a garbled word tend to alternate
# between two readings). One that neither agreeing pass is sure of (probability below UNSURE)
# waits until a pass has `wait_ms` of audio after its end: words misheard on too little
# audio after them are mostly unsure, and a pass with more of what follows often hears them
# as offline transcribe does. `wait_ms` also bounds every word's wait: once the stream has
# that much audio after a word, the latest reading that passed the gates becomes final,
# whatever the passes before said (passes that kept disagreeing on a stretch of garbled
# speech held it, and every word after it, for 4-6 s). Counted from each word's own end, so
# a run of such words becomes final together, not one wait after another.
UNSURE = 0.4


def trim_seconds_for(dims: WhisperDims) -> float:
    """The default `StreamOptions.trim_seconds` for a model of these dimensions: the encoder's
    cost per second of audio (layers x width squared) against tiny's."""
    cost = dims.n_audio_layer * dims.n_audio_state**2
    return max(TRIM_FLOOR, round(TRIM_SECONDS * TRIM_REFERENCE / cost, 1))


@dataclass(frozen=True)
class StreamEvent:
    """`partial`: the words not yet final (the whole tail, replacing the previous partial);
    `final`: words newly final, never retracted; `done`: the stream ended."""

    type: str
    words: tuple[Word, ...] = ()

    @property
    def text(self) -> str:
        return "".join(w.word for w in self.words)

    def as_dict(self) -> dict:
        """The event as JSON-ready data (for a server)."""
        out: dict = {"type": self.type}
        if self.type != "done":
            out["text"] = self.text.strip()
            out["words"] = [{"start": w.start, "end": w.end, "word": w.word, "probability": round(w.probability, 4)}
                            for w in self.words]
        return out


def _norm(word: str) -> str:
    return "".join(c.lower() for c in word if c.isalnum())


def _near(a: Word, b: Word) -> bool:
    return abs(a.start - b.start) < 1.0 or abs(a.end - b.end) < 1.0


def _loop_end(tokens: list[int], stamp: int, spell: Callable[[int], str]) -> int:
    """How many of `tokens` to keep: up to the end of the first phrase (LOOP_TOKENS text tokens
    or more, timestamps aside) said twice in a row, or all. Greedy decoding of a short
    utterance followed by silence tends to loop on it ("Mary rolled the barrel. Mary rolled
    the barrel. ..."); cut before the words are aligned, or the loop drags the times of the
    words before it. Tokens are compared as `spell` writes them, in lower case: the repeat
    may capitalize the phrase's first word ("and so my fellow Americans. And so my fellow
    Americans.")."""
    text = [i for i, t in enumerate(tokens) if t < stamp]
    keys = [spell(tokens[i]).strip().lower() for i in text]
    for i in range(len(keys)):
        for k in range(LOOP_TOKENS, (len(keys) - i) // 2 + 1):
            if keys[i : i + k] == keys[i + k : i + 2 * k]:
                return text[i + k - 1] + 1
    return len(tokens)


def _loops(result: DecodeResult, fallback: FallbackOptions) -> bool:
    return fallback.compression_ratio_threshold is not None and result.compression_ratio > fallback.compression_ratio_threshold


def _unsure(result: DecodeResult, fallback: FallbackOptions) -> bool:
    return fallback.logprob_threshold is not None and result.avg_logprob < fallback.logprob_threshold


class _VoiceGate:
    """Silero over the incoming samples, frame by frame: where speech starts (after
    `min_speech` of frames at or above the threshold) and where it ends (followed by
    `end_silence` of frames below the lower threshold), as sample indices of the stream."""

    def __init__(self, threshold: float, neg_threshold: float, min_speech: int, end_silence: int):
        self._vad = SileroVad(silero_weights())
        self._threshold, self._neg = threshold, neg_threshold
        self._min_speech, self._end_silence = min_speech, end_silence
        self._tail = np.zeros(0, np.float32)
        self.pos = 0  # stream sample index of the next frame scored
        self.speaking = False
        self._run = 0  # samples: a candidate burst (silent), or a pause (speaking)

    def push(self, samples: np.ndarray) -> list[tuple[str, int]]:
        buf = np.concatenate([self._tail, samples]) if len(self._tail) else samples
        n = len(buf) // FRAME * FRAME
        self._tail = buf[n:].copy()
        changes = []
        for p in self._vad(buf[:n]).tolist() if n else ():
            self.pos += FRAME
            if not self.speaking:
                self._run = self._run + FRAME if p >= (self._neg if self._run else self._threshold) else 0
                if self._run >= self._min_speech:
                    changes.append(("start", self.pos - self._run))
                    self.speaking, self._run = True, 0
            else:
                self._run = self._run + FRAME if p < self._neg else 0
                if self._run >= self._end_silence:
                    changes.append(("end", self.pos - self._run))
                    self.speaking, self._run = False, 0
        return changes


class StreamingTranscriber:
    """One live stream on a `WhisperModel`: `feed(samples)` → events, `finish()` → the last.

    `options` is the transcription's options tree as `transcribe` takes it (decoding,
    fallback, context, VAD thresholds); word times are always on, and the VAD always gates.
    `clock` times a pass's temperature fallback against `StreamOptions.fallback_ms` (a
    benchmark that simulates the stream's time passes the clock it charges feeds on).
    Not thread-safe: one stream, one caller.
    """

    def __init__(self, model: WhisperModel, options: TranscribeOptions | None = None,
                 stream: StreamOptions | None = None, clock: Callable[[], float] = time.perf_counter):
        self.model = model
        self._now = clock
        self.stream = stream or StreamOptions()
        self.stream.check()
        self._wait = self.stream.wait_ms / 1000
        self._trim_seconds = (trim_seconds_for(model.model.dims) if self.stream.trim_seconds is None
                              else self.stream.trim_seconds)
        opts = options or TranscribeOptions()
        language = model._check_language(opts)  # a bad language fails now, not on the first speech
        self.language = language
        self.options = replace(opts, vad=replace(opts.vad, enabled=False), word_timestamps=True)
        v = opts.vad
        ms = SAMPLE_RATE // 1000
        self._pad = min(v.speech_pad_ms, self.stream.end_silence_ms) * ms
        neg = v.neg_threshold if v.neg_threshold is not None else max(v.threshold - 0.15, 0.01)
        self._min_speech = max(v.min_speech_duration_ms * ms, FRAME)
        tok = model.tokenizer
        prompt, hot = opts.context.initial_prompt, opts.context.hotwords
        self._initial = list(prompt) if isinstance(prompt, tuple) else tok.encode(" " + prompt.strip()) if prompt else []
        self._hotwords = tuple(tok.encode(" " + hot.strip())) if hot else ()
        self._gate = _VoiceGate(v.threshold, neg, self._min_speech, self.stream.end_silence_ms * ms)
        self._audio = np.zeros(0, np.float32)  # the buffer: samples from _start on
        self._start = 0  # stream sample index of _audio[0]
        self._clock = 0  # samples fed so far
        self._last_pass = 0  # stream sample index where the last pass's audio ended
        self._speech_from = 0  # stream sample index where the utterance in progress began
        self.final: list[Word] = []  # every final word, in order
        self._pending: list[Word] = []  # the last pass's words not yet final (agreement), or its line (window)
        self._older: list[Word] = []  # agreement: the words of the pass before the last not yet final
        self._passes = 0  # window: passes since the last line became final
        self._finished = False
        self.passes = 0  # decoding passes run (for benchmarks)

    @property
    def duration(self) -> float:
        """Seconds of audio fed so far."""
        return self._clock / SAMPLE_RATE

    # --- feeding -------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> list[StreamEvent]:
        """Take the next samples (16 kHz mono float32); events in the order they happened."""
        if self._finished:
            raise OptionError("feed after finish: a stream ends once")
        samples = np.ascontiguousarray(samples, np.float32).reshape(-1)
        events: list[StreamEvent] = []
        self._audio = np.concatenate([self._audio, samples]) if len(self._audio) else samples.copy()
        self._clock += len(samples)
        for change, at in self._gate.push(samples):
            if change == "start":
                self._begin(at)
            else:
                events += self._end_utterance(at)
        if self._gate.speaking:
            events += self._step(self._clock)
        elif not self._pending:
            # a pause: keep only what a speech start found later reaches back to
            self._drop_before(self._keep_from(self._gate.pos - self._min_speech - FRAME))
        return events

    def finish(self) -> list[StreamEvent]:
        """End the stream: the words of the utterance in progress become final, then `done`."""
        if self._finished:
            return []
        events = self._end_utterance(self._clock) if self._gate.speaking or self._pending else []
        self._finished = True
        return [*events, StreamEvent("done")]

    def _begin(self, at: int) -> None:
        """Speech starts at sample `at`."""
        self._drop_before(self._keep_from(at))
        self._last_pass = self._speech_from = at

    def _keep_from(self, at: int) -> int:
        """Where the buffer starts for speech that starts at sample `at`: one pad before it, or
        up to `context_ms` earlier, after a final word still in the buffer. A short utterance
        decoded alone is often misheard ("Peter will" for "If the reader will" after a 2-s
        pause); the final words before it are decoded with it and skipped (`_after`)."""
        start = max(at - self._pad, 0)
        if not self.final:
            return start
        earliest = (at - self.stream.context_ms * SAMPLE_RATE // 1000) / SAMPLE_RATE
        for w in reversed(self.final):
            if w.end < earliest:
                break
            start = min(start, int(round(w.end * SAMPLE_RATE)))
        return start

    def _drop_before(self, index: int) -> None:
        index = min(index, self._clock)  # the buffer always ends at the newest sample
        if index > self._start:
            self._audio = self._audio[index - self._start :]
            self._start = index

    def _step(self, now: int) -> list[StreamEvent]:
        s = self.stream
        new = now - self._last_pass
        if s.policy == "agreement":
            return self._agree(now) if new >= s.min_chunk_ms * SAMPLE_RATE // 1000 else []
        if s.step_ms and new >= s.step_ms * SAMPLE_RATE // 1000:
            return self._window_pass(now, line_ends=False)
        if not s.step_ms and now - self._start >= s.length_ms * SAMPLE_RATE // 1000:
            return self._window_pass(now, line_ends=True)
        return []

    def _end_utterance(self, silent: int) -> list[StreamEvent]:
        """Speech ended at sample `silent`: the words that start before it become final (decoded
        with a pad of the pause after it), and the next utterance is decoded from there on, with
        this one's text as its prompt. Words past `silent` are the pad's guesses at what follows."""
        end = min(silent + self._pad, self._clock)
        if self.stream.policy == "agreement":
            events = self._agree(end, final=silent) if end > self._last_pass or self._pending else []
        elif end > self._last_pass:
            events = self._window_pass(end, line_ends=True, final=silent)
        else:
            events = self._close_line(silent)
        self._pending = self._older = []
        self._drop_before(self._keep_from(silent))
        return events

    # --- decoding ------------------------------------------------------------------------
    def _decode(self, begin: int, end: int, held: list[Word], final: bool,
                spoken: int | None = None) -> tuple[list[Word], bool] | None:
        """Words of samples [begin, end) of the stream, timed on the stream's clock, prompted
        with the final text before `held` (the final words whose audio is in [begin, end)),
        and whether the pass passed the gates (`_decode_window`).
        `spoken`: the sample index where the speech ended (the VAD's), if it did. None: a
        pass that is not `final` looped (a later pass decodes its audio again)."""
        samples = self._audio[begin - self._start : end - self._start]
        self._last_pass = end
        if len(samples) < 2 * HOP_LENGTH:
            return [], True
        self.passes += 1
        decoded = self._decode_window(samples, self._prompt(len(self.final) - len(held)), final,
                                      None if spoken is None else spoken - begin)
        if decoded is None:
            return None
        segments, sure = decoded
        offset = begin / SAMPLE_RATE
        return [Word(round(w.start + offset, 3), round(w.end + offset, 3), w.word, w.probability, list(w.tokens))
                for seg in segments if seg.text.strip() and seg.end > seg.start for w in seg.words or []], sure

    def _decode_window(self, samples: np.ndarray, prompt: list[int], final: bool,
                       spoken: int | None = None) -> tuple[list[Segment], bool] | None:
        """Segments with words of one window (at most 30 s), times from its start. The encoder
        sees the audio plus `encoder_pad_ms` of silence. The last segment ends at the end of
        the speech (the first `spoken` samples, when the VAD saw it end, else the audio),
        whatever timestamp closes it or if none does: transcribe would decode text after the
        last timestamp again in a window of its own, but a pass's audio ends here, and a window
        of the last second or so alone, prompted with the text before it, tends to repeat that
        text; and the model often closes a pass's text seconds before the end of the speech it
        transcribes, which squeezed all of its words onto that timestamp, as if said seconds
        before they were. Words are aligned within the speech: aligned over the pause after it
        too, a last word was squeezed into the pause's end, and dropped as
        one that starts after the speech. A pass that is not `final` is decoded
        once, at temperature 0: None if it loops, and flagged not sure (the bool) if it fails
        the log-probability gate (no hotter retries, which cost up to six decodes of five
        samples each, for text a later pass decodes again anyway).
        A final pass falls back through the temperatures while the next try would end within
        `fallback_ms` of the first one's start; when that time is out, or every try failed a
        gate, it keeps its best try, flagged not sure."""
        m, s = self.model, self.stream
        samples = samples[: N_FRAMES * HOP_LENGTH]
        frames = len(samples) // HOP_LENGTH
        speech = frames if spoken is None else min(frames, max(spoken // HOP_LENGTH, INPUT_STRIDE))
        n = N_FRAMES
        if s.encoder_pad_ms:  # whole seconds: a few workspace shapes, reused
            n = min(N_FRAMES, -(-(frames + s.encoder_pad_ms // 10) // 100) * 100)
        mel = log_mel_spectrogram(samples, m.model.dims.n_mels, padding=n * HOP_LENGTH - len(samples))[:, :n]
        features = m.model.encoder(mel)
        if self.language is None:  # decided on the first speech, kept for the stream
            probs, _ = m.language_probabilities(features)
            self.language = max(probs, key=probs.__getitem__)
        cross = m.model.decoder.new_cache(features)
        decode = self.options.decode
        most = -(-len(samples) * TOKENS_PER_SECOND // SAMPLE_RATE) + TOKENS_PER_SECOND
        opts = replace(decode, language=self.language, prompt=tuple(prompt) + self._hotwords,
                       sample_len=min(decode.sample_len or m.model.dims.n_text_ctx // 2, most))
        fallback = self.options.fallback
        # A pass that is not final tries temperature 0 only. Each try is judged after its loop
        # is cut: greedy decoding of a short utterance before silence loops on it, which trips
        # the compression gate, and hotter tries loop the same way at several times the cost
        # (a final pass ran all six, and every word after it waited). A final pass's hotter
        # tries each cost about what its first did, so on a long buffer a fallback held every
        # word after it for seconds: a try starts only if, at the pace of the tries so far, it
        # ends within the budget.
        tries, sure, passed = [], True, False
        budget, began = s.fallback_ms / 1000, self._now()
        for k, temperature in enumerate(fallback.temperatures if final else fallback.temperatures[:1]):
            spent = self._now() - began
            if k and spent + spent / k > budget:
                break
            result = self._cut_loop(m._decoder.decode(cross, replace(opts, temperature=temperature)))
            if (fallback.no_speech_threshold is not None and result.no_speech_prob > fallback.no_speech_threshold
                    and (fallback.logprob_threshold is None or result.avg_logprob < fallback.logprob_threshold)):
                return [], True  # silence: nothing to emit
            if not _loops(result, fallback) and not _unsure(result, fallback):
                passed = True
                break
            tries.append(result)
        if not passed:
            if not final and _loops(result, fallback):
                return None
            if not final:
                # Unsure (a low average log probability) but not looping: its words may still
                # confirm the last pass's (`_agree`), not propose their own: taken as proposals
                # they were often text made up from the prompt, and skipped, every word after
                # such a pass waited for one that passed.
                sure = False
            else:
                # every try failed a gate: the likeliest one that does not loop (faster-whisper's
                # choice; the hottest try, which openai-whisper keeps, is the likeliest to be made up),
                # not sure: the likeliest is often the shortest (a few tokens for seconds of speech)
                result = max([r for r in tries if not _loops(r, fallback)] or tries, key=lambda r: r.avg_logprob)
                sure = False
        stamp = m.tokenizer.timestamp_begin
        text = len(result.tokens)
        while text and result.tokens[text - 1] >= stamp:
            text -= 1
        if text:  # the last segment closes at the end of the speech, whatever timestamp closed it
            result = replace(result, tokens=[*result.tokens[:text], stamp + speech // INPUT_STRIDE],
                             token_logprobs=[*result.token_logprobs[:text], 0.0])
        segments, _ = m._split(result, 0, 0.0, speech)
        m._add_words(_Window(segments, cross, mel, speech, 0.0, self.language), opts.task)
        return segments, sure

    def _cut_loop(self, result: DecodeResult) -> DecodeResult:
        """`result` up to its first phrase said twice in a row (`_loop_end`), with the gates'
        measures of what is kept."""
        tok = self.model.tokenizer
        keep = _loop_end(result.tokens, tok.timestamp_begin, lambda t: tok.decode([t]))
        if keep == len(result.tokens):
            return result
        tokens, logprobs = result.tokens[:keep], result.token_logprobs[:keep]
        text = tok.decode([t for t in tokens if t < tok.timestamp_begin])
        return replace(result, tokens=tokens, token_logprobs=logprobs, text=text,
                       avg_logprob=sum(logprobs) / (len(tokens) + 1), compression_ratio=compression_ratio(text))

    def _prompt(self, upto: int) -> list[int]:
        """Tokens of the final words before the `upto`-th (at most PROMPT_CHARS of their text),
        after the options' initial prompt."""
        words, chars = [], 0
        for w in reversed(self.final[:upto]):
            chars += len(w.word)
            if chars > PROMPT_CHARS:
                break
            words.append(w)
        return [*self._initial, *(t for w in reversed(words) for t in w.tokens)]

    def _held(self, begin: int) -> list[Word]:
        """The final words whose audio lies after sample `begin` (a pass decodes them again)."""
        at = begin / SAMPLE_RATE
        k = len(self.final)
        while k and self.final[k - 1].end > at + 1e-6:
            k -= 1
        return self.final[k:]

    @staticmethod
    def _after(words: list[Word], held: list[Word]) -> list[Word]:
        """The words of a pass that follow the final words `held` it decoded again: matched by
        text (a pass may re-time or re-spell them), by time where the match fails."""
        if not held:
            return words
        sm = difflib.SequenceMatcher(None, [_norm(w.word) for w in held], [_norm(w.word) for w in words],
                                     autojunk=False)
        # the same word at about the same time: by its start or its end (the DTW stretches the
        # end of a word before a pause into the pause, differently in each pass); or the held
        # words' last two or more, in order, whenever they are (the text says enough); or the
        # held words' last ones as the pass's first words (the buffer starts in them; the DTW
        # may stretch one over the pause after it, onto the new speech)
        blocks = [m for m in sm.get_matching_blocks()
                  if m.size and (_near(held[m.a + m.size - 1], words[m.b + m.size - 1])
                                 or (m.a + m.size == len(held) and (m.size >= 2 or m.b == 0)))]
        i, rest = -1, words
        if blocks:
            i, j = blocks[-1].a + blocks[-1].size - 1, blocks[-1].b + blocks[-1].size - 1
            rest = words[j + 1 :]
        else:
            # The pass spells the last final word as two ("my self." for "myself."), or hears
            # only its end ("self.") when the buffer starts inside it (its time was late): words
            # that start inside it and spell its end. The DTW stretches that end over the pause
            # onto the new speech, past the word's end, where it passed for a new word.
            last, text, k = _norm(held[-1].word), "", 0
            for n, w in enumerate(words if words and words[0].start < held[-1].end else ()):
                text += _norm(w.word)
                if len(text) > len(last):
                    break
                if len(text) >= FRAGMENT_CHARS and last.endswith(text):
                    k = n + 1
            if k:
                i, rest = len(held) - 1, words[k:]
        if i < len(held) - 1:  # the last final words were heard differently: skip their time
            rest = [w for w in rest if (w.start + w.end) / 2 > held[-1].end]
        return rest

    @staticmethod
    def _before(words: list[Word], index: int) -> list[Word]:
        """The leading words that start before sample `index`."""
        k = 0
        while k < len(words) and words[k].start < index / SAMPLE_RATE:
            k += 1
        return words[:k]

    def _commit(self, words: list[Word]) -> list[StreamEvent]:
        """`words` become final: times clamped so that the stream's words never go back."""
        out = []
        for w in words:
            if not w.word.strip():
                continue
            last = self.final[-1].end if self.final else 0.0
            start = max(w.start, last)
            w = Word(start, max(w.end, start), w.word, w.probability, w.tokens)
            self.final.append(w)
            out.append(w)
        return [StreamEvent("final", tuple(out))] if out else []

    def _agree(self, end: int, final: int | None = None) -> list[StreamEvent]:
        """LocalAgreement-2: decode the buffer; words both this pass and the last one (or the one
        before it) give, from the start of what is not final, become final (an unsure one after
        waiting), and so do the latest reading's words the stream has `wait_ms` of audio
        after (see UNSURE). `final` (a sample index): all of this pass's words that start before
        it do."""
        held = self._held(self._start)
        decoded = self._decode(self._start, end, held, final is not None, final)
        if decoded is None:
            return []
        decoded_words, sure = decoded
        words = self._after(decoded_words, held)
        if not words and held and end - max(self._speech_from, round(held[-1].end * SAMPLE_RATE)) \
                >= CONTEXT_GIVE_UP * SAMPLE_RATE:
            # The pass stopped after the final words it was given as context (a sentence end
            # and a pause make the model end its text there), with seconds of new speech after
            # them: decode from after them. (Not when they are this utterance's own words, all
            # final: what follows them is the pause, where a pass alone makes words up.)
            self._drop_before(round(held[-1].end * SAMPLE_RATE))
            return self._agree(end, final)
        latest = words if sure else self._pending  # the latest reading that passed the gates
        if final is not None:
            # When every try of the pass that ends the utterance failed the gates, the last sure
            # reading becomes final (an unsure pass's words are not proposals: the likeliest try
            # of a final pass once read seconds of speech as two words, which became final
            # instead of the sentence the passes before had read; its words past that reading
            # were as made up). With no sure reading, its words are all there is.
            latest = words if sure or not self._pending else self._pending
            agreed = len(self._before(latest, final))
        else:
            agreed = self._agreed(words, self._pending, end, self._wait)
            if sure:
                agreed = max(agreed, self._agreed(words, self._older, end, self._wait))
            while agreed < len(latest) and end / SAMPLE_RATE - latest[agreed].end >= self._wait:
                agreed += 1
        events = self._commit(latest[:agreed])
        if sure:
            self._older, self._pending = self._pending, words[agreed:]
        if self.final:  # the earlier readings of what is now final are spent
            self._older, self._pending = (self._unheard(self._older), self._unheard(self._pending))
        if final is None:
            events += self._trim()
            events.append(StreamEvent("partial", tuple(self._pending)))
        return events

    def _unheard(self, words: list[Word]) -> list[Word]:
        """The words of a reading that lie after the last final word."""
        last = self.final[-1].end
        return [w for w in words if (w.start + w.end) / 2 > last]

    @staticmethod
    def _agreed(words: list[Word], other: list[Word], end: int, wait: float) -> int:
        """How many leading words `words` and `other` agree on (an unsure one once `end` is
        `wait` seconds past it)."""
        agreed = 0
        for a, b in zip(words, other):
            if _norm(a.word) != _norm(b.word):
                break
            if max(a.probability, b.probability) < UNSURE and end / SAMPLE_RATE - a.end < wait:
                break
            agreed += 1
        return agreed

    def _trim(self) -> list[StreamEvent]:
        """Past `trim_seconds`, the buffer starts after its last final sentence end (past
        MAX_BUFFER_SECONDS, after its last final word): that text becomes the prompt."""
        length = (self._clock - self._start) / SAMPLE_RATE
        if length <= self._trim_seconds:
            return []
        in_buffer = self._held(self._start)
        cut = next((w.end for w in reversed(in_buffer) if w.word.strip().endswith(SENTENCE_ENDS)), None)
        if cut is None and length > MAX_BUFFER_SECONDS and in_buffer:
            cut = in_buffer[-1].end
        events = []
        if cut is None and length > MAX_BUFFER_SECONDS:
            # Nothing agreed for that long: what the last pass gave becomes final.
            events = self._commit(self._pending)
            if events:
                cut = self.final[-1].end
            else:  # no words at all: the last min_chunk may hold the start of some
                cut = self._clock / SAMPLE_RATE - self.stream.min_chunk_ms / 1000
            self._pending = self._older = []
        if cut is not None:
            self._drop_before(int(round(cut * SAMPLE_RATE)))
        return events

    def _window_pass(self, end: int, line_ends: bool, final: int | None = None) -> list[StreamEvent]:
        """whisper.cpp stream: decode the last `length_ms` (with the `keep_ms` carried over);
        every `length/step - 1` passes, or at `line_ends`, the line becomes final."""
        s = self.stream
        begin = max(self._start, end - s.length_ms * SAMPLE_RATE // 1000)
        if end - begin < s.keep_ms * SAMPLE_RATE // 1000 + FRAME:
            return self._close_line(final) if line_ends else []
        held = self._held(begin)
        decoded = self._decode(begin, end, held, line_ends or final is not None, final)
        # a line is a single pass's text: only sure ones, but the last of a line whatever it is
        if decoded is None or not (decoded[1] or line_ends or final is not None):
            return []
        words = self._after(decoded[0], held)
        self._passes += 1
        self._pending = words
        lines_every = max(1, s.length_ms // s.step_ms - 1) if s.step_ms else 1
        if line_ends or self._passes >= lines_every:
            events = self._close_line(final)
            self._drop_before(max(end - s.keep_ms * SAMPLE_RATE // 1000, self._start))
            return events
        return [StreamEvent("partial", tuple(words))]

    def _close_line(self, final: int | None = None) -> list[StreamEvent]:
        """The window's current line becomes final (the words that start before `final`)."""
        events = self._commit(self._pending if final is None else self._before(self._pending, final))
        self._pending, self._passes = [], 0
        return events

    # --- results -------------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        """The final words as segments (cut after sentence ends and at pauses): for writers."""
        groups: list[list[Word]] = []
        for w in self.final:
            if not groups or groups[-1][-1].word.strip().endswith(SENTENCE_ENDS) or w.start - groups[-1][-1].end > SEGMENT_GAP:
                groups.append([])
            groups[-1].append(w)
        segments = []
        for k, ws in enumerate(groups):
            text = "".join(w.word for w in ws)
            probs = [p for w in ws for p in [w.probability] * len(w.tokens)]
            avg = float(np.mean(np.log(np.maximum(probs, 1e-10)))) if probs else 0.0
            segments.append(Segment(id=k, seek=round(ws[0].start * SAMPLE_RATE / HOP_LENGTH), start=ws[0].start,
                                    end=ws[-1].end, text=text, tokens=[t for w in ws for t in w.tokens],
                                    avg_logprob=avg, no_speech_prob=0.0, temperature=0.0,
                                    compression_ratio=compression_ratio(text), words=list(ws),
                                    token_probs=[round(p, 6) for p in probs]))
        return segments

    def info(self) -> TranscriptionInfo:
        """What the writers need to know about the stream."""
        return TranscriptionInfo(language=self.language or "en", language_probability=1.0, duration=self.duration,
                                 options=self.options)
