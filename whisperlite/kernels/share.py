"""A product's rows shared between the calling thread and one helper thread that the
calling thread never waits for.

numba's pool joins every parallel region: when the other core is busy, the calling
thread waits at the join until the pool's second thread has had its turn, and a prompt
wakes and joins the pool for every product (about five per layer). Here the calling
thread ("main") does the whole product itself unless the helper takes part of it first:

- the rows are cut into chunks; main claims chunks from the first on, the helper from the
  last on (a compare-and-swap of claim[c] from FREE to MAIN or HELPER);
- main writes its chunks into `out`; the helper computes its chunks into its own buffer
  and copies a chunk into `out` only after winning commit[c] (FREE -> WRITING, then
  WRITTEN once copied);
- when main has no chunk left to claim, it takes back every helper chunk not yet
  committed (commit[c] FREE -> MAIN) and computes it itself, so it waits only for a copy
  that has begun (a chunk's outputs, microseconds), never for the helper to start or to
  finish a computation.

So main does at most the work of the one-thread product (plus a claim per chunk), and
after main returns the helper writes nothing: every chunk is claimed and committed. Each
chunk is computed by the same code whichever thread runs it, so the bits are the same.
The helper's job holds its own references to the arrays it reads.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterator

import numba
import numpy as np

from whisperlite.kernels.atomics import atomic_cas, atomic_load, atomic_store, spin_pause, yield_cpu
from whisperlite.kernels.variants import njit_variant

# Claim and commit states of a chunk; slots are int64s 64 bytes apart (one cache line each).
FREE, MAIN, HELPER, WRITING, WRITTEN = 0, 1, 2, 3, 4
SLOT = 8
# At most this many chunks per product: main takes back at most one chunk the helper is
# computing, so more chunks waste less at the end; each costs a claim.
MAX_CHUNKS = 16
# Spins (pause, a yield every YIELD_EVERY) the helper watches for the next job: ~0.2 ms.
WATCH_SPINS = 4096
YIELD_EVERY = 64


def _drive(helper, bounds, claim, commit, own, out, args):
    """share_rows' function; rows_fn is a global each build binds."""
    chunks = bounds.shape[0] - 1
    who = HELPER if helper else MAIN
    for k in range(chunks):
        c = chunks - 1 - k if helper else k
        if atomic_load(claim, c * SLOT) != FREE or atomic_cas(claim, c * SLOT, FREE, who) != FREE:
            continue
        r0, r1 = bounds[c], bounds[c + 1]
        if not helper:
            rows_fn(args, out, r0, r1)  # noqa: F821
            continue
        rows_fn(args, own, r0, r1)  # noqa: F821
        if atomic_cas(commit, c * SLOT, FREE, WRITING) == FREE:
            out[:, r0:r1] = own[:, r0:r1]
            atomic_store(commit, c * SLOT, WRITTEN)
    if helper:
        return
    for c in range(chunks):
        if atomic_load(claim, c * SLOT) != HELPER:
            continue
        if atomic_cas(commit, c * SLOT, FREE, MAIN) == FREE:
            rows_fn(args, out, bounds[c], bounds[c + 1])  # noqa: F821
        else:
            while atomic_load(commit, c * SLOT) != WRITTEN:
                spin_pause()


def share_rows(rows_fn: Callable, **options):
    """A numba function (compiled with the njit `options` of the kernels whose code rows_fn
    holds, so that it compiles to the same arithmetic) drive(helper, bounds, claim, commit, own, out, args) for
    rows_fn(args, out, r0, r1) (an inline numba function computing every output column
    r0 <= r < r1 of out (n, rows)): helper = 0 drives as main, 1 as the helper (module
    docstring); chunk c is rows bounds[c] .. bounds[c + 1]; claim and commit are int64
    arrays of len(bounds) - 1 slots, FREE at first; own is the helper's (n, rows) buffer.

    Each build is a variant of its own name with rows_fn bound as a global: numba keys a
    closure's cache entries on its pickled cells, and a pickled dispatcher differs from
    process to process, so a closure over rows_fn compiled anew in every process."""
    return njit_variant(_drive, rows_fn.__name__.lstrip("_"), bind={"rows_fn": rows_fn}, nogil=True, **options)


def chunk_bounds(rows: int, align: int) -> np.ndarray:
    """Row bounds of up to MAX_CHUNKS chunks of `rows`, each start a multiple of align."""
    units = -(-rows // align)
    chunks = max(1, min(MAX_CHUNKS, units))
    return np.asarray([min(rows, units * c // chunks * align) for c in range(chunks + 1)], np.int64)


@numba.njit(nogil=True, cache=True)
def _watch(posted, taken, spins):
    """Whether posted[0] exceeds `taken` within `spins` pause-spins (the core yielded now
    and then to other runnable threads)."""
    for s in range(spins):
        if atomic_load(posted, 0) > taken:
            return True
        if s % YIELD_EVERY == YIELD_EVERY - 1:
            yield_cpu()
        else:
            spin_pause()
    return False


class _Helper:
    """One daemon thread running the jobs put to it, in order; a job whose product main
    has already finished finds nothing left to claim and returns at once.

    After each job the helper watches the count of jobs posted for WATCH_SPINS spins, off
    the GIL, before it blocks on the queue: a prompt posts its products a few hundred
    microseconds apart, and waking a thread blocked on a lock (then handing it the GIL)
    took a good part of a small product's share, which main had then done itself."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.posted = np.zeros(SLOT, np.int64)
        self._post_lock = threading.Lock()
        threading.Thread(target=self._serve, name="whisperlite-share", daemon=True).start()

    def post(self, job: tuple) -> None:
        self.jobs.put(job)
        # only a hint: the helper takes its jobs from the queue, which orders them
        with self._post_lock:  # several threads may post
            self.posted[0] += 1

    def _serve(self) -> None:
        taken = 0
        while True:
            _watch(self.posted, taken, WATCH_SPINS)
            drive, args = self.jobs.get()
            taken += 1
            try:
                drive(1, *args)
            except Exception:  # noqa: BLE001 - main computes every chunk itself and raises the same error
                continue


_state: dict = {"helper": None}
_local = threading.local()


@contextlib.contextmanager
def helping() -> Iterator[None]:
    """Within: products called from this thread that `worth_sharing` share their rows
    with the helper thread (started on first use)."""
    if _state["helper"] is None:
        _state["helper"] = _Helper()
    before = getattr(_local, "on", False)
    _local.on = True
    try:
        yield
    finally:
        _local.on = before


def worth_sharing(work_bytes: int) -> bool:
    """Whether a product of `work_bytes` (weight bytes times activation rows) called from
    this thread shares its rows: inside `helping`, from SHARE_MIN_BYTES."""
    return getattr(_local, "on", False) and work_bytes >= SHARE_MIN_BYTES


def shared(drive, out: np.ndarray, align: int, args: tuple) -> np.ndarray:
    """drive (a `share_rows` function) over out's columns in chunks aligned to `align`,
    on this thread and the helper; returns out."""
    bounds = chunk_bounds(out.shape[1], align)
    chunks = len(bounds) - 1
    claim = np.zeros(chunks * SLOT, np.int64)
    commit = np.zeros(chunks * SLOT, np.int64)
    job = (bounds, claim, commit, np.empty_like(out), out, args)
    if chunks > 1:
        _state["helper"].post((drive, job))
    drive(0, *job)
    return out


# Below this many weight bytes times activation rows a product stays on the calling thread
# alone: the helper would start after main had finished (its wake-up costs about what a
# product of this size takes).
SHARE_MIN_BYTES = 1 << 21
