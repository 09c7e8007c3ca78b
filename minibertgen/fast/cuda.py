"""GPU versions of the reference ops: each routes a CuPy array to a fused kernel
(cuda_kernels.py) when one fits, else falls back to the ops.py / attention.py function
it replaces (looked up by name: dispatch.py).

On a GPU a decode step is limited by how many kernels Python launches, not by
arithmetic, so each fused kernel does a whole reference function in one launch, and the
products of a decode step avoid cuBLAS (which a CUDA graph cannot capture under CuPy).
"""
from __future__ import annotations

import math

import numpy as np

from .. import attention, ops
from . import cuda_attention, cuda_fourbit, preview
from . import cuda_kernels as kernels

__all__ = ["KERNELS"]


def linear(x, weight, bias=None):
    """ops.linear: a few rows in one kernel (bias included; 4-bit weights too), many rows in one
    direct cuBLAS call."""
    if getattr(weight, "is_quantized", False):
        rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
        if cuda_fourbit.fits(rows, weight):  # a decode step's few rows, straight from the 4-bit codes
            return cuda_fourbit.few_rows_linear_4bit(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])
        y = weight.rmatmul_t(x)  # x @ W.T from packed 8/4-bit codes (quantization/)
        return y if bias is None else y + bias
    if not kernels.supports(x.dtype):
        return ops.linear.reference(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    if kernels.few_rows_linear_fits(rows, weight):
        return kernels.few_rows_linear(rows, weight, bias).reshape(*x.shape[:-1], weight.shape[0])  # -> [..., out]
    y = kernels.matmul_nt(rows, weight)  # [rows, out]
    if bias is not None:
        y += bias
    return y.reshape(*x.shape[:-1], weight.shape[0])  # -> [..., out]


def add_and_norm(sublayer_out, weight, bias, norm_weight, norm_bias, eps, residual):
    """ops.add_and_norm for many rows (the encoder, a prompt): the dense product by cuBLAS,
    then its bias, the residual and LayerNorm in one kernel, one launch fewer than the
    product, the bias add and the LayerNorm apart.  A preview kernel (preview.py); a decode
    step's few rows (whose product adds its bias itself) and quantized weights keep the
    op's own steps (training never calls this op: model.add_and_norm runs them apart)."""
    rows = sublayer_out.reshape(-1, sublayer_out.shape[-1])  # [..., in] -> [rows, in]
    if (not preview.enabled() or bias is None or getattr(weight, "is_quantized", False)
            or not kernels.supports(rows.dtype) or weight.dtype != rows.dtype
            or kernels.few_rows_linear_fits(rows, weight)):
        return ops.add_and_norm.reference(sublayer_out, weight, bias, norm_weight, norm_bias, eps, residual)
    projected = kernels.matmul_nt(rows, weight)  # [rows, out], no bias yet
    out = kernels.layer_norm(projected, norm_weight, norm_bias, eps,
                             residual=residual.reshape(projected.shape), add=bias)  # [rows, out]
    return out.reshape(*sublayer_out.shape[:-1], weight.shape[0])  # -> [..., out]


def layer_norm(x, weight, bias, eps, residual=None):
    if not kernels.supports(x.dtype):
        return ops.layer_norm.reference(x, weight, bias, eps, residual)
    return kernels.layer_norm(x, weight, bias, eps, residual=residual)


_GELU_FORMS = {ops.gelu: "erf", ops.gelu_tanh: "tanh"}


def apply_activation(fn, x):
    if fn in _GELU_FORMS and kernels.supports(x.dtype):
        return kernels.gelu(x, _GELU_FORMS[fn])
    return ops.apply_activation.reference(fn, x)


def masked_softmax(scores, mask=None, divisor=1.0, dtype=None):
    out_dtype = np.dtype(dtype) if dtype is not None else np.promote_types(scores.dtype, np.float32)
    if (scores.ndim == 4 and (mask is None or mask.ndim == 4) and kernels.supports(scores.dtype)
            and kernels.supports(out_dtype)):
        return kernels.masked_softmax(scores, mask, divisor, out_dtype)
    return ops.masked_softmax.reference(scores, mask, divisor, dtype)


def attend(query, key, value, mask, *, head_mask=None, relative=None, record=None):
    """attention.attend for one new query (a decode step): q . k and p . v without cuBLAS; for
    many queries (the encoder, a prompt), one kernel for all of it when the preview kernels
    are on (cuda_attention.py)."""
    if relative is not None or record is not None or not kernels.supports(query.dtype):
        return attention.attend.reference(query, key, value, mask, head_mask=head_mask, relative=relative,
                                          record=record)
    if query.shape[2] != 1:
        if head_mask is None and cuda_attention.fits(query, key, value, mask):
            return cuda_attention.prefill_attention(query, key, value, mask, math.sqrt(query.shape[-1]))
        return attention.attend.reference(query, key, value, mask, head_mask=head_mask)
    scores = kernels.one_query_scores(query, key)  # [batch, heads, 1, keys]
    probs = masked_softmax(scores, mask, math.sqrt(query.shape[-1]), dtype=value.dtype)
    if head_mask is not None:
        probs = probs * head_mask
    return kernels.one_query_values(probs, value), probs  # [batch, heads, 1, d]


KERNELS = {
    "linear": linear,
    "add_and_norm": add_and_norm,
    "layer_norm": layer_norm,
    "apply_activation": apply_activation,
    "masked_softmax": masked_softmax,
    "attend": attend,
}
