"""The fused decoder step (models/whisper_step.py) against the general decoder path, on a
tiny random model for every weight type and on the real tiny.en."""
import pickle
from dataclasses import replace

import numba
import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType

from whisperlite.kernels import QTensor, set_threads
from whisperlite.kernels import mha, rowdots
from whisperlite.kernels.llvm_ir import HAS_AVX2
from whisperlite.kernels import quant
from whisperlite.kernels.quant import quantize
from whisperlite.kernels.tensor import readonly
from whisperlite.formats.checkpoint import WhisperCheckpoint, WhisperDims
from whisperlite.models import whisper_step
from whisperlite.models.whisper_decoder import TextDecoder

# d = 96: three 32-value blocks per row; fc2 rows have twelve. An odd vocabulary exercises
# the unpaired last row of the multi-sequence product.
STATE, HEADS, LAYERS, VOCAB, TEXT_CTX, AUDIO_CTX = 96, 3, 2, 101, 16, 40
DIMS = WhisperDims(n_mels=16, n_audio_ctx=AUDIO_CTX, n_audio_state=STATE, n_audio_head=HEADS, n_audio_layer=1,
                   n_vocab=VOCAB, n_text_ctx=TEXT_CTX, n_text_state=STATE, n_text_head=HEADS, n_text_layer=LAYERS)
TYPES = [None, QType.F16, QType.Q8_0, QType.Q5_0, QType.Q5_1, QType.Q4_0, QType.Q4_1]


def _matrix(x: np.ndarray, qtype: QType | None):
    if qtype is None:
        return x
    if qtype == QType.F16:
        return QTensor(qtype, x.shape, x.astype(np.float16))
    return QTensor(qtype, x.shape, quantize(x, qtype).reshape(x.shape[0], -1))


def random_decoder(qtype: QType | None, seed: int = 0, cross_f16: bool = False, mixed: bool = False,
                   int8: bool = False, layers: int = LAYERS, mapped: bool = False) -> TextDecoder:
    """mapped: every weight read-only, as from a memory-mapped ggml file."""
    rng = np.random.default_rng(seed)
    r = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    w = {"decoder.token_embedding.weight": _matrix(r(VOCAB, STATE, s=0.5), qtype),
         "decoder.positional_embedding": r(TEXT_CTX, STATE),
         "decoder.ln.weight": 1 + r(STATE), "decoder.ln.bias": r(STATE)}
    for i in range(layers):
        p = f"decoder.blocks.{i}"
        for ln in ("attn_ln", "cross_attn_ln", "mlp_ln"):
            w[f"{p}.{ln}.weight"], w[f"{p}.{ln}.bias"] = 1 + r(STATE), r(STATE)
        for a in ("attn", "cross_attn"):
            for m in ("query", "key", "value", "out"):
                w[f"{p}.{a}.{m}.weight"] = _matrix(r(STATE, STATE), qtype)
                if m != "key":  # Whisper's key projections have no bias
                    w[f"{p}.{a}.{m}.bias"] = r(STATE)
        # mixed: the two layers' MLPs in different types, which the fused step does not take
        up = QType.Q8_0 if mixed and i == 1 else qtype
        w[f"{p}.mlp.0.weight"], w[f"{p}.mlp.0.bias"] = _matrix(r(4 * STATE, STATE), up), r(4 * STATE)
        w[f"{p}.mlp.2.weight"], w[f"{p}.mlp.2.bias"] = _matrix(r(STATE, 4 * STATE, s=0.1), qtype), r(STATE)
    if mapped:
        w = {k: QTensor(v.qtype, v.shape, readonly(v.data)) if isinstance(v, QTensor) else readonly(v) for k, v in w.items()}
    dims = DIMS if layers == LAYERS else replace(DIMS, n_text_layer=layers)
    return TextDecoder(WhisperCheckpoint(dims, w), cross_f16=cross_f16, int8=int8)


