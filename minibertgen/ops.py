"""Explicit array operations: the building blocks of the model.

Every function takes its array module from its inputs (``xp = array_module(x)``), so
the same code runs on NumPy (CPU) and CuPy (GPU).  Reductions whose accuracy matters
(softmax, LayerNorm statistics, the loss) are accumulated in float32 even when the
weights are float16.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .backend import array_module

__all__ = [
    "embedding",
    "linear",
    "layer_norm",
    "activation",
    "erf",
    "softmax",
    "masked_softmax",
    "cross_entropy",
    "set_fused_kernels",
]

# -- fused CUDA kernels -----------------------------------------------------------------

_FUSED = {"enabled": True}


def set_fused_kernels(enabled: bool) -> None:
    """Choose how CuPy arrays are computed: fused CUDA kernels (default, fast) or the
    readable array code below, one CuPy call per step (for teaching, and to check one
    against the other).  NumPy arrays always take the readable path."""
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled={enabled!r}: expected True or False")
    _FUSED["enabled"] = enabled


def fused_kernels_enabled() -> bool:
    return _FUSED["enabled"]


def fused_kernels_for(x):
    """The cuda_kernels module if ``x`` should take a fused kernel, else None."""
    if not _FUSED["enabled"] or array_module(x) is np:
        return None
    from .fast import cuda_kernels

    return cuda_kernels if cuda_kernels.supports(x.dtype) else None


def embedding(table, ids):
    """Look up rows of ``table``: [vocab, hidden] indexed by ids [...] -> [..., hidden]."""
    return table[ids]


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with a PyTorch-layout weight [out, in].

    [..., in] @ [in, out] -> [..., out].  NumPy/CuPy pass the transposed view straight to
    BLAS, so no copy of the weight is made.
    """
    if getattr(weight, "is_quantized", False):
        return _add_bias(weight.rmatmul_t(x), bias)  # x @ W.T from packed 8/4-bit codes (quantization/)
    xp = array_module(x)
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    kernels = fused_kernels_for(x)
    if kernels is not None and kernels.few_rows_linear_fits(rows, weight):
        # GPU, a decode step's few rows: one kernel, bias included, no cuBLAS (cuda_kernels.py)
        return kernels.few_rows_linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])  # -> [..., out]
    if 1 < rows.shape[0] <= _FEW_ROWS and xp is np and weight.flags.c_contiguous:
        # Speed, CPU only: for few rows (beam steps, short encoder inputs) OpenBLAS runs
        # W @ x.T [out, in] @ [in, rows] faster than x @ W.T: 15 vs 9 GB/s of weights at
        # 4 rows, 44 vs 54 ms at 64 rows, equal from ~128; the same product, transposed back.
        # (A weight stored transposed, layout.py, is already fastest as x @ W.T.)
        if rows.shape[0] <= _CHUNKED_ROWS and weight.shape[0] >= _CHUNKED_OUT:
            y = _tall_weight_in_chunks(weight, rows)
        else:
            y = xp.ascontiguousarray((weight @ rows.T).T)  # [out, rows] -> [rows, out]
    elif kernels is not None:
        # GPU: the same product as below through one direct cuBLAS call, skipping
        # cupy.matmul's general dispatch (host time is what limits a GPU layer)
        y = kernels.matmul_nt(rows, weight)
    else:
        # One GEMM over all rows: NumPy's matmul on a 3-D x loops over the batch and is
        # 25% slower at [8, 128, 1024] (bench_cpu.py).
        y = rows @ weight.T  # [rows, in] @ [in, out] -> [rows, out]
    return _add_bias(y.reshape(*x.shape[:-1], weight.shape[0]), bias)  # -> [..., out]


_FEW_ROWS = 96
_CHUNKED_ROWS, _CHUNKED_OUT, _CHUNK_BYTES = 32, 2048, 2 << 20


