"""Whisper's transformer pieces shared by encoder and decoder: layer norm and the pre-LN
block's weights (attention and MLP)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from whisperlite.formats.checkpoint import WhisperCheckpoint
from whisperlite.kernels import QTensor, Weight, linear
from whisperlite.kernels.ops import bias_gelu_, layer_norm

LN_EPS = 1e-5


def fuse_rows(ws: list[Weight]) -> Weight:
    """Stack output rows of several linear weights into one matrix (one product instead of many)."""
    if all(isinstance(w, QTensor) for w in ws) and len({w.qtype for w in ws}) == 1:
        rows = sum(w.shape[0] for w in ws)
        return QTensor(ws[0].qtype, (rows, ws[0].shape[1]), np.concatenate([w.data for w in ws]))
    return np.ascontiguousarray(np.concatenate([w.dequantize() if isinstance(w, QTensor) else w for w in ws]))


@dataclass
class Norm:
    g: np.ndarray
    b: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self.g, self.b, LN_EPS)


@dataclass
class Block:
    attn_ln: Norm
    qkv: Weight | tuple[Weight, ...]  # (3d, d): query | key | value rows, or those three (see load_block)
    qkv_b: np.ndarray
    out: Weight
    out_b: np.ndarray
    mlp_ln: Norm
    fc1: Weight
    fc1_b: np.ndarray
    fc2: Weight
    fc2_b: np.ndarray
    # decoder only
    cross_ln: Norm | None = None
    cross_q: Weight | None = None
    cross_q_b: np.ndarray | None = None
    cross_kv: Weight | None = None  # (2d, d): key | value rows
    cross_kv_b: np.ndarray | None = None
    cross_out: Weight | None = None
    cross_out_b: np.ndarray | None = None

    def mlp(self, x: np.ndarray) -> np.ndarray:
        h = bias_gelu_(linear(self.mlp_ln(x), self.fc1), self.fc1_b)
        return linear(h, self.fc2, self.fc2_b)


def load_block(w: dict, p: str, cross: bool, d: int,
               fuse: Callable[[list[Weight]], Weight | tuple[Weight, ...]] = fuse_rows) -> Block:
    """Weights stay as stored: the decoder's products take few rows (reading fewer bytes is
    the point), and the encoder dequantizes a layer at a time per window (a float32 copy of
    float16 weights would double their memory: 2.5 GB instead of 1.3 for large-v3's encoder).
    `fuse` makes the query|key|value weight of the self-attention from its three parts."""
    norm = lambda n: Norm(w[f"{n}.weight"], w[f"{n}.bias"])  # noqa: E731
    blk = Block(
        attn_ln=norm(f"{p}.attn_ln"),
        qkv=fuse([w[f"{p}.attn.query.weight"], w[f"{p}.attn.key.weight"], w[f"{p}.attn.value.weight"]]),
        qkv_b=np.concatenate([w[f"{p}.attn.query.bias"], np.zeros(d, np.float32), w[f"{p}.attn.value.bias"]]),
        out=w[f"{p}.attn.out.weight"],
        out_b=w[f"{p}.attn.out.bias"],
        mlp_ln=norm(f"{p}.mlp_ln"),
        fc1=w[f"{p}.mlp.0.weight"],
        fc1_b=w[f"{p}.mlp.0.bias"],
        fc2=w[f"{p}.mlp.2.weight"],
        fc2_b=w[f"{p}.mlp.2.bias"],
    )
    if cross:
        blk.cross_ln = norm(f"{p}.cross_attn_ln")
        blk.cross_q = w[f"{p}.cross_attn.query.weight"]
        blk.cross_q_b = w[f"{p}.cross_attn.query.bias"]
        blk.cross_kv = fuse_rows([w[f"{p}.cross_attn.key.weight"], w[f"{p}.cross_attn.value.weight"]])
        blk.cross_kv_b = np.concatenate([np.zeros(d, np.float32), w[f"{p}.cross_attn.value.bias"]])
        blk.cross_out = w[f"{p}.cross_attn.out.weight"]
        blk.cross_out_b = w[f"{p}.cross_attn.out.bias"]
    return blk


def load_blocks(ckpt: WhisperCheckpoint, side: str, n: int, cross: bool, d: int,
                finish: Callable[[Block], Block] = lambda b: b,
                fuse: Callable[[list[Weight]], Weight | tuple[Weight, ...]] = fuse_rows) -> list[Block]:
    """Blocks 0 … n-1 of `side` ("encoder" or "decoder"), each passed through `finish`.
    The mapped file's pages are released after each: a block's fused rows are copies of
    sources read once, and those sources would otherwise stay resident beside the copies
    until the whole model is built (a model's size of file pages on top of its peak)."""
    blocks = []
    for i in range(n):
        blocks.append(finish(load_block(ckpt.weights, f"{side}.blocks.{i}", cross, d, fuse)))
        ckpt.release_mapped_pages()
    return blocks