def compare_steps(dec: TextDecoder, batch: int, steps: int = 5, seed: int = 1) -> float:
    """Largest relative logit difference, fused step vs the general path, over a prompt and
    `steps` tokens (with a beam-style reorder between steps)."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    fused, ref = dec.new_cache(features, batch), dec.new_cache(features, batch)
    prompt = np.tile(rng.integers(0, VOCAB, (1, 3)), (batch, 1))
    dec.forward(prompt, fused)
    dec.forward(prompt, ref)
    worst = 0.0
    for i in range(steps):
        tokens = rng.integers(0, VOCAB, (batch, 1))
        a = dec(tokens, fused)[0].copy()
        b = dec.forward(tokens, ref)[0]
        assert a.shape == b.shape == (batch, 1, VOCAB)
        worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
        rows = rng.integers(0, batch, batch)
        fused.reorder(rows)
        ref.reorder(rows)
    assert fused.length == ref.length == 3 + steps
    return worst


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: "F32" if q is None else q.name)
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_fused_step_matches_general_path(qtype, batch):
    dec = random_decoder(qtype)
    assert dec.step_weights is not None
    assert compare_steps(dec, batch) < 1e-4


@pytest.mark.skipif(not HAS_AVX2, reason="integer dots need AVX2")
@pytest.mark.parametrize("qtype", TYPES[2:], ids=lambda q: q.name)
def test_integer_dots_match_numpy(qtype):
    """int8 mode, one sequence: activations whose per-block quantization is exact (integers
    times a power of two, each block reaching ±127), so the products must equal the float
    reference on the dequantized weights."""
    rng = np.random.default_rng(2)
    rows, k = 67, 4 * 32
    w = (rng.standard_normal((rows, k)) * 0.3).astype(np.float32)
    data = quantize(w, qtype).reshape(rows, -1)
    q = rng.integers(-127, 128, k)
    q[::32] = 127
    h = (q * 2.0**-6).astype(np.float32)[None, :]
    out = np.empty((1, rows), np.float32)
    xq, xd, xs = np.empty(k, np.int8), np.empty(k // 32, np.float32), np.empty(k // 32, np.float32)
    kind, view = rowdots.weight_kind(QTensor(qtype, (rows, k), data))
    rowdots.product(kind, view, h, xq, xd, xs, np.empty((2, k), np.float32), out, True)
    assert (xq == q).all()
    ref = QTensor(qtype, (rows, k), data).dequantize().astype(np.float64) @ h[0].astype(np.float64)
    np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.skipif(not HAS_AVX2, reason="integer dots need AVX2")
@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: "F32" if q is None else q.name)
def test_int8_mode_step(qtype):
    """int8 mode changes only products on block types, by the activation rounding (as
    ggml's; on this random model with large weights it compounds over layers and steps to
    up to ~15 % of the largest logit, where a wrong sequence or row would be ~100 %); float
    weights are computed as without it."""
    for batch in (1, 5, 10):  # 10: more sequences than one pass of the multi-sequence dot
        err = compare_steps(random_decoder(qtype, int8=True), batch)
        assert err < (1e-4 if qtype in (None, QType.F16) else 0.25)


@pytest.mark.skipif(not HAS_AVX2, reason="integer dots need AVX2")
@pytest.mark.parametrize("qtype", TYPES[2:], ids=lambda q: q.name)
def test_int8_beam_rows_equal_single_rows(qtype):
    """The multi-sequence integer dot gives each sequence what the single-sequence dot does."""
    rng = np.random.default_rng(4)
    rows, k, n = 37, 4 * 32, 10
    data = quantize((rng.standard_normal((rows, k)) * 0.3).astype(np.float32), qtype).reshape(rows, -1)
    kind, view = rowdots.weight_kind(QTensor(qtype, (rows, k), data))
    h = rng.standard_normal((n, k)).astype(np.float32)
    scratch = lambda: (np.empty(n * k, np.int8), np.empty(n * k // 32, np.float32), np.empty(n * k // 32, np.float32))  # noqa: E731
    many = np.empty((n, rows), np.float32)
    rowdots.product(kind, view, h, *scratch(), np.empty((2, k), np.float32), many, True)
    for t in range(n):
        one = np.empty((1, rows), np.float32)
        rowdots.product(kind, view, h[t : t + 1], *scratch(), np.empty((2, k), np.float32), one, True)
        np.testing.assert_allclose(many[t], one[0], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not HAS_AVX2, reason="integer dots need AVX2")
@pytest.mark.parametrize("qtype", TYPES[2:], ids=lambda q: q.name)
def test_int8_beam_rows_same_bits_paired_or_not(qtype):
    """With AVX-512 VNNI rows go in pairs (the last of an odd count alone): each row's
    result is the same bits whether it is paired, in either half, or alone (the rows
    reversed move every row to the other half and the last row into a pair)."""
    rng = np.random.default_rng(5)
    rows, k, n = 37, 4 * 32, 5
    data = quantize((rng.standard_normal((rows, k)) * 0.3).astype(np.float32), qtype).reshape(rows, -1)
    h = rng.standard_normal((n, k)).astype(np.float32)
    outs = []
    for rows_data in (data, np.ascontiguousarray(data[::-1])):
        kind, view = rowdots.weight_kind(QTensor(qtype, (rows, k), rows_data))
        out = np.empty((n, rows), np.float32)
        rowdots.product(kind, view, h, np.empty(n * k, np.int8), np.empty(n * k // 32, np.float32),
                        np.empty(n * k // 32, np.float32), np.empty((2, k), np.float32), out, True)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1][:, ::-1])


@pytest.mark.parametrize("threads", [1, 2])
def test_step_over_threads(threads):
    dec = random_decoder(QType.Q4_1)
    set_threads(threads)
    try:
        assert compare_steps(dec, 3, steps=12) < 1e-4  # the step chooser runs both variants in its first two steps
    finally:
        set_threads(2)


@pytest.mark.parametrize("pool", [1, 2])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("qtype", [None, QType.F16, QType.Q8_0, QType.Q4_1], ids=lambda q: "F32" if q is None else q.name)
def test_parallel_step_equals_serial_step(qtype, batch, pool):
    """The step on two threads gives the one-thread step's logits bit for bit, also when
    numba's pool has a single thread (which then runs the region's two iterations in order:
    the second finds every chunk done), and writes the same self-attention cache."""
    dec = random_decoder(qtype, int8=HAS_AVX2)
    rng = np.random.default_rng(7)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    one, two = dec.new_cache(features, batch), dec.new_cache(features, batch)
    prompt = np.tile(rng.integers(0, VOCAB, (1, 3)), (batch, 1))
    dec.forward(prompt, one)
    dec.forward(prompt, two)
    set_threads(2)
    numba.set_num_threads(pool)
    try:
        for _ in range(4):
            tokens = rng.integers(0, VOCAB, (batch, 1))
            a = dec.step_serial(tokens, one).copy()
            b = dec.step_parallel(tokens, two)
            assert np.array_equal(a, b), (np.abs(a - b).max(), (a != b).sum(), a.shape)
            assert np.array_equal(one.k, two.k) and np.array_equal(one.v, two.v)
            rows = rng.integers(0, batch, batch)
            one.reorder(rows)
            two.reorder(rows)
    finally:
        set_threads(2)


def test_float16_cross_attention_values():
    """float16 cross keys/values: the fused step equals the general path on the same
    (rounded) values, and moves logits by little against float32 keys/values."""
    dec16 = random_decoder(QType.F16, cross_f16=True)
    assert compare_steps(dec16, 2) < 1e-4
    dec32 = random_decoder(QType.F16, cross_f16=False)
    rng = np.random.default_rng(3)
    features = rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    c16, c32 = dec16.new_cache(features), dec32.new_cache(features)
    assert c16.cross_k.dtype == np.float16 and c32.cross_k.dtype == np.float32
    for t in ([[5]], [[7]], [[11]]):
        a = dec16(np.asarray(t), c16)[0].copy()
        b = dec32(np.asarray(t), c32)[0]
        assert np.abs(a - b).max() / np.abs(b).max() < 3e-3



@pytest.mark.parametrize("batch", [1, 5, 6])  # 6: more sequences than one pass keeps in registers
def test_cross_attention_heads_of_64_on_float16(batch):
    """The step's cross-attention on float16 keys/values with Whisper's 64-wide heads (the
    random decoders here have 32-wide ones, which take the loops) equals a float64
    reference on the same float16 values, for the heads asked for only."""
    rng = np.random.default_rng(8)
    n_head, na, hd = 3, 50, mha.HD
    q = rng.standard_normal((batch, n_head * hd)).astype(np.float32)
    k, v = (rng.standard_normal((2, n_head, na, hd)) * 0.5).astype(np.float16)
    out = np.full((batch, n_head * hd), 7.0, np.float32)
    scores = np.empty((batch, na), np.float32)
    src = np.zeros((batch, 1), np.int32)
    mha.cross_attention_heads(q, k.view(np.uint16), v.view(np.uint16), src, 0, n_head, 1, 3, scores, out)
    qh = q.astype(np.float64).reshape(batch, n_head, hd).transpose(1, 0, 2)
    w = np.einsum("hbc,htc->hbt", qh, k.astype(np.float64)) * hd**-0.5
    w = np.exp(w - w.max(-1, keepdims=True))
    ref = np.einsum("hbt,htc->bhc", w / w.sum(-1, keepdims=True), v.astype(np.float64)).reshape(batch, -1)
    assert (out[:, :hd] == 7.0).all()  # head 0 not asked for
    np.testing.assert_allclose(out[:, hd:], ref[:, hd:], rtol=1e-5, atol=1e-6)

def test_step_links_only_its_weight_kinds():
    """The step calls each weight kind's row kernel through its address (rowdots.call_rows):
    a model links, and so compiles, the kernels of its own kinds only, for its int8 setting."""
    dec = random_decoder(QType.F16)
    features = np.random.default_rng(8).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    assert not dec.step_weights.row_fns.any()
    dec.step_serial(np.zeros((1, 1), np.int64), dec.new_cache(features))
    linked = {(int8, kind) for int8, kind in zip(*np.nonzero(dec.step_weights.row_fns))}
    assert linked == {(0, quant.KIND_F16)}


def test_row_kernel_call_refuses_other_argument_types():
    """call_rows passes its arguments to a function compiled for rowdots.ROWS_ARGS: other
    types are a typing error, not a call with the wrong layout."""

    @numba.njit
    def call(x):
        rowdots.call_rows(0, 1, x, x, x, x, x, x, x, 0, 1, False)

    with pytest.raises(numba.core.errors.TypingError, match="rows_kernel"):
        call(np.zeros((2, 2), np.float32))


def test_one_compiled_step_for_every_depth():
    """Layers reach the step as addresses: a deeper model (base has 6 layers, tiny 4) runs
    the kernel already compiled, where a tuple of matrices compiled the step per depth."""
    features = np.random.default_rng(4).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    seen = None
    for layers in (LAYERS, LAYERS + 1):
        dec = random_decoder(QType.F16, layers=layers)
        cache = dec.new_cache(features)
        dec.forward(np.zeros((1, 2), np.int64), cache)
        dec.step_serial(np.zeros((1, 1), np.int64), cache)
        if seen is not None:
            assert len(whisper_step.step_body.signatures) == seen
        seen = len(whisper_step.step_body.signatures)
    assert compare_steps(dec, 1) < 1e-5


def test_one_compiled_step_for_mapped_and_in_memory_weights():
    """A ggml file's weights are read-only (mapped), a CTranslate2 model's float16 arrays
    not: a read-only array is a numba type of its own, and each would compile the step
    (~50 s) for itself."""
    features = np.random.default_rng(6).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    counts = []
    for mapped in (False, True):
        dec = random_decoder(QType.Q8_0, mapped=mapped)
        dec.step_serial(np.zeros((1, 1), np.int64), dec.new_cache(features))
        dec.embed(np.array([1, 2]))
        counts.append((len(whisper_step.step_body.signatures), len(quant._dequantize_q8_0.signatures)))
    assert counts[0] == counts[1]


def test_unpickled_decoder_steps_on_its_own_weights():
    """The step's weight addresses are the process's own after unpickling (the copy's arrays
    live elsewhere; the original may be gone)."""
    dec = random_decoder(QType.Q8_0)
    features = np.random.default_rng(5).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    copy = pickle.loads(pickle.dumps(dec))
    del dec
    sw = copy.step_weights
    assert all(a[i] == m[i].ctypes.data for a, m in zip(sw.addrs, sw.mats) for i in range(LAYERS))
    assert compare_steps(copy, 2) < 1e-5
    want = copy.forward(np.zeros((1, 1), np.int64), copy.new_cache(features))[0]
    got = copy.step(np.zeros((1, 1), np.int64), copy.new_cache(features))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_unsupported_weights_take_general_path():
    dec = random_decoder(QType.F16, mixed=True)
    assert dec.step_weights is None
    features = np.random.default_rng(0).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    cache = dec.new_cache(features)
    logits, _ = dec(np.asarray([[3]]), cache)
    assert logits.shape == (1, 1, VOCAB) and cache.length == 1 and cache.scratch is None


def test_context_overflow_is_an_error():
    dec = random_decoder(None)
    cache = dec.new_cache(np.zeros((AUDIO_CTX, STATE), np.float32))
    cache.length = TEXT_CTX
    with pytest.raises(ValueError, match="context"):
        dec(np.asarray([[1]]), cache)


@pytest.mark.slow
def test_real_model_step_matches_general_path(tiny_model):
    model = tiny_model.model
    dec = model.decoder
    assert dec.step_weights is not None
    rng = np.random.default_rng(0)
    features = model.encoder(rng.standard_normal((model.dims.n_mels, 3000)).astype(np.float32))
    # auto holds the vocabulary projection as Q8_0: with int8 activations the step differs
    # from the float-activation general path by the activations' per-block rounding only
    saved = dec.int8  # the model is shared with other tests
    for int8, tol in ((False, 1e-4), (True, 1e-2)):
        dec.int8 = int8 and saved
        for batch in (1, 5):
            fused, ref = dec.new_cache(features, batch), dec.new_cache(features, batch)
            prompt = np.tile(np.asarray([[50257, 50362, 440, 1100]]), (batch, 1))
            dec.forward(prompt, fused)
            dec.forward(prompt, ref)
            for token in (373, 11, 290):
                tokens = np.full((batch, 1), token)
                a = dec(tokens, fused)[0].copy()
                b = dec.forward(tokens, ref)[0]
                assert np.abs(a - b).max() / np.abs(b).max() < tol
                assert (a.argmax(-1) == b.argmax(-1)).all()
    dec.int8 = saved


def test_reorder_moves_sequences_by_index_and_materialize_copies_them():
    """A reorder only re-points positions (KVCache.src); the general path first copies the
    keys/values into place, and gets what physically moved sequences would hold."""
    dec = random_decoder(None)
    rng = np.random.default_rng(9)
    cache = dec.new_cache(rng.standard_normal((AUDIO_CTX, STATE)).astype(np.float32), 3)
    dec.forward(rng.integers(0, VOCAB, (3, 4)), cache)
    k0, v0 = cache.k.copy(), cache.v.copy()
    first, second = np.array([2, 0, 0]), np.array([1, 1, 2])
    cache.reorder(first)
    cache.reorder(second)
    assert np.array_equal(cache.k, k0)  # nothing copied yet
    cache.materialize(3)
    for i in range(3):
        assert np.array_equal(cache.k[:, i, :4], k0[:, first[second[i]], :4])
        assert np.array_equal(cache.v[:, i, :4], v0[:, first[second[i]], :4])
    assert (cache.src[:3, :4] == np.arange(3)[:, None]).all()


def test_mismatched_arrays_are_refused_before_the_kernel_runs():
    """The step kernel does no bounds checks: every size it reads is checked against the
    others once per call, so a token, cache or scratch that does not fit is a ValueError and
    leaves nothing written (the next good step gives the same logits as a fresh one)."""
    from whisperlite.models.whisper_decoder import _StepScratch

    dec = random_decoder(None)
    features = np.random.default_rng(1).standard_normal((AUDIO_CTX, STATE)).astype(np.float32)
    good = dec.step_serial(np.array([[7]]), dec.new_cache(features)).copy()

    cache = dec.new_cache(features)
    with pytest.raises(ValueError, match=r"token ids \[101\] outside the vocabulary \(0\.\.100\)"):
        dec.step_serial(np.array([[VOCAB]]), cache)
    with pytest.raises(ValueError, match="token ids"):
        dec.step_parallel(np.array([[-1]]), cache)
    other = random_decoder(None, layers=1).new_cache(features)  # another model's cache: one layer
    with pytest.raises(ValueError, match=r"self-attention keys is float32 \(1, 1, 16, 96\), expected .*\(2, -1, 16, 96\)"):
        dec.step_serial(np.array([[7]]), other)
    wide = dec.new_cache(features)
    wide.scratch = _StepScratch(replace(DIMS, n_vocab=VOCAB + 50), 1)  # writes 150 logits per row
    with pytest.raises(ValueError, match=r"logits is float32 \(1, 151\), expected float32 \(1, 101\)"):
        dec.step_serial(np.array([[7]]), wide)
    late = dec.new_cache(features)
    late.length = TEXT_CTX
    with pytest.raises(ValueError, match=r"position 16 outside the text context \(0\.\.15\)"):
        dec.step_serial(np.array([[7]]), late)
    stray = dec.new_cache(features)
    dec.step_serial(np.array([[7]]), stray)
    stray.src[0, 0] = 3  # a row the cache does not have
    with pytest.raises(ValueError, match="sequence rows outside the cache's 1"):
        dec.step_serial(np.array([[7]]), stray)
    assert cache.length == 0 and (cache.src[0] == 0).all()
    np.testing.assert_array_equal(dec.step_serial(np.array([[7]]), cache), good)
