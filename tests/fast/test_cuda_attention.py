"""The one-launch attention kernel (fast/cuda_attention.py), checked without a GPU: its CUDA
source runs under tests/fast/kernel_emulator.py and must give what the readable attend gives."""
from __future__ import annotations

import numpy as np
import pytest

import kernel_emulator as emu
from minibertgen import attention
from minibertgen.fast import cuda_attention, preview

needs_gxx = pytest.mark.skipif(not emu.available(), reason="needs g++ to emulate the kernel on the CPU")


def emulated(query, key, value, mask, divisor):
    """What prefill_attention computes, run by the emulator (NumPy arrays, same strides)."""
    ctype = "_Float16" if query.dtype == np.float16 else "float"
    source = emu.fill(cuda_attention.SOURCE, OUTTYPE=ctype, TYPE=ctype, NWARPS=str(cuda_attention.WARPS),
                      NMAXKEYS=str(cuda_attention.MAX_KEYS))
    launch = emu.compile_kernel(source, "prefill_attention",
                                [f"const {ctype}*"] * 4 + [f"{ctype}*", f"{ctype}*"] + ["int"] * 5 + ["long"] * 9
                                + ["int", "float", "float"])
    batch, heads, queries, d = query.shape
    keys = key.shape[2]
    context = np.full((batch, queries, heads, d), np.nan, dtype=query.dtype)
    probs = np.full((batch, heads, queries, keys), np.nan, dtype=value.dtype)
    mask_queries = 1
    if mask is not None:
        mask = np.ascontiguousarray(np.broadcast_to(mask, (batch, 1, mask.shape[2], keys)), dtype=query.dtype)
        mask_queries = mask.shape[2]
    strides = [s // a.itemsize for a in (query, key, value) for s in a.strides[:3]]
    rows = batch * heads * queries
    warps = cuda_attention.WARPS
    # the kernel reads through the strides from each array's first element: hand it the base buffers' views
    launch((rows + warps - 1) // warps, 32 * warps, query, key, value, mask, context, probs, batch, heads, queries,
           keys, d, *strides, mask_queries, float(divisor), float(np.finfo(query.dtype).min))
    return context.transpose(0, 2, 1, 3), probs


def split_heads_view(rng, batch, positions, heads, d, dtype):
    """A [batch, heads, positions, d] view of a [batch, positions, heads * d] projection, as split_heads makes."""
    projection = rng.standard_normal((batch, positions, heads * d)).astype(dtype)
    return projection.reshape(batch, positions, heads, d).transpose(0, 2, 1, 3)


def masks(batch, queries, keys, dtype):
    lowest = np.finfo(dtype).min
    padding = np.zeros((batch, 1, 1, keys), dtype=dtype)
    padding[0, ..., keys - 3:] = lowest  # padded keys
    if batch > 1:
        padding[1] = lowest  # a fully masked sequence: uniform, as the readable path
    causal = np.where(np.tril(np.ones((queries, keys)), keys - queries) > 0, 0, lowest).astype(dtype)
    return {"none": None, "padding": padding, "causal": np.broadcast_to(causal, (batch, 1, queries, keys))}


@needs_gxx
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal"])
@pytest.mark.parametrize("batch,heads,queries,keys,d", [(2, 3, 5, 5, 16), (1, 2, 7, 40, 48), (2, 1, 3, 70, 8)])
def test_emulated_attention_matches_the_readable_attend_float32(batch, heads, queries, keys, d, mask_kind):
    rng = np.random.default_rng(queries * 100 + keys)
    query = split_heads_view(rng, batch, queries, heads, d, np.float32)
    key, value = (split_heads_view(rng, batch, keys, heads, d, np.float32) for _ in range(2))
    mask = masks(batch, queries, keys, np.float32)[mask_kind]
    divisor = np.sqrt(d)
    context, probs = emulated(query, key, value, mask, divisor)
    want_context, want_probs = attention.attend.reference(query, key, value, mask)
    assert np.isfinite(context).all() and np.isfinite(probs).all()  # every output written
    # The kernel sums each q . k and each p . v one feature / key after another, BLAS in its own
    # order: float32 rounding of sums of d (or keys) terms, ~d * 2**-24 of the sum of |terms|
    # (scores up to ~30 here: 1e-5 absolute); the softmax is the same float32 arithmetic.
    np.testing.assert_allclose(probs, want_probs, rtol=0, atol=2e-6)
    np.testing.assert_allclose(context, want_context, rtol=0, atol=2e-5)
    if mask_kind == "padding":
        assert (probs[0, ..., keys - 3:] == 0).all()
        if batch > 1:
            np.testing.assert_array_equal(probs[1], np.full_like(probs[1], 1.0 / keys, dtype=np.float32))


@needs_gxx
@pytest.mark.parametrize("mask_kind", ["padding", "causal"])
def test_emulated_attention_matches_the_readable_attend_float16(mask_kind):
    rng = np.random.default_rng(3)
    batch, heads, queries, keys, d = 2, 2, 6, 24, 32
    query = split_heads_view(rng, batch, queries, heads, d, np.float16)
    key, value = (split_heads_view(rng, batch, keys, heads, d, np.float16) for _ in range(2))
    mask = masks(batch, queries, keys, np.float16)[mask_kind]
    context, probs = emulated(query, key, value, mask, np.sqrt(d))
    want_context, want_probs = attention.attend.reference(query, key, value, mask)
    assert context.dtype == probs.dtype == np.float16
    # Both round each score to float16 and each probability and output to float16; the sums
    # before those roundings differ in order, so a value may land one float16 step (2**-10
    # relative) away: scores up to ~15 move a probability by up to exp(15 * 2**-10 / sqrt(32))
    # - 1 ~ 0.3%, plus its own rounding step; outputs (|context| < 3) by a few steps of 2**-9.
    np.testing.assert_allclose(probs.astype(np.float32), want_probs.astype(np.float32), rtol=8e-3, atol=2e-4)
    np.testing.assert_allclose(context.astype(np.float32), want_context.astype(np.float32), rtol=0, atol=2e-2)


def test_fits_takes_what_the_kernel_handles(monkeypatch):
    rng = np.random.default_rng(0)
    q = split_heads_view(rng, 1, 4, 2, 8, np.float32)
    monkeypatch.setattr(preview, "ENABLED", True)
    assert cuda_attention.fits(q, q, q, None)
    assert cuda_attention.fits(q, q, q, np.zeros((1, 1, 4, 4), np.float32))
    assert not cuda_attention.fits(q, q, q, np.zeros((1, 2, 4, 4), np.float32))  # a per-head mask
    long = split_heads_view(rng, 1, cuda_attention.MAX_KEYS + 1, 2, 8, np.float32)
    assert not cuda_attention.fits(q, long, long, None)  # more keys than shared memory holds
    assert not cuda_attention.fits(q.astype(np.float64), q, q, None)
    assert not cuda_attention.fits(q[..., ::2], q[..., ::2], q[..., ::2], None)  # strided features
    monkeypatch.setattr(preview, "ENABLED", False)
    assert not cuda_attention.fits(q, q, q, None)  # switched off: the readable attend


@pytest.mark.skipif(not emu.nvcc_available(), reason="needs nvcc (the CUDA toolkit) to compile the kernel")
@pytest.mark.parametrize("ctype", ["float", "HALF"])
def test_attention_kernel_compiles_for_the_gpu(tmp_path, ctype):
    ptx = emu.nvcc_ptx(cuda_attention.SOURCE, tmp_path, OUTTYPE=ctype, TYPE=ctype, NWARPS="4", NMAXKEYS="512")
    assert ".entry prefill_attention" in ptx
