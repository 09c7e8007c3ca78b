"""The CPU table for training: what a recorded forward, its backward and AdamW run on.

The same numbers as the reference (ops_backward.py), computed on cache-sized blocks or
in C loops (native.py); the optimizer's ops are cpu_optim.py's, in the same table.  Why
(figures: benchmarks/results/training.txt and README, "Training"):

* ``linear_backward``: one GEMM over all rows for dL/dW, in the weight's memory order: a
  weight stored transposed (fast/layout.py) gets (x^T dL/dy)^T, so AdamW walks weight
  and gradient together instead of copying one into the other's order; dL/dbias is
  ones @ dL/dy (``cpu.column_sums``) instead of a NumPy reduction over the rows.
* ``cross_entropy`` and its backward: the loss over a 30522-word vocabulary makes
  [rows, vocab] arrays of 30 MB; the reference forms four of them each way.  Here a few
  rows at a time go through one scratch block (the forward) or straight into dL/dlogits
  (the backward), with the reference's steps per row, so the same numbers.
* ``embedding_backward``: a sort and one reduceat instead of np.add.at's per-element loop.
* ``layer_norm_backward``: one C loop over the rows (means and column sums in float64),
  or the reference's formula in three buffers instead of nine, its row means and column
  sums as products with ones (``cpu.row_means``, ``column_sums``).
* ``softmax_backward``: the reference's (dL/dp - sum(dL/dp * p)) * p in one buffer, the
  row sums by ``cpu.last_axis_sums``.  The BLAS sums add in their own order: equal to
  the reference within float32 rounding (tests/training/test_fast_training.py).
* ``activation_backward``: GELU's derivative (erf's polynomial, Phi + x phi) in one C pass
  after NumPy's exponential (the same bits as gelu_blocks.py's NumPy blocks, which run
  without the C loops).
* The vocabulary-sized gradients (the LM head's weight, the embedding tables) reuse last
  step's memory when nothing else holds it (buffers.py).

The forward ops of fast/cpu.py are safe in a recorded forward (each returns a fresh
array and never writes into one the activation record keeps), so the table holds them
too; the beam-search top-k is not needed here.
"""
from __future__ import annotations

import numpy as np

from .. import ops, ops_backward
from . import buffers, cpu, native, threads
from .cpu_optim import NATIVE_SPLIT, OPTIMIZER_KERNELS
from .gelu_blocks import gelu_backward_block

__all__ = ["TRAINING_KERNELS"]

BLOCK = cpu.BLOCK  # elements: 256 KiB of float32
ROWS_SPLIT = 1 << 20  # elements: LayerNorm's backward (a few passes per row, in cache) below this on one core


def linear_backward(dout, x, weight, has_bias=True):
    """ops_backward.linear_backward, with dL/dW in the memory order of the weight and
    dL/db as a product with ones (fast/cpu.py's column_sums)."""
    if not (dout.dtype == x.dtype == weight.dtype == np.float32):  # (dL/dW is written into a float32 array)
        return ops_backward.linear_backward.reference(dout, x, weight, has_bias)
    rows_out = dout.reshape(-1, dout.shape[-1])  # [..., out] -> [rows, out]
    rows_in = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    dx = (rows_out @ weight).reshape(*dout.shape[:-1], weight.shape[1])  # [rows, out] @ [out, in] -> [..., in]
    if weight.flags.f_contiguous and not weight.flags.c_contiguous:
        dweight = buffers.reusable(weight, "linear_backward", weight.shape, np.float32, "F")  # (a big one: last step's)
        np.matmul(rows_in.T, rows_out, out=dweight.T)  # ([in, rows] @ [rows, out]).T -> [out, in], Fortran order
    else:
        dweight = buffers.reusable(weight, "linear_backward", weight.shape, np.float32, "C")
        np.matmul(rows_out.T, rows_in, out=dweight)  # [out, rows] @ [rows, in] -> [out, in]
    dbias = cpu.column_sums(rows_out) if has_bias else None  # [out]
    return dx, dweight, dbias


