"""Transcribe jfk on aarch64 under qemu-user and compare with this machine's generic paths.

Not part of CI (numba compiles the whole model under emulation: tens of minutes). Run as
root on a Debian/Ubuntu x86-64 machine with network access to Debian and PyPI:

    python scripts/arm64_jfk.py [--dir /tmp/whisperlite-arm64]

It assembles an arm64 Python 3.11 under DIR (Debian's arm64 packages, unpacked with
dpkg-deb, no chroot; qemu-user-static runs it), the arm64 wheels of the compiled
dependencies at this interpreter's versions (numpy, numba, llvmlite, regex), and reads the
pure-Python ones from this interpreter's site-packages. It decodes fixtures/jfk.wav here
(ffmpeg is not needed on arm64), runs `WhisperModel("tiny.en").transcribe(samples,
beam_size=1, vad_filter=False)` on this machine with WHISPERLITE_GENERIC_KERNELS=1 and on
arm64 (where the AVX2/F16C paths are absent anyway), and exits 0 only if the text, tokens
and segment times are the same.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# An arm64 python3.11 and the shared libraries it and the wheels load (Debian 12).
DEBS = ("python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 zlib1g libexpat1 libffi8 libssl3 "
        "libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libnsl2 libtirpc3 "
        "libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libdb5.3 libgdbm6 "
        "libgcc-s1 libstdc++6 libgomp1").split()
WHEELS = ("numpy", "numba", "llvmlite", "regex")
PROGRAM = """
import json, platform, sys, time
t0 = time.time()
import numpy as np
import whisperlite
from whisperlite.kernels import llvm_ir
model = whisperlite.WhisperModel("tiny.en", cpu_threads=2)
segments, info = model.transcribe(np.load(sys.argv[1]), beam_size=1, vad_filter=False)
segments = list(segments)
print(json.dumps({"machine": platform.machine(), "avx2": llvm_ir.HAS_AVX2, "f16c": llvm_ir.HAS_F16C,
                  "text": "".join(s.text for s in segments), "tokens": [s.tokens for s in segments],
                  "times": [[s.start, s.end] for s in segments], "seconds": round(time.time() - t0, 1)}))
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, check=True, **kw)


def assemble(base: Path) -> tuple[Path, Path]:
    """The arm64 root (its python3.11) and the folder of arm64 wheels, made once under `base`."""
    root, wheels, debs = base / "root", base / "site", base / "debs"
    if not (root / "usr/bin/python3.11").exists():
        if shutil.which("qemu-aarch64-static") is None:
            run(["apt-get", "install", "-y", "qemu-user-static"])
        if "arm64" not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                         text=True).stdout.split():
            run(["dpkg", "--add-architecture", "arm64"])
            run(["apt-get", "update"])
        debs.mkdir(parents=True, exist_ok=True)
        run(["apt-get", "download", *(f"{d}:arm64" for d in DEBS)], cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            run(["dpkg-deb", "-x", str(deb), str(root)])
    missing = [name for name in WHEELS if not (wheels / name).exists()]
    if missing:
        import importlib.metadata as md

        pins = [f"{name}=={md.version(name)}" for name in missing]
        download = base / "wheels"
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
             "--platform", "manylinux_2_28_aarch64", "--platform", "manylinux_2_17_aarch64",
             "--platform", "manylinux2014_aarch64", "-d", str(download), *pins])
        for name in missing:
            for whl in download.glob(f"{name}-*.whl"):
                zipfile.ZipFile(whl).extractall(wheels)
    return root, wheels


def transcribe(cmd: list[str], env: dict[str, str], samples: Path, timeout: float) -> dict:
    out = subprocess.run([*cmd, "-c", PROGRAM, str(samples)], env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=timeout)
    if out.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/whisperlite-arm64"), help="where the arm64 tree is kept")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds for the emulated run")
    args = ap.parse_args()
    base = args.dir.resolve()
    root, wheels = assemble(base)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from whisperlite.audio.ffmpeg import load_audio

    samples = base / "jfk.npy"
    np.save(samples, load_audio(str(ROOT / "fixtures" / "jfk.wav")))
    generic = {"WHISPERLITE_GENERIC_KERNELS": "1", "PYTHONPATH": str(ROOT)}
    here = transcribe([sys.executable], generic, samples, args.timeout)
    print(json.dumps(here))
    # arm64 wheels first; this interpreter's site-packages after them for the pure-Python packages
    path = os.pathsep.join([str(wheels), str(ROOT), *site.getsitepackages()])
    arm = transcribe(["qemu-aarch64-static", "-L", str(root), str(root / "usr/bin/python3.11")],
                     {**generic, "PYTHONPATH": path, "WHISPERLITE_CACHE": str(base / "cache"),
                      "QEMU_LD_PREFIX": str(root)}, samples, args.timeout)
    print(json.dumps(arm))
    same = all(here[k] == arm[k] for k in ("text", "tokens", "times"))
    print(f"{arm['machine']} vs {here['machine']}: text, tokens and times {'the same' if same else 'DIFFER'}")
    sys.exit(0 if same and arm["machine"] == "aarch64" else 1)


if __name__ == "__main__":
    main()
