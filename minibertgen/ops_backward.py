"""Backward passes of the ops in ops.py, one per forward function, in the same order.

Each ``*_backward`` takes the gradient of the loss with respect to the op's output
(``dout``, written dL/dy below) and what the forward saw, and returns the gradients with
respect to the op's inputs and weights.  Nothing is done in place on its arguments, and
the array module comes from the inputs, so the same code runs on NumPy and CuPy.

The ops marked ``@replaceable`` have faster CPU versions in fast/cpu_training.py, tested
equal to these (looked up by name: dispatch.py).
"""
from __future__ import annotations

import math

import numpy as np

from .backend import array_module, scatter_add
from .dispatch import replaceable
from .ops import erf, sigmoid

__all__ = [
    "embedding_backward",
    "linear_backward",
    "layer_norm_backward",
    "activation_backward",
    "softmax_backward",
    "masked_softmax_backward",
    "cross_entropy_backward",
    "dropout_backward",
]


@replaceable
def embedding_backward(dout, ids, table, padding_idx=None):
    """y = table[ids]  =>  dL/dtable[v] = sum of dL/dy[i] over every position i with ids[i] == v.

    dout [..., hidden], ids [...], table [vocab, hidden] (the looked-up table: its shape,
    dtype and memory order) -> dtable [vocab, hidden].  A repeated id receives the sum of
    its rows.  Like torch's ``nn.Embedding(padding_idx=...)``, the padding row gets
    nothing from the lookup.
    """
    hidden = dout.shape[-1]
    flat_ids = ids.reshape(-1)  # [...] -> [n]
    rows = dout.reshape(-1, hidden)  # [..., hidden] -> [n, hidden]
    if padding_idx is not None:
        rows = rows * (flat_ids != padding_idx)[:, None].astype(rows.dtype)  # the padding row's share is 0
    dtable = array_module(dout).zeros_like(table)  # [vocab, hidden], laid out as the table (fast/layout.py)
    return scatter_add(dtable, flat_ids, rows)


@replaceable
def linear_backward(dout, x, weight, has_bias=True):
    """y = x W^T + b  =>  dL/dx = dL/dy W,  dL/dW = (dL/dy)^T x,  dL/db = sum over rows of dL/dy.

    dout [..., out], x [..., in], weight [out, in]
    -> (dx [..., in], dweight [out, in], dbias [out] or None).
    """
    rows_out = dout.reshape(-1, dout.shape[-1])  # [..., out] -> [rows, out]
    rows_in = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    dx = (rows_out @ weight).reshape(*dout.shape[:-1], weight.shape[1])  # [rows, out] @ [out, in] -> [..., in]
    dweight = rows_out.T @ rows_in  # [out, rows] @ [rows, in] -> [out, in]
    dbias = rows_out.sum(axis=0) if has_bias else None  # [out]
    return dx, dweight, dbias


@replaceable
def layer_norm_backward(dout, x, weight, eps, residual=None):
    """y = xhat * w + b with xhat = (s - mean(s)) / sqrt(var(s) + eps), s = x + residual.

    With g = dL/dy * w (the gradient reaching xhat) and rstd = 1 / sqrt(var + eps):
        dL/ds = rstd * (g - mean(g) - xhat * mean(g * xhat))      (means over the last axis)
        dL/dw = sum over rows of dL/dy * xhat,   dL/db = sum over rows of dL/dy
    The residual is added before the norm, so dL/dresidual = dL/dx = dL/ds.
    dout, x [..., hidden] -> (ds [..., hidden], dweight [hidden], dbias [hidden]).
    Statistics are recomputed from the input (cheap: one pass), in float32 at least.
    """
    xp = array_module(x)
    work_dtype = np.promote_types(x.dtype, np.float32)
    s = x if residual is None else x + residual
    s = s.astype(work_dtype, copy=False)
    g_out = dout.astype(work_dtype, copy=False)
    mean = s.mean(axis=-1, keepdims=True)  # [..., hidden] -> [..., 1]
    rstd = 1.0 / xp.sqrt(((s - mean) ** 2).mean(axis=-1, keepdims=True) + eps)  # [..., 1]
    xhat = (s - mean) * rstd  # [..., hidden]
    g = g_out * weight
    ds = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    hidden = x.shape[-1]
    dweight = (g_out * xhat).reshape(-1, hidden).sum(axis=0)  # [..., hidden] -> [hidden]
    dbias = g_out.reshape(-1, hidden).sum(axis=0)  # [hidden]
    as_weight = weight.dtype
    return ds.astype(x.dtype, copy=False), dweight.astype(as_weight, copy=False), dbias.astype(as_weight, copy=False)


# -- activations: y = f(x)  =>  dL/dx = dL/dy * f'(x) ----------------------------------

def gelu_derivative(x):
    """GELU(x) = x Phi(x)  =>  GELU'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).

    Phi is built on ops.erf, the same erf the forward uses.
    """
    xp = array_module(x)
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


def gelu_tanh_derivative(x):
    """y = 0.5 x (1 + tanh(u)), u = c (x + 0.044715 x^3), c = sqrt(2/pi)
    =>  y' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) c (1 + 3 * 0.044715 x^2)."""
    xp = array_module(x)
    c = math.sqrt(2.0 / math.pi)
    t = xp.tanh(c * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)


