"""`whisperlite quantize` and `whisperlite convert`: Whisper models to whisper.cpp ggml files."""
from __future__ import annotations

import os

import click

from whisperlite.cli.common import friendly_errors
from whisperlite.core.errors import ModelNotFoundError, QuantizationError
from whisperlite.formats.checkpoint import WhisperCheckpoint
from whisperlite.formats.ggml import QUANT_FTYPES, write_ggml
from whisperlite.kernels.tensor import QTensor


def _load(model: str) -> WhisperCheckpoint:
    from whisperlite.registry.loader import read_checkpoint, resolve

    try:
        return read_checkpoint(resolve(model))
    except OSError as e:  # e.g. permission denied: the loader only wraps format problems
        raise ModelNotFoundError(f"{e.filename or model}: cannot read ({e.strerror or e})") from None


def _write(ckpt: WhisperCheckpoint, out: str, ftype: str) -> None:
    write_ggml(ckpt, out, ftype)
    click.echo(f"wrote {out} ({ftype}, {os.path.getsize(out) / 1e6:.1f} MB)")


@click.command()
@click.argument("model_in", metavar="IN")
@click.argument("out", type=click.Path(dir_okay=False))
@click.argument("qtype", metavar="TYPE", type=click.Choice(QUANT_FTYPES, case_sensitive=False))
@friendly_errors
def quantize(model_in: str, out: str, qtype: str) -> None:
    """Quantize IN into the whisper.cpp ggml file OUT (like whisper.cpp's
    `quantize in.bin out.bin q5_0`). IN is a model name (tiny.en, tiny.en-f16 …),
    a CTranslate2 directory or a ggml .bin; TYPE is q8_0, q5_0, q5_1, q4_0 or q4_1."""
    qtype = qtype.lower()
    ckpt = _load(model_in)
    # Like whisper.cpp, refuse to stack a second quantization's error on top of a first.
    done = {w.qtype.name.lower() for w in ckpt.weights.values() if isinstance(w, QTensor)}
    if done & set(QUANT_FTYPES) - {qtype}:
        raise QuantizationError(f"{model_in} is already quantized ({', '.join(sorted(done))}); "
                                "quantize from an f16/f32 model or a CTranslate2 directory")
    _write(ckpt, out, qtype)


@click.command()
@click.argument("model_in", metavar="IN")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--type", "ftype", type=click.Choice(("f16", "f32")), default="f16", show_default=True,
              help="Type of the weight matrices.")
@friendly_errors
def convert(model_in: str, out: str, ftype: str) -> None:
    """Convert IN into the whisper.cpp ggml file OUT. IN is a model name (tiny.en …),
    a CTranslate2 directory or a ggml .bin."""
    _write(_load(model_in), out, ftype)
