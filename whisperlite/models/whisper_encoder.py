"""Whisper's audio encoder: two GELU convolutions (the second with stride 2) as im2col
matrix products, then pre-LayerNorm transformer blocks over 1500 positions."""
from __future__ import annotations

import numpy as np

from whisperlite.kernels import linear
from whisperlite.kernels.ops import add_, gelu_, softmax_
from whisperlite.kernels.threads import run_parallel
from whisperlite.models.checkpoint import WhisperCheckpoint
from whisperlite.models.whisper_blocks import Norm, load_block


class AudioEncoder:
    def __init__(self, ckpt: WhisperCheckpoint):
        d, w = ckpt.dims, ckpt.weights
        self.dims = d
        c1 = np.asarray(w["encoder.conv1.weight"], np.float32)  # (state, n_mels, 3)
        c2 = np.asarray(w["encoder.conv2.weight"], np.float32)  # (state, state, 3)
        # im2col column order is (tap, channel): weights reordered to match once here.
        self.conv1 = np.ascontiguousarray(c1.transpose(0, 2, 1).reshape(c1.shape[0], -1))
        self.conv2 = np.ascontiguousarray(c2.transpose(0, 2, 1).reshape(c2.shape[0], -1))
        self.conv1_b = np.asarray(w["encoder.conv1.bias"], np.float32).reshape(-1)
        self.conv2_b = np.asarray(w["encoder.conv2.bias"], np.float32).reshape(-1)
        self.pos = np.asarray(w["encoder.positional_embedding"], np.float32)
        self.blocks = [load_block(w, f"encoder.blocks.{i}", False, d.n_audio_state) for i in range(d.n_audio_layer)]
        self.ln_post = Norm(w["encoder.ln_post.weight"], w["encoder.ln_post.bias"])

    @staticmethod
    def _im2col(x: np.ndarray, stride: int) -> np.ndarray:
        """x (T, C), kernel 3, padding 1 -> (T_out, 3*C) rows [x[t-1], x[t], x[t+1]]."""
        t, c = x.shape
        xp = np.zeros((t + 2, c), np.float32)
        xp[1:-1] = x
        t_out = (t - 1) // stride + 1
        cols = np.empty((t_out, 3 * c), np.float32)
        for tap in range(3):
            cols[:, tap * c : (tap + 1) * c] = xp[tap : tap + stride * (t_out - 1) + 1 : stride]
        return cols

    @staticmethod
    def _self_attention(qkv: np.ndarray, nh: int) -> np.ndarray:
        """qkv (t, 3d) -> attention output (t, d), one head per task over the kernel threads:
        each head's (t, t) scores stay private to one thread from product to product."""
        t, d3 = qkv.shape
        d = d3 // 3
        hd = d // nh
        out = np.empty((t, d), np.float32)
        scale = np.float32(hd**-0.5)

        def head(h: int) -> None:
            q = qkv[:, h * hd : (h + 1) * hd] * scale
            k = qkv[:, d + h * hd : d + (h + 1) * hd]
            v = qkv[:, 2 * d + h * hd : 2 * d + (h + 1) * hd]
            w = softmax_.serial(q @ k.T)  # releases the GIL: heads run side by side
            np.matmul(w, v, out=out[:, h * hd : (h + 1) * hd])

        run_parallel(head, nh)
        return out

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """mel (n_mels, 2*n_audio_ctx) -> (n_audio_ctx, n_audio_state)"""
        x = gelu_(linear(self._im2col(np.ascontiguousarray(mel.T), 1), self.conv1, self.conv1_b))
        x = gelu_(linear(self._im2col(x, 2), self.conv2, self.conv2_b))
        x = add_(x, self.pos[: x.shape[0]])
        nh = self.dims.n_audio_head
        for b in self.blocks:
            qkv = linear(b.attn_ln(x), b.qkv, b.qkv_b)
            x = add_(linear(self._self_attention(qkv, nh), b.out, b.out_b), x)
            x = add_(b.mlp(x), x)
        return self.ln_post(x)
