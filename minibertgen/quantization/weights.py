"""Quantized linear weights: what ``ops.linear`` multiplies when a weight ``is_quantized``.

A quantized weight is a small object standing where the [out, in] float array stood
in the parameter tree.  It answers ``shape``, ``dtype`` (the compute dtype),
``nbytes`` (the bytes it really holds) and ``rmatmul_t(x) = x @ W.T``.  The math is
in fourbit.py / int8.py; here it is only glued to a scratch buffer:

* The weight is dequantized on every call into a float32 scratch buffer shared by all
  weights of that shape (one per shape, dtype, device and thread), so memory stays
  at the packed size plus one layer's worth of float32.  Then BLAS (NumPy) or cuBLAS
  (CuPy) multiplies.  On a GPU, a decode step's few rows can skip the buffer: the fused
  dequantize-and-multiply kernel of fast/cuda_fourbit.py (a preview kernel, off until it
  has run on a GPU: fast/preview.py).
* Like bitsandbytes' Linear4bit, the input is cast to the compute dtype and the result
  back to the input's dtype.  float16 compute on NumPy, which has no fast float16
  matmul, is emulated the way GPUs do it: operands rounded to float16, products
  accumulated in float32, the result rounded to float16.  bfloat16 computes in float32.
"""
from __future__ import annotations

import threading

import numpy as np

from ..backend import array_module
from .fourbit import Packed4bit, dequantize_4bit, quantize_4bit
from .int8 import Int8Rows, dequantize_rows_int8, int8_matmul_t, quantize_rows_int8

__all__ = ["QuantizedWeight4bit", "QuantizedWeight8bit", "scratch_buffer", "clear_scratch_buffers"]

_SCRATCH = threading.local()


def scratch_buffer(xp, shape, dtype=np.float32):
    """A reusable uninitialised array of ``shape``: one per (backend, device, shape, dtype, thread)."""
    pool = getattr(_SCRATCH, "pool", None)
    if pool is None:
        pool = _SCRATCH.pool = {}
    device = xp.cuda.Device().id if xp.__name__ == "cupy" else -1
    key = (xp.__name__, device, tuple(shape), np.dtype(dtype).str)
    if key not in pool:
        pool[key] = xp.empty(shape, dtype=dtype)
    return pool[key]


def clear_scratch_buffers() -> None:
    """Free this thread's scratch buffers (they are re-made on the next quantized matmul)."""
    _SCRATCH.pool = {}


def _matmul_t_in(x2, weight_f32, compute_dtype):
    """x2 [tokens, in] @ weight_f32.T [in, out] in ``compute_dtype`` -> [tokens, out].

    ``weight_f32`` is a scratch buffer and may be overwritten.
    """
    xp = array_module(x2)
    if compute_dtype == np.float16:
        if xp is np:  # emulate a float16 GEMM: float16 operands, float32 accumulation
            weight_f32[...] = weight_f32.astype(np.float16)  # round the weight to float16
            x16 = x2.astype(np.float16).astype(np.float32)  # round the input to float16
            return (x16 @ weight_f32.T).astype(np.float16)  # [tokens, out]
        w16 = scratch_buffer(xp, weight_f32.shape, np.float16)
        w16[...] = weight_f32
        return x2.astype(xp.float16) @ w16.T  # cuBLAS float16 GEMM, [tokens, out]
    return x2.astype(xp.float32, copy=False) @ weight_f32.T  # [tokens, out]


class _QuantizedWeight:
    """What every quantized weight shares: array-like attributes and a clear refusal to convert."""

    is_quantized = True
    ndim = 2

    @property
    def size(self) -> int:
        """Number of weights it stands for (out * in), as num_parameters() counts them."""
        return int(self.shape[0] * self.shape[1])

    def __array__(self, *args, **kwargs):
        raise TypeError(f"a {type(self).__name__} cannot be turned into an array implicitly: call "
                        ".dequantize() for the float weights")

    @property
    def T(self):
        """W.T as something ``x @`` can multiply: ops.linear's plain ``x @ weight.T`` then
        works for a quantized weight too (``_TransposedWeight.__rmatmul__`` -> rmatmul_t)."""
        return _TransposedWeight(self)

    def _check_input(self, x):
        if x.shape[-1] != self.shape[1]:
            raise ValueError(f"x has {x.shape[-1]} features in its last axis: this weight expects {self.shape[1]}")


