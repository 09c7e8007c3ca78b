"""CPU versions of the reference ops: the same numbers, computed the way OpenBLAS and
the CPU cache like them.  Each function here replaces the ops.py function of the same
name (dispatch.py) and falls back to it where it has no trick to play.

Why each exists (measured figures: benchmarks/results and README):

* ``linear``: one GEMM over all rows (NumPy's matmul on a 3-D x loops over the batch);
  for a few rows (beam steps, short inputs) W @ x.T, which OpenBLAS runs faster than
  x @ W.T; for a few rows times a tall weight (the LM head), 2 MiB of W at a time.
  A weight stored transposed (layout.py) is already fastest as x @ W.T, and 2 to 7 rows
  of it faster still as 8 (zeros below).
* ``apply_activation``: GELU's dozen temporaries the size of x cost nearly as much as
  the matmul before them, so the erf form runs in place on cache-sized blocks.
* ``masked_softmax`` and ``layer_norm``: the reference's steps, in place in one buffer
  (and a mask with nothing masked, an all-ones ``attention_mask``, is not added).
  Their row sums and means are matrix-vector products with a vector of ones
  (``row_sums``): NumPy reduces a short row per inner-loop call, BLAS several times
  faster.  BLAS adds in its own order, so these equal the reference within float32
  rounding, not bitwise.  The training wing (cpu_training.py) sums the same way.
* ``log_softmax`` and ``top_k``: beam search's per-step work on beams x vocab scores
  (4 x 30522 for the small model): one result array and BLAS sums instead of the
  reference's four temporaries, and the k best found from block maxima (no sort, and
  no padded copy of the scores).
"""
from __future__ import annotations


import numpy as np

from .. import ops
from . import native, threads
from .gelu_blocks import gelu_block

__all__ = ["KERNELS"]

FEW_ROWS = 96
PADDED_ROWS = 8  # 2-7 rows times a weight stored transposed run as 8 (padded_to_eight_rows)
CHUNKED_ROWS, CHUNKED_OUT, CHUNK_BYTES = 32, 2048, 2 << 20
SPLIT_SIZE = 1 << 16  # elements: smaller work is not worth handing to the second core (threads.py)


def linear(x, weight, bias=None):
    """ops.linear for NumPy arrays."""
    if getattr(weight, "is_quantized", False):
        return _add_bias(weight.rmatmul_t(x), bias)  # x @ W.T from packed 8/4-bit codes (quantization/)
    rows = x.reshape(-1, x.shape[-1])  # [..., in] -> [rows, in]
    pool = threads.POOL
    if pool is None or weight.size < SPLIT_SIZE:
        y = product(rows, weight)
    elif rows.shape[0] > FEW_ROWS:  # many rows: each core takes half of them
        y = np.empty((rows.shape[0], weight.shape[0]), dtype=np.result_type(rows.dtype, weight.dtype))
        half = rows.shape[0] // 2
        pool.pair(lambda: np.matmul(rows[:half], weight.T, out=y[:half]),
                  lambda: np.matmul(rows[half:], weight.T, out=y[half:]))
    else:  # a few rows: each core streams half of the weight (its first or last output features)
        half = weight.shape[0] // 2
        y = np.concatenate(pool.pair(lambda: product(rows, weight[:half]), lambda: product(rows, weight[half:])),
                           axis=1)  # 2 x [rows, out / 2] -> [rows, out]
    return _add_bias(y.reshape(*x.shape[:-1], weight.shape[0]), bias)  # -> [..., out]


def product(rows, weight):
    """rows [rows, in] @ weight.T [in, out] -> [rows, out] on one core's terms (see the module doc)."""
    if 1 < rows.shape[0] <= FEW_ROWS and weight.flags.c_contiguous:
        if rows.shape[0] <= CHUNKED_ROWS and weight.shape[0] >= CHUNKED_OUT:
            return tall_weight_in_chunks(weight, rows)
        return np.ascontiguousarray((weight @ rows.T).T)  # [out, rows] -> [rows, out]
    if 1 < rows.shape[0] < PADDED_ROWS and weight.T.flags.c_contiguous:
        return padded_to_eight_rows(rows, weight)
    return rows @ weight.T  # [rows, in] @ [in, out] -> [rows, out]


