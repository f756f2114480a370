"""Model names and paths to checkpoints and tokenizers: what -m NAME finds, and one-line
errors for what cannot be used."""
import os
from dataclasses import replace

import pytest

from whisperlite.registry import hub
from whisperlite.registry import loader
from whisperlite.core.errors import ModelFormatError, ModelNotFoundError


def test_a_folder_named_like_a_model_does_not_shadow_it(tmp_path, monkeypatch):
    """`-m base` next to a folder called base means the model; `./base` means the folder."""
    (tmp_path / "base").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "is_cached", lambda name, root=None: True)
    assert loader.resolve("base") == hub.cached_path("base") != tmp_path / "base"
    assert loader.resolve(os.path.join(".", "base")).resolve() == tmp_path / "base"
    assert loader.resolve("tiny.en") == loader.embedded_model_dir()
    (tmp_path / "my-model").mkdir()  # not a known name: the folder
    assert loader.resolve("my-model").resolve() == tmp_path / "my-model"
    with pytest.raises(ModelNotFoundError, match="unknown model 'nothing-here'"):
        loader.resolve("nothing-here")


def test_a_vocabulary_without_every_byte_is_a_model_format_error():
    ckpt = replace(loader.read_checkpoint(loader.resolve("tiny.en")), tokenizer_json=None,
                   token_bytes=[b"a", b"b"], source="broken.bin")
    with pytest.raises(ModelFormatError, match="broken.bin: vocabulary lacks 254 single bytes"):
        loader.tokenizer_for(ckpt)