def quick_gelu_derivative(x):
    """y = x s(1.702 x), s the sigmoid  =>  y' = s + 1.702 x s (1 - s)."""
    s = sigmoid(1.702 * x)
    return s + 1.702 * x * s * (1.0 - s)


def relu_derivative(x):
    """y = max(x, 0)  =>  y' = 1 where x > 0, else 0 (0 at x = 0, as torch)."""
    return (x > 0).astype(x.dtype)


def relu6_derivative(x):
    """y = min(max(x, 0), 6)  =>  y' = 1 where 0 < x < 6, else 0 (torch's hardtanh)."""
    return ((x > 0) & (x < 6)).astype(x.dtype)


def silu_derivative(x):
    """y = x s(x)  =>  y' = s + x s (1 - s)."""
    s = sigmoid(x)
    return s + x * s * (1.0 - s)


def tanh_derivative(x):
    """y = tanh x  =>  y' = 1 - tanh^2 x."""
    t = array_module(x).tanh(x)
    return 1.0 - t * t


def sigmoid_derivative(x):
    """y = s(x)  =>  y' = s (1 - s)."""
    s = sigmoid(x)
    return s * (1.0 - s)


def identity_derivative(x):
    """y = x  =>  y' = 1."""
    return array_module(x).ones_like(x)


def mish_derivative(x):
    """y = x tanh(sp), sp = log(1 + e^x)  =>  y' = tanh(sp) + x (1 - tanh^2 sp) s(x)."""
    xp = array_module(x)
    t = xp.tanh(xp.logaddexp(0, x))
    return t + x * (1.0 - t * t) * sigmoid(x)


_DERIVATIVES = {
    "gelu": gelu_derivative,
    "gelu_python": gelu_derivative,
    "gelu_new": gelu_tanh_derivative,
    "gelu_pytorch_tanh": gelu_tanh_derivative,
    "gelu_fast": gelu_tanh_derivative,
    "gelu_accurate": gelu_tanh_derivative,
    "quick_gelu": quick_gelu_derivative,
    "relu": relu_derivative,
    "relu6": relu6_derivative,
    "silu": silu_derivative,
    "swish": silu_derivative,
    "tanh": tanh_derivative,
    "sigmoid": sigmoid_derivative,
    "linear": identity_derivative,
    "mish": mish_derivative,
}


@replaceable
def activation_backward(name, dout, x):
    """dL/dx = dL/dy * f'(x) for the activation called ``name`` (ops.activation's names).

    dout, x [...] -> dx [...], computed in float32 at least, as the forward.
    """
    try:
        derivative = _DERIVATIVES[name]
    except KeyError:
        raise ValueError(f"hidden_act={name!r}: expected one of {', '.join(_DERIVATIVES)}") from None
    work = x.astype(np.promote_types(x.dtype, np.float32), copy=False)
    return (dout * derivative(work)).astype(dout.dtype, copy=False)


# -- probabilities and loss -----------------------------------------------------------

@replaceable
def softmax_backward(dprobs, probs):
    """p = softmax(z) over the last axis  =>  dL/dz = p * (dL/dp - sum_j dL/dp_j p_j).

    dprobs, probs [..., n] -> dscores [..., n].
    """
    weighted = (dprobs * probs).sum(axis=-1, keepdims=True)  # [..., n] -> [..., 1]
    return probs * (dprobs - weighted)


def masked_softmax_backward(dprobs, probs, divisor=1.0):
    """p = softmax(scores / divisor + mask)  =>  dL/dscores = softmax_backward(dL/dp, p) / divisor.

    The mask is a constant: it gets no gradient.  A fully masked row has uniform p and
    still passes a gradient, as in torch.  dprobs, probs [..., keys] -> dscores [..., keys].
    """
    return softmax_backward(dprobs, probs) / divisor


@replaceable
def cross_entropy_backward(logits, labels, ignore_index=-100, dloss=1.0):
    """L = -(1/N) sum over counted rows i of log softmax(logits_i)[labels_i], N = rows counted
    =>  dL/dlogits_i = (softmax(logits_i) - onehot(labels_i)) / N for a counted row, 0 otherwise.

    logits [n, vocab], labels [n] -> dlogits [n, vocab] (logits' dtype).  ``dloss`` is the
    gradient arriving at the loss (1 for ``loss.backward()``).  When every label is
    ``ignore_index`` the loss is NaN and, as in torch, the gradient is all zeros.
    """
    xp = array_module(logits)
    work = logits.astype(np.promote_types(logits.dtype, np.float32), copy=False)
    shifted = work - work.max(axis=-1, keepdims=True)  # [n, vocab]
    probs = xp.exp(shifted)
    probs = probs / probs.sum(axis=-1, keepdims=True)  # softmax, [n, vocab]
    keep = labels != ignore_index  # [n]
    count = int(keep.sum())
    if count == 0:
        return xp.zeros_like(logits)
    rows = xp.arange(labels.shape[0])[keep]  # [counted]
    dlogits = probs  # our own array: subtract the one-hot of the labels from it
    dlogits[rows, labels[keep]] -= 1.0
    dlogits *= keep[:, None].astype(probs.dtype) * (dloss / count)  # ignored rows -> 0
    return dlogits.astype(logits.dtype, copy=False)


# -- dropout (ops.dropout) -------------------------------------------------------------

def dropout_backward(dout, mask):
    """y = x * mask  =>  dL/dx = dL/dy * mask (no mask: dropout was off, dL/dx = dL/dy)."""
    return dout if mask is None else dout * mask