class _TransposedWeight:
    """The transpose of a quantized weight, for ``x @ weight.T`` (computed as weight.rmatmul_t(x))."""

    __array_ufunc__ = None  # NumPy (and CuPy) arrays then leave ``x @ this`` to __rmatmul__

    def __init__(self, weight):
        self.weight = weight
        self.shape = (weight.shape[1], weight.shape[0])

    def __rmatmul__(self, x):
        return self.weight.rmatmul_t(x)  # [..., in] -> [..., out]


class QuantizedWeight4bit(_QuantizedWeight):
    """A linear weight [out, in] in 4 bits (NF4 or FP4, blockwise absmax, optional double quant)."""

    def __init__(self, q: Packed4bit, compute_dtype, stored_dtype):
        self.q = q
        self.shape = tuple(q.shape)
        self.dtype = np.dtype(compute_dtype)
        self.stored_dtype = np.dtype(stored_dtype)  # dtype of the float weight it came from

    @classmethod
    def from_float(cls, weight, quant_type="nf4", double_quant=False, compute_dtype=np.float32):
        if weight.ndim != 2:
            raise ValueError(f"weight has shape {tuple(weight.shape)}: expected a 2-D [out, in] linear weight")
        return cls(quantize_4bit(weight, quant_type, double_quant=double_quant), compute_dtype, weight.dtype)

    @property
    def nbytes(self) -> int:
        return self.q.nbytes

    def dequantize(self):
        """The float32 weight [out, in] these codes stand for (a new array)."""
        return dequantize_4bit(self.q)

    def rmatmul_t(self, x):
        """x [..., in] @ W.T -> [..., out], computed in the compute dtype, returned in x.dtype."""
        self._check_input(x)
        xp = array_module(x)
        x2 = x.reshape(-1, self.shape[1])  # [..., in] -> [tokens, in]
        weight = dequantize_4bit(self.q, out=scratch_buffer(xp, self.shape))  # [out, in] float32
        y = _matmul_t_in(x2, weight, self.dtype)  # [tokens, out]
        return y.reshape(*x.shape[:-1], self.shape[0]).astype(x.dtype, copy=False)  # [..., out]

    def __repr__(self):
        dq = ", double_quant" if self.q.absmax_q is not None else ""
        return f"QuantizedWeight4bit({self.q.quant_type}{dq}, shape={self.shape}, compute_dtype={self.dtype})"


class QuantizedWeight8bit(_QuantizedWeight):
    """A linear weight [out, in] for LLM.int8(): int8 rows plus the outlier decomposition."""

    def __init__(self, q: Int8Rows, threshold: float, stored_dtype, full_weight=None):
        self.q = q
        self.threshold = float(threshold)
        self.shape = tuple(q.codes.shape)
        self.dtype = np.dtype(stored_dtype)  # int8 matmuls return the input's dtype
        self.full_weight = full_weight  # kept only with llm_int8_has_fp16_weight=True

    @classmethod
    def from_float(cls, weight, threshold=6.0, keep_full_weight=False):
        if weight.ndim != 2:
            raise ValueError(f"weight has shape {tuple(weight.shape)}: expected a 2-D [out, in] linear weight")
        return cls(quantize_rows_int8(weight), threshold, weight.dtype, weight if keep_full_weight else None)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.full_weight is None else self.full_weight.nbytes
        return self.q.nbytes + int(extra)

    def dequantize(self):
        """codes * row_absmax / 127 as a float32 [out, in] array (a new array)."""
        return dequantize_rows_int8(self.q)

    def rmatmul_t(self, x):
        """x [..., in] @ W.T -> [..., out] by the LLM.int8() decomposition, returned in x.dtype."""
        self._check_input(x)
        xp = array_module(x)
        x2 = x.reshape(-1, self.shape[1])  # [..., in] -> [tokens, in]
        y = int8_matmul_t(x2, self.q, self.threshold, scratch_buffer(xp, self.shape), self.full_weight)
        return y.reshape(*x.shape[:-1], self.shape[0]).astype(x.dtype, copy=False)  # [..., out]

    def __repr__(self):
        return f"QuantizedWeight8bit(llm_int8, shape={self.shape}, threshold={self.threshold})"