def _tall_weight_in_chunks(weight, rows):
    """W @ x.T for a tall W [out, in] and a few rows x [rows, in], 2 MiB of W at a time.

    Speed, CPU only: given all of a tall weight in one call, OpenBLAS streams it at
    9-13 GB/s for 2-32 rows; in 2 MiB blocks of rows, at 15-17 GB/s (4 rows: the 50358 x
    1024 LM head 8.8 -> 14.6 GB/s, a 4096 x 1024 layer 12.4 -> 16.1).  Each block is the
    same product over its rows of W, so the numbers are the same.  -> [rows, out]
    """
    out = np.empty((weight.shape[0], rows.shape[0]), dtype=np.result_type(weight.dtype, rows.dtype))  # [out, rows]
    step = max(1, _CHUNK_BYTES // (weight.shape[1] * weight.itemsize))  # rows of W per block
    for start in range(0, weight.shape[0], step):
        np.matmul(weight[start:start + step], rows.T, out=out[start:start + step])
    return np.ascontiguousarray(out.T)


def _add_bias(y, bias):
    if bias is not None:
        y += bias
    return y


def layer_norm(x, weight, bias, eps, residual=None):
    """Normalise the last axis of ``x`` (+ ``residual``) to zero mean and unit variance,
    then scale and shift.

    Statistics are computed in float32 (at least), whatever the input dtype.  On the GPU
    this is one fused kernel (cuda_kernels.layer_norm) computing exactly these steps.
    """
    kernels = fused_kernels_for(x)
    if kernels is not None:
        return kernels.layer_norm(x, weight, bias, eps, residual=residual)
    if residual is not None:
        x = x + residual
    xp = array_module(x)
    work = x.astype(xp.promote_types(x.dtype, xp.float32), copy=False)
    mean = work.mean(axis=-1, keepdims=True)  # [..., 1]
    centered = work - mean  # a new array: the in-place steps below only touch it
    variance = (centered * centered).mean(axis=-1, keepdims=True)  # [..., 1] biased, as torch
    centered /= xp.sqrt(variance + eps)
    centered *= weight
    centered += bias
    return centered.astype(x.dtype, copy=False)


# -- activations ----------------------------------------------------------------------

# Abramowitz & Stegun 7.1.26: erf(x) ~ 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1/(1+p|x|).
# Maximum absolute error 1.5e-7, the size of float32's own rounding, so GELU built on it
# agrees with torch's exact erf-GELU to ~1e-7 relative.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x):
    """The error function, elementwise, on NumPy or CuPy arrays (NumPy has no erf)."""
    xp = array_module(x)
    sign = xp.sign(x)
    ax = xp.abs(x)
    t = 1.0 / (1.0 + _ERF_P * ax)
    a1, a2, a3, a4, a5 = _ERF_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))  # Horner's rule
    return sign * (1.0 - poly * xp.exp(-ax * ax))


