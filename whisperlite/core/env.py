"""Process-wide settings that must be in place before numba or BLAS load.

Imported first by the package. OpenMP threads spin-wait by default; on a shared 2-core
machine a spinning pool stalls whichever process holds the other core (measured 30x slower
decoding), so passive waiting is the default. numba's cache goes to a user-writable
directory so that a read-only install still caches compiled kernels, one directory per
version of the kernel sources: numba checks only the timestamp of the file that defines
each compiled function, so code generated from another module (llvm_ir.py's IR, constants
such as quant.py's kernel codes) would otherwise load stale from the cache after an edit.
"""
import hashlib
import os
from functools import cache
from pathlib import Path

import platformdirs

_PACKAGE = Path(__file__).resolve().parent.parent
# a module numba compiles code from imports numba or llvmlite (at the start of a line)
_COMPILER_IMPORTS = (b"\nimport numba", b"\nfrom numba", b"\nimport llvmlite", b"\nfrom llvmlite")


@cache
def kernel_digest() -> str:
    """Digest of the sources numba compiles: every module of kernels/ (kernels read each
    other's module constants) and every other module that imports numba or llvmlite, and
    the switch to the generic kernels (kernels/llvm_ir.py), which compiled code keeps."""
    h = hashlib.sha1()
    generic = os.environ.get("WHISPERLITE_GENERIC_KERNELS", "")
    if generic:  # unset: the digest as before the switch existed
        h.update(b"WHISPERLITE_GENERIC_KERNELS=" + generic.encode() + b"\0")
    for path in sorted(_PACKAGE.rglob("*.py")):
        text = path.read_bytes()
        if path.parent.name == "kernels" or any(i in b"\n" + text for i in _COMPILER_IMPORTS):
            h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + text + b"\0")
    return h.hexdigest()[:16]


os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")
CACHE_DIR = os.environ.get("WHISPERLITE_CACHE", platformdirs.user_cache_dir("whisperlite"))
if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(CACHE_DIR, "numba", kernel_digest())
