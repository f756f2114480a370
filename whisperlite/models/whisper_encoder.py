"""Whisper's audio encoder: two GELU convolutions (the second with stride 2) as im2col
matrix products, then pre-LayerNorm transformer blocks over 1500 positions.

Everything but attention works row by row, so a window runs as a few phases over chunks of
rows, pulled from a queue by the kernel threads. Within a chunk one thread goes from
product to product (single-threaded BLAS, serial numba kernels) over data it has just
written, still in cache; the only hand-offs are where attention needs every position's keys
and values: after each layer's query|key|value product and after the first convolution.
A layer's phase is: attention for the chunk's queries, output projection, MLP, then the next
layer's layer norm and query|key|value product (into the other of two buffers, since other
chunks still read this layer's keys). A window's buffers are allocated once for it and
dropped when it returns: kept between windows they would sit in memory beside the decoder's
caches (the encoder's largest share of peak memory; refilling them costs page faults only).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import replace
from typing import Callable

import numpy as np

from whisperlite.kernels import QTensor, Weight
from whisperlite.kernels import ops
from whisperlite.kernels.quant import dequantize_rows
from whisperlite.kernels.threads import get_threads, run_parallel
from whisperlite.formats.checkpoint import WhisperCheckpoint, release_array
from whisperlite.models.whisper_blocks import LN_EPS, Block, Norm, fuse_rows, load_blocks

# Chunks per thread and phase. Measured on tiny.en (AVX2, OpenBLAS, 1500 positions): 1
# thread ran fastest with chunks of 750 rows (the scores and MLP activations of a chunk
# stay in L3; smaller chunks lose BLAS speed, 250 rows cost ~8 % on the products); 2
# threads get 4 chunks of 375, so that one thread can take over a chunk when the other's
# core is busy with something else.
CHUNKS_PER_THREAD = 2


def _layer(block: Block, d: int) -> Block:
    """The block as the encoder runs it: qkv_b only the query's bias (d,) (the key has
    none), the value's folded into out_b."""
    # Softmax rows sum to 1, so the value bias passes through attention unchanged and
    # reaches the output projection as a constant: out(a + b_v) = out(a) + W_out b_v.
    w_out = block.out.dequantize() if isinstance(block.out, QTensor) else block.out
    v_b = block.qkv_b[2 * d :].astype(np.float64)
    out_b = (block.out_b.astype(np.float64) + w_out.astype(np.float64) @ v_b).astype(np.float32)
    return replace(block, qkv_b=np.ascontiguousarray(block.qkv_b[:d]), out_b=out_b,
                   fc1_b=np.asarray(block.fc1_b, np.float32), fc2_b=np.asarray(block.fc2_b, np.float32))


def _parts(ws: list[Weight]) -> Weight | tuple[QTensor, ...]:
    """The query|key|value weight as the encoder keeps it: stored matrices as their three
    parts (a fused copy would hold a second copy of them for the whole run; `_weight`
    stacks them into the float32 operand each window), float32 ones fused."""
    return tuple(ws) if all(isinstance(w, QTensor) for w in ws) else fuse_rows(ws)


