"""Whisper's text decoder: pre-LN blocks with cross-attention over the encoder output.
Self-attention keys/values live in a preallocated cache so each new token costs one row of
work per layer, and a prompt of any length is one batched pass. The token-by-token step
(one new token per sequence) runs as one fused kernel (whisper_step.py) into
scratch kept on the cache, so it allocates nothing per token."""
from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from whisperlite.kernels import QTensor, Weight, get_threads, linear
from whisperlite.kernels.threads import one_numba_thread, run_parallel
from whisperlite.kernels import mha
from whisperlite.kernels.llvm_ir import HAS_AVX2
from whisperlite.kernels.ops import add_
from whisperlite.kernels.quant import KIND, QK, QType, bytes_per_row, dequantize_rows
from whisperlite.kernels.rowdots import weight_kind
from whisperlite.kernels.tensor import readonly
from whisperlite.kernels.worksplit import SplitChooser
from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.models import whisper_step
from whisperlite.models.whisper_blocks import Block, Norm, load_blocks


class KVCache:
    """Self-attention keys/values for up to `batch` sequences, plus the cross-attention
    keys/values of the current audio window (computed once per window, shared by forks).

    Beam search reorders sequences every step. Rather than copying their keys/values (up to
    ~3.7 MB per moved sequence at 300 tokens of context, ~0.4 ms a step), `src[b, t]` names
    the row of k/v that holds sequence b's position t: a reorder copies those indices, a
    step writes each sequence's new position into its own row. Positions are never
    rewritten once later ones exist, so rows shared through `src` stay valid.
    """

    def __init__(self, dims: WhisperDims, batch: int, cross_k: np.ndarray, cross_v: np.ndarray):
        self.dims = dims
        shape = (dims.n_text_layer, batch, dims.n_text_ctx, dims.n_text_state)
        # np.zeros maps untouched pages lazily: a 448-token buffer costs only what is used.
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.src = np.repeat(np.arange(batch, dtype=np.int32)[:, None], dims.n_text_ctx, axis=1)
        self.length = 0
        # keys and values (L, h, n_audio_ctx, 64), float32 or float16
        self.cross_k = cross_k
        self.cross_v = cross_v
        # the fused step reads float16 as its bits
        bits = (lambda a: a.view(np.uint16)) if cross_k.dtype == np.float16 else (lambda a: a)  # noqa: E731
        self.step_view = whisper_step.Cache(self.k, self.v, self.src, bits(cross_k), bits(cross_v))
        self.scratch: _StepScratch | None = None

    def fork(self, batch: int) -> "KVCache":
        """An empty self-attention cache for `batch` sequences over the same audio."""
        return KVCache(self.dims, batch, self.cross_k, self.cross_v)

    def reorder(self, rows: np.ndarray) -> None:
        """Keep/duplicate sequences (best-of, beams): new sequence i is old sequence rows[i]."""
        n = self.length
        self.src[:, :n] = self.src[np.asarray(rows), :n]

    def broadcast(self, batch: int) -> None:
        """Make sequences 1 … batch-1 copies of sequence 0 (a shared prompt)."""
        self.reorder(np.zeros(batch, dtype=np.int64))

    def materialize(self, batch: int) -> None:
        """Copy keys/values so that row b holds sequence b at every position (what the
        general path reads) and reset `src`."""
        n = self.length
        identity = np.arange(batch, dtype=np.int32)[:, None]
        if n == 0 or (self.src[:batch, :n] == identity).all():
            return
        at = np.arange(n)
        src = self.src[:batch, :n]
        self.k[:, :batch, :n] = self.k[:, src, at]  # the gather is a copy: rows may be their own sources
        self.v[:, :batch, :n] = self.v[:, src, at]
        self.src[:batch, :n] = identity


