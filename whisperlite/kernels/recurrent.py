"""The LSTM cell step (numba): the gate nonlinearities and state update fused in one pass.

A recurrent layer is one matrix product per time step (h @ W_hh) and this kernel; numpy
would take six passes with temporaries over the gates. Gate order is PyTorch's (i, f, g, o).
Its numpy reference is in tests/test_speaker_encoder.py.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from whisperlite.kernels.ops import _dual, expf


def _lstm_cell_body(gx, gh, c, h):
    """In place LSTM step: gates = gx + gh, gx/gh (b, 4H); c, h (b, H) -> h.
    i, f, o = sigmoid, g = tanh; c = f*c + i*g; h = o*tanh(c)."""
    b, hidden = c.shape
    one = np.float32(1.0)
    two = np.float32(2.0)
    for r in prange(b):
        for j in range(hidden):
            i = one / (one + expf(-(gx[r, j] + gh[r, j])))
            f = one / (one + expf(-(gx[r, hidden + j] + gh[r, hidden + j])))
            g = two / (one + expf(-two * (gx[r, 2 * hidden + j] + gh[r, 2 * hidden + j]))) - one
            o = one / (one + expf(-(gx[r, 3 * hidden + j] + gh[r, 3 * hidden + j])))
            cn = f * c[r, j] + i * g
            c[r, j] = cn
            h[r, j] = o * (two / (one + expf(-two * cn)) - one)
    return h


lstm_cell_ = _dual(_lstm_cell_body)
