"""The CPU table for training: what a recorded forward, its backward and AdamW run on.

The same numbers as the reference (ops_backward.py, optim.py), computed on cache-sized
blocks.  Why (figures: benchmarks/results/training.txt and README, "Training"):

* ``adamw_update``: the reference's dozen steps each stream the whole parameter, its
  gradient and moments through memory (50M float32 parameters: ~200 MB an array, a
  dozen times a step).  On blocks of 64K elements the scratch stays in the cache, so
  w, g, m and v are read once and w, m and v written once.  Each block runs the
  reference update itself: an elementwise update of a slice is the update of that slice.
* ``linear_backward``: one GEMM over all rows for dL/dW, in the weight's memory order: a
  weight stored transposed (fast/layout.py) gets (x^T dL/dy)^T, so AdamW walks weight
  and gradient together instead of copying one into the other's order; dL/dbias is
  ones @ dL/dy (``cpu.column_sums``) instead of a NumPy reduction over the rows.
* ``cross_entropy`` and its backward: the loss over a 30522-word vocabulary makes
  [rows, vocab] arrays of 30 MB; the reference forms four of them each way.  Here a few
  rows at a time go through one scratch block (the forward) or straight into dL/dlogits
  (the backward), with the reference's steps per row, so the same numbers.
* ``embedding_backward``: a sort and one reduceat instead of np.add.at's per-element loop.
* ``layer_norm_backward``: the reference's formula in three buffers instead of nine, its
  row means and column sums as products with ones (``cpu.row_means``, ``column_sums``).
* ``softmax_backward``: the reference's (dL/dp - sum(dL/dp * p)) * p in one buffer, the
  row sums by ``cpu.last_axis_sums``.  The BLAS sums add in their own order: equal to
  the reference within float32 rounding (tests/training/test_fast_training.py).
* ``activation_backward``: GELU's derivative (erf's polynomial, Phi + x phi) in place in
  one block-sized buffer instead of a dozen full-size temporaries.

The forward ops of fast/cpu.py are safe in a recorded forward (each returns a fresh
array and never writes into one the activation record keeps), so the table holds them
too; the beam-search top-k is not needed here.
"""
from __future__ import annotations


import numpy as np

from .. import ops, ops_backward, optim
from . import buffers, cpu, native, threads
from .gelu_blocks import gelu_backward_block

__all__ = ["TRAINING_KERNELS"]

BLOCK = cpu.BLOCK  # elements: 256 KiB of float32
NATIVE_SPLIT = 1 << 15  # elements: smaller C passes are not worth handing to the second core
ROWS_SPLIT = 1 << 20  # elements: LayerNorm's backward (a few passes per row, in cache) below this on one core


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


def in_halves(size, fn):
    """fn(start, stop) over range(size): in two halves on both cores (threads.training_pool)
    when there is a pool and enough work, else at once on this core."""
    pool = threads.training_pool()
    if pool is None or size < NATIVE_SPLIT:
        fn(0, size)
        return
    middle = size // 2
    pool.pair(lambda: fn(0, middle), lambda: fn(middle, size))


def adamw_update(w, g, m, v, **hyperparameters):
    """optim.adamw_update in one C pass per core (native.py), or else one block of the
    flattened arrays at a time: the same bits either way."""
    reference = optim.adamw_update.reference
    order = "C" if w.flags.c_contiguous else "F" if w.flags.f_contiguous else None
    if order is None or any(not a.flags[f"{order}_CONTIGUOUS"] for a in (m, v)):
        return reference(w, g, m, v, **hyperparameters)  # (no flat view)
    flat_w, flat_m, flat_v = (a.ravel(order=order) for a in (w, m, v))  # views, memory order
    flat_g = np.ravel(g, order=order)  # a view too, or (another memory order) a copy in w's order
    lib = native.library() if all(a.dtype == np.float32 for a in (flat_w, flat_g, flat_m, flat_v)) else None
    if lib is not None:
        in_halves(flat_w.size, lambda start, stop: native.adamw_update(lib, flat_w, flat_g, flat_m, flat_v,
                                                                       start, stop, **hyperparameters))
    elif w.size <= BLOCK:
        reference(w, g, m, v, **hyperparameters)  # one block already
    else:
        in_blocks(flat_w.size, lambda part: reference(flat_w[part], flat_g[part], flat_m[part], flat_v[part],
                                                      **hyperparameters))


