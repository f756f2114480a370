"""LLaMA-family decoder on the shared kernels: RMSNorm, RoPE, grouped-query attention,
SwiGLU, a KV cache, tied or separate output embeddings.

Weights stay as the GGUF file stores them (views of its memory map, any quant type the
kernels take); only Q|K|V and gate|up are concatenated row-wise once at load, so each
layer runs four matrix products per step instead of seven (rows are independent, so the
results are the same).
"""
from __future__ import annotations

import math
import threading
from typing import Callable
from dataclasses import dataclass

import numpy as np

from gguf import GGMLQuantizationType as QType

from whisperlite.core.errors import ModelFormatError, QuantizationError
from whisperlite.formats.gguf import GGUFModel
from whisperlite.kernels import QTensor, Weight, get_threads, ggml_order, matmul, ops
from whisperlite.kernels.attention import attention, round_f16
from whisperlite.kernels.ggml_order import GgmlArith, native_arith
from whisperlite.kernels.ops import add_
from whisperlite.kernels import gemv, tiles
from whisperlite.kernels.actquant import PARALLEL_MIN, quantize_activations
from whisperlite.kernels.quant import dequantize
from whisperlite.kernels.rope import rope_, rope_cache
from whisperlite.kernels.share import helping
from whisperlite.kernels.threads import one_numba_thread
from whisperlite.kernels.worksplit import SplitChooser
from whisperlite.models import llama_step

# GGUF architectures this decoder implements (Mistral and most Llama derivatives are
# converted as "llama").
SUPPORTED_ARCHS = ("llama",)
# Bounds on hyperparameters before the tensors are compared with them: the largest
# published models stay well below (a 262k vocabulary, 128k-token contexts, a few 10k
# wide); the context bound keeps a KV cache's address space finite.
MAX_WIDTH = 1 << 20
MAX_VOCAB = 1 << 24
MAX_CONTEXT = 1 << 20


@dataclass(frozen=True)
class DecoderDims:
    """The hyperparameters every decoder here has (`decoder_hparams` reads them)."""

    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rms_eps: float