def _gelu_erf(x):
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact (erf) form.

    Speed: written with erf above, this allocates a dozen temporaries the size of x,
    and at the encoder's [8, 128, 4096] those cost nearly as much as the matmul before
    them.  So the arithmetic runs in place (_gelu_erf_block) on blocks small enough to
    stay in the CPU cache: 43 -> 14 ms per layer at that size (bench_cpu.py encoder).
    """
    xp = array_module(x)
    if xp is not np or x.size <= _BLOCK:
        return _gelu_erf_block(x)
    flat = xp.ascontiguousarray(x).reshape(-1)
    out = xp.empty_like(flat)
    for start in range(0, flat.size, _BLOCK):
        _gelu_erf_block(flat[start:start + _BLOCK], out=out[start:start + _BLOCK])
    return out.reshape(x.shape)


_BLOCK = 65536  # elements: 256 KiB of float32, a few buffers fit in a 2 MiB L2 cache


def _gelu_erf_block(x, out=None):
    """GELU on one block, in place in two scratch buffers (see _gelu_erf):
        t = 1 / (1 + p|z|),  poly = t (a1 + t (a2 + ...)),  erf|z| = 1 - poly exp(-z^2)
    """
    xp = array_module(x)
    z = x * (1.0 / math.sqrt(2.0))  # the one scratch buffer
    xp.abs(z, out=z)
    square = z * z  # z^2, needed for exp(-z^2)
    z *= _ERF_P
    z += 1.0
    xp.reciprocal(z, out=z)  # t
    a1, a2, a3, a4, a5 = _ERF_A
    poly = xp.multiply(z, a5, out=out)  # Horner's rule, in place (in `out` when given)
    for coefficient in (a4, a3, a2, a1):
        poly += coefficient
        poly *= z
    xp.negative(square, out=square)
    xp.exp(square, out=square)
    poly *= square  # 1 - erf(|z|)
    xp.subtract(1.0, poly, out=poly)  # erf(|z|)
    xp.copysign(poly, x, out=poly)  # erf(z): odd function, sign of x
    poly += 1.0
    poly *= x
    poly *= 0.5
    return poly


def _gelu_tanh(x):
    xp = array_module(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def _sigmoid(x):
    xp = array_module(x)
    return 1.0 / (1.0 + xp.exp(-x))


def _mish(x):
    xp = array_module(x)
    return x * xp.tanh(xp.logaddexp(0, x))  # x * tanh(softplus(x))


_ACTIVATIONS = {
    "gelu": _gelu_erf,
    "gelu_python": _gelu_erf,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "quick_gelu": lambda x: x * _sigmoid(1.702 * x),
    "relu": lambda x: array_module(x).maximum(x, 0),
    "relu6": lambda x: array_module(x).clip(x, 0, 6),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "tanh": lambda x: array_module(x).tanh(x),
    "sigmoid": _sigmoid,
    "linear": lambda x: x,
    "mish": _mish,
}


_GELU_FORMS = {_gelu_erf: "erf", _gelu_tanh: "tanh"}


def activation(name: str):
    """Return the activation function called ``name`` (transformers' ACT2FN names).

    Like torch's kernels, it computes in float32 at least: float16 inputs are widened,
    activated and rounded back once (evaluating erf's polynomial in float16 would round
    at every step).  GELU on the GPU is one fused kernel computing the same function.
    """
    try:
        fn = _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"hidden_act={name!r}: expected one of {', '.join(_ACTIVATIONS)}") from None
    return functools.partial(_activate, fn)


def _activate(fn, x):
    kernels = fused_kernels_for(x)
    if kernels is not None and fn in _GELU_FORMS:
        return kernels.gelu(x, _GELU_FORMS[fn])
    if x.dtype.itemsize < 4:
        return fn(x.astype(np.float32)).astype(x.dtype)
    return fn(x)


# -- probabilities and loss -----------------------------------------------------------

def softmax(scores, axis=-1, out=None):
    """Numerically stable softmax over ``axis``, computed in float32 at least.

    ``out``: where to write it (may be ``scores`` itself, when the caller owns it).
    """
    xp = array_module(scores)
    work = scores.astype(xp.promote_types(scores.dtype, xp.float32), copy=False)
    exp = xp.subtract(work, work.max(axis=axis, keepdims=True), out=out)  # the largest is 0: no overflow
    xp.exp(exp, out=exp)  # in place: one buffer for the whole softmax
    exp /= exp.sum(axis=axis, keepdims=True)
    return exp


def masked_softmax(scores, mask=None, divisor=1.0, dtype=None):
    """Attention probabilities: softmax(scores / divisor + mask) over the last axis.

    scores [batch, heads, queries, keys] (this function's to overwrite), additive mask
    broadcastable to it; computed in float32, returned in ``dtype`` (default: float32 at
    least).  On the GPU one fused kernel does all four steps.
    """
    kernels = fused_kernels_for(scores)
    if kernels is not None and scores.ndim == 4 and (mask is None or mask.ndim == 4):
        out_dtype = np.dtype(dtype) if dtype is not None else np.promote_types(scores.dtype, np.float32)
        if kernels.supports(out_dtype):
            return kernels.masked_softmax(scores, mask, divisor, out_dtype)
    scores = scores.astype(np.promote_types(scores.dtype, np.float32), copy=False)  # float32 from here on
    scores /= divisor  # in place: the caller's own array (or its float32 copy)
    if mask is not None:
        scores += mask
    probs = softmax(scores, axis=-1, out=scores)  # in place too: no new [batch, heads, q, k] array
    return probs if dtype is None else probs.astype(dtype, copy=False)


def log_softmax(scores, axis=-1):
    """log(softmax(scores)) without forming the softmax, in float32 at least."""
    xp = array_module(scores)
    work = scores.astype(xp.promote_types(scores.dtype, xp.float32), copy=False)
    shifted = work - work.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def cross_entropy(logits, labels, ignore_index=-100):
    """Mean negative log-likelihood of ``labels`` under ``logits``, skipping ``ignore_index``.

    logits [n, vocab], labels [n] -> scalar (float32).  Like torch, an all-ignored batch
    gives NaN (0 / 0).
    """
    xp = array_module(logits)
    log_probs = log_softmax(logits, axis=-1)  # [n, vocab]
    keep = labels != ignore_index  # [n]
    safe = xp.where(keep, labels, 0)
    picked = xp.take_along_axis(log_probs, safe[:, None], axis=-1)[:, 0]  # [n]
    total = -(picked * keep).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / keep.sum()).astype(log_probs.dtype)  # float32, as torch's loss