def adamw_updates(updates, **hyperparameters):
    """optim.adamw_updates: the whole group's updates in C (native.py), the elements of all
    its parameters cut into two halves of equal size, one per core, handed over once
    (per parameter, the hand-over to the second core costs more than a small update);
    parameters the C loop cannot take (no flat float32 views) as adamw_update."""
    lib = native.library()
    pieces = []  # (w, g, m, v, step): flat float32 views in one memory order
    for w, g, m, v, step in updates:
        flat = _flat_views(w, g, m, v) if lib is not None else None
        if flat is None:
            adamw_update(w, g, m, v, step=step, **hyperparameters)
        else:
            pieces.append((*flat, step))
    if not pieces:
        return

    def run(share):
        for (w, g, m, v, step), start, stop in share:
            native.adamw_update(lib, w, g, m, v, start, stop, step=step, **hyperparameters)

    total = sum(piece[0].size for piece in pieces)
    pool = threads.training_pool()
    if pool is None or total < NATIVE_SPLIT:
        run([(piece, 0, piece[0].size) for piece in pieces])
        return
    first, second = _two_shares(pieces, total // 2)
    pool.pair(lambda: run(first), lambda: run(second))


def _flat_views(w, g, m, v):
    """w, m, v as flat views in their memory order and g in the same order (a copy when it
    is laid out otherwise), all float32; None when w, m and v have no common flat view."""
    order = "C" if w.flags.c_contiguous else "F" if w.flags.f_contiguous else None
    if order is None or any(not a.flags[f"{order}_CONTIGUOUS"] for a in (m, v)):
        return None
    flat = [a.ravel(order=order) for a in (w, m, v)]
    flat.insert(1, np.ravel(g, order=order))
    return flat if all(a.dtype == np.float32 for a in flat) else None


def _two_shares(pieces, half, size_of=lambda piece: piece[0].size):
    """The pieces' elements in order, cut after ``half`` of them: two lists of (piece, start, stop)."""
    first, second, seen = [], [], 0
    for piece in pieces:
        size = size_of(piece)
        cut = min(max(half - seen, 0), size)
        if cut:
            first.append((piece, 0, cut))
        if cut < size:
            second.append((piece, cut, size))
        seen += size
    return first, second


def vector_norms(arrays, ord):
    """optim.vector_norms; the 2-norms of float32 arrays as square roots of sums of squares
    in C (native.py), accumulated in float64, the elements of all the arrays in two halves,
    one per core.  The reference's BLAS dot adds in float32: the two agree to float32
    rounding, this one nearer the exact norm."""
    lib = native.library()
    flat = [_flat(x) for x in arrays] if lib is not None and ord == 2.0 else None
    if flat is None or any(x is None for x in flat):
        return optim.vector_norms.reference(arrays, ord)
    shares = _in_two_shares([x.size for x in flat], lambda share: [
        (index, native.sum_of_squares(lib, flat[index], start, stop)) for index, start, stop in share])
    sums = [0.0] * len(flat)
    for share in shares:  # an array cut between the shares: its first part's sum, then its second's
        for index, part in share:
            sums[index] += part
    return [np.float32(np.sqrt(total)) for total in sums]


def scale_all_(arrays, factor):
    """optim.scale_all_ in C (native.py): the same multiply per element, the elements of
    all the arrays in two halves, one per core."""
    lib = native.library()
    flat = [_flat(x) for x in arrays] if lib is not None else None
    if flat is None or any(x is None for x in flat):
        return optim.scale_all_.reference(arrays, factor)
    _in_two_shares([x.size for x in flat], lambda share: [native.scale(lib, flat[index], start, stop, factor)
                                                          for index, start, stop in share])


def _flat(x):
    """x as a flat float32 view in its memory order, or None."""
    if x.dtype != np.float32 or not (x.flags.c_contiguous or x.flags.f_contiguous):
        return None
    return x.ravel(order="K")


def _in_two_shares(sizes, run):
    """run(share) over all elements of arrays of ``sizes``, a share being a list of (array
    index, start, stop): two shares of equal size on both cores when there is a pool and
    enough work, else one share here.  -> the runs' results, in share order."""
    total = sum(sizes)
    pool = threads.training_pool()
    if pool is None or total < NATIVE_SPLIT:
        return [run([(index, 0, size) for index, size in enumerate(sizes)])]
    first, second = _two_shares(list(enumerate(sizes)), total // 2, size_of=lambda item: item[1])
    return list(pool.pair(lambda: run([(index, start, stop) for (index, _), start, stop in first]),
                          lambda: run([(index, start, stop) for (index, _), start, stop in second])))


def linear_backward(dout, x, weight, has_bias=True):
    """ops_backward.linear_backward, with dL/dW in the memory order of the weight and
    dL/db as a product with ones (fast/cpu.py's column_sums)."""
    if dout.dtype != np.float32:
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
    arrays = [a.reshape(-1, hidden) for a in (dout, x) + ((residual,) if residual is not None else ())]
    if lib is None or not all(cpu._float32_rows(a, weight) for a in arrays):
        return None
    dout2, x2, residual2 = arrays[0], arrays[1], arrays[2] if residual is not None else None
    ds = np.empty_like(x2)  # [rows, hidden]
    shares = _in_row_halves(x2.shape[0], hidden, lambda start, stop: native.layer_norm_backward_rows(
        lib, dout2, x2, residual2, weight, eps, ds, start, stop))
    dweight = sum(share[0] for share in shares).astype(np.float32)  # [hidden]
    dbias = sum(share[1] for share in shares).astype(np.float32)
    return ds.reshape(x.shape), dweight, dbias  # [rows, hidden] -> [..., hidden]


def _in_row_halves(rows, width, fn):
    """[fn(start, stop)] over range(rows): two halves on both cores when there is enough work."""
    pool = threads.training_pool()
    if pool is None or rows < 2 or rows * width < ROWS_SPLIT:
        return [fn(0, rows)]
    middle = rows // 2
    return list(pool.pair(lambda: fn(0, middle), lambda: fn(middle, rows)))


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
        in_halves(flat_x.size, lambda start, stop: native.gelu_backward(lib, flat_dout, flat_x, dx, start, stop))
    else:
        in_blocks(flat_x.size, lambda part: gelu_backward_block(flat_dout[part], flat_x[part], dx[part]))
    return dx.reshape(dout.shape)  # [size] -> dout.shape


TRAINING_KERNELS = {
    **{name: fn for name, fn in cpu.KERNELS.items() if name != "top_k"},
    "adamw_update": adamw_update,
    "adamw_updates": adamw_updates,
    "vector_norms": vector_norms,
    "scale_all_": scale_all_,
    "linear_backward": linear_backward,
    "embedding_backward": embedding_backward,
    "layer_norm_backward": layer_norm_backward,
    "cross_entropy": cross_entropy,
    "cross_entropy_backward": cross_entropy_backward,
    "activation_backward": activation_backward,
    "softmax_backward": softmax_backward,
}