@dataclass(frozen=True)
class LlamaConfig(DecoderDims):
    """Hyperparameters, from the GGUF `{arch}.*` keys (gguf-py Keys.LLM / Keys.Attention)."""

    rope_freq_base: float
    rope_freq_scale: float

    @classmethod
    def from_gguf(cls, g: GGUFModel) -> "LlamaConfig":
        """The hyperparameters, each checked for type and range and against the shape of
        every tensor that depends on it, so no kernel sees a size its arrays do not have."""
        arch = g.architecture
        if arch not in SUPPORTED_ARCHS:
            raise ModelFormatError(
                f"{g.path}: unsupported architecture {arch or '(none)'!r} (supported: {', '.join(SUPPORTED_ARCHS)})"
            )
        scaling = g.get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise ModelFormatError(f"{g.path}: {arch}.rope.scaling.type: unsupported rope scaling {scaling!r}")
        factor = g.number(f"{arch}.rope.scaling.factor", 0.0, lo=0.0)
        cfg = cls(
            **decoder_hparams(g, arch),
            rope_freq_base=g.number(f"{arch}.rope.freq_base", 10000.0, lo=1e-6),
            # Linear scaling stretches positions: theta uses p / factor.
            rope_freq_scale=1.0 / factor if scaling == "linear" and factor > 0 else 1.0,
        )
        optional = {"output.weight": (cfg.n_vocab, cfg.n_embd), "rope_freqs.weight": (cfg.n_rot // 2,)}
        check_shapes(g, cfg.tensor_shapes(), optional)
        return cfg

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor this configuration reads, in numpy shape: (out, in) matrices."""
        return decoder_shapes(self, {})


def decoder_hparams(g: GGUFModel, arch: str) -> dict[str, int | float]:
    """The `{arch}.*` hyperparameters every decoder here shares (LlamaConfig's fields but
    the rope base and scale), each checked for type and range and against the others."""
    n_embd = g.integer(f"{arch}.embedding_length", hi=MAX_WIDTH)
    n_head = g.integer(f"{arch}.attention.head_count", hi=n_embd)
    n_head_kv = g.integer(f"{arch}.attention.head_count_kv", n_head, hi=n_head)
    if n_head % n_head_kv:
        raise ModelFormatError(f"{g.path}: {arch}.attention.head_count_kv: {n_head_kv} does not divide "
                               f"the {n_head} query heads")
    key_length = f"{arch}.attention.key_length"
    if key_length not in g.metadata and n_embd % n_head:
        raise ModelFormatError(f"{g.path}: {arch}.attention.head_count: {n_head} does not divide "
                               f"the embedding length {n_embd}")
    head_dim = g.integer(key_length, n_embd // n_head, hi=MAX_WIDTH)
    value_length = g.integer(f"{arch}.attention.value_length", head_dim, hi=MAX_WIDTH)
    if value_length != head_dim:
        raise ModelFormatError(f"{g.path}: {arch}.attention.value_length: {value_length} differs from "
                               f"the key length {head_dim}")
    # llama.cpp's rule for these architectures: the whole head rotates, in pairs.
    n_rot = g.integer(f"{arch}.rope.dimension_count", head_dim, hi=MAX_WIDTH)
    if n_rot != head_dim or n_rot % 2:
        raise ModelFormatError(f"{g.path}: {arch}.rope.dimension_count: {n_rot} is not the head size "
                               f"{head_dim}, or not even")
    tokens = g.get("tokenizer.ggml.tokens")
    embd = g.tensors.get("token_embd.weight")
    if embd is None:
        raise ModelFormatError(f"{g.path}: missing tensor token_embd.weight")
    n_vocab = g.integer(f"{arch}.vocab_size", len(tokens) if tokens is not None else embd.shape[0], hi=MAX_VOCAB)
    if tokens is not None and len(tokens) != n_vocab:
        raise ModelFormatError(f"{g.path}: tokenizer.ggml.tokens: {len(tokens)} tokens for a vocabulary of {n_vocab}")
    return dict(
        n_vocab=n_vocab,
        n_ctx_train=g.integer(f"{arch}.context_length", hi=MAX_CONTEXT),
        n_embd=n_embd,
        n_ff=g.integer(f"{arch}.feed_forward_length", hi=MAX_WIDTH),
        n_layer=g.integer(f"{arch}.block_count", hi=len(g.tensors)),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_rot=n_rot,
        rms_eps=g.number(f"{arch}.attention.layer_norm_rms_epsilon", lo=0.0, hi=1.0),
    )


def decoder_shapes(cfg: DecoderDims, extra: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The tensors every decoder here reads (a `decoder_hparams` configuration), and per
    layer `extra` (names after "blk.N."), in numpy shape: (out, in) matrices."""
    e, f, hd = cfg.n_embd, cfg.n_ff, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (cfg.n_vocab, e), "output_norm.weight": (e,)}
    for i in range(cfg.n_layer):
        p = f"blk.{i}."
        shapes.update({
            p + "attn_norm.weight": (e,), p + "attn_q.weight": (cfg.n_head * hd, e),
            p + "attn_k.weight": (cfg.n_head_kv * hd, e), p + "attn_v.weight": (cfg.n_head_kv * hd, e),
            p + "attn_output.weight": (e, cfg.n_head * hd), p + "ffn_norm.weight": (e,),
            p + "ffn_gate.weight": (f, e), p + "ffn_up.weight": (f, e), p + "ffn_down.weight": (e, f),
        })
        shapes.update({p + name: shape for name, shape in extra.items()})
    return shapes


def check_shapes(g: GGUFModel, shapes: dict[str, tuple[int, ...]], optional: dict[str, tuple[int, ...]]) -> None:
    """Every tensor of `shapes` present with that shape, and those of `optional` that are
    present too: vectors as float32 arrays, matrices as any 2-D weight."""
    for name, shape in [*shapes.items(), *optional.items()]:
        w = g.tensors.get(name)
        if w is None:
            if name in optional:
                continue
            raise ModelFormatError(f"{g.path}: missing tensor {name}")
        ok = tuple(w.shape) == shape and (len(shape) == 2 or isinstance(w, np.ndarray))
        if not ok:
            raise ModelFormatError(f"{g.path}: tensor {name}: shape {tuple(w.shape)}"
                                   f"{'' if isinstance(w, np.ndarray) else ' ' + QType(w.qtype).name}, "
                                   f"the hyperparameters ask for {shape}")


@dataclass(frozen=True)
class LlamaLayer:
    attn_norm: np.ndarray
    wqkv: Weight  # rows: n_head*hd queries, then n_kv*hd keys, then n_kv*hd values
    wo: Weight
    ffn_norm: np.ndarray
    w_gate_up: Weight  # rows: n_ff gate, then n_ff up
    w_down: Weight


def concat_rows(parts: list[Weight]) -> Weight:
    """Stack weights that multiply the same input into one (rows are independent)."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=0)
    if all(isinstance(p, QTensor) for p in parts) and len({p.qtype for p in parts}) == 1:
        rows = sum(p.shape[0] for p in parts)
        data = np.concatenate([p.data for p in parts], axis=0)
        return QTensor(parts[0].qtype, (rows, parts[0].shape[1]), data)
    # Mixed types (some quantization mixes keep V at higher precision): widen to float32.
    return np.concatenate([p.dequantize() if isinstance(p, QTensor) else p for p in parts], axis=0)


def embed_rows(w: Weight, ids: np.ndarray) -> np.ndarray:
    """Rows `ids` of an embedding matrix as float32 (n, n_embd); only those rows decoded."""
    if isinstance(w, QTensor):
        return dequantize(np.ascontiguousarray(w.data[ids]), w.qtype, (len(ids), w.shape[1]))
    return np.asarray(w[ids], np.float32)


@dataclass
class KVCache:
    """Per-layer keys and values, float32 holding f16-rounded values (see kernels.attention).

    Pages are only touched as positions fill, so a long n_ctx costs address space, not RAM.
    """

    k: list[np.ndarray]
    v: list[np.ndarray]
    n_past: int = 0

    @classmethod
    def empty(cls, cfg: DecoderDims, n_ctx: int) -> "KVCache":
        # K as (head, cell, dim), V transposed as (head, dim, cell), as llama.cpp keeps them:
        # attention reads both contiguously for one query.
        return cls([np.zeros((cfg.n_head_kv, n_ctx, cfg.head_dim), np.float32) for _ in range(cfg.n_layer)],
                   [np.zeros((cfg.n_head_kv, cfg.head_dim, n_ctx), np.float32) for _ in range(cfg.n_layer)])

    @property
    def n_ctx(self) -> int:
        return self.k[0].shape[1]


class Llama:
    """The decoder: `forward(tokens, cache)` appends tokens to the cache, returns logits."""

    def __init__(self, gguf: GGUFModel, ggml_exact: bool = True, arith: GgmlArith | None = None) -> None:
        # ggml_exact: quantize activations before each product as ggml does, so logits
        # (and greedy text) match llama.cpp; float activations differ by up to ~0.2.
        # arith: which llama.cpp build's float order to follow (default: today's, this CPU).
        self.ggml_exact = ggml_exact
        self.arith = arith or native_arith()
        self.config = cfg = LlamaConfig.from_gguf(gguf)
        t = gguf.tensors  # every tensor from_gguf's shape check names is present
        self.tok_embd = t["token_embd.weight"]
        self.output_norm = t["output_norm.weight"]
        # Without output.weight the output layer is tied to the token embeddings.
        self.output = t.get("output.weight", self.tok_embd)
        freq_factors = t.get("rope_freqs.weight")
        self.freq_factors = None if freq_factors is None else np.asarray(freq_factors, np.float32)
        self.layers = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            self.layers.append(LlamaLayer(
                attn_norm=t[p + "attn_norm.weight"],
                wqkv=concat_rows([t[p + "attn_q.weight"], t[p + "attn_k.weight"], t[p + "attn_v.weight"]]),
                wo=t[p + "attn_output.weight"],
                ffn_norm=t[p + "ffn_norm.weight"],
                w_gate_up=concat_rows([t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"]]),
                w_down=t[p + "ffn_down.weight"],
            ))

        self.step_weights = self._step_weights()
        self._scratch = threading.local()  # the one-token step's scratch, per calling thread

    def _step_weights(self) -> llama_step.Weights | None:
        """The weights as the fused one-token step takes them, or None when the step does
        not apply (`step_matrices`): then the general path runs every token."""
        layers = self.layers
        mats = step_matrices(self.ggml_exact, [[lay.wqkv, lay.wo, lay.w_gate_up, lay.w_down] for lay in layers],
                             self.output)
        if mats is None:
            return None
        cfg = self.config
        return llama_step.Weights(
            **mats, attn_norm=stacked(layers, "attn_norm"), ffn_norm=stacked(layers, "ffn_norm"),
            out_norm=np.ascontiguousarray(self.output_norm, np.float32), n_head=cfg.n_head, n_head_kv=cfg.n_head_kv, eps=cfg.rms_eps,
            kv_pad=self.arith.kv_pad, lanes=self.arith.lanes)

    def new_cache(self, n_ctx: int) -> KVCache:
        return KVCache.empty(self.config, n_ctx)

    def weights(self) -> list[Weight]:
        """Every matrix a forward pass multiplies by (what decides the kernels it compiles)."""
        out = [self.tok_embd, self.output]
        for layer in self.layers:
            out += [layer.wqkv, layer.wo, layer.w_gate_up, layer.w_down]
        return out

    def _mm(self, x: np.ndarray, w: Weight) -> np.ndarray:
        return product(x, w, self.ggml_exact)

    def forward(self, tokens: list[int] | np.ndarray, cache: KVCache, all_logits: bool = False) -> np.ndarray:
        """Evaluate `tokens` at positions cache.n_past … as one batch.

        Returns logits (n_vocab,) of the last token, or (n, n_vocab) with all_logits.
        """
        ids = np.asarray(tokens, np.int64)
        n = len(ids)
        pos0 = cache.n_past
        if pos0 + n > cache.n_ctx:
            raise ValueError(f"context full: {pos0} + {n} tokens > n_ctx {cache.n_ctx}")
        if n == 1 and self.step_weights is not None:
            logits = self._step(ids, cache)
            return logits if all_logits else logits[0]
        return prompt_on_threads(self._forward_ops, (ids, cache, all_logits), n)

    def _forward_ops(self, ids: np.ndarray, cache: KVCache, all_logits: bool) -> np.ndarray:
        """`forward` as a sequence of kernel calls: any number of tokens, any weight type."""
        cfg = self.config
        n = len(ids)
        pos0 = cache.n_past
        hd, nq, nkv = cfg.head_dim, cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        cos, sin = rope_cache(np.arange(pos0, pos0 + n), cfg.n_rot, cfg.rope_freq_base,
                              cfg.rope_freq_scale, self.freq_factors)
        scale = 1.0 / math.sqrt(hd)
        attn = np.empty((n, cfg.n_head, hd), np.float32)
        if self.ggml_exact:
            arith = self.arith
            norm = ggml_order.rms_norm

            def silu_mul(g, u):
                return ggml_order.silu_mul_(g, u, arith)

            def attend(q, kc, vc, p0, sc, out):
                return ggml_order.attention(q, kc, vc, p0, sc, out, arith)
        else:
            norm, silu_mul, attend = ops.rms_norm, ops.silu_mul_, attention
        mm = self._mm

        x = embed_rows(self.tok_embd, ids)
        for li, layer in enumerate(self.layers):
            h = norm(x, layer.attn_norm, cfg.rms_eps)
            qkv = mm(h, layer.wqkv)
            q = qkv[:, :nq].reshape(n, cfg.n_head, hd)
            k = qkv[:, nq : nq + nkv].reshape(n, cfg.n_head_kv, hd)
            rope_(q, cos, sin, self.ggml_exact)
            rope_(k, cos, sin, self.ggml_exact)
            cache.k[li][:, pos0 : pos0 + n] = round_f16(k).transpose(1, 0, 2)
            cache.v[li][:, :, pos0 : pos0 + n] = round_f16(qkv[:, nq + nkv :].reshape(n, cfg.n_head_kv, hd)).transpose(1, 2, 0)
            attend(q, cache.k[li], cache.v[li], pos0, scale, attn)
            o = mm(attn.reshape(n, nq), layer.wo)
            if li == len(self.layers) - 1 and not all_logits:
                # only the last row goes on to the logits (llama.cpp's inp_out_ids: the
                # last layer's feed-forward network runs for the output rows alone)
                o, x = o[-1:], x[-1:]
            residual_(x, o)

            h = norm(x, layer.ffn_norm, cfg.rms_eps)
            gu = mm(h, layer.w_gate_up)
            gate = silu_mul(np.ascontiguousarray(gu[:, : cfg.n_ff]), np.ascontiguousarray(gu[:, cfg.n_ff :]))
            residual_(x, mm(gate, layer.w_down))
        cache.n_past = pos0 + n

        logits = mm(norm(x, self.output_norm, cfg.rms_eps), self.output)
        return logits if all_logits else logits[0]


    def _step(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """One token through `llama_step` -> logits (1, n_vocab)."""
        cfg = self.config
        sc = getattr(self._scratch, "step", None)
        if sc is None:
            sc = self._scratch.step = StepRunner(step_scratch(
                llama_step.Scratch, cfg, llama_step.step_slots(cfg.n_layer, cfg.n_head, cfg.n_head_kv), (2,),
                (max(cfg.n_head, cfg.n_head_kv) * cfg.head_dim,)))
        pos = cache.n_past
        cos, sin = rope_cache(np.arange(pos, pos + 1), cfg.n_rot, cfg.rope_freq_base, cfg.rope_freq_scale,
                              self.freq_factors)
        sc.run(llama_step.step_body, llama_step.step_parallel,
               (pos, embed_rows(self.tok_embd, ids), cos, sin, *cache_addresses(cache), self.step_weights, sc.view))
        cache.n_past = pos + 1
        return sc.view.logits.copy()


class StepRunner:
    """One calling thread's scratch for a fused step program (its calls counter numbers
    the steps for the chunk claims), and its choice between one thread and two."""

    def __init__(self, view) -> None:
        self.view = view
        self.calls = 0
        self.chooser = SplitChooser()

    def run(self, body, parallel, args: tuple) -> None:
        """body(0, g, *args) on this thread, or parallel(g, *args) on two, whichever has
        been faster lately (the same bits either way)."""

        def serial() -> None:
            self.calls += 1
            body(0, self.calls, *args)

        def split() -> None:
            self.calls += 1
            parallel(self.calls, *args)

        if get_threads() == 1:
            serial()
        else:
            self.chooser.run(serial, split, ())


def cache_addresses(cache: KVCache) -> tuple[np.ndarray, np.ndarray, int]:
    """The KV cache as a step program takes it: each layer's K and V addresses, n_ctx."""
    return (np.asarray([k.ctypes.data for k in cache.k], np.int64),
            np.asarray([v.ctypes.data for v in cache.v], np.int64), cache.n_ctx)


