"""Explicit array operations: the building blocks of the model.

Every function takes its array module from its inputs (``xp = array_module(x)``), so
the same code runs on NumPy (CPU) and CuPy (GPU).  Reductions whose accuracy matters
(softmax, LayerNorm statistics, the loss) are accumulated in float32 even when the
weights are float16.

This is the reference: plain array code, nothing done in place, no device checks.
The ops marked ``@replaceable`` have faster versions in the speed wing (minibertgen/fast/),
looked up by name in the table a model chose for the device its weights sit on
(dispatch.py); they compute the same numbers and are tested equal to the functions here.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .backend import array_module
from .dispatch import replaceable

__all__ = [
    "embedding",
    "linear",
    "layer_norm",
    "add_and_norm",
    "activation",
    "erf",
    "gelu",
    "gelu_tanh",
    "softmax",
    "masked_softmax",
    "log_softmax",
    "cross_entropy",
    "dropout_mask",
    "dropout",
    "top_k",
]


def embedding(table, ids):
    """Look up rows of ``table``: [vocab, hidden] indexed by ids [...] -> [..., hidden]."""
    return table[ids]


@replaceable
def linear(x, weight, bias=None):
    """``x @ weight.T + bias`` with a PyTorch-layout weight [out, in].

    All rows in one product: NumPy's matmul of a 3-D x would loop over the batch, a
    product per sequence.  (A quantized weight, quantization/, answers ``rows @ weight.T``
    from its packed codes.)
    """
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    y = (rows @ weight.T).reshape(*x.shape[:-1], weight.shape[0])  # [rows, in] @ [in, out] -> [..., out]
    if bias is not None:
        y = y + bias
    return y


@replaceable
def layer_norm(x, weight, bias, eps, residual=None):
    """LayerNorm(x + residual): zero mean and unit variance over the last axis, then
    scale and shift.  Statistics are computed in float32 (at least), whatever the input
    dtype; the result has the input's dtype.
    """
    xp = array_module(x)
    if residual is not None:
        x = x + residual
    work = x.astype(xp.promote_types(x.dtype, xp.float32))
    mean = work.mean(axis=-1, keepdims=True)  # [..., hidden] -> [..., 1]
    variance = ((work - mean) ** 2).mean(axis=-1, keepdims=True)  # [..., 1], biased, as torch
    normalised = (work - mean) / xp.sqrt(variance + eps)
    return (normalised * weight + bias).astype(x.dtype)


@replaceable
def add_and_norm(x, weight, bias, norm_weight, norm_bias, eps, residual):
    """BERT's "output" block: LayerNorm(x W^T + b + residual).

    x [..., in], weight [out, in], residual [..., out] -> [..., out].  (A training forward
    runs its steps apart, to keep them and apply dropout: model.add_and_norm.)
    """
    return layer_norm(linear(x, weight, bias), norm_weight, norm_bias, eps, residual=residual)


# -- activations ----------------------------------------------------------------------

# Abramowitz & Stegun 7.1.26: erf(x) ~ 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1/(1+p|x|).
# Maximum absolute error 1.5e-7, the size of float32's own rounding, so GELU built on it
# agrees with torch's exact erf-GELU to ~1e-7 relative.
ERF_P = 0.3275911
ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def erf(x):
    """The error function, elementwise, on NumPy or CuPy arrays (NumPy has no erf)."""
    xp = array_module(x)
    t = 1.0 / (1.0 + ERF_P * xp.abs(x))
    a1, a2, a3, a4, a5 = ERF_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))  # Horner's rule
    return xp.sign(x) * (1.0 - poly * xp.exp(-x * x))


def gelu(x):
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact (erf) form."""
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """The tanh approximation of GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    xp = array_module(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def sigmoid(x):
    xp = array_module(x)
    return 1.0 / (1.0 + xp.exp(-x))


def quick_gelu(x):
    return x * sigmoid(1.702 * x)


def relu(x):
    return array_module(x).maximum(x, 0)


def relu6(x):
    return array_module(x).clip(x, 0, 6)


def silu(x):
    return x * sigmoid(x)


def tanh(x):
    return array_module(x).tanh(x)


def identity(x):
    return x


def mish(x):
    xp = array_module(x)
    return x * xp.tanh(xp.logaddexp(0, x))  # x * tanh(softplus(x))


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_accurate": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "relu6": relu6,
    "silu": silu,
    "swish": silu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "linear": identity,
    "mish": mish,
}


def activation(name: str):
    """Return the activation function called ``name`` (transformers' ACT2FN names)."""
    try:
        fn = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"hidden_act={name!r}: expected one of {', '.join(ACTIVATIONS)}") from None
    return functools.partial(apply_activation, fn)


