"""A work split for two threads that never wait for each other to start: the chunks of a
program's phases (a product's rows, an attention's heads) are claimed by whichever thread
gets there first, so a thread that starts late (waking numba's pool costs ~0.1-0.2 ms on a
shared VM) leaves its work to the other, and one thread alone runs the whole program.

A program numbers its chunks: chunk i of call g is claimed by a compare-and-swap of
claim[i * SLOT] from below g to g and finished by storing g in done[i * SLOT] (int64
arrays of `slots_length(chunks)`, zero at first; g must grow from call to call on them, so
nothing is reset between calls). Each chunk is computed by one thread with the same code,
so results are the same bits whoever computes what. heads_phase is inlined into the
program (numba IR); rows_phase, whose row kernels it calls through their addresses, is one
compiled function for all of the program's products (see models/whisper_step.py).
"""
from __future__ import annotations

import time
from typing import Callable

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from whisperlite.kernels.atomics import atomic_cas, atomic_load, atomic_store, spin_pause, yield_cpu
from whisperlite.kernels.ops import _gelu
from whisperlite.kernels.rowdots import call_rows, prepare

_SER = dict(fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy", nogil=True, cache=True)

# Slots are int64s 64 bytes apart, so that flags written by different threads never share a
# cache line.
SLOT = 8
YIELD_EVERY = 64  # spins between yields of the core to other runnable threads (~2 µs)


def slots_length(chunks: int) -> int:
    """Length of each of the int64 claim and done arrays for `chunks` chunks per call."""
    return chunks * SLOT


@numba.njit(inline="always", **_SER)
def _claim(claim, slot, g):
    """Take chunk `slot` of call g unless a thread already has (a slot holds the last call
    that claimed it)."""
    v = atomic_load(claim, slot * SLOT)
    return v < g and atomic_cas(claim, slot * SLOT, v, g) == v


@numba.njit(inline="always", **_SER)
def _finish(done, slot, g):
    atomic_store(done, slot * SLOT, g)


@numba.njit(inline="always", **_SER)
def _await(done, slot0, n, g):
    """Wait until chunks slot0 … slot0+n-1 of call g are finished. Every chunk waited for
    has been claimed by a running thread, so this ends; the waiting thread yields its core
    now and then to the alignment and audio threads."""
    spins = 0
    for c in range(n):
        while atomic_load(done, (slot0 + c) * SLOT) < g:
            spins += 1
            if spins % YIELD_EVERY == 0:
                yield_cpu()
            else:
                spin_pause()


@intrinsic
def runtime(typingctx, x):
    """x as a value of its non-literal type: numba types a constant argument as a literal
    and compiles the called function once per value (rows_phase five times for its slot,
    chunk count and GELU flag), where one compile serves every value."""
    ty = types.unliteral(x)

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[0], sig.args[0], sig.return_type)

    return ty(x), codegen


@numba.njit(inline="always", **_SER)
def _chunk_start(rows, c, chunks):
    """First row of chunk c of `chunks` (rows at c = chunks): even, so that several
    sequences' float rows pair up as in one pass over all rows (same bits)."""
    return rows if c == chunks else rows * c // chunks // 2 * 2


@numba.njit(**_SER)
def rows_phase(tid, g, claim, done, slot0, chunks, fns, kind, w, bias, gelu, x, xqf, xdf, xsf, buf, out, int8):
    """out = x @ W.T + bias (GELU'd if gelu; no bias if it is empty), W (rows, bytes) of
    `kind` in `chunks` chunks of rows from slot0 on: those this thread `tid` (0 or 1)
    claims, its own half first; then wait for the rest. fns[int8, kind]: the address of
    rowdots.rows_product for the kind (rowdots.rows_kernel); xqf, xdf, xsf, buf: scratch,
    as rowdots.prepare and rowdots.rows_product take it."""
    xq, xd, xs = prepare(kind, x, xqf, xdf, xsf, int8)
    rows = w.shape[0]
    n = x.shape[0]
    for k in range(chunks):
        c = (k + tid * (chunks // 2)) % chunks
        if _claim(claim, slot0 + c, g):
            r0, r1 = _chunk_start(rows, c, chunks), _chunk_start(rows, c + 1, chunks)
            call_rows(fns[np.int64(int8), kind], kind, w, x, xq, xd, xs, buf, out, r0, r1, int8)
            if bias.shape[0]:
                for b in range(n):
                    for r in range(r0, r1):
                        v = out[b, r] + bias[r]
                        out[b, r] = _gelu(v) if gelu else v
            _finish(done, slot0 + c, g)
    _await(done, slot0, chunks, g)


@numba.njit(inline="always", **_SER)
def heads_phase(tid, g, claim, done, slot0, n_head, attend, q, k, v, src, pos, scores, out):
    """`attend` (mha.self_attention_heads or mha.cross_attention_heads, arguments as theirs)
    for the heads this thread claims, one chunk per head from slot0 on, its own half first;
    then wait for the rest."""
    for c in range(n_head):
        hc = (c + tid * (n_head // 2)) % n_head
        if _claim(claim, slot0 + hc, g):
            attend(q, k, v, src, pos, n_head, hc, hc + 1, scores, out)
            _finish(done, slot0 + hc, g)
    _await(done, slot0, n_head, g)


class SplitChooser:
    """Runs a step on one thread or on two (a program of this module's phases), whichever has been
    faster lately. On a shared 2-core machine the second thread waits for the other core,
    and when another process holds it the split is several times slower than one thread:
    so each variant's time is tracked (moving average) and the slower one re-tried only as
    often as keeps the re-tries' extra time under PROBE_SHARE of the time spent. A variant
    about as fast is re-tried often (it costs little), one several times slower rarely; a
    fixed rate of re-tries made `-t 2` slower than `-t 1` when the other core was busy."""

    PROBE_SHARE = 0.02
    # The first four calls alternate, and each variant's first time is not counted: it
    # includes loading the compiled kernel from numba's cache (~0.1 s, 30x a step), which
    # would otherwise keep the moving average off that variant for hundreds of steps.
    FIRST = 4
    ALPHA = 0.25  # weight of the newest time in the moving averages

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.avg = [0.0, 0.0]  # serial, split; 0: not measured yet
        self.calls = 0
        self.since = 0  # calls of the faster variant since the other was last tried
        self.clock = clock

    def run(self, serial: Callable, split: Callable, args: tuple, work: float = 1.0):
        """The chosen variant's result; `work` (say, a prompt's tokens) scales the times
        compared when calls differ in size."""
        self.calls += 1
        retry = False
        if self.calls <= self.FIRST:
            use = self.calls % 2
        else:
            best = int(self.avg[1] < self.avg[0])
            if self.since and self.since * self.avg[best] * self.PROBE_SHARE >= self.avg[1 - best] - self.avg[best]:
                use, self.since, retry = 1 - best, 0, True
            else:
                use, self.since = best, self.since + 1
        t = self.clock()
        result = (split if use else serial)(*args)
        dt = (self.clock() - t) / work
        if self.calls > 2:
            # A re-try faster than the variant in use is taken at its word (the machine has
            # changed, say the other core came free): in use, the variant is measured every
            # call, so a lucky one is corrected at once, where a moving average would keep
            # the old time for several rare re-tries.
            if not self.avg[use] or (retry and dt < self.avg[1 - use]):
                self.avg[use] = dt
            else:
                self.avg[use] = (1 - self.ALPHA) * self.avg[use] + self.ALPHA * dt
        return result
