"""LLM.int8() (Dettmers et al. 2022): 8-bit matmul with a mixed-precision decomposition.

Weights: every output row of W [out, in] is scaled by its absolute maximum and rounded
to int8, ``W ~= codes * row_absmax / 127``.

At run time, bitsandbytes splits the *input features* (columns of x, rows of W.T) in
two, by looking at the activations x [tokens, in] of this very call:

* outlier features: any column of x holding a value with |x| >= threshold (6.0 by
  default).  These few columns are multiplied in the compute dtype, activations
  unquantized: ``x[:, outliers] @ W[:, outliers].T``.  The weight columns used are
  the int8 ones dequantized, as bitsandbytes does for inference
  (``has_fp16_weights=False``); with ``llm_int8_has_fp16_weight=True`` the full
  precision weight is kept and its columns are used instead.
* all other features: x is quantized too, per token (row absmax -> int8), and the
  int8 x int8 product is accumulated in integers, then rescaled by both absmaxes:
  ``(xq @ codes.T) * x_absmax[:, None] * row_absmax[None, :] / 127**2``.

The sum of both parts is the output.  On NumPy/CuPy the integer product runs as a
float32 BLAS matmul of the integer-valued codes: each product (|.| <= 127*127) is
exact, and the sum is exact while it stays below 2^24 in magnitude (beyond, float32
rounds it, a relative error of ~6e-8 - far below the int8 quantization error).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backend import array_module

__all__ = ["Int8Rows", "quantize_rows_int8", "dequantize_rows_int8", "outlier_features", "int8_matmul_t"]


@dataclass
class Int8Rows:
    """W [out, in] as int8 codes with one float32 absmax per output row."""

    codes: object  # [out, in] int8
    row_absmax: object  # [out] float32

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.row_absmax.nbytes)


def quantize_rows_int8(weight) -> Int8Rows:
    """Per-row absmax int8: [out, in] float -> codes in [-127, 127] and [out] scales."""
    xp = array_module(weight)
    work = weight.astype(xp.float32)
    row_absmax = xp.abs(work).max(axis=1)  # [out]
    safe = xp.where(row_absmax > 0, row_absmax, xp.float32(1.0))  # an all-zero row stays zero
    codes = xp.rint(work * (127.0 / safe)[:, None]).astype(xp.int8)  # [out, in]
    return Int8Rows(codes, row_absmax.astype(xp.float32))


def dequantize_rows_int8(q: Int8Rows, out=None):
    """codes * row_absmax / 127 -> [out, in] float32 (into ``out`` when given)."""
    xp = array_module(q.codes)
    if out is None:
        out = xp.empty(q.codes.shape, dtype=xp.float32)
    out[...] = q.codes  # int8 -> float32, into the buffer
    out *= (q.row_absmax / 127.0)[:, None]
    return out


def outlier_features(x2, threshold: float):
    """Indices of the input features (columns of x [tokens, in]) with any |x| >= threshold."""
    xp = array_module(x2)
    if threshold <= 0:
        return xp.zeros(0, dtype=xp.int64)  # threshold 0: no decomposition, as bitsandbytes
    return xp.nonzero((xp.abs(x2) >= threshold).any(axis=0))[0]  # [n_outliers]


def int8_matmul_t(x2, q: Int8Rows, threshold: float, codes_buffer, full_weight=None):
    """x2 [tokens, in] @ W.T -> [tokens, out] float32, by the LLM.int8() decomposition.

    ``codes_buffer`` is a float32 [out, in] scratch array that receives the int8 codes
    (the BLAS operand); ``full_weight`` (optional, [out, in]) supplies the outlier
    columns in full precision instead of dequantizing them.
    """
    xp = array_module(x2)
    x2 = x2.astype(xp.float32, copy=False)
    outliers = outlier_features(x2, threshold)  # [n_outliers]
    regular = x2
    if outliers.shape[0]:
        regular = x2.copy()
        regular[:, outliers] = 0  # these features go through the full-precision path below

    x_absmax = xp.abs(regular).max(axis=1)  # [tokens]
    safe = xp.where(x_absmax > 0, x_absmax, xp.float32(1.0))
    x_codes = xp.rint(regular * (127.0 / safe)[:, None])  # [tokens, in] integers in [-127, 127]
    codes_buffer[...] = q.codes  # int8 -> float32 in the reusable buffer
    integer_product = x_codes @ codes_buffer.T  # [tokens, in] @ [in, out] -> [tokens, out]
    y = integer_product * (x_absmax[:, None] * (q.row_absmax[None, :] / (127.0 * 127.0)))  # [tokens, out]

    if outliers.shape[0]:
        if full_weight is not None:
            w_cols = full_weight[:, outliers].astype(xp.float32)  # [out, n_outliers] exact
        else:
            w_cols = codes_buffer[:, outliers] * (q.row_absmax / 127.0)[:, None]  # [out, n_outliers]
        y += x2[:, outliers] @ w_cols.T  # [tokens, n_outliers] @ [n_outliers, out] -> [tokens, out]
    return y