@replaceable
def apply_activation(fn, x):
    """``fn(x)`` computed in float32 at least, as torch's kernels do: float16 inputs are
    widened, activated and rounded back once (erf's polynomial in float16 would round at
    every step)."""
    if x.dtype.itemsize < 4:
        return fn(x.astype(np.float32)).astype(x.dtype)
    return fn(x)


# -- probabilities and loss -----------------------------------------------------------

def softmax(scores, axis=-1):
    """Numerically stable softmax over ``axis``, computed in float32 at least."""
    xp = array_module(scores)
    work = scores.astype(xp.promote_types(scores.dtype, xp.float32))
    exp = xp.exp(work - work.max(axis=axis, keepdims=True))  # the largest is 0: no overflow
    return exp / exp.sum(axis=axis, keepdims=True)


@replaceable
def masked_softmax(scores, mask=None, divisor=1.0, dtype=None):
    """Attention probabilities: softmax(scores / divisor + mask) over the last axis.

    scores [batch, heads, queries, keys], additive ``mask`` broadcastable to it; computed in
    float32, returned in ``dtype`` (default: float32 at least).

    A masked score (the mask holds the dtype's most negative value there) becomes exactly
    that value, whatever the score was: so a fully masked row is uniform in every dtype, as
    in transformers (float32: adding -3.4e38 absorbs any score; float16, which it adds in
    float16: -65504 + s rounds back to -65504).  Adding a float16 mask in float32 instead
    would keep the scores distinguishable and the row not uniform.
    """
    xp = array_module(scores)
    work = scores.astype(np.promote_types(scores.dtype, np.float32)) / divisor
    if mask is not None:
        lowest = xp.finfo(mask.dtype).min
        work = xp.where(mask == lowest, lowest, work + mask)
    probs = softmax(work, axis=-1)  # [batch, heads, queries, keys]
    return probs if dtype is None else probs.astype(dtype)


@replaceable
def log_softmax(scores, axis=-1):
    """log(softmax(scores)) without forming the softmax, in float32 at least."""
    xp = array_module(scores)
    work = scores.astype(xp.promote_types(scores.dtype, xp.float32))
    shifted = work - work.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


@replaceable
def cross_entropy(logits, labels, ignore_index=-100):
    """Mean negative log-likelihood of ``labels`` under ``logits``, skipping ``ignore_index``.

    logits [n, vocab], labels [n] -> scalar (float32).  Like torch, an all-ignored batch
    gives NaN (0 / 0).
    """
    xp = array_module(logits)
    log_probs = log_softmax(logits, axis=-1)  # [n, vocab]
    keep = labels != ignore_index  # [n]
    safe = xp.where(keep, labels, 0)
    picked = xp.take_along_axis(log_probs, safe[:, None], axis=-1)[:, 0]  # [n, 1] -> [n]
    total = -(picked * keep).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / keep.sum()).astype(log_probs.dtype)  # float32, as torch's loss


# -- dropout (training only) ----------------------------------------------------------

def dropout_mask(shape, p, generator, dtype):
    """The scaled keep mask of dropout: 1 / (1 - p) with probability 1 - p, else 0.

    ``generator`` is a NumPy (or CuPy) ``Generator`` (``xp.random.default_rng(seed)``),
    so a seeded run draws the same masks.  -> [*shape] of ``dtype``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p={p!r}: the dropout probability must be in [0, 1)")
    keep = generator.random(shape) >= p  # [*shape] bool, True with probability 1 - p
    return keep.astype(dtype) * (1.0 / (1.0 - p))


def dropout(x, p, generator=None, mask=None):
    """y = x * mask, mask = keep / (1 - p) (so E[y] = x).  -> (y, mask).

    Pass ``mask`` to use a given mask (e.g. one torch drew); otherwise one is drawn from
    ``generator``.  p == 0 returns x itself and mask None.
    """
    if mask is None:
        if p == 0.0:
            return x, None
        if generator is None:
            raise ValueError("dropout with p > 0 needs a generator or a mask")
        mask = dropout_mask(x.shape, p, generator, x.dtype)
    return x * mask, mask


# -- search ---------------------------------------------------------------------------

@replaceable
def top_k(values, k):
    """The k largest values of each row, best first (ties: lower index first).

    values [batch, n] -> (top values [batch, k], their indices [batch, k]).  A stable
    sort of the negated scores puts the best first and, among equal scores, the lower
    index first.  (On the CPU the speed wing finds the same k from block maxima.)
    """
    xp = array_module(values)
    indices = xp.argsort(-values, axis=-1, kind="stable")[:, :k]  # [batch, n] -> [batch, k]
    return xp.take_along_axis(values, indices, axis=-1), indices
