"""Gemma 3 decoder on the shared kernels, as llama.cpp's llm_build_gemma3 (iswa) runs it.

What differs from LLaMA (models/llama.py, whose hyperparameter checks, KV cache and
products this shares): the token embeddings are scaled by sqrt(n_embd); every block has
norms after attention and after the feed-forward network as well as before them; queries
and keys are RMS-normalized per head (QK-norm) before NEOX-style rope; queries are scaled
by 1/sqrt(head_dim) before attention (whose own scale is then 1); the feed-forward network
is GeGLU with ggml's table GELU; and five of every six layers attend over a sliding window
with their own rope base, the sixth globally. The output layer is tied to the embeddings.

Norm weights: Hugging Face's Gemma computes x * (1 + w); GGUF conversion stores 1 + w, so
the file's weights multiply directly, as in every other RMSNorm here.

One token with ggml's integer dots runs as one numba program (gemma3_step.py, the same
kernels in the same order, so the same bits); a prompt runs kernel by kernel below.
"""
from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass

import numpy as np

from whisperlite.core.errors import ModelFormatError
from whisperlite.formats.gguf import GGUFModel
from whisperlite.kernels import QTensor, Weight, ggml_order
from whisperlite.kernels.attention import round_f16
from whisperlite.kernels.ggml_order import GELU_TABLE, GgmlArith, native_arith
from whisperlite.kernels.rope import rope_, rope_cache
from whisperlite.models import gemma3_step, llama_step
from whisperlite.models.llama import (MAX_WIDTH, DecoderDims, KVCache, StepRunner, cache_addresses, check_shapes,
                                      concat_rows, decoder_hparams, decoder_shapes, embed_rows, product,
                                      prompt_on_threads, residual_, stacked, step_matrices, step_scratch)

SUPPORTED_ARCHS = ("gemma3",)
# llama.cpp's constants for this architecture where the file has no key for them: every
# sixth layer is global, the sliding-window layers rotate with base 10000.
SWA_PATTERN = 6
ROPE_BASE_SWA = 10000.0
# Gemma 3 27B (62 layers) scales queries by its n_embd / n_head instead of the head size
# (gemma_pytorch's query_pre_attn_scalar; llama.cpp knows it by the layer count).
LAYERS_27B = 62


