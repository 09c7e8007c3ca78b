"""The fused CUDA kernels of fast/cuda_kernels.py, run on the CPU by tests/fast/kernel_emulator.py
against the readable ops they replace.  The GPU suite (tests/fast/test_gpu.py) checks the same
kernels on a device; this keeps an edit to their source honest where no GPU is lent."""
from __future__ import annotations

import numpy as np
import pytest

import kernel_emulator as emu
from minibertgen import ops
from minibertgen.fast import cuda_kernels as K

pytestmark = pytest.mark.skipif(not emu.available(), reason="needs g++ to emulate the kernels on the CPU")

CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float16): "_Float16"}


def source(text, **types):
    return emu.fill(text, **types, BLOCK_SUM=K._BLOCK_SUM)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("n", [64, 384, 1030])
def test_layer_norm_kernel(dtype, n):
    rng = np.random.default_rng(n)
    x, residual = (rng.standard_normal((5, n)).astype(dtype) for _ in range(2))
    gamma, beta = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    add = rng.standard_normal(n).astype(dtype)  # a dense layer's bias (the _add_and_norm variant)
    t = CTYPE[np.dtype(dtype)]
    plain = emu.compile_kernel(source(K._LAYER_NORM, TYPE=t, ADDBIAS="0"), "layer_norm",
                               [f"const {t}*"] * 4 + [f"{t}*", "int", "float"])
    with_add = emu.compile_kernel(source(K._LAYER_NORM, TYPE=t, ADDBIAS="1"), "layer_norm",
                                  [f"const {t}*"] * 4 + [f"{t}*", "int", "float", f"const {t}*"])
    for res in (None, residual):
        for bias in (None, add):
            out = np.full_like(x, np.nan)
            if bias is None:
                plain(x.shape[0], K._threads_for(n), x, res, gamma, beta, out, n, 1e-12)
                want = ops.layer_norm.reference(x, gamma, beta, 1e-12, residual=res)
            else:
                with_add(x.shape[0], K._threads_for(n), x, res, gamma, beta, out, n, 1e-12, bias)
                want = ops.layer_norm.reference(x + bias, gamma, beta, 1e-12, residual=res)  # x + bias stored in x's dtype
            # float32 statistics summed per thread then across the block (another order than
            # NumPy's): ~n * 2**-24 relative in the mean and variance.  float16: the kernel adds the
            # residual in float32 where the readable path rounds x + residual to float16 first, and
            # the output rounds once more: up to 2 float16 steps (2**-10 relative) of the largest value.
            atol = 2e-5 if dtype == np.float32 else 2 * 2.0**-10 * float(np.abs(want).max())
            np.testing.assert_allclose(out.astype(np.float32), want.astype(np.float32), rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("queries,mask_queries", [(3, 1), (4, 4)])
def test_masked_softmax_kernel(dtype, queries, mask_queries):
    rng = np.random.default_rng(queries)
    batch, heads, keys = 2, 3, 37
    scores = (rng.standard_normal((batch, heads, queries, keys)) * 4).astype(dtype)
    lowest = np.finfo(dtype).min
    mask = np.zeros((batch, 1, mask_queries, keys), dtype=dtype)
    mask[0, ..., 30:] = lowest
    mask[1, :, 0] = lowest  # fully masked rows: uniform
    t = CTYPE[np.dtype(dtype)]
    launch = emu.compile_kernel(source(K._SOFTMAX, OUTTYPE=t, TYPE=t), "masked_softmax",
                                [f"const {t}*", f"const {t}*", f"{t}*"] + ["int"] * 5 + ["float", "float"])
    rows = batch * heads * queries
    probs = np.full(scores.shape, np.nan, dtype=dtype)
    launch((rows + 3) // 4, 128, scores, mask, probs, rows, keys, heads, queries, mask_queries, 5.0, float(lowest))
    want = ops.masked_softmax.reference(scores, mask, 5.0, dtype=dtype)
    # the same float32 arithmetic; the sum of the exponentials is added in another order
    atol = 1e-6 if dtype == np.float32 else 2.0**-11
    np.testing.assert_allclose(probs.astype(np.float32), want.astype(np.float32), rtol=1e-5, atol=atol)
    assert (probs[0, ..., 30:] == 0).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("rows", [1, 3, 5])
def test_few_rows_linear_kernel(dtype, rows):
    rng = np.random.default_rng(rows)
    width, out_features = 256, 19  # 19: the last block has idle warps
    x = rng.standard_normal((rows, width)).astype(dtype)
    weight = rng.standard_normal((out_features, width)).astype(dtype)
    bias = rng.standard_normal(out_features).astype(dtype)
    t = CTYPE[np.dtype(dtype)]
    capacity = next(r for r in (1, 2, 4, 8, 16, 32) if r >= rows)
    launch = emu.compile_kernel(source(K._FEW_ROWS_LINEAR, TYPE=t, MAXROWS=str(capacity)), "few_rows_linear",
                                [f"const {t}*"] * 3 + [f"{t}*", "int", "int", "int"])
    for b in (None, bias):
        y = np.full((rows, out_features), np.nan, dtype=dtype)
        launch((out_features + 3) // 4, 128, x, weight, b, y, rows, width, out_features)
        exact = x.astype(np.float64) @ weight.T.astype(np.float64) + (0 if b is None else b.astype(np.float64))
        # float32 sums of 256 products in the lanes' order: width * 2**-24 of sum |x w| (~4e-4 here);
        # float16 storage rounds the result (and the bias sum) to float16: 2 steps of 2**-11
        bound = width * 2.0**-24 * (np.abs(x.astype(np.float64)) @ np.abs(weight.T.astype(np.float64)))
        if dtype == np.float16:
            bound = bound + 2 * 2.0**-11 * np.abs(exact)
        assert (np.abs(y.astype(np.float64) - exact) <= bound + 1e-30).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_one_query_kernels(dtype):
    rng = np.random.default_rng(5)
    batch, heads, keys, d = 2, 3, 21, 40
    # views with the strides a decode step gives them: the query a split-heads view, the keys a cache slice
    query = rng.standard_normal((batch, 1, heads * d)).astype(dtype).reshape(batch, 1, heads, d).transpose(0, 2, 1, 3)
    key_buffer, value_buffer = (rng.standard_normal((batch, heads, 32, d)).astype(dtype) for _ in range(2))
    key, value = key_buffer[:, :, :keys], value_buffer[:, :, :keys]
    t = CTYPE[np.dtype(dtype)]
    text = source(K._ONE_QUERY, TYPE=t)
    scores_kernel = emu.compile_kernel(text, "one_query_scores",
                                       [f"const {t}*", f"const {t}*", f"{t}*"] + ["int"] * 3 + ["long"] * 5 + ["int"])
    values_kernel = emu.compile_kernel(text, "one_query_values",
                                       [f"const {t}*", f"const {t}*", f"{t}*"] + ["int"] * 3 + ["long"] * 3)
    total = batch * heads * keys
    scores = np.full((batch, heads, 1, keys), np.nan, dtype=dtype)
    qs, ks = [s // query.itemsize for s in query.strides], [s // key.itemsize for s in key.strides]
    scores_kernel((total + 3) // 4, 128, query, key, scores, heads, keys, d, qs[0], qs[1], ks[0], ks[1], ks[2], total)
    exact = query.astype(np.float64) @ key.astype(np.float64).transpose(0, 1, 3, 2)
    # float32 sums of d products (d * 2**-24 of sum |q k|), float16 storage rounds once (2**-11)
    magnitude = np.abs(query.astype(np.float64)) @ np.abs(key.astype(np.float64)).transpose(0, 1, 3, 2)
    bound = d * 2.0**-24 * magnitude + (2.0**-11 * np.abs(exact) if dtype == np.float16 else 0)
    assert (np.abs(scores.astype(np.float64) - exact) <= bound + 1e-30).all()

    probs = ops.softmax(scores.astype(np.float32), axis=-1).astype(dtype)
    out = np.full((batch, heads, 1, d), np.nan, dtype=dtype)
    vs = [s // value.itemsize for s in value.strides]
    values_kernel(batch * heads, 64, probs, value, out, heads, keys, d, vs[0], vs[1], vs[2])
    exact = probs.astype(np.float64) @ value.astype(np.float64)
    magnitude = np.abs(probs.astype(np.float64)) @ np.abs(value.astype(np.float64))
    bound = keys * 2.0**-24 * magnitude + (2.0**-11 * np.abs(exact) if dtype == np.float16 else 0)
    assert (np.abs(out.astype(np.float64) - exact) <= bound + 1e-30).all()


@pytest.mark.skipif(not emu.nvcc_available(), reason="needs nvcc (the CUDA toolkit)")
@pytest.mark.parametrize("name,text,types", [
    ("layer_norm", K._LAYER_NORM, dict(TYPE="HALF", ADDBIAS="0")),
    ("layer_norm", K._LAYER_NORM, dict(TYPE="float", ADDBIAS="1")),
    ("layer_norm", K._LAYER_NORM, dict(TYPE="HALF", ADDBIAS="1")),
    ("masked_softmax", K._SOFTMAX, dict(OUTTYPE="float", TYPE="HALF")),
    ("few_rows_linear", K._FEW_ROWS_LINEAR, dict(TYPE="HALF", MAXROWS="4")),
    ("one_query_scores", K._ONE_QUERY, dict(TYPE="HALF")),
])
def test_kernels_compile_for_the_gpu(tmp_path, name, text, types):
    assert f".entry {name}" in emu.nvcc_ptx(text, tmp_path, **types, BLOCK_SUM=K._BLOCK_SUM)