def embedding_backward(dout, ids, table, padding_idx=None):
    """ops_backward.embedding_backward without np.add.at (a slow per-element loop): the
    rows sorted by id (stably, so each id's rows keep their order and are summed in the
    same order as the reference's), summed per id with one reduceat, written once."""
    if dout.dtype != np.float32 or table.dtype != np.float32:
        return ops_backward.embedding_backward.reference(dout, ids, table, padding_idx)
    flat_ids = ids.reshape(-1)  # [...] -> [n]
    rows = dout.reshape(-1, dout.shape[-1])  # [..., hidden] -> [n, hidden]
    if padding_idx is not None:
        counted = flat_ids != padding_idx  # the padding row gets nothing
        flat_ids, rows = flat_ids[counted], rows[counted]
    order = "F" if table.flags.f_contiguous and not table.flags.c_contiguous else "C"
    dtable = buffers.reusable(table, "embedding_backward", table.shape, table.dtype, order)  # [vocab, hidden]
    dtable.fill(0)  # (laid out as the table; a big one is last step's when nothing holds it: buffers.py)
    if flat_ids.size == 0:
        return dtable
    order = np.argsort(flat_ids, kind="stable")
    sorted_ids = flat_ids[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))  # first row of each id
    dtable[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)  # [ids, hidden]
    return dtable


def layer_norm_backward(dout, x, weight, eps, residual=None):
    """ops_backward.layer_norm_backward with its steps in three buffers instead of nine,
    and its sums as BLAS products with ones (fast/cpu.py's row_sums: float32 rounding
    apart, the reference's numbers; other dtypes as the reference)."""
    if not (x.dtype == dout.dtype == weight.dtype == np.float32):
        return ops_backward.layer_norm_backward.reference(dout, x, weight, eps, residual)
    native_result = _layer_norm_backward_in_c(dout, x, weight, eps, residual)
    if native_result is not None:
        return native_result
    shape, hidden = x.shape, x.shape[-1]
    x2 = x.reshape(-1, hidden)  # [..., hidden] -> [rows, hidden]
    dout2 = np.ascontiguousarray(dout).reshape(-1, hidden)  # [..., hidden] -> [rows, hidden]
    # s (the residual's [..., hidden] as [rows, hidden]), then s - mean, then xhat
    xhat = x2 + residual.reshape(-1, hidden) if residual is not None else x2.copy()
    xhat -= cpu.row_means(xhat)  # [rows, 1]
    scratch = xhat * xhat
    rstd = 1.0 / np.sqrt(cpu.row_means(scratch) + eps)  # [rows, 1]
    xhat *= rstd
    np.multiply(dout2, xhat, out=scratch)
    dweight = cpu.column_sums(scratch)  # [rows, hidden] -> [hidden]
    dbias = cpu.column_sums(dout2)  # [hidden]
    g = dout2 * weight  # the gradient reaching xhat, then dL/ds
    np.multiply(g, xhat, out=scratch)
    projection = cpu.row_means(scratch)  # mean(g xhat), [rows, 1]
    g -= cpu.row_means(g)
    xhat *= projection
    g -= xhat
    g *= rstd
    return g.reshape(shape), dweight, dbias  # [rows, hidden] -> [..., hidden]


