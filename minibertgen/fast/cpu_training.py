"""The CPU table for training: what a recorded forward, its backward and AdamW run on.

The same numbers as the reference (ops_backward.py, optim.py), computed on cache-sized
blocks.  Why (figures: benchmarks/results/training.txt and README, "Training"):

* ``adamw_update``: the reference's dozen steps each stream the whole parameter, its
  gradient and moments through memory (50M float32 parameters: ~200 MB an array, a
  dozen times a step).  On blocks of 64K elements the scratch stays in the cache, so
  w, g, m and v are read once and w, m and v written once.  Each block runs the
  reference update itself: an elementwise update of a slice is the update of that slice.
* ``linear_backward``: dL/dW of a weight stored transposed (fast/layout.py) is computed
  as (x^T dL/dy)^T, so it comes out in the weight's memory order (the same sums): AdamW
  then walks weight and gradient together instead of copying one into the other's order.
* ``activation_backward``: GELU's derivative (erf's polynomial, Phi + x phi) in place in
  one block-sized buffer instead of a dozen full-size temporaries.

The forward ops of fast/cpu.py are safe in a recorded forward (each returns a fresh
array and never writes into one the activation record keeps), so the table holds them
too; the beam-search top-k is not needed here.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops, ops_backward, optim
from . import cpu, threads

__all__ = ["TRAINING_KERNELS"]

BLOCK = cpu.BLOCK  # elements: 256 KiB of float32


def in_blocks(size, fn):
    """fn(part) for each block-sized slice of range(size); the first half of the blocks on
    this core, the second half on the other (threads.training_pool) when there is one."""
    def run(first, last):
        for start in range(first, last, BLOCK):
            fn(slice(start, min(start + BLOCK, last)))

    pool = threads.training_pool()
    if pool is None or size < 4 * BLOCK:
        run(0, size)
        return
    middle = (size // 2 + BLOCK - 1) // BLOCK * BLOCK  # halves on block boundaries
    pool.pair(lambda: run(0, middle), lambda: run(middle, size))


def adamw_update(w, g, m, v, **hyperparameters):
    """optim.adamw_update on one block of the flattened arrays at a time."""
    reference = optim.adamw_update.reference
    order = "C" if w.flags.c_contiguous else "F" if w.flags.f_contiguous else None
    if order is None or any(not a.flags[f"{order}_CONTIGUOUS"] for a in (m, v)):
        return reference(w, g, m, v, **hyperparameters)
    flat_w, flat_m, flat_v = (a.ravel(order=order) for a in (w, m, v))  # views, memory order
    flat_g = np.ravel(g, order=order)  # a view too, or (another memory order) a copy in w's order
    in_blocks(flat_w.size, lambda part: reference(flat_w[part], flat_g[part], flat_m[part], flat_v[part],
                                                  **hyperparameters))


def linear_backward(dout, x, weight, has_bias=True):
    """ops_backward.linear_backward, with dL/dW in the memory order of the weight."""
    if not (weight.flags.f_contiguous and not weight.flags.c_contiguous):
        return ops_backward.linear_backward.reference(dout, x, weight, has_bias)
    rows_out = dout.reshape(-1, dout.shape[-1])  # [..., out] -> [rows, out]
    rows_in = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    dx = (rows_out @ weight).reshape(*dout.shape[:-1], weight.shape[1])  # [rows, out] @ [out, in] -> [..., in]
    dweight = (rows_in.T @ rows_out).T  # ([in, rows] @ [rows, out]).T -> [out, in], Fortran order
    dbias = rows_out.sum(axis=0) if has_bias else None  # [out]
    return dx, dweight, dbias


_GELU_NAMES = ("gelu", "gelu_python")


def activation_backward(name, dout, x):
    """ops_backward.activation_backward, the erf GELU on blocks; other activations as the reference."""
    if name not in _GELU_NAMES or x.dtype != np.float32 or dout.dtype != np.float32:
        return ops_backward.activation_backward.reference(name, dout, x)
    flat_x = np.ascontiguousarray(x).reshape(-1)  # [...] -> [size]
    flat_dout = np.ascontiguousarray(dout).reshape(-1)
    dx = np.empty_like(flat_dout)
    in_blocks(flat_x.size, lambda part: gelu_backward_block(flat_dout[part], flat_x[part], dx[part]))
    return dx.reshape(dout.shape)  # [size] -> dout.shape


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


TRAINING_KERNELS = {
    **{name: fn for name, fn in cpu.KERNELS.items() if name != "_top_k"},
    "adamw_update": adamw_update,
    "linear_backward": linear_backward,
    "activation_backward": activation_backward,
}