def step_scratch(kind: type, cfg: DecoderDims, slots: int, inputs: tuple[int, ...], head: tuple[int, ...]):
    """A new `kind` (llama_step.Scratch, or a step's own with the same fields) for `cfg`:
    `slots` claim and done slots, quantized inputs of shape inputs + (max k,), per-thread
    head rows of shape (2,) + head."""
    L, d, hd = cfg.n_layer, cfg.n_embd, cfg.head_dim
    nq, nkv, ff = cfg.n_head * hd, cfg.n_head_kv * hd, cfg.n_ff
    k_max = max(d, nq, ff)
    z = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    return kind(
        claim=np.zeros(slots, np.int64), done=np.zeros(slots, np.int64), qkv=z(L, 1, nq + 2 * nkv),
        att=z(L, 1, nq), o=z(L, 1, d), gu=z(L, 1, 2 * ff), act=z(L, 1, ff), down=z(L, 1, d), x=z(2, 1, d),
        h=z(2, 1, d), xq=np.zeros((*inputs, k_max), np.int8), xd=z(*inputs, k_max // 32), xs=z(*inputs, k_max // 32),
        head=z(2, *head), logits=z(1, cfg.n_vocab))


def step_matrices(ggml_exact: bool, mats: list[list[Weight]], output: Weight) -> dict[str, np.ndarray] | None:
    """Each layer's matrices (one list per layer, in the step's role order) as a fused step
    takes them: int64 kind codes (quant.KIND), (rows, bytes) shapes and data addresses,
    each (L, roles), and the output matrix as bytes with its kind; None when no step applies (float activations, no AVX2 integer dots,
    or a weight type without them)."""
    if not (ggml_exact and gemv.HAS_AVX2) or any(
            not isinstance(m, QTensor) or m.qtype not in _I8_KIND for m in [*sum(mats, []), output]):
        return None
    return dict(kinds=np.asarray([[_I8_KIND[m.qtype] for m in ms] for ms in mats], np.int64),
                shapes=np.asarray([[m.data.shape for m in ms] for ms in mats], np.int64),
                addrs=np.asarray([[m.data.ctypes.data for m in ms] for ms in mats], np.int64),
                out_kind=_I8_KIND[output.qtype], out=output.data.view(np.uint8))


def stacked(layers: list, name: str) -> np.ndarray:
    """Every layer's vector `name` as one float32 (L, n) array."""
    return np.ascontiguousarray(np.stack([getattr(lay, name) for lay in layers]), np.float32)


def product(x: np.ndarray, w: Weight, ggml_exact: bool) -> np.ndarray:
    """x (n, k) @ w.T, with ggml's own arithmetic (its activation quantization and integer
    dots) when ggml_exact is set."""
    if not ggml_exact or not isinstance(w, QTensor):
        return matmul(x, w)
    if gemv.batch_kernel(x.shape[0], w):  # llama.cpp's K-quant batch kernels
        return gemv.k_batch(x, w, np.empty((x.shape[0], w.shape[0]), np.float32))
    kind = _I8_KIND.get(w.qtype) if gemv.HAS_AVX2 else None
    if kind is not None and x.shape[0] >= tiles.TILE_TOKENS and kind in _TILE_KINDS:  # a prompt: in tiles
        xq, xd, xs = quantize_activations(x, w.qtype, np.int8)
        return tiles.gemm_i8(kind, xq, xd, xs, w.data, np.empty((x.shape[0], w.shape[0]), np.float32),
                             w.data.size * x.shape[0] >= TILE_SPLIT_MIN_BYTES)
    if kind is not None:  # ggml's integer dots, as ggml itself runs them
        out = np.empty((x.shape[0], w.shape[0]), np.float32)
        if x.shape[0] * x.shape[1] < PARALLEL_MIN:  # one call: quantizer and product
            return gemv.gemv_i8_f32(kind, np.ascontiguousarray(x), w.data, out)
        xq, xd, xs = quantize_activations(x, w.qtype, np.int8)
        return gemv.gemv_i8(kind, xq, xd, xs, w.data, out)
    kernel = _GGML_GEMV.get(w.qtype)
    if kernel is not None:  # what matmul(ggml_exact=True) runs, without its per-call dispatch
        xq, xd, xs = quantize_activations(x, w.qtype)
        return kernel(xq, xd, xs, w.data, np.empty((x.shape[0], w.shape[0]), np.float32))
    try:
        return matmul(x, w, ggml_exact=True)
    except QuantizationError:  # K-quants: float activations
        return matmul(x, w)


def prompt_on_threads(prompt: Callable[..., np.ndarray], args: tuple, n: int) -> np.ndarray:
    """prompt(*args) for n tokens on this thread, its larger products shared with the helper
    thread when there are two threads (kernels/share.py): this thread never waits for the
    helper to start or finish, so two threads are never slower than one by more than the
    claims, where numba's pool (woken and joined per kernel) made a short prompt slower
    than one thread, and a busy second core slower still. From POOL_MIN_TOKENS on, the
    other kernels (attention, norms, quantizers) may use numba's pool again: their work
    then repays a wake-up and a join."""
    if get_threads() == 1:
        return prompt(*args)
    with helping():
        if n >= POOL_MIN_TOKENS:
            return prompt(*args)
        out = []
        one_numba_thread(lambda _: out.append(prompt(*args)), 0)
        return out[0]


def residual_(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x += y: numpy for one row (no kernel dispatch), the parallel kernel for batches."""
    if x.shape[0] == 1:
        x += y
        return x
    return add_(x, y)


# Prompts of this many tokens run their kernels other than the shared products on numba's
# pool (prompt_on_threads); shorter ones on the calling thread alone.
POOL_MIN_TOKENS = 64
# A prompt's tiled product splits over the pool from this many weight bytes times tokens:
# below, waking the pool costs about what the product takes on one thread.
TILE_SPLIT_MIN_BYTES = 1 << 22
# Block weight types -> the shared kernel matmul(ggml_exact=True) dispatches them to; looked
# up by the raw type number (~120 products a token: the enum conversion alone was ~1 ms).
_I8_KIND = {int(q): kind for q, kind in gemv.I8_KIND.items()}
_TILE_KINDS = frozenset(gemv.LEGACY_KIND.values())
_GGML_GEMV = {int(QType.Q8_0): gemv.gemv_q8_0, int(QType.Q4_0): gemv.gemv_q4_0, int(QType.Q4_1): gemv.gemv_q4_1,
              int(QType.Q5_0): gemv.gemv_q5_0, int(QType.Q5_1): gemv.gemv_q5_1}