def _layer_norm_backward_in_c(dout, x, weight, eps, residual):
    """layer_norm_backward in one C loop per half of the rows (native.py): the same steps,
    its means and column sums added in float64.  None where the loop cannot take the arrays."""
    lib = native.library()
    hidden = x.shape[-1]
    given = (dout, x) if residual is None else (dout, x, residual)
    arrays = [a.reshape(-1, hidden) for a in given]  # each [..., hidden] -> [rows, hidden]
    if lib is None or not all(cpu.float32_rows(a, weight) for a in arrays):
        return None
    dout2, x2, residual2 = arrays[0], arrays[1], arrays[2] if residual is not None else None
    ds = np.empty_like(x2)  # [rows, hidden]
    shares = threads.in_halves(x2.shape[0], lambda start, stop: native.layer_norm_backward_rows(
        lib, dout2, x2, residual2, weight, eps, ds, start, stop), ROWS_SPLIT // hidden)
    dweight = sum(share[0] for share in shares).astype(np.float32)  # [hidden]
    dbias = sum(share[1] for share in shares).astype(np.float32)
    return ds.reshape(x.shape), dweight, dbias  # [rows, hidden] -> [..., hidden]


def _row_blocks(rows, width):
    """Slices of range(rows) holding about BLOCK elements each (at least one row)."""
    step = max(1, BLOCK // max(1, width))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _shifted_exp_sums(block, scratch):
    """scratch <- exp(block - max); -> (max [rows, 1], sum of scratch [rows, 1]): the
    reference softmax's steps for these rows, so the same numbers."""
    top = block.max(axis=-1, keepdims=True)  # [rows, 1]
    np.subtract(block, top, out=scratch)
    np.exp(scratch, out=scratch)
    return top, scratch.sum(axis=-1, keepdims=True)


def cross_entropy(logits, labels, ignore_index=-100):
    """ops.cross_entropy without the [n, vocab] log-probabilities: for a few rows at a
    time, log sum exp in one scratch block, then only the labels' log-probabilities.
    (Each picked log-probability is (score - max) - log(sum), as the reference computes it.)"""
    if logits.dtype != np.float32 or logits.ndim != 2:
        return ops.cross_entropy.reference(logits, labels, ignore_index)
    keep = labels != ignore_index  # [n]
    safe = np.where(keep, labels, 0)
    picked = np.empty(logits.shape[0], dtype=np.float32)  # [n]
    scratch = np.empty((max(1, BLOCK // logits.shape[1]), logits.shape[1]), dtype=np.float32)
    for rows in _row_blocks(*logits.shape):
        block = logits[rows]
        top, sums = _shifted_exp_sums(block, scratch[: block.shape[0]])
        chosen = np.take_along_axis(block, safe[rows, None], axis=-1)  # [rows, 1]
        picked[rows] = ((chosen - top) - np.log(sums))[:, 0]
    total = -(picked * keep).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / keep.sum()).astype(np.float32)


def cross_entropy_backward(logits, labels, ignore_index=-100, dloss=1.0):
    """ops_backward.cross_entropy_backward written straight into dL/dlogits, a few rows at
    a time: softmax, minus the labels' one-hot, times keep / count (the reference's steps)."""
    if logits.dtype != np.float32 or logits.ndim != 2:
        return ops_backward.cross_entropy_backward.reference(logits, labels, ignore_index, dloss)
    keep = labels != ignore_index  # [n]
    count = int(keep.sum())
    if count == 0:
        return np.zeros_like(logits)
    dlogits = np.empty_like(logits)  # [n, vocab]
    scale = keep.astype(np.float32) * (dloss / count)  # [n]: 0 for an ignored row
    for rows in _row_blocks(*logits.shape):
        out = dlogits[rows]
        _, sums = _shifted_exp_sums(logits[rows], out)
        out /= sums  # softmax
        counted = np.flatnonzero(keep[rows])
        out[counted, labels[rows][counted]] -= 1.0
        out *= scale[rows, None]
    return dlogits


def softmax_backward(dprobs, probs):
    """ops_backward.softmax_backward with the rows' sums as BLAS products (cpu.last_axis_sums)."""
    if dprobs.dtype != np.float32 or probs.dtype != np.float32:
        return ops_backward.softmax_backward.reference(dprobs, probs)
    out = dprobs * probs
    weighted = cpu.last_axis_sums(out)  # [..., n] -> [..., 1]
    np.subtract(dprobs, weighted, out=out)
    out *= probs  # p (dL/dp - sum_j dL/dp_j p_j)
    return out


_GELU_NAMES = ("gelu", "gelu_python")


def activation_backward(name, dout, x):
    """ops_backward.activation_backward, the erf GELU on blocks; other activations as the reference."""
    if name not in _GELU_NAMES or x.dtype != np.float32 or dout.dtype != np.float32:
        return ops_backward.activation_backward.reference(name, dout, x)
    flat_x = np.ascontiguousarray(x).reshape(-1)  # [...] -> [size]
    flat_dout = np.ascontiguousarray(dout).reshape(-1)
    dx = np.empty_like(flat_dout)
    lib = native.library()
    if lib is not None:  # one pass in C per core (native.py): the same steps, in one loop
        threads.in_halves(flat_x.size, lambda start, stop: native.gelu_backward(
            lib, flat_dout, flat_x, dx, start, stop), NATIVE_SPLIT)
    else:
        threads.in_blocks(flat_x.size, lambda part: gelu_backward_block(flat_dout[part], flat_x[part], dx[part]), BLOCK)
    return dx.reshape(dout.shape)  # [size] -> dout.shape


TRAINING_KERNELS = {
    **{name: fn for name, fn in cpu.KERNELS.items() if name != "top_k"},
    **OPTIMIZER_KERNELS,
    "linear_backward": linear_backward,
    "embedding_backward": embedding_backward,
    "layer_norm_backward": layer_norm_backward,
    "cross_entropy": cross_entropy,
    "cross_entropy_backward": cross_entropy_backward,
    "activation_backward": activation_backward,
    "softmax_backward": softmax_backward,
}
