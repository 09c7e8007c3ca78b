"""GELU and its derivative on one block of a flat array, in NumPy: the steps that fast/cpu.py
(the forward) and fast/cpu_training.py (the backward) run block by block, and that
native.py's C loops repeat in one pass (and are checked against, bit for bit).
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops

__all__ = ["gelu_block", "gelu_backward_block"]


_HALF_ERF_A = tuple(a / 2 for a in ops.ERF_A)  # halved coefficients: the polynomial then gives h = erfc / 2
_ERF_P_OVER_ROOT2 = ops.ERF_P / math.sqrt(2.0)


def gelu_block(x, out):
    """ops.gelu of one block into ``out``, with two scratch buffers and no sign pass.

    With a = |x| and the erf polynomial of ops.erf (coefficients halved):
        t = 1 / (1 + p a / sqrt 2),  h = t (a1/2 + t (a2/2 + ...)) exp(-x^2 / 2) = (1 - erf(a / sqrt 2)) / 2,
    Phi(x) is 1 - h for x >= 0 and h for x < 0, so GELU(x) = x Phi(x) = max(x, 0) - a h.
    The same polynomial and exponential as the reference, rounded in another order (and
    without its 1 - (1 - 2h) for negative x, which cancels): equal to float32 rounding.
    At x = +inf, a h is inf * 0 = NaN, so +inf inputs (found by the block's maximum; a
    block holding a NaN is searched too) are set to +inf afterwards, the reference's (and
    torch's) GELU(+inf).
    """
    a = np.abs(x)  # scratch 1: |x|
    t = np.multiply(a, _ERF_P_OVER_ROOT2)  # scratch 2
    t += 1.0
    np.reciprocal(t, out=t)  # t
    a1, a2, a3, a4, a5 = _HALF_ERF_A
    poly = np.multiply(t, a5, out=out)  # Horner's rule, in place
    for coefficient in (a4, a3, a2, a1):
        poly += coefficient
        poly *= t
    np.multiply(x, x, out=t)  # t is free again: exp(-x^2 / 2) into it
    t *= -0.5
    np.exp(t, out=t)
    poly *= t  # h
    poly *= a  # |x| h
    np.maximum(x, _zeros(x.size, x.dtype), out=a)  # against an array of zeros: ~5x faster than against 0.0
    np.subtract(a, poly, out=poly)  # max(x, 0) - |x| h
    if not x.max() < np.inf:  # a fast reduction: +inf or NaN in the block (NaN in gives NaN out, as the reference)
        poly[x == np.inf] = np.inf
    return poly


_ZEROS = {}  # dtype -> a block of zeros (gelu_block's max(x, 0))


def _zeros(n, dtype):
    zeros = _ZEROS.get(np.dtype(dtype))
    if zeros is None or zeros.size < n:
        zeros = _ZEROS[np.dtype(dtype)] = np.zeros(max(n, 1 << 16), dtype=dtype)
    return zeros[:n]


def gelu_backward_block(dout, x, out):
    """dL/dx = dL/dy (Phi(x) + x phi(x)) for one block, into ``out``:
        z = x / sqrt 2,  t = 1 / (1 + p|z|),  e = exp(-z^2),
        erf|z| = 1 - t (a1 + t (a2 + ...)) e,  Phi = (1 + erf z) / 2,  phi = e / sqrt(2 pi)
    """
    z = x * (1.0 / math.sqrt(2.0))
    square = z * z
    np.abs(z, out=z)
    z *= ops.ERF_P
    z += 1.0
    np.reciprocal(z, out=z)  # t
    a1, a2, a3, a4, a5 = ops.ERF_A
    poly = np.multiply(z, a5, out=out)  # Horner's rule, in place
    for coefficient in (a4, a3, a2, a1):
        poly += coefficient
        poly *= z
    np.negative(square, out=square)
    np.exp(square, out=square)  # e = exp(-z^2) = exp(-x^2 / 2)
    poly *= square
    np.subtract(1.0, poly, out=poly)  # erf(|z|)
    np.copysign(poly, x, out=poly)  # erf(z)
    poly += 1.0
    poly *= 0.5  # Phi(x)
    square *= x
    square *= 1.0 / math.sqrt(2.0 * math.pi)  # x phi(x)
    poly += square
    poly *= dout
    return poly