class _Workspace:
    """Every buffer of one window: shared activations plus one scratch set per thread."""

    def __init__(self, enc: "AudioEncoder", t_in: int, threads: int, chunks: int):
        d, nh = enc.dims.n_audio_state, enc.dims.n_audio_head
        c_in = enc.conv1.shape[1] // 3
        self.t_in, self.threads, self.chunks = t_in, threads, chunks
        self.t = (t_in - 1) // 2 + 1
        self.rows = rows = -(-self.t // (chunks * threads))
        self.x = np.empty((self.t, d), np.float32)
        self.qkv = [np.empty((self.t, 3 * d), np.float32) for _ in range(2)]
        # Buffers share memory where their uses never overlap (peak memory): the second
        # query|key|value buffer is first written by layer 0, after the convolutions; a
        # chunk's attention scores are dead once its MLP starts, and the convolutions'
        # columns before any layer.
        self.conv1 = _view(self.qkv[1], (t_in, d))
        self.scratch = []
        for _ in range(threads):
            f = np.empty((rows, max(enc.n_mlp, self.t, 3 * d, 2 * 3 * c_in)), np.float32)
            self.scratch.append({
                "cols1": _view(f, (2 * rows, 3 * c_in)),
                "cols2": _view(f, (rows, 3 * d)),
                "scores": _view(f, (rows, self.t)),
                "sums": np.empty((nh, rows), np.float32),
                "att": np.empty((rows, d), np.float32),
                "h": np.empty((rows, d), np.float32),
                "y": np.empty((rows, d), np.float32),
                "f": _view(f, (rows, enc.n_mlp)),
            })
        # weights as stored (float16, ggml blocks): dequantized per window, a layer at a time,
        # into one float32 buffer per role
        self.dense: dict[str, np.ndarray] = {}


def _view(buf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The first elements of buf as a C-contiguous array of `shape`."""
    return buf.reshape(-1)[: shape[0] * shape[1]].reshape(shape)


def _chunks(n: int, rows: int) -> list[tuple[int, int]]:
    """[a, b) ranges of at most `rows` covering 0 … n-1, as even as possible."""
    k = -(-n // rows)
    return [(n * i // k, n * (i + 1) // k) for i in range(k)]


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
        self.pos = np.ascontiguousarray(w["encoder.positional_embedding"], np.float32)
        state = d.n_audio_state
        self.layers = load_blocks(ckpt, "encoder", d.n_audio_layer, False, state, lambda b: _layer(b, state), _parts)
        self._mapping = ckpt.mapping
        self.n_mlp = self.layers[0].fc1.shape[0]
        self.ln_post = Norm(w["encoder.ln_post.weight"], w["encoder.ln_post.bias"])
        self.scale = np.float32((state // d.n_audio_head) ** -0.5)
        self._lock = threading.Lock()  # one window at a time: each allocates a workspace

    def __getstate__(self) -> dict:
        # the lock and the file mapping are per process (a pickled copy holds its own weights)
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_mapping")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _mapping=None)

    def _weight(self, ws: _Workspace, key: str, w: Weight | tuple[QTensor, ...]) -> np.ndarray:
        """w (out, in), or parts whose rows stack to it, as a float32 (in, out) operand for
        BLAS: a float32 matrix as a transposed view, stored ones dequantized into the
        workspace. A window reads each stored matrix once, so its file pages are released
        once it is converted: resident, the whole encoder's would sit beside the decoder
        between windows (they fault back in from the page cache for the next window)."""
        parts = w if isinstance(w, tuple) else (w,)
        if not isinstance(parts[0], QTensor):
            return w.T
        shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])
        buf = ws.dense.get(key)
        if buf is None or buf.shape != shape:
            buf = ws.dense[key] = np.empty(shape, np.float32)
        row = 0
        for p in parts:
            dequantize_rows(p.data, p.qtype, p.shape, 0, p.shape[0], buf[row : row + p.shape[0]])
            release_array(self._mapping, p.data)
            row += p.shape[0]
        return buf.T

    def _phase(self, ws: _Workspace, n_rows: int, rows: int, work: Callable[[dict, int, int], None]) -> None:
        """work(scratch, a, b) for chunks [a, b) of n_rows, pulled by every thread from a queue."""
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for c in _chunks(n_rows, rows):
            todo.put(c)

        def worker(i: int) -> None:
            scratch = ws.scratch[i]
            while True:
                try:
                    a, b = todo.get_nowait()
                except queue.Empty:
                    return
                work(scratch, a, b)

        run_parallel(worker, ws.threads)

    def _qkv(self, ws: _Workspace, layer: Block, wqkv: np.ndarray, qkv: np.ndarray, s: dict, a: int, b: int) -> None:
        """The layer's attention input for rows [a, b): query (biased, scaled) | key | value."""
        h = s["h"][: b - a]
        ops.layer_norm_into.serial(ws.x[a:b], layer.attn_ln.g, layer.attn_ln.b, LN_EPS, h)
        np.matmul(h, wqkv, out=qkv[a:b])
        ops.bias_scale_.serial(qkv[a:b], layer.qkv_b, self.scale)

    def _attention(self, qkv: np.ndarray, s: dict, a: int, b: int) -> np.ndarray:
        """Self-attention of query rows [a, b) over all positions, one head at a time -> (b-a, d)."""
        n, d, nh = b - a, self.dims.n_audio_state, self.dims.n_audio_head
        hd = d // nh
        scores, att, sums = s["scores"][:n], s["att"][:n], s["sums"]
        for h in range(nh):
            q = qkv[a:b, h * hd : (h + 1) * hd]
            k = qkv[:, d + h * hd : d + (h + 1) * hd]
            v = qkv[:, 2 * d + h * hd : 2 * d + (h + 1) * hd]
            np.matmul(q, k.T, out=scores)
            ops.softmax_unnormalized_.serial(scores, sums[h, :n])
            np.matmul(scores, v, out=att[:, h * hd : (h + 1) * hd])
        return ops.divide_heads_.serial(att, sums)

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        """mel (n_mels, 2*n_audio_ctx) -> (n_audio_ctx, n_audio_state)"""
        with self._lock:
            ws = _Workspace(self, mel.shape[1], get_threads(), CHUNKS_PER_THREAD)
            return self._encode(ws, np.asarray(mel, np.float32))

    def _encode(self, ws: _Workspace, mel: np.ndarray) -> np.ndarray:
        # (frames, n_mels) copied C-contiguous: im2col then has one compiled layout, conv1's
        mel_t = np.ascontiguousarray(mel.T)
        c1, c2 = self.conv1.T, self.conv2.T
        rows = ws.rows

        def conv1(s: dict, a: int, b: int) -> None:
            cols = ops.im2col3.serial(mel_t, 1, a, s["cols1"][: b - a])
            np.matmul(cols, c1, out=ws.conv1[a:b])
            ops.bias_gelu_.serial(ws.conv1[a:b], self.conv1_b)

        self._phase(ws, ws.t_in, 2 * rows, conv1)

        first = self.layers[0]
        wqkv = self._weight(ws, "qkv", first.qkv)

        def conv2(s: dict, a: int, b: int) -> None:
            cols = ops.im2col3.serial(ws.conv1, 2, a, s["cols2"][: b - a])
            np.matmul(cols, c2, out=ws.x[a:b])
            ops.bias_gelu_add_.serial(ws.x[a:b], self.conv2_b, self.pos[a:b])
            self._qkv(ws, first, wqkv, ws.qkv[0], s, a, b)

        self._phase(ws, ws.t, rows, conv2)

        out = np.empty((ws.t, self.dims.n_audio_state), np.float32)
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            w_out = self._weight(ws, "out", layer.out)
            w_fc1, w_fc2 = self._weight(ws, "fc1", layer.fc1), self._weight(ws, "fc2", layer.fc2)
            w_next = self._weight(ws, "qkv", nxt.qkv) if nxt else None
            qkv, qkv_next = ws.qkv[i % 2], ws.qkv[(i + 1) % 2]

            def block(s: dict, a: int, b: int, layer=layer, nxt=nxt, w_out=w_out, w_fc1=w_fc1, w_fc2=w_fc2,
                      w_next=w_next, qkv=qkv, qkv_next=qkv_next) -> None:
                n, x = b - a, ws.x[a:b]
                y = np.matmul(self._attention(qkv, s, a, b), w_out, out=s["y"][:n])
                ops.bias_residual_.serial(x, y, layer.out_b)
                h = ops.layer_norm_into.serial(x, layer.mlp_ln.g, layer.mlp_ln.b, LN_EPS, s["h"][:n])
                f = ops.bias_gelu_.serial(np.matmul(h, w_fc1, out=s["f"][:n]), layer.fc1_b)
                ops.bias_residual_.serial(x, np.matmul(f, w_fc2, out=y), layer.fc2_b)
                if nxt is not None:
                    self._qkv(ws, nxt, w_next, qkv_next, s, a, b)
                else:
                    ops.layer_norm_into.serial(x, self.ln_post.g, self.ln_post.b, LN_EPS, out[a:b])

            self._phase(ws, ws.t, rows, block)
        return out
