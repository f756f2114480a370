"""Which files a batch transcribes: files, folders (recursive) and input lists, each with a
collision-free output name under OUTDIR."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Iterator, Sequence

from whisperlite.core.errors import WhisperliteError

# What a folder search picks up: containers ffmpeg reads that usually carry speech.
AUDIO_EXTENSIONS = frozenset(
    ".wav .mp3 .m4a .m4b .aac .flac .ogg .oga .opus .wma .aif .aiff .amr .caf .mka .weba "
    ".mp4 .m4v .mkv .mov .avi .webm .wmv .flv .mpg .mpeg .ts .3gp".split()
)
# An input file with one of these extensions is a list of inputs, one per line.
LIST_EXTENSIONS = frozenset(".txt .lst .list .m3u .m3u8".split())


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute, normalized
    rel: str  # output base under OUTDIR, without extension


def discover(inputs: Sequence[str]) -> list[InputFile]:
    """Files, folders (recursive) and input lists → unique inputs with collision-free output names.

    Outputs mirror each input's place relative to the deepest folder common to all input
    roots (a folder argument is its own root, a file's root is its folder), so the same
    file name in two folders maps to two output folders, and a folder batch keeps its layout
    however many files are added later. See `output_names` for inputs whose names clash.
    """
    pairs: dict[str, str] = {}
    seen_lists: set[str] = set()
    for arg in inputs:
        for path, root in _expand(arg, os.getcwd(), seen_lists):
            pairs.setdefault(path, root)
    if not pairs:
        return []
    common = os.path.commonpath(list(pairs.values()))
    names = output_names({p: os.path.relpath(p, common) for p in pairs})
    return [InputFile(p, names[p]) for p in pairs]


def output_names(rels: dict[str, str]) -> dict[str, str]:
    """Input path → output base: its relative path without the extension, unless that base
    would be another input's too.

    An input whose base clashes keeps its extension (talk.mp3 and talk.wav → talk.mp3,
    talk.wav), which can clash anew (a.wav, a.mp3 and a.wav.mp3 → a.wav twice), so the
    rule repeats until no two bases are equal. Bases are compared case-folded, as a
    case-insensitive disk would. Names equal even with their extensions (A.wav, a.wav)
    get `~2`, `~3` in path order. The result depends on the set of inputs only.
    """
    names = {p: os.path.splitext(r)[0] for p, r in rels.items()}
    while True:
        counts = Counter(n.casefold() for n in names.values())
        clashing = [p for p, n in names.items() if counts[n.casefold()] > 1 and n != rels[p]]
        if not clashing:
            break
        for p in clashing:
            names[p] = rels[p]
    groups: dict[str, list[str]] = {}
    for p in sorted(names):
        groups.setdefault(names[p].casefold(), []).append(p)
    taken = set(groups)
    for same in groups.values():
        for k, p in enumerate(same[1:], start=2):
            while f"{names[p]}~{k}".casefold() in taken:
                k += 1
            names[p] = f"{names[p]}~{k}"
            taken.add(names[p].casefold())
    return names


def _expand(arg: str, base_dir: str, seen_lists: set[str]) -> Iterator[tuple[str, str]]:
    """(file, root) pairs for one argument or list line; missing paths pass through to fail later."""
    path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(arg)))
    if os.path.isdir(path):
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                    yield os.path.join(dirpath, name), path
    elif os.path.splitext(path)[1].lower() in LIST_EXTENSIONS and os.path.isfile(path):
        if path in seen_lists:  # a list naming itself (or a cycle of lists)
            return
        seen_lists.add(path)
        for line in read_input_list(path):
            # Relative lines are relative to the list, so a list travels with its folder.
            yield from _expand(line, os.path.dirname(path), seen_lists)
    else:
        yield path, os.path.dirname(path)


def read_input_list(path: str) -> list[str]:
    """Non-blank lines of an input list, without `#` comment lines."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = [ln.strip() for ln in fh]
    except (OSError, UnicodeDecodeError) as e:
        raise WhisperliteError(f"{path}: cannot read input list ({getattr(e, 'strerror', None) or e})") from None
    return [ln for ln in lines if ln and not ln.startswith("#")]
