"""LLM.int8() against its definition: per-row int8 weights and the outlier-feature decomposition."""
import numpy as np
import pytest

from minibertgen.quantization import (QuantizedWeight8bit, dequantize_rows_int8, int8_matmul_t, outlier_features,
                                      quantize_rows_int8)


def setup(seed=0, tokens=6, n_in=96, n_out=40):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n_out, n_in)) * 0.05).astype(np.float32)
    x = rng.standard_normal((tokens, n_in)).astype(np.float32)
    return w, x


def test_rows_are_absmax_scaled_and_rounded():
    w, _ = setup()
    q = quantize_rows_int8(w)
    assert q.codes.dtype == np.int8 and q.codes.shape == w.shape and q.row_absmax.shape == (w.shape[0],)
    np.testing.assert_array_equal(q.row_absmax, np.abs(w).max(axis=1))
    np.testing.assert_array_equal(np.abs(q.codes).max(axis=1), 127)  # every row reaches +-127
    error = np.abs(dequantize_rows_int8(q) - w)
    assert np.all(error <= q.row_absmax[:, None] / 254 * (1 + 1e-6))  # half a step of absmax/127


def reference_decomposition(x, w, q, threshold, full=False):
    """The definition, written with explicit integer arithmetic."""
    cols = np.nonzero((np.abs(x) >= threshold).any(axis=0))[0] if threshold > 0 else np.array([], int)
    regular = x.copy()
    regular[:, cols] = 0
    x_absmax = np.abs(regular).max(axis=1)
    x_codes = np.rint(regular * (127 / x_absmax)[:, None]).astype(np.int32)
    acc = x_codes @ q.codes.astype(np.int32).T  # int32 accumulation, as the int8 GEMM does
    y = acc * np.outer(x_absmax, q.row_absmax) / 127 ** 2
    w_cols = w[:, cols] if full else q.codes[:, cols] * (q.row_absmax / 127)[:, None]
    return y + x[:, cols].astype(np.float64) @ w_cols.T.astype(np.float64), cols


@pytest.mark.parametrize("full", [False, True])
def test_decomposition_matches_the_integer_definition(full):
    w, x = setup()
    x[:, [3, 50]] *= 12  # two outlier features (|x| >= 6 somewhere in those columns)
    q = quantize_rows_int8(w)
    expected, cols = reference_decomposition(x, w, q, 6.0, full)
    np.testing.assert_array_equal(cols, outlier_features(x, 6.0))
    assert set(cols.tolist()) >= {3, 50}
    y = int8_matmul_t(x, q, 6.0, np.empty(w.shape, np.float32), w if full else None)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_outlier_columns_are_computed_exactly():
    """With full-precision weights kept, the outlier features' contribution is exactly x[:, c] @ W[:, c].T:
    check it by zeroing every other feature, so the int8 part contributes nothing."""
    w, x = setup(1)
    x[:, :] = 0
    x[:, [5, 17]] = np.array([[9.0, -7.5]] * x.shape[0]) * np.arange(1, x.shape[0] + 1)[:, None]
    exact = x @ w.T
    full = QuantizedWeight8bit.from_float(w, threshold=6.0, keep_full_weight=True)
    np.testing.assert_allclose(full.rmatmul_t(x), exact, rtol=1e-6, atol=1e-7)
    dequantized = QuantizedWeight8bit.from_float(w, threshold=6.0)  # bitsandbytes' inference default
    np.testing.assert_allclose(dequantized.rmatmul_t(x), x @ full.dequantize().T, rtol=1e-6, atol=1e-7)


def test_decomposition_beats_plain_int8_with_outliers():
    w, x = setup(2, tokens=16)
    x[:, 7] = 60.0  # a systematic outlier feature, as in large models
    exact = x @ w.T
    with_outliers = int8_matmul_t(x, quantize_rows_int8(w), 6.0, np.empty(w.shape, np.float32), w)
    plain = int8_matmul_t(x, quantize_rows_int8(w), 0.0, np.empty(w.shape, np.float32))
    error_mixed, error_plain = np.abs(with_outliers - exact).max(), np.abs(plain - exact).max()
    assert error_mixed * 5 < error_plain  # quantizing x with a 60 in the row crushes the other features


def test_threshold_zero_turns_the_decomposition_off():
    _, x = setup()
    x[0, 0] = 100.0
    assert outlier_features(x, 0.0).size == 0
    np.testing.assert_array_equal(outlier_features(x, 6.0), [0])


def test_weight_object_shapes_dtype_bytes():
    w, x = setup(n_in=384, n_out=384)
    q = QuantizedWeight8bit.from_float(w)
    assert q.is_quantized and q.shape == (384, 384) and q.dtype == np.float32 and q.size == w.size
    assert q.nbytes / w.nbytes <= 0.27
    y = q.rmatmul_t(x.reshape(2, 3, 384))
    assert y.shape == (2, 3, 384) and y.dtype == np.float32
    y16 = q.rmatmul_t(x.astype(np.float16))
    assert y16.dtype == np.float16  # returned in the input's dtype, as bitsandbytes does
    with pytest.raises(ValueError, match="expects 384"):
        q.rmatmul_t(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="cannot be turned into an array"):
        np.asarray(q)
    assert QuantizedWeight8bit.from_float(w, keep_full_weight=True).nbytes == q.nbytes + w.nbytes