def padded_to_eight_rows(rows, weight):
    """rows [r, in] @ weight.T for 1 < r < 8 and a weight stored transposed (layout.py), as 8 rows.

    OpenBLAS multiplies 8 rows by such a weight faster than 2 to 7 rows (1.1-2.3x for the
    small model's LM head and feed-forward weights, benchmarks/results/cpu_padded_rows.txt),
    so the rows are copied into 8 with zeros below and the extra results dropped.  Each
    result is the same sum of products, added by another BLAS kernel: equal to float32
    rounding, not bitwise.  -> [r, out] (the first rows of an [8, out] array)
    """
    padded = np.zeros((PADDED_ROWS, rows.shape[1]), dtype=rows.dtype)  # [8, in]
    padded[:rows.shape[0]] = rows
    return (padded @ weight.T)[:rows.shape[0]]  # [8, in] @ [in, out] -> [8, out] -> [r, out]


def tall_weight_in_chunks(weight, rows):
    """W @ x.T for a tall W [out, in] and a few rows x [rows, in], 2 MiB of W at a time.

    Given all of a tall weight in one call, OpenBLAS streams it slower than in blocks of
    rows; each block is the same product over its rows of W, so the numbers are the same.
    -> [rows, out]
    """
    out = np.empty((weight.shape[0], rows.shape[0]), dtype=np.result_type(weight.dtype, rows.dtype))  # [out, rows]
    step = max(1, CHUNK_BYTES // (weight.shape[1] * weight.itemsize))  # rows of W per block
    for start in range(0, weight.shape[0], step):
        np.matmul(weight[start:start + step], rows.T, out=out[start:start + step])
    return np.ascontiguousarray(out.T)


_ONES = {}  # dtype -> a vector of ones, grown as needed: sums as BLAS dot products


def _ones(n, dtype):
    ones = _ONES.get(np.dtype(dtype))
    if ones is None or ones.size < n:
        ones = _ONES[np.dtype(dtype)] = np.ones(max(n, 4096), dtype=dtype)
    return ones[:n]


def row_sums(a):
    """a [rows, n] -> [rows, 1], the sum of each row as a product with a vector of ones.

    NumPy reduces a short row (the 64-384 features of a LayerNorm, the keys of a softmax)
    in one inner-loop call per row; one BLAS matrix-vector product is several times
    faster.  The sums are added in BLAS's order instead of NumPy's pairwise one: equal
    to the reference within float32 rounding (~1e-7 relative), not bitwise."""
    return (a @ _ones(a.shape[-1], a.dtype))[:, None]  # [rows, n] @ [n] -> [rows] -> [rows, 1]


def last_axis_sums(a):
    """a [..., n] -> [..., 1]: the sums over the last axis of a float32 array (a softmax's
    rows) as products with ones, np.sum for other dtypes.  A C-contiguous array is one
    matrix-vector product; a strided one (a half of the heads) is one per [q, k] matrix,
    which adds each row in the same order, so a split softmax equals the whole one."""
    if a.dtype != np.float32 or a.ndim < 2:
        return a.sum(axis=-1, keepdims=True)  # [..., n] -> [..., 1]
    if a.flags.c_contiguous:
        return row_sums(a.reshape(-1, a.shape[-1])).reshape(*a.shape[:-1], 1)  # [rows, 1] -> [..., 1]
    return (a @ _ones(a.shape[-1], a.dtype))[..., None]  # [..., q, k] @ [k] -> [..., q, 1]


def row_means(a):
    """a [rows, n] -> [rows, 1], each row's mean (its sum divided by n, as np.mean)."""
    sums = row_sums(a)
    sums /= a.shape[-1]
    return sums


def column_sums(a):
    """a [rows, n] -> [n], the sum over rows (a bias's gradient), as ones [rows] @ a."""
    return _ones(a.shape[0], a.dtype) @ a  # [rows] @ [rows, n] -> [n]


def _add_bias(y, bias):
    if bias is not None:
        y += bias
    return y


def layer_norm(x, weight, bias, eps, residual=None):
    """ops.layer_norm with its steps done in place in one float32 buffer (rows in halves on two cores)."""
    if residual is not None:
        x = x + residual
    fresh = residual is not None  # x + residual is ours to overwrite
    work = x.astype(np.promote_types(x.dtype, np.float32), copy=not fresh).reshape(-1, x.shape[-1])  # [rows, hidden]
    lib = native.library() if float32_rows(work, weight, bias) else None
    if lib is not None:  # one C loop over the rows (native.py): the same steps, the means summed in float64
        native.layer_norm_rows(lib, work, weight, bias, eps)
    else:
        _in_halves(work, lambda part: _normalise_rows(part, weight, bias, eps))
    return work.reshape(x.shape).astype(x.dtype, copy=False)  # [rows, hidden] -> [..., hidden]


def float32_rows(work, *vectors):
    """C-contiguous float32 rows and float32 contiguous vectors (what native.py's loops read)."""
    return (work.dtype == np.float32 and work.flags.c_contiguous and work.ndim == 2
            and all(isinstance(v, np.ndarray) and v.dtype == np.float32 and v.ndim == 1 and v.flags.c_contiguous
                    and v.shape[0] == work.shape[1] for v in vectors))


def _normalise_rows(work, weight, bias, eps):
    """LayerNorm of each row of ``work`` [rows, hidden], in place; the means by BLAS
    (row_means) for C-contiguous float32 rows, by NumPy otherwise."""
    by_blas = work.dtype == np.float32 and work.flags.c_contiguous
    means = row_means if by_blas else (lambda a: a.mean(axis=-1, keepdims=True))
    work -= means(work)  # [rows, 1]
    variance = means(work * work)  # [rows, 1]
    work /= np.sqrt(variance + eps)
    work *= weight
    work += bias


def _in_halves(array, fn, axis=0):
    """fn(part) on the two halves of ``array`` along ``axis`` (one per core) when it is big."""
    pool = threads.POOL
    if pool is None or array.size < SPLIT_SIZE or array.shape[axis] < 2:
        fn(array)
        return
    half = array.shape[axis] // 2
    first = (slice(None),) * axis + (slice(None, half),)
    second = (slice(None),) * axis + (slice(half, None),)
    pool.pair(lambda: fn(array[first]), lambda: fn(array[second]))


def masked_softmax(scores, mask=None, divisor=1.0, dtype=None):
    """ops.masked_softmax in place: ``scores`` is the caller's fresh array (attention's q . k).
    scores [batch, heads, q, k]; the mask has one head, so the heads split in halves."""
    scores = scores.astype(np.promote_types(scores.dtype, np.float32), copy=False)  # float32 from here on
    if mask is not None and mask.size < scores.size and not mask.any():
        mask = None  # nothing masked (an all-ones attention_mask): adding zeros changes no score
    _in_halves(scores, lambda part: _softmax_in_place(part, mask, divisor), axis=1 if scores.ndim == 4 else 0)
    return scores if dtype is None else scores.astype(dtype, copy=False)


def _softmax_in_place(scores, mask, divisor):
    scores /= divisor
    if mask is not None:
        lowest = np.finfo(mask.dtype).min
        scores += mask
        np.copyto(scores, lowest, where=mask == lowest)  # a masked score is exactly the minimum: ops.masked_softmax
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= last_axis_sums(scores)


def log_softmax(scores, axis=-1):
    """ops.log_softmax over the last axis of float32 scores (beam search's beams x vocab):
    one new array, the exp in a scratch one, the sums by BLAS (row_sums)."""
    if scores.dtype != np.float32 or scores.ndim != 2 or axis not in (-1, 1):
        return ops.log_softmax.reference(scores, axis)
    shifted = scores - scores.max(axis=-1, keepdims=True)  # [rows, n], the result's buffer
    sums = row_sums(np.exp(shifted))  # [rows, 1]
    shifted -= np.log(sums)
    return shifted


def apply_activation(fn, x):
    """ops.apply_activation, with the erf GELU computed in place on cache-sized blocks."""
    if fn is not ops.gelu:
        return ops.apply_activation.reference(fn, x)
    flat = np.ascontiguousarray(x, dtype=np.promote_types(x.dtype, np.float32)).reshape(-1)  # float32 at least
    out = np.empty_like(flat)
    lib = native.library() if flat.dtype == np.float32 else None
    if lib is not None:  # one pass in C (native.py): the same steps, in one loop
        native.gelu_forward(lib, flat, out, 0, flat.size)
        return out.reshape(x.shape).astype(x.dtype, copy=False)  # [size] -> x.shape

    def blocks(part):  # part: a range of flat positions
        for start in range(part.start, part.stop, BLOCK):
            stop = min(start + BLOCK, part.stop)
            gelu_block(flat[start:stop], out[start:stop])

    middle = (flat.size // 2 + BLOCK - 1) // BLOCK * BLOCK  # halves on block boundaries
    if threads.POOL is None or flat.size < 2 * BLOCK:
        blocks(range(0, flat.size))
    else:
        threads.POOL.pair(lambda: blocks(range(0, middle)), lambda: blocks(range(middle, flat.size)))
    return out.reshape(x.shape).astype(x.dtype, copy=False)  # [size] -> x.shape


BLOCK = 65536  # elements: 256 KiB of float32, a few buffers fit in a 2 MiB L2 cache


TOP_K_BLOCK = 256


def top_k(values, k):
    """ops.top_k for long rows (beams x vocab scores): the same result.

    Sorting 4 x 30522 scores is a tenth of a small model's beam step.  Instead cut each
    row into blocks of 256 and take each block's maximum (a fast SIMD reduction): the k
    best scores all lie in blocks whose maximum is at least the k-th largest block
    maximum (any other block is beaten by k blocks, each holding a larger score).  The
    exact top-k then runs on those few blocks only.
    """
    reference = ops.top_k.reference
    batch, n = values.shape
    if n < 16 * TOP_K_BLOCK or k > 64:
        return reference(values, k)
    whole = n // TOP_K_BLOCK * TOP_K_BLOCK  # the last, short block is reduced on its own (no padded copy)
    maxima = values[:, :whole].reshape(batch, -1, TOP_K_BLOCK).max(axis=-1)  # [batch, whole blocks]
    if whole < n:
        maxima = np.concatenate([maxima, values[:, whole:].max(axis=-1, keepdims=True)], axis=1)  # [batch, blocks]
    kth = np.partition(maxima, maxima.shape[1] - k, axis=-1)[:, -k:].min(axis=-1)  # [batch]
    top_values, top_indices = [], []
    for row in range(batch):
        blocks = np.flatnonzero(maxima[row] >= kth[row])  # ascending: index order kept for ties
        candidates = (blocks[:, None] * TOP_K_BLOCK + np.arange(TOP_K_BLOCK)).reshape(-1)
        candidates = candidates[candidates < n]
        if candidates.size < k:  # NaN scores defeat the block bound: fall back to the full row
            return reference(values, k)
        best, where = reference(values[row:row + 1, candidates], k)  # candidates ascending: same ties
        top_values.append(best)
        top_indices.append(candidates[where])
    return np.concatenate(top_values), np.concatenate(top_indices)


KERNELS = {
    "forward_context": threads.forward_context,  # entered around each forward pass (dispatch.py)
    "linear": linear,
    "layer_norm": layer_norm,
    "masked_softmax": masked_softmax,
    "apply_activation": apply_activation,
    "top_k": top_k,
    "log_softmax": log_softmax,
}
