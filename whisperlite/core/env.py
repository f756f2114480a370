"""Process-wide settings that must be in place before numba or BLAS load.

Imported first by the package. OpenMP threads spin-wait by default; on a shared 2-core
machine a spinning pool stalls whichever process holds the other core (measured 30x slower
decoding), so passive waiting is the default. numba's cache goes to a user-writable
directory so that a read-only install still caches compiled kernels.
"""
import os

import platformdirs

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")
CACHE_DIR = os.environ.get("WHISPERLITE_CACHE", platformdirs.user_cache_dir("whisperlite"))
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(CACHE_DIR, "numba"))