@dataclass(frozen=True)
class Gemma3Config(DecoderDims):
    """Hyperparameters, from the GGUF `gemma3.*` keys."""

    rope_freq_base: float  # global layers
    rope_freq_base_swa: float  # sliding-window layers
    n_swa: int  # window length in positions
    swa_layers: tuple[bool, ...]  # per layer: sliding window (else global attention)
    attn_scale: float  # queries are multiplied by this before attention
    final_softcap: float  # logits -> c * tanh(logits / c) when > 0

    @classmethod
    def from_gguf(cls, g: GGUFModel) -> "Gemma3Config":
        arch = g.architecture
        if arch not in SUPPORTED_ARCHS:
            raise ModelFormatError(f"{g.path}: architecture {arch!r} is not Gemma 3")
        scaling = g.get(f"{arch}.rope.scaling.type", "none")
        if scaling != "none":
            raise ModelFormatError(f"{g.path}: {arch}.rope.scaling.type: unsupported rope scaling {scaling!r}")
        hp = decoder_hparams(g, arch)
        layers = hp["n_layer"]
        # float32, as llama.cpp computes it: 1 / sqrtf(float(n))
        scale_over = hp["n_embd"] // hp["n_head"] if layers == LAYERS_27B else hp["head_dim"]
        for key in (f"{arch}.attention.key_length_swa", f"{arch}.attention.value_length_swa"):
            if key in g.metadata and g.integer(key, hi=MAX_WIDTH) != hp["head_dim"]:
                raise ModelFormatError(f"{g.path}: {key}: sliding-window heads of another size are not supported")
        cfg = cls(
            **hp,
            rope_freq_base=g.number(f"{arch}.rope.freq_base", 10000.0, lo=1e-6),
            rope_freq_base_swa=g.number(f"{arch}.rope.freq_base_swa", ROPE_BASE_SWA, lo=1e-6),
            n_swa=g.integer(f"{arch}.attention.sliding_window", hi=MAX_WIDTH),
            swa_layers=_swa_layers(g, f"{arch}.attention.sliding_window_pattern", layers),
            attn_scale=float(np.float32(1.0) / np.float32(math.sqrt(np.float32(scale_over)))),
            final_softcap=g.number(f"{arch}.final_logit_softcapping", 0.0, lo=0.0),
        )
        check_shapes(g, cfg.tensor_shapes(), {"output.weight": (cfg.n_vocab, cfg.n_embd)})
        return cfg

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor this configuration reads, in numpy shape: (out, in) matrices."""
        e, hd = self.n_embd, self.head_dim
        return decoder_shapes(self, {"attn_q_norm.weight": (hd,), "attn_k_norm.weight": (hd,),
                                     "post_attention_norm.weight": (e,), "post_ffw_norm.weight": (e,)})


def _swa_layers(g: GGUFModel, key: str, layers: int) -> tuple[bool, ...]:
    """Which layers slide: the key holds a period n (each n-th layer is global, the others
    slide, llama.cpp's set_swa_pattern) or one flag per layer; absent, the period is 6."""
    v = g.get(key, SWA_PATTERN)
    if isinstance(v, (list, tuple, np.ndarray)):
        if len(v) != layers or not all(isinstance(b, (bool, np.bool_)) for b in v):
            raise ModelFormatError(f"{g.path}: {key}: not one true/false per layer of the {layers}")
        return tuple(bool(b) for b in v)
    n = g.integer(key, SWA_PATTERN, hi=layers)
    return tuple(i % n < n - 1 for i in range(layers))


@dataclass(frozen=True)
class Gemma3Layer:
    attn_norm: np.ndarray
    qkv: tuple[Weight, ...]  # Q|K|V as one matrix when they share a type, else Q, K, V
    q_norm: np.ndarray
    k_norm: np.ndarray
    wo: Weight
    post_attn_norm: np.ndarray
    ffn_norm: np.ndarray
    gate_up: tuple[Weight, ...]  # gate|up as one matrix when they share a type, else both
    w_down: Weight
    post_ffn_norm: np.ndarray


def _products(x: np.ndarray, ws: tuple[Weight, ...], ggml_exact: bool) -> np.ndarray:
    """x @ [w0; w1; ...].T, one product per weight (each in its own type's arithmetic)."""
    if len(ws) == 1:
        return product(x, ws[0], ggml_exact)
    return np.concatenate([product(x, w, ggml_exact) for w in ws], axis=1)


def _stacked(parts: list[Weight]) -> tuple[Weight, ...]:
    """Weights that multiply the same input, each run of neighbours that share a block type
    as one matrix (rows are independent, so the result is the same: Q|K as one product
    where V has another type), so every product keeps the arithmetic of its own type as
    llama.cpp's does, in as few products as that allows."""
    runs = [list(run) for _, run in itertools.groupby(parts, key=_kind)]
    return tuple(r[0] if len(r) == 1 else concat_rows(r) for r in runs)


def _kind(w: Weight) -> int | np.dtype:
    return w.qtype if isinstance(w, QTensor) else w.dtype


class Gemma3:
    """The decoder: `forward(tokens, cache)` appends tokens to the cache, returns logits."""

    def __init__(self, gguf: GGUFModel, ggml_exact: bool = True, arith: GgmlArith | None = None) -> None:
        # ggml_exact: ggml's activation quantization before each product (see llama.py);
        # the float steps between products follow ggml's order either way.
        self.ggml_exact = ggml_exact
        self.arith = arith or native_arith()
        self.config = cfg = Gemma3Config.from_gguf(gguf)
        t = gguf.tensors
        self.tok_embd = t["token_embd.weight"]
        self.output_norm = t["output_norm.weight"]
        self.output = t.get("output.weight", self.tok_embd)
        self.layers = []
        for i in range(cfg.n_layer):
            p = f"blk.{i}."
            self.layers.append(Gemma3Layer(
                attn_norm=t[p + "attn_norm.weight"],
                qkv=_stacked([t[p + "attn_q.weight"], t[p + "attn_k.weight"], t[p + "attn_v.weight"]]),
                q_norm=t[p + "attn_q_norm.weight"], k_norm=t[p + "attn_k_norm.weight"],
                wo=t[p + "attn_output.weight"], post_attn_norm=t[p + "post_attention_norm.weight"],
                ffn_norm=t[p + "ffn_norm.weight"],
                gate_up=_stacked([t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"]]),
                w_down=t[p + "ffn_down.weight"], post_ffn_norm=t[p + "post_ffw_norm.weight"],
            ))
        self.step_weights = self._step_weights(t)
        self._scratch = threading.local()  # the one-token step's scratch, per calling thread

    def _step_weights(self, t: dict[str, Weight]) -> gemma3_step.Weights | None:
        """The weights as the fused one-token step takes them (Q, K, V, gate and up as the
        file has them), or None when the step does not apply (llama.step_matrices)."""
        cfg, layers = self.config, self.layers
        names = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
        mats = step_matrices(self.ggml_exact, [[t[f"blk.{i}.{n}.weight"] for n in names] for i in range(cfg.n_layer)],
                             self.output)
        if mats is None:
            return None
        nq, nkv = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
        return gemma3_step.Weights(
            **mats, chunks=np.asarray([gemma3_step.qkv_chunks(r) for r in (nq, nkv, nkv)], np.int64),
            attn_norm=stacked(layers, "attn_norm"), q_norm=stacked(layers, "q_norm"),
            k_norm=stacked(layers, "k_norm"), post_attn_norm=stacked(layers, "post_attn_norm"),
            ffn_norm=stacked(layers, "ffn_norm"), post_ffn_norm=stacked(layers, "post_ffn_norm"),
            window=np.asarray([cfg.n_swa if swa else 0 for swa in cfg.swa_layers], np.int64),
            out_norm=np.ascontiguousarray(self.output_norm, np.float32), gelu=GELU_TABLE, n_head=cfg.n_head,
            n_head_kv=cfg.n_head_kv, eps=cfg.rms_eps, attn_scale=cfg.attn_scale, kv_pad=self.arith.kv_pad,
            lanes=self.arith.lanes)

    def weights(self) -> list[Weight]:
        """Every matrix a forward pass multiplies by (what decides the kernels it compiles)."""
        out = [self.tok_embd, self.output]
        for lay in self.layers:
            out += [*lay.qkv, lay.wo, *lay.gate_up, lay.w_down]
        return out

    def new_cache(self, n_ctx: int) -> KVCache:
        return KVCache.empty(self.config, n_ctx)

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
            logits = self._softcap(self._step(ids, cache))
            return logits if all_logits else logits[0]
        return prompt_on_threads(self._prompt, (ids, cache, all_logits), n)

    def _prompt(self, ids: np.ndarray, cache: KVCache, all_logits: bool) -> np.ndarray:
        """`forward` for tokens evaluated kernel by kernel."""
        cfg = self.config
        n = len(ids)
        pos0 = cache.n_past
        hd, nh, nkv_h = cfg.head_dim, cfg.n_head, cfg.n_head_kv
        nq, nkv = nh * hd, nkv_h * hd
        positions = np.arange(pos0, pos0 + n)
        ropes = {False: rope_cache(positions, cfg.n_rot, cfg.rope_freq_base),
                 True: rope_cache(positions, cfg.n_rot, cfg.rope_freq_base_swa)}
        norm, eps, exact, arith = ggml_order.rms_norm, cfg.rms_eps, self.ggml_exact, self.arith
        attn = np.empty((n, nh, hd), np.float32)
        scale = np.float32(cfg.attn_scale)

        x = self._embed(ids)
        for li, lay in enumerate(self.layers):
            swa = cfg.swa_layers[li]
            cos, sin = ropes[swa]
            h = norm(x, lay.attn_norm, eps)
            qkv = _products(h, lay.qkv, exact)
            q = norm(np.ascontiguousarray(qkv[:, :nq]).reshape(n * nh, hd), lay.q_norm, eps).reshape(n, nh, hd)
            k = norm(np.ascontiguousarray(qkv[:, nq : nq + nkv]).reshape(n * nkv_h, hd), lay.k_norm,
                     eps).reshape(n, nkv_h, hd)
            rope_(q, cos, sin, exact, neox=True)
            rope_(k, cos, sin, exact, neox=True)
            q *= scale
            cache.k[li][:, pos0 : pos0 + n] = round_f16(k).transpose(1, 0, 2)
            v = qkv[:, nq + nkv :].reshape(n, nkv_h, hd)
            cache.v[li][:, :, pos0 : pos0 + n] = round_f16(v).transpose(1, 2, 0)
            ggml_order.attention(q, cache.k[li], cache.v[li], pos0, 1.0, attn, arith, cfg.n_swa if swa else 0)
            o = product(attn.reshape(n, nq), lay.wo, exact)
            if li == len(self.layers) - 1 and not all_logits:
                # only the last row goes on to the logits (llama.cpp's inp_out_ids: the
                # last layer's feed-forward network runs for the output rows alone)
                o, x = o[-1:], x[-1:]
            x = residual_(norm(o, lay.post_attn_norm, eps), x)

            h = norm(x, lay.ffn_norm, eps)
            gu = _products(h, lay.gate_up, exact)
            gate = ggml_order.geglu_(np.ascontiguousarray(gu[:, : cfg.n_ff]), np.ascontiguousarray(gu[:, cfg.n_ff :]))
            d = norm(product(gate, lay.w_down, exact), lay.post_ffn_norm, eps)
            x = residual_(d, x)
        cache.n_past = pos0 + n

        logits = self._softcap(product(norm(x, self.output_norm, eps), self.output, exact))
        return logits if all_logits else logits[0]

    def _softcap(self, logits: np.ndarray) -> np.ndarray:
        """logits -> c * tanh(logits / c) when the file sets a final soft cap c."""
        c = np.float32(self.config.final_softcap)
        return np.tanh(logits * (np.float32(1.0) / c)) * c if c > 0 else logits

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        """The tokens' embedding rows scaled by sqrtf(n_embd) (ggml_scale: one float32
        product per value)."""
        return embed_rows(self.tok_embd, ids) * np.float32(math.sqrt(np.float32(self.config.n_embd)))

    def _step(self, ids: np.ndarray, cache: KVCache) -> np.ndarray:
        """One token through `gemma3_step` -> logits (1, n_vocab)."""
        cfg = self.config
        sc = getattr(self._scratch, "step", None)
        if sc is None:
            nq, nkv = cfg.n_head * cfg.head_dim, cfg.n_head_kv * cfg.head_dim
            slots = gemma3_step.step_slots(cfg.n_layer, cfg.n_head, cfg.n_head_kv, (nq, nkv, nkv))
            sc = self._scratch.step = StepRunner(step_scratch(llama_step.Scratch, cfg, slots, (2, 3),
                                                              (1, cfg.n_head, cfg.head_dim)))
        pos = cache.n_past
        positions = np.arange(pos, pos + 1)
        cos_g, sin_g = rope_cache(positions, cfg.n_rot, cfg.rope_freq_base)
        cos_s, sin_s = rope_cache(positions, cfg.n_rot, cfg.rope_freq_base_swa)
        sc.run(gemma3_step.step_body, gemma3_step.step_parallel,
               (pos, self._embed(ids), cos_g, sin_g, cos_s, sin_s, *cache_addresses(cache), self.step_weights,
                sc.view))
        cache.n_past = pos + 1
        return sc.view.logits.copy()