class _StepScratch:
    """Per-token buffers of the fused step for `batch` sequences, allocated once per cache."""

    def __init__(self, dims: WhisperDims, batch: int):
        d, f32, L = dims.n_text_state, np.float32, dims.n_text_layer
        self.batch = batch
        # phase outputs, per layer (a late second thread replays the step from them)
        self.qkv = np.empty((L, batch, 3 * d), f32)
        self.att, self.q, self.catt = (np.empty((L, batch, d), f32) for _ in range(3))
        self.y = np.empty((L, 3, batch, d), f32)
        self.mlp = np.empty((L, batch, 4 * d), f32)
        # one of each per thread
        self.x, self.h = np.empty((2, batch, d), f32), np.empty((2, batch, d), f32)
        self.xq = np.empty((2, batch * 4 * d), np.int8)
        self.xd, self.xs = (np.empty((2, batch * 4 * d // 32), f32) for _ in range(2))
        self.buf = np.empty((2, 2, 4 * d), f32)
        self.scores = np.empty((2, batch, max(dims.n_text_ctx, dims.n_audio_ctx)), f32)
        self.logits = np.empty((batch, 1, dims.n_vocab), f32)
        self.logits2d = self.logits.reshape(batch, dims.n_vocab)
        # chunk claims and completions (hold step numbers: never reset)
        slots = whisper_step.step_slots(L, dims.n_text_head)
        self.claim, self.done = np.zeros(slots, np.int64), np.zeros(slots, np.int64)
        self.steps = 0
        self.checked: tuple | None = None  # the weights and cache views its sizes were checked against
        self.step_view = whisper_step.Scratch(self.claim, self.done, self.qkv, self.att, self.y, self.q, self.catt,
                                              self.mlp, self.x, self.h, self.xq, self.xd, self.xs, self.buf,
                                              self.scores, self.logits2d)


class _StepWeights:
    """The decoder's weights as the fused step takes them (`step_view`): each role's
    matrices as the addresses of the layers' uint8 views (no copies; `mats` keeps them
    alive) with one shape and one kind code per role, norms and biases stacked."""

    ROLES = ("qkv", "out", "cross_q", "cross_out", "fc1", "fc2")

    def __init__(self, kinds: list[int], mats: list[tuple[np.ndarray, ...]], emb_kind: int, emb: np.ndarray,
                 pos_emb: np.ndarray, blocks: list[Block], ln: Norm, n_head: int):
        self.kinds = np.asarray(kinds, np.int64)
        self.mats = mats
        self.addrs = self._addresses(mats)
        self.shapes = np.asarray([ms[0].shape for ms in mats], np.int64)
        self.emb_kind, self.emb = emb_kind, emb  # read-only, as every checkpoint weight
        self.pos_emb, self.n_head = pos_emb, n_head
        st = lambda f: np.ascontiguousarray(np.stack([f(b) for b in blocks]), np.float32)  # noqa: E731
        self.ln_g = st(lambda b: np.stack([b.attn_ln.g, b.cross_ln.g, b.mlp_ln.g]))
        self.ln_b = st(lambda b: np.stack([b.attn_ln.b, b.cross_ln.b, b.mlp_ln.b]))
        self.biases = [st(lambda b, r=r: getattr(b, f"{r}_b")) for r in self.ROLES]
        self.lnf_g = np.ascontiguousarray(ln.g, np.float32)
        self.lnf_b = np.ascontiguousarray(ln.b, np.float32)
        self.row_fns = np.zeros((2, len(KIND)), np.int64)  # filled by whisper_step.link_rows
        self.step_view = self._view()

    def _view(self) -> whisper_step.Weights:
        b = self.biases
        qkv, out, cq, co, fc1, fc2 = self.addrs
        return whisper_step.Weights(self.emb_kind, self.emb, self.pos_emb, self.kinds, self.shapes, self.ln_g,
                                    self.ln_b, qkv, b[0], out, b[1], cq, b[2], co, b[3], fc1, b[4], fc2, b[5],
                                    self.lnf_g, self.lnf_b, self.n_head, self.row_fns)

    @staticmethod
    def _addresses(mats: list[tuple[np.ndarray, ...]]) -> list[np.ndarray]:
        return [np.asarray([m.ctypes.data for m in ms], np.int64) for ms in mats]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("addrs", "row_fns", "step_view")}

    def __setstate__(self, state: dict) -> None:
        # an unpickled copy holds new arrays: the addresses are this process's
        self.__dict__.update(state, addrs=self._addresses(state["mats"]), row_fns=np.zeros((2, len(KIND)), np.int64))
        self.step_view = self._view()

    @classmethod
    def build(cls, blocks: list[Block], emb: Weight, pos_emb: np.ndarray, ln: Norm,
              n_head: int) -> "_StepWeights | None":
        """None when some weight has a type the fused step does not take (the general path
        then serves every call)."""
        kinds, mats = [], []
        for role in cls.ROLES:
            found = [weight_kind(getattr(b, role)) for b in blocks]
            if any(f is None for f in found) or len({(f[0], f[1].shape) for f in found}) != 1:
                return None
            kinds.append(found[0][0])
            mats.append(tuple(np.asarray(f[1]) for f in found))
        e = weight_kind(emb)
        if e is None:
            return None
        return cls(kinds, mats, e[0], np.asarray(e[1]), pos_emb, blocks, ln, n_head)


_KIND_TYPES = {kind: qtype for qtype, kind in KIND.items()}
# rows of each role's matrix, and the length of the rows it multiplies, in model widths d
_ROLE_DIMS = ((3, 1), (1, 1), (1, 1), (1, 1), (4, 1), (1, 4))


def _fits(name: str, a: np.ndarray, shape: tuple[int | None, ...], dtype: type) -> None:
    """a has `shape` (None: any length, a negative number -n: at least n) and `dtype`."""
    ok = a.dtype == dtype and a.ndim == len(shape) and all(
        want is None or (have >= -want if want < 0 else have == want) for have, want in zip(a.shape, shape))
    if not ok:
        raise ValueError(f"decoder step: {name} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape} "
                         "(negative: at least)")


def check_step(tokens: np.ndarray, pos: int, w: whisper_step.Weights, kv: whisper_step.Cache,
               s: whisper_step.Scratch) -> None:
    """Every size the step kernel reads, checked against the others: the kernel itself does
    no bounds checks (a matrix, cache or scratch of another model's sizes would be read and
    written past its end), so a mismatch is a ValueError here instead."""
    check_step_call(tokens, pos, w, kv)
    check_step_arrays(w, kv, s, tokens.shape[0])


def check_step_call(tokens: np.ndarray, pos: int, w: whisper_step.Weights, kv: whisper_step.Cache) -> None:
    """What changes from call to call: the tokens, the position and the sequences' rows."""
    vocab, n_ctx = w.emb.shape[0], w.pos_emb.shape[0]
    _fits("tokens", tokens, (None, 1), np.int64)
    ids = tokens.ravel().tolist()
    if not ids or min(ids) < 0 or max(ids) >= vocab:
        raise ValueError(f"decoder step: token ids {ids} outside the vocabulary (0..{vocab - 1})")
    if not 0 <= pos < n_ctx:
        raise ValueError(f"decoder step: position {pos} outside the text context (0..{n_ctx - 1})")
    if kv.src.ndim != 2 or kv.src.shape[0] < len(ids) or kv.src.shape[1] < n_ctx:
        raise ValueError(f"decoder step: sequence rows {kv.src.shape} for {len(ids)} sequences of {n_ctx} positions")
    rows = kv.src[: len(ids), :pos]  # position pos is each sequence's own row (b < B)
    if pos and (rows.min() < 0 or rows.max() >= kv.k_self.shape[1]):
        raise ValueError(f"decoder step: sequence rows outside the cache's {kv.k_self.shape[1]}")


def check_step_arrays(w: whisper_step.Weights, kv: whisper_step.Cache, s: whisper_step.Scratch, bsz: int) -> None:
    """The weights', cache's and scratch's sizes against each other, for `bsz` sequences."""
    L, d, vocab, n_ctx = len(w.w_qkv), w.pos_emb.shape[1], w.emb.shape[0], w.pos_emb.shape[0]
    h = w.n_head
    if L < 1 or d < 1 or h < 1 or d % h:
        raise ValueError(f"decoder step: {L} layers of width {d} with {h} heads")
    _fits("kinds", w.kinds, (6,), np.int64)
    _fits("shapes", w.shapes, (6, 2), np.int64)
    for role, (kind, (rows, k)) in enumerate(zip(w.kinds.tolist(), _ROLE_DIMS)):
        name = _StepWeights.ROLES[role]
        if kind not in _KIND_TYPES:
            raise ValueError(f"decoder step: {name} has no row kernel (kind {kind})")
        want = (rows * d, bytes_per_row(_KIND_TYPES[kind], k * d))
        if tuple(w.shapes[role].tolist()) != want:
            raise ValueError(f"decoder step: {name} matrices are {tuple(w.shapes[role].tolist())}, expected {want}")
        _fits(f"{name} addresses", (w.w_qkv, w.w_out, w.w_cq, w.w_co, w.w_fc1, w.w_fc2)[role], (L,), np.int64)
        _fits(f"{name} biases", (w.b_qkv, w.b_out, w.b_cq, w.b_co, w.b_fc1, w.b_fc2)[role], (L, rows * d), np.float32)
    if w.emb_kind not in _KIND_TYPES:
        raise ValueError(f"decoder step: the token embedding has no row kernel (kind {w.emb_kind})")
    _fits("token embedding", w.emb, (vocab, bytes_per_row(_KIND_TYPES[w.emb_kind], d)), np.uint8)
    _fits("row kernels", w.row_fns, (2, len(KIND)), np.int64)
    _fits("positional embedding", w.pos_emb, (n_ctx, d), np.float32)
    for name, a, shape in (("layer norm gains", w.ln_g, (L, 3, d)), ("layer norm biases", w.ln_b, (L, 3, d)),
                           ("final norm gain", w.lnf_g, (d,)), ("final norm bias", w.lnf_b, (d,))):
        _fits(name, a, shape, np.float32)
    _fits("self-attention keys", kv.k_self, (L, -bsz, n_ctx, d), np.float32)
    _fits("self-attention values", kv.v_self, kv.k_self.shape, np.float32)
    _fits("sequence rows", kv.src, (-bsz, n_ctx), np.int32)
    cross = kv.k_cross.dtype.type
    if cross not in (np.float32, np.uint16):
        raise ValueError(f"decoder step: cross-attention keys of {kv.k_cross.dtype}, expected float32 or float16 bits")
    n_audio = kv.k_cross.shape[2] if kv.k_cross.ndim == 4 else -1
    _fits("cross-attention keys", kv.k_cross, (L, h, n_audio, d // h), cross)
    _fits("cross-attention values", kv.v_cross, kv.k_cross.shape, cross)
    _fits("claims", s.claim, (-whisper_step.step_slots(L, h),), np.int64)
    _fits("completions", s.done, s.claim.shape, np.int64)
    for name, a, shape in (("qkv", s.qkv, (L, bsz, 3 * d)), ("attention", s.att, (L, bsz, d)),
                           ("branches", s.y, (L, 3, bsz, d)), ("cross queries", s.q, (L, bsz, d)),
                           ("cross attention", s.catt, (L, bsz, d)), ("mlp", s.mlp, (L, bsz, 4 * d)),
                           ("residuals", s.x, (2, bsz, d)), ("normed rows", s.h, (2, bsz, d)),
                           ("block scales", s.xd, (2, -bsz * 4 * d // 32)), ("block sums", s.xs, (2, -bsz * 4 * d // 32)),
                           ("row buffers", s.buf, (2, 2, -4 * d)), ("scores", s.scores, (2, bsz, -max(n_ctx, n_audio))),
                           ("logits", s.logits, (bsz, vocab))):
        _fits(name, a, shape, np.float32)
    _fits("quantized activations", s.xq, (2, -bsz * 4 * d), np.int8)


class TextDecoder:
    def __init__(self, ckpt: WhisperCheckpoint, cross_f16: bool = True, int8: bool = HAS_AVX2):
        """cross_f16: keep each window's cross-attention keys/values in float16 (as
        whisper.cpp does): half the bytes of the largest per-token read after the weights.
        int8: steps on block-quantized weights quantize activations per 32 values to int8
        and take integer dots, as ggml does (q5_0 vocabulary projection 2x faster than with
        float activations; float16/float32 weights are unaffected)."""
        d, w = ckpt.dims, ckpt.weights
        self.dims = d
        self.cross_dtype = np.float16 if cross_f16 else np.float32
        self.int8 = int8 and HAS_AVX2
        self.token_embedding = w["decoder.token_embedding.weight"]  # also the output projection (tied)
        self.pos = np.ascontiguousarray(w["decoder.positional_embedding"], np.float32)
        self.blocks = load_blocks(ckpt, "decoder", d.n_text_layer, True, d.n_text_state)
        self.ln = Norm(w["decoder.ln.weight"], w["decoder.ln.bias"])
        self.step_weights = _StepWeights.build(self.blocks, self.token_embedding, self.pos, self.ln, d.n_text_head)
        self._split: dict[tuple[int, int], SplitChooser] = {}

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Embedding rows for token ids (n,) -> (n, d) float32, dequantizing only those rows."""
        emb = self.token_embedding
        if not isinstance(emb, QTensor):
            return emb[ids]
        if emb.qtype == QType.Q8_0:  # the default's embedding (the compute type's)
            # a few rows: in numpy, the dequantizer's arithmetic (int8 times the float16
            # scale, one float32 product: the same bits), and its parallel kernel, seconds of
            # a first run's compile, is not compiled for them
            blocks = emb.data[np.asarray(ids)].reshape(len(ids), -1, 2 + QK)
            scales = blocks[:, :, :2].copy().view(np.float16).astype(np.float32)
            return (blocks[:, :, 2:].view(np.int8).astype(np.float32) * scales).reshape(len(ids), emb.shape[1])
        # the stored rows gathered first: one kernel call for all ids, not a pool wake per id
        rows = readonly(emb.data[np.asarray(ids)])  # as the mapped matrices: one compiled dequantizer
        out = np.empty((len(rows), emb.shape[1]), np.float32)
        return dequantize_rows(rows, emb.qtype, (len(rows), emb.shape[1]), 0, len(rows), out)

    def new_cache(self, audio_features: np.ndarray, batch: int = 1) -> KVCache:
        """A cache for one window: cross-attention keys/values of `audio_features` (n_audio_ctx, d)."""
        nh, d = self.dims.n_text_head, self.dims.n_text_state
        x = np.ascontiguousarray(audio_features, np.float32)
        n = x.shape[0]
        shape = (len(self.blocks), nh, n, d // nh)
        ks, vs = np.empty(shape, self.cross_dtype), np.empty(shape, self.cross_dtype)
        # float16 as its bits: numpy's float16 cast is scalar, the split converts by F16C
        k_out, v_out = (ks.view(np.uint16), vs.view(np.uint16)) if self.cross_dtype == np.float16 else (ks, vs)
        # Each thread takes a share of the audio rows through every layer: one pool wake per
        # window, and the bias and head split run in parallel on rows still in cache.
        parts = max(1, min(get_threads(), n // 64))
        bounds = [n * i // parts for i in range(parts + 1)]

        def part(i: int) -> None:
            a, b = bounds[i], bounds[i + 1]
            kv = np.empty((b - a, 2 * d), np.float32)
            wbuf = None  # block-quantized weights: each thread dequantizes a layer's (2d, d) for itself
            for li, blk in enumerate(self.blocks):
                w = blk.cross_kv
                if isinstance(w, QTensor):
                    wbuf = np.empty(w.shape, np.float32) if wbuf is None else wbuf
                    w = dequantize_rows(w.data, w.qtype, w.shape, 0, w.shape[0], wbuf)
                np.matmul(x[a:b], w.T, out=kv)
                mha.split_heads(kv[:, :d], blk.cross_kv_b[:d], k_out[li], a)
                mha.split_heads(kv[:, d:], blk.cross_kv_b[d:], v_out[li], a)

        run_parallel(lambda i: one_numba_thread(part, i), parts)
        return KVCache(self.dims, batch, ks, vs)

    def __call__(self, tokens: np.ndarray, cache: KVCache, positions: Sequence[int] = (-1,),
                 want_cross: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """tokens (B, n) appended after cache.length -> logits (B, len(positions), vocab) at
        `positions` (indices into the n new tokens; the vocabulary projection is the most
        expensive product, so only the rows asked for are computed).

        With `want_cross`, also the cross-attention weights of every layer, each
        (B, h, n, n_audio_ctx), for word-level alignment.

        One new token per sequence takes the fused step, whose logits live in the cache's
        scratch: they are valid until the next call on the same cache.
        """
        if (tokens.shape[1] == 1 and not want_cross and len(positions) == 1 and positions[0] in (0, -1)
                and self.step_weights is not None):
            return self.step(tokens, cache), []
        return self.forward(tokens, cache, positions, want_cross)

    def step(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """tokens (B, 1) -> logits (B, 1, vocab): one token per sequence, one fused kernel.
        With several threads the step runs on two, or stays on this one, whichever has been
        faster lately (the same logits either way)."""
        bsz = tokens.shape[0]
        if cache.length + 1 > self.dims.n_text_ctx:
            raise ValueError(f"decoder context of {self.dims.n_text_ctx} tokens exceeded")
        threads = get_threads()
        if threads == 1:
            return self.step_serial(tokens, cache)
        chooser = self._split.get((bsz, threads))
        if chooser is None:
            chooser = self._split[(bsz, threads)] = SplitChooser()
        return chooser.run(self.step_serial, self.step_parallel, (tokens, cache))

    def _step_args(self, tokens: np.ndarray, cache: KVCache) -> tuple[_StepScratch, tuple]:
        """The cache's scratch and the step kernel's arguments for one step."""
        bsz = tokens.shape[0]
        s = cache.scratch
        if s is None or s.batch != bsz:
            s = cache.scratch = _StepScratch(self.dims, bsz)
        tokens = np.asarray(tokens, np.int64)
        w, kv = self.step_weights.step_view, cache.step_view
        check_step_call(tokens, cache.length, w, kv)
        if s.checked is None or s.checked[0] is not w or s.checked[1] is not kv:  # once per scratch
            check_step_arrays(w, kv, s.step_view, bsz)
            whisper_step.link_rows(w, self.int8)
            s.checked = (w, kv)
        s.steps += 1
        cache.src[:bsz, cache.length] = np.arange(bsz, dtype=np.int32)
        return s, (s.steps, tokens, cache.length, self.int8, self.step_weights.step_view, cache.step_view,
                   s.step_view)

    def compile_step(self, cache: KVCache, batch: int) -> None:
        """Compile (or load from numba's cache) the step kernel for `batch` sequences on
        `cache`, without running it or linking its row kernels (`link_rows` does at the first
        step): a first run compiles the two in different processes (registry/loader.py)."""
        s = _StepScratch(self.dims, batch)
        args = (0, s.steps, np.zeros((batch, 1), np.int64), cache.length, self.int8, self.step_weights.step_view,
                cache.step_view, s.step_view)
        whisper_step.step_body.compile(tuple(numba.typeof(a) for a in args))

    def step_serial(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """`step` on this thread alone: step_body claims every chunk itself. (Called from here,
        not from a compiled wrapper: numba would link and optimize the whole body again for
        the wrapper, ~9 s of a first run's compile.)"""
        s, args = self._step_args(tokens, cache)
        whisper_step.step_body(0, *args)
        cache.length += 1
        return s.logits

    def step_parallel(self, tokens: np.ndarray, cache: KVCache) -> np.ndarray:
        """`step` on this thread and one of the kernels' pool (threads.run_parallel), each
        running the nogil step_body. Not a numba `prange` over the two: numba links and
        optimizes the whole body once more for such a wrapper, half again the step's first
        compile, and the pool's idle worker blocks rather than spins."""
        s, args = self._step_args(tokens, cache)
        run_parallel(lambda tid: whisper_step.step_body(tid, *args), 2)
        cache.length += 1
        return s.logits

    def forward(self, tokens: np.ndarray, cache: KVCache, positions: Sequence[int] = (-1,),
                want_cross: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        """The general path (any number of new tokens; cross-attention weights on request).
        No positions (word alignment: weights only) skips all work past the last layer's
        cross-attention weights."""
        bsz, n = tokens.shape
        start = cache.length
        if start + n > self.dims.n_text_ctx:
            raise ValueError(f"decoder context of {self.dims.n_text_ctx} tokens exceeded")
        d = self.dims.n_text_state
        t = start + n
        cache.materialize(bsz)
        rows = np.arange(n)  # the new tokens whose activations are still computed
        x = self.embed(tokens.reshape(-1)) + np.tile(self.pos[start:t], (bsz, 1))
        crosses: list[np.ndarray] = []
        for li, b in enumerate(self.blocks):
            last = li == len(self.blocks) - 1
            qkv = linear(b.attn_ln(x), b.qkv, b.qkv_b)
            cache.k[li, :bsz, start:t] = qkv[:, d : 2 * d].reshape(bsz, n, d)
            cache.v[li, :bsz, start:t] = qkv[:, 2 * d :].reshape(bsz, n, d)
            if last and not want_cross:
                # the last layer's keys/values are cached: past them only the rows whose
                # logits are asked for matter
                rows = rows[list(positions)]
                if not len(rows):
                    break
                x = x.reshape(bsz, n, d)[:, rows].reshape(-1, d)
                qkv = qkv.reshape(bsz, n, 3 * d)[:, rows].reshape(-1, 3 * d)
            x = add_(linear(self._self_attention(qkv[:, :d], cache, li, bsz, start + rows), b.out, b.out_b), x)
            qc = linear(b.cross_ln(x), b.cross_q, b.cross_q_b)
            o, wts = self._cross_attention(qc, cache, li, want_cross, not (last and not len(positions)))
            if want_cross:
                crosses.append(wts.reshape(-1, bsz, n, wts.shape[-1]).transpose(1, 0, 2, 3))
            if o is None:
                break
            x = add_(linear(o, b.cross_out, b.cross_out_b), x)
            x = add_(b.mlp(x), x)
        cache.length = t
        if not len(positions):
            return np.empty((bsz, 0, self.dims.n_vocab), np.float32), crosses
        if want_cross:
            x = x.reshape(bsz, n, d)[:, list(positions)].reshape(-1, d)
        logits = linear(self.ln(np.ascontiguousarray(x)), self.token_embedding)
        return logits.reshape(bsz, -1, self.dims.n_vocab), crosses

    def _self_attention(self, q: np.ndarray, cache: KVCache, li: int, bsz: int, at: np.ndarray) -> np.ndarray:
        """Causal self-attention of query rows (bsz * len(at), d) at positions `at` over the
        layer's cached keys/values -> (bsz * len(at), d)."""
        nh, d = self.dims.n_text_head, self.dims.n_text_state
        hd, t = d // nh, int(at.max()) + 1
        heads = lambda c: c[li, :bsz, :t].reshape(bsz, t, nh, hd).transpose(0, 2, 1, 3)  # noqa: E731
        qs = (q * np.float32(hd**-0.5)).reshape(bsz, len(at), d)
        out = np.empty_like(qs)
        mha.attention(qs, heads(cache.k), heads(cache.v), out, lengths=at + 1)
        return out.reshape(-1, d)

    def _cross_attention(self, q: np.ndarray, cache: KVCache, li: int, want_weights: bool,
                         want_out: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Every sequence attends to the same audio: all query rows (m, d) in one pass ->
        out (m, d) if wanted and the weights (h, m, n_audio_ctx) if wanted."""
        nh = self.dims.n_text_head
        k, v = cache.cross_k[li], cache.cross_v[li]
        qs = (q * np.float32(k.shape[-1] ** -0.5))[None]
        out = np.empty_like(qs) if want_out else None
        wts = np.empty((1, nh, q.shape[0], k.shape[1]), np.float32) if want_weights else None
        mha.attention(qs, k[None], v[None], out, weights=wts)
        return None if out is None else out[0], None if wts is None else wts[0]
