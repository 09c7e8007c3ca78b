"""Explicit array operations: the building blocks of the model.

Every function takes its array module from its inputs (``xp = array_module(x)``), so
the same code runs on NumPy (CPU) and CuPy (GPU).  Reductions whose accuracy matters
(softmax, LayerNorm statistics, the loss) are accumulated in float32 even when the
weights are float16.
"""
from __future__ import annotations

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
    "cross_entropy",
]


def embedding(table, ids):
    """Look up rows of ``table``: [vocab, hidden] indexed by ids [...] -> [..., hidden]."""
    return table[ids]


def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with a PyTorch-layout weight [out, in].

    [..., in] @ [in, out] -> [..., out].  NumPy/CuPy pass the transposed view straight to
    BLAS, so no copy of the weight is made.
    """
    if getattr(weight, "is_quantized", False):
        y = weight.rmatmul_t(x)  # x @ W.T from packed 8/4-bit codes (see quantization.py)
    else:
        y = x @ weight.T  # [..., in] -> [..., out]
    if bias is not None:
        y += bias
    return y


def layer_norm(x, weight, bias, eps):
    """Normalise the last axis to zero mean and unit variance, then scale and shift.

    Statistics are computed in float32 (at least), whatever the input dtype.
    """
    xp = array_module(x)
    work = x.astype(xp.promote_types(x.dtype, xp.float32), copy=False)
    mean = work.mean(axis=-1, keepdims=True)  # [..., 1]
    centered = work - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)  # [..., 1] biased, as torch
    normed = centered / xp.sqrt(variance + eps)
    return (normed * weight + bias).astype(x.dtype, copy=False)


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
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


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


def activation(name: str):
    """Return the activation function called ``name`` (transformers' ACT2FN names)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"hidden_act={name!r}: expected one of {', '.join(_ACTIVATIONS)}") from None


# -- probabilities and loss -----------------------------------------------------------

def softmax(scores, axis=-1):
    """Numerically stable softmax over ``axis``, computed in float32 at least."""
    xp = array_module(scores)
    work = scores.astype(xp.promote_types(scores.dtype, xp.float32), copy=False)
    shifted = work - work.max(axis=axis, keepdims=True)
    exp = xp.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


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
