"""`whisperlite generate`: llama.cpp-style text generation from a GGUF model.

Flags keep llama.cpp's spellings (-m -p -f -n -t -c --temp --top-k --top-p --min-p
--repeat-penalty --repeat-last-n --seed -i); text streams to stdout, timings go to stderr.
"""
from __future__ import annotations

import math
import sys

import click

from whisperlite.cli.common import friendly_errors
from whisperlite.core.errors import WhisperliteError
from whisperlite.generation.generate import GenerateOptions, Generator, load_generator
from whisperlite.generation.sampling import SamplingOptions
from whisperlite.kernels import set_threads

_S = SamplingOptions()
_G = GenerateOptions()


class _Finite(click.FloatRange):
    """A float in a range, and a number: FloatRange alone lets nan through (every comparison
    with nan is false)."""

    def convert(self, value, param, ctx):  # click's signature
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number.", param, ctx)
        return rv


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _reply(gen: Generator, messages: list[dict[str, str]], opts: GenerateOptions) -> str:
    """One assistant turn: render the conversation, stream the answer, return its text."""
    prompt = gen.encode_prompt(gen.chat_prompt(messages), chat=True)
    result = gen.generate(prompt, opts, on_text=_out)
    _out("\n")
    if result.stop == "context":
        click.echo(f"context full ({gen.n_ctx} tokens): stopping", err=True)
    return result.text


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-m", "--model", default="smollm2", show_default=True, help="GGUF file, or a model name from `whisperlite models list`.")
@click.option("-p", "--prompt", default=None, help="Prompt text (the user message with --chat / -i).")
@click.option("-f", "--file", "prompt_file", type=click.Path(dir_okay=False), default=None, help="Read the prompt from a file.")
@click.option("-n", "--n-predict", default=_G.n_predict, show_default=True, type=click.IntRange(min=-1), help="Tokens to generate (-1: until end of text or full context).")
@click.option("-t", "--threads", default=None, type=click.IntRange(1, 256), help="Threads (default: all cores).")
@click.option("-c", "--ctx-size", default=_G.n_ctx, show_default=True, type=click.IntRange(min=0), help="Context length (0: the model's own).")
@click.option("--temp", default=_S.temp, show_default=True, type=_Finite(min=0.0), help="Temperature; 0 is greedy.")
@click.option("--top-k", default=_S.top_k, show_default=True, type=click.IntRange(min=0), help="Keep the k most likely tokens (0: off).")
@click.option("--top-p", default=_S.top_p, show_default=True, type=_Finite(0.0, 1.0), help="Nucleus sampling mass (1.0: off).")
@click.option("--min-p", default=_S.min_p, show_default=True, type=_Finite(0.0, 1.0), help="Drop tokens below min-p x the best probability (0: off).")
@click.option("--repeat-penalty", default=_S.repeat_penalty, show_default=True, type=_Finite(min=0.0, min_open=True), help="Penalty for recent tokens (1.0: off).")
@click.option("--repeat-last-n", default=_S.repeat_last_n, show_default=True, type=click.IntRange(min=0), help="How many recent tokens the penalty sees.")
@click.option("--seed", default=_S.seed, show_default=True, type=click.IntRange(min=-1), help="Random seed (-1: a new one each run).")
@click.option("--chat", is_flag=True, help="Answer the prompt as one chat turn, with the model's chat template.")
@click.option("-i", "--interactive", is_flag=True, help="Chat in the terminal (Ctrl-D ends).")
@click.option("--system", default=None, help="System prompt for --chat / -i.")
@click.option("--no-display-prompt", is_flag=True, help="Do not echo the prompt before the generated text.")
@click.option("--float-activations", is_flag=True,
              help="Multiply with float activations: a little faster, no longer token-exact with llama.cpp.")
@friendly_errors
def generate(model: str, prompt: str | None, prompt_file: str | None, n_predict: int, threads: int | None,
             ctx_size: int, temp: float, top_k: int, top_p: float, min_p: float, repeat_penalty: float,
             repeat_last_n: int, seed: int, chat: bool, interactive: bool, system: str | None,
             no_display_prompt: bool, float_activations: bool) -> None:
    """Generate text with a LLaMA-family GGUF model (llama.cpp's main, in Python)."""
    if prompt_file is not None:
        try:
            with open(prompt_file, encoding="utf-8") as fh:
                prompt = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            raise WhisperliteError(f"{prompt_file}: cannot read prompt file ({e})") from e
    if prompt is None and not interactive:
        raise WhisperliteError("no prompt: give -p TEXT, -f FILE or -i")
    sampling = SamplingOptions(temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                               repeat_last_n=repeat_last_n, seed=seed)
    opts = GenerateOptions(n_predict=n_predict, n_ctx=ctx_size, sampling=sampling)
    set_threads(threads)
    gen = load_generator(model, n_ctx=ctx_size, ggml_exact=not float_activations)

    if chat or interactive:
        messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        turns = [prompt] if prompt else []
        while True:
            if not turns:
                if not interactive:
                    break
                click.echo("> ", nl=False, err=True)
                line = sys.stdin.readline()
                if not line:  # end of input
                    click.echo("", err=True)
                    break
                if not line.strip():
                    continue
                turns.append(line.rstrip("\n"))
            messages.append({"role": "user", "content": turns.pop(0)})
            messages.append({"role": "assistant", "content": _reply(gen, messages, opts)})
            if gen.cache.n_past >= gen.n_ctx:
                break
    else:
        ids = gen.encode_prompt(prompt)
        if not no_display_prompt:
            _out(prompt)
        result = gen.generate(ids, opts, on_text=_out)
        if result.text or not no_display_prompt:
            _out("\n")
        if result.stop == "context":
            click.echo(f"context full ({gen.n_ctx} tokens): stopping", err=True)
    click.echo(gen.timings.report(), err=True)
