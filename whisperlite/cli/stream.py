"""`whisperlite stream`: live transcription from the microphone, a pipe or a file."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import replace

import click

from whisperlite.cli.common import fail, friendly_errors
from whisperlite.cli.flags import _click_option
from whisperlite.output.writers import WORD_FORMATS, check_output_dir, write_outputs
from whisperlite.transcription.flags import FLAGS, run_options
from whisperlite.transcription.options import POLICIES, StreamOptions

DEFAULT = StreamOptions()

EXAMPLES = """
\b
Examples:
  whisperlite stream                                  the default microphone
  whisperlite stream --list-devices
  arecord -f S16_LE -r 16000 -c 1 | whisperlite stream - -osrt -of live
  ffmpeg -i talk.mp3 -f s16le -ar 48000 -ac 2 - | whisperlite stream - --rate 48000 --channels 2
  whisperlite stream talk.mp3 --realtime --policy window --step 3000 --length 10000
"""

# The shared flags that mean something for a live stream (not -p, -ot/-d, timestamps off or
# the VAD off: a stream is always gated by the VAD and always timed by words).
SHARED = ("model", "compute_type", "threads", "allow_urls", "output_srt", "output_vtt", "output_txt", "output_json",
          "output_json_full", "max_line_width", "max_line_count", "split_on_word", "language", "translate",
          "beam_size", "best_of", "temperature", "temperature_inc", "no_fallback", "compression_ratio_threshold",
          "logprob_threshold", "no_speech_threshold", "initial_prompt", "hotwords", "vad_threshold",
          "vad_neg_threshold", "vad_min_speech_duration_ms", "vad_min_silence_duration_ms", "vad_speech_pad_ms")
# Each pass decodes the buffer again: greedy keeps a pass short enough for real time.
OWN_DEFAULTS = {"beam_size": 1}
GREY, RESET, CLEAR = "\033[90m", "\033[0m", "\r\033[K"
SENTENCE_ENDS = (".", "?", "!", "。", "？", "！")


def shared_flags(fn):
    """The SHARED rows of the flag table as click options (after the command's own in --help)."""
    by_name = {f.name: f for f in FLAGS}
    table = []
    for name in SHARED:
        flag = by_name[name]
        if name in OWN_DEFAULTS:
            flag = replace(flag, default_of=lambda o, v=OWN_DEFAULTS[name]: v)
        table.append(_click_option(flag))
    fn.__click_params__ = [*reversed(table), *getattr(fn, "__click_params__", [])]
    return fn


class Printer:
    """Final text as it comes (a line per sentence); on a terminal, the partial tail in grey
    after it, on the same line, rewritten as it changes."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self.line = ""  # final text of the current line
        self.shown = False  # a grey tail is on screen

    def final(self, text: str) -> None:
        if self.quiet or not text:
            return
        ends = text.rstrip().endswith(SENTENCE_ENDS)
        if self.tty:
            self.line += text
            sys.stdout.write(CLEAR + self.line.strip() + ("\n" if ends else ""))
        else:
            sys.stdout.write((text if self.line else text.lstrip()) + ("\n" if ends else ""))
            self.line += text
        if ends:
            self.line = ""
        self.shown = False
        sys.stdout.flush()

    def partial(self, text: str) -> None:
        if self.quiet or not self.tty:
            return
        sys.stdout.write(f"{CLEAR}{self.line.strip()}{GREY}{text if self.line.strip() else text.strip()}{RESET}")
        sys.stdout.flush()
        self.shown = bool(text)

    def end(self) -> None:
        if self.quiet:
            return
        if self.line.strip() or self.shown:
            sys.stdout.write((CLEAR + self.line.strip() if self.tty else "") + "\n")
            sys.stdout.flush()
        self.line, self.shown = "", False


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", required=False)
@click.option("--policy", type=click.Choice(POLICIES), default=DEFAULT.policy, show_default=True,
              help="agreement: text is final once two passes agree on it; window: whisper.cpp stream's sliding window.")
@click.option("--step", "step_ms", type=click.IntRange(0), default=DEFAULT.step_ms, show_default=True,
              help="window: ms of new audio per pass (0: decode each utterance when it ends).")
@click.option("--length", "length_ms", type=click.IntRange(1, 30000), default=DEFAULT.length_ms, show_default=True,
              help="window: ms of audio per pass.")
@click.option("--keep", "keep_ms", type=click.IntRange(0), default=DEFAULT.keep_ms, show_default=True,
              help="window: ms of audio carried into the next line.")
@click.option("--min-chunk", "min_chunk_ms", type=click.IntRange(1), default=DEFAULT.min_chunk_ms, show_default=True,
              help="agreement: ms of new audio between passes.")
@click.option("--wait", "wait_ms", type=click.IntRange(0), default=DEFAULT.wait_ms, show_default=True,
              help="agreement: ms of audio after a word by which it is final whatever the passes said "
                   "(lower: sooner, less accurate).")
@click.option("--fallback", "fallback_ms", type=click.IntRange(0), default=DEFAULT.fallback_ms, show_default=True,
              help="ms a pass that ends an utterance may spend on hotter retries (temperature fallback) "
                   "before it keeps its best try.")
@click.option("--end-silence", "end_silence_ms", type=click.IntRange(1), default=DEFAULT.end_silence_ms, show_default=True,
              help="ms of pause that end an utterance (its text becomes final).")
@click.option("--device", default=None, help="Capture device (see --list-devices) [default: the system's].")
@click.option("--list-devices", is_flag=True, help="List capture devices and exit.")
@click.option("--format", "pcm_format", type=click.Choice(["s16le", "f32le"]), default="s16le", show_default=True,
              help="SOURCE '-': raw PCM sample format on stdin.")
@click.option("--rate", type=click.IntRange(1), default=16000, show_default=True, help="SOURCE '-': sample rate.")
@click.option("--channels", type=click.IntRange(1, 64), default=1, show_default=True, help="SOURCE '-': channels.")
@click.option("--realtime", is_flag=True, help="SOURCE a file: play it at real-time pace (else as fast as it decodes).")
@click.option("-of", "--output-file", default=None, help="Output base name [default: the file's, or 'stream'].")
@click.option("-o", "--output-dir", default=None, help="Directory for outputs [default: beside a file input, else here].")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors and warnings.")
@shared_flags
@friendly_errors
def stream(source, policy, step_ms, length_ms, keep_ms, min_chunk_ms, wait_ms, fallback_ms, end_silence_ms, device,
           list_devices, pcm_format, rate, channels, realtime, output_file, output_dir, quiet, **flags):
    """Transcribe live from the microphone, raw PCM on stdin, or a file played in real time.

    SOURCE is a file (or an http(s) URL with --allow-urls), '-' for raw PCM on stdin, or none for the microphone. Text is printed as it becomes final; outputs (-osrt, -ovtt, -otxt, -oj) are written when the
    stream ends: at the end of its input, or on Ctrl-C (exit 0)."""
    from whisperlite.audio import live
    from whisperlite.audio.ffmpeg import AudioUrl, input_source, url_stem

    if list_devices:
        for line in live.list_devices():
            click.echo(line)
        return
    run = run_options(flags, WORD_FORMATS)
    stream_opts = StreamOptions(policy=policy, min_chunk_ms=min_chunk_ms, step_ms=step_ms, length_ms=length_ms,
                                keep_ms=keep_ms, wait_ms=wait_ms, fallback_ms=fallback_ms,
                                end_silence_ms=end_silence_ms)
    stream_opts.check()
    is_file = source not in (None, "-")
    if is_file:
        source = input_source(source, run.runtime.allow_urls)
    if output_file:
        base = output_file if not output_dir or os.path.isabs(output_file) else os.path.join(output_dir, output_file)
    elif isinstance(source, AudioUrl):
        base = os.path.join(output_dir or ".", url_stem(source))
    elif is_file:
        stem = os.path.splitext(os.path.basename(source))[0]
        base = os.path.join(output_dir or os.path.dirname(os.path.abspath(source)), stem)
    else:
        base = os.path.join(output_dir or ".", "stream")
    if run.output.formats:
        check_output_dir(os.path.dirname(os.path.abspath(base)))
    if source is None:  # fails in a moment, before a model loads, when there is no microphone
        audio = live.microphone(device)
        first = audio.take(timeout=10)
        if first is None:
            fail("the microphone gave no audio")
    else:
        first = None
        if source == "-":
            audio = live.pcm_pipe(sys.stdin.buffer, pcm_format, rate, channels)
        else:
            audio = live.realtime_file(source) if realtime else live.LiveAudio(live.file_chunks(source))

    from whisperlite.transcription.streaming import StreamingTranscriber
    from whisperlite.transcription.transcribe import load_model

    notices = not quiet
    try:
        t0 = time.perf_counter()
        model = load_model(run.runtime.model, threads=run.runtime.threads, compute_type=run.runtime.compute_type)
        engine = StreamingTranscriber(model, run.transcribe, stream_opts)
        if notices:
            click.echo(f"whisperlite: model {run.runtime.model} loaded in {time.perf_counter() - t0:.2f} s; "
                       f"streaming ({policy}); Ctrl-C ends", err=True)
        printer = Printer(quiet)
        stopping = _stop_on_signals()

        def show(events) -> None:
            for ev in events:
                if ev.type == "final":
                    printer.final(ev.text)
                elif ev.type == "partial":
                    printer.partial(ev.text)
                else:
                    printer.end()

        if first is not None and len(first):
            show(engine.feed(first))
        while not stopping.is_set():
            samples = audio.take(timeout=0.2)
            if samples is None:
                break
            if len(samples):
                show(engine.feed(samples))
        show(engine.finish())
    finally:
        audio.close()
    if run.output.formats:
        written = write_outputs(engine.segments(), engine.info(), base, run.output.formats, run.output)
        if notices:
            click.echo(f"whisperlite: {engine.duration:.1f} s streamed → {', '.join(written)}", err=True)


def _stop_on_signals() -> threading.Event:
    """Ctrl-C, SIGTERM or SIGHUP end the stream where it is (its outputs are still written);
    a second one stops at once."""
    stopping = threading.Event()

    def handler(signum: int, frame) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)
    return stopping
